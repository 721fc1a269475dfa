//! Light sources: weak coherent pulses and SPDC photon-pair sources.

use crate::{check, ParamError};
use serde::{Deserialize, Serialize};

/// Poisson probability `e^{−μ} μⁿ / n!` of `n` photons in a phase-randomised coherent state.
pub fn poisson(n: u32, mu: f64) -> f64 {
    let mut p = (-mu).exp();
    for k in 1..=n {
        p *= mu / k as f64;
    }
    p
}

/// Thermal (Bose–Einstein) probability `μⁿ / (1+μ)^{n+1}` of `n` pairs from a single-mode
/// pulsed SPDC source with mean `μ` pairs per pulse.
pub fn thermal(n: u32, mu: f64) -> f64 {
    (mu / (1.0 + mu)).powi(n as i32) / (1.0 + mu)
}

/// A pulsed weak-coherent-pulse transmitter with a set of intensities (decoy states).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeakCoherentSource {
    /// Pulse repetition rate, Hz.
    pub clock_hz: f64,
    /// Mean photon numbers of the intensities, signal first.
    pub intensities: Vec<f64>,
}

impl WeakCoherentSource {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check("source.clock_hz", self.clock_hz, 1.0, 1e12)?;
        for (i, mu) in self.intensities.iter().enumerate() {
            check(&format!("source.intensities[{i}]"), *mu, 0.0, 100.0)?;
        }
        Ok(())
    }
}

/// Photon statistics of a pulsed SPDC source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairStatistics {
    /// Single spectral mode: thermal pair-number distribution.
    Thermal,
    /// Many modes: Poissonian pair-number distribution.
    Poisson,
}

/// A continuous-wave pumped SPDC pair source (the Nice network's PPLN source).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdcCwSource {
    /// Pair generation rate per unit pump power, pairs/s/mW, into the collected channel pair.
    pub brightness_pairs_per_s_per_mw: f64,
    /// Pump power, mW.
    pub pump_power_mw: f64,
}

impl SpdcCwSource {
    /// Pair generation rate `B` (pairs/s).
    pub fn pair_rate_hz(&self) -> f64 {
        self.brightness_pairs_per_s_per_mw * self.pump_power_mw
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check(
            "source.brightness_pairs_per_s_per_mw",
            self.brightness_pairs_per_s_per_mw,
            0.0,
            1e15,
        )?;
        check("source.pump_power_mw", self.pump_power_mw, 0.0, 1e6)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_sum_to_one_with_the_right_mean() {
        for mu in [0.01, 0.5, 2.0] {
            let (mut s, mut m, mut st, mut mt) = (0.0, 0.0, 0.0, 0.0);
            for n in 0..200 {
                s += poisson(n, mu);
                m += n as f64 * poisson(n, mu);
                st += thermal(n, mu);
                mt += n as f64 * thermal(n, mu);
            }
            assert!((s - 1.0).abs() < 1e-12 && (m - mu).abs() < 1e-10);
            assert!((st - 1.0).abs() < 1e-12 && (mt - mu).abs() < 1e-10);
        }
    }
}
