//! Finite-key settings shared by all protocol families.

use serde::{Deserialize, Serialize};

/// Finite-key parameters: block size and the composable security parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiniteKey {
    /// Number of signals per block: pulses (DV), symbols (CV), entanglement attempts or
    /// Bell pairs (DI), or coincidence-window slots for CW sources (acquisition time / window).
    pub block_size: f64,
    /// Secrecy parameter ε_sec.
    pub eps_sec: f64,
    /// Correctness parameter ε_cor.
    pub eps_cor: f64,
}

impl Default for FiniteKey {
    fn default() -> Self {
        Self {
            block_size: 1e12,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
        }
    }
}

impl FiniteKey {
    /// Checks every field, naming it.
    pub fn validate(&self) -> Result<(), qkdnet_optics::ParamError> {
        qkdnet_optics::check("finite_key.block_size", self.block_size, 1.0, 1e20)?;
        qkdnet_optics::check("finite_key.eps_sec", self.eps_sec, 1e-300, 0.5)?;
        qkdnet_optics::check("finite_key.eps_cor", self.eps_cor, 1e-300, 0.5)?;
        Ok(())
    }
}

/// Which analysis to run: finite-key (the only one that may produce stored keys) or
/// asymptotic (planning only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Security {
    /// Infinite block, no statistical fluctuations.
    Asymptotic,
    /// Finite block with composable parameters.
    Finite(FiniteKey),
}

impl Security {
    /// Failure probability for each of `m` concentration bounds, or `None` when asymptotic.
    pub(crate) fn per_bound_eps(&self, m: f64) -> Option<f64> {
        match self {
            Security::Asymptotic => None,
            Security::Finite(f) => Some(f.eps_sec / m),
        }
    }
}

/// A count's expectation bounded from below (asymptotic: the count itself).
#[inline]
pub(crate) fn lower(x: f64, eps: Option<f64>) -> f64 {
    match eps {
        None => x,
        Some(e) => crate::math::chernoff_lower(x, e),
    }
}

/// A count's expectation bounded from above (asymptotic: the count itself).
#[inline]
pub(crate) fn upper(x: f64, eps: Option<f64>) -> f64 {
    match eps {
        None => x,
        Some(e) => crate::math::chernoff_upper(x, e),
    }
}

/// Composable overhead, bits, with the structure of Lim et al., PRA 89, 022307 (2014),
/// Eq. (2): `6 log₂(m/ε_sec) + log₂(2/ε_cor)`, where each of the protocol's statistical
/// estimates fails with probability ε_sec/m. Zero in the asymptotic case.
pub(crate) fn composable_overhead(sec: &Security, m: f64) -> f64 {
    match sec {
        Security::Asymptotic => 0.0,
        Security::Finite(f) => 6.0 * (m / f.eps_sec).log2() + (2.0 / f.eps_cor).log2(),
    }
}
