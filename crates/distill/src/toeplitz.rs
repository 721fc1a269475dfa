//! Privacy amplification by Toeplitz hashing, exact over GF(2).
//!
//! A Toeplitz matrix `T` (m × n) is fixed by a seed `s` of `n + m − 1` bits:
//! `T[i][j] = s[i − j + n − 1]`. Then `(T x)_i = Σ_j s[i − j + n − 1] x_j = c_{i+n−1}` where
//! `c = s ∗ x` is the integer convolution, taken mod 2: the output is the middle of the
//! product of two polynomials.
//!
//! Two exact backends compute that product ([`Backend`]):
//!
//! * **Additive FFT over GF(2⁶⁴)** ([`crate::gf2x`]), the default where the CPU has a
//!   carry-less multiply: bit-packed (32 bits of key per field element), exact by
//!   construction, no rounding argument needed. It computes the middle product by the
//!   transposed multiplication ([`crate::gf2x::toeplitz_words`]), so its transform only
//!   needs to be as long as the seed.
//! * **Complex FFT in f64**, the portable fallback, described below.
//!
//! A cyclic convolution of any length `N ≥ n + m − 1` gives
//! those middle coefficients without wrap-around, so the product is one real FFT of each
//! operand, a pointwise product and one inverse FFT (`realfft`, f64), rounded and reduced
//! mod 2.
//!
//! Exactness. Every coefficient is an integer in [0, min(n, m)]. The rounding error of an
//! f64 FFT convolution is bounded by `‖s‖₂ ‖x‖₂ · 3 log₂N · (ε(1+√5) + β)` to first order
//! (Percival, Math. Comp. 72, 387 (2003), Theorem 5.1; ε = 2⁻⁵³, β the twiddle-factor error,
//! ≤ 2ε for library twiddles), with `‖s‖₂‖x‖₂ ≤ √((n+m)·n)`. [`fft_error_bound`] evaluates it;
//! the hash refuses inputs whose bound is not below 1/4, and it also checks every rounded
//! coefficient's residual against 1/4 at run time, so a result is either exact or an error.
//! At n = 10⁸ the bound is ≈ 5·10⁻⁶.

use qkdnet_core::Bits;
use realfft::num_complex::Complex;
use realfft::RealFftPlanner;
use zeroize::Zeroize;

/// Why a Toeplitz hash was not computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ToeplitzError {
    /// The seed length is not n + m − 1.
    #[error("Toeplitz seed has {got} bits; an {m}×{n} matrix needs n + m − 1 = {need}")]
    SeedLength {
        /// Bits supplied.
        got: usize,
        /// Bits needed.
        need: usize,
        /// Output length.
        m: usize,
        /// Input length.
        n: usize,
    },
    /// The FFT error bound does not guarantee exact rounding at this size.
    #[error(
        "input of {n} bits is too long for an exact f64 FFT product (error bound {bound:.3e})"
    )]
    TooLong {
        /// Input length.
        n: usize,
        /// The a-priori error bound.
        bound: f64,
    },
    /// The FFT library rejected its buffers (an internal error).
    #[error("FFT failed: {0}")]
    Fft(String),
    /// A coefficient's rounding residual exceeded 1/4 (never observed; a safety net).
    #[error("FFT rounding residual {residual:.3e} exceeds 1/4; result discarded")]
    Inexact {
        /// The largest residual seen.
        residual: f64,
    },
}

/// A-priori bound on the largest absolute error of any coefficient of the f64 FFT
/// convolution used for an m × n Toeplitz hash (see the module documentation).
pub fn fft_error_bound(n: usize, m: usize) -> f64 {
    let len = fft_len(n + m - 1) as f64;
    let norms = (((n + m) as f64) * n as f64).sqrt();
    let eps = f64::EPSILON / 2.0;
    norms * 3.0 * len.log2() * (eps * (1.0 + 5f64.sqrt()) + 2.0 * eps)
}

/// The FFT length used for a convolution covering `min_len` coefficients: the smallest
/// of 2ᵃ, 3·2ᵃ and 9·2ᵃ at least `min_len`, which keeps padding below 1/3. (Lengths with
/// more factors of 3 plan far more slowly in rustfft at 10⁸ points.)
pub fn fft_len(min_len: usize) -> usize {
    let mut best = min_len.next_power_of_two().max(2);
    for mult in [3usize, 9] {
        let mut v = mult * 2;
        while v < min_len {
            v *= 2;
        }
        best = best.min(v);
    }
    best
}

/// Which exact product a [`Hasher`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// The additive FFT over GF(2⁶⁴) where the CPU multiplies carry-less in hardware,
    /// the f64 FFT otherwise.
    Auto,
    /// Additive FFT over GF(2⁶⁴) ([`crate::gf2x`]), whatever the CPU.
    Additive,
    /// Real FFT in f64 with the rounding bound and residual check.
    Float,
}

impl Backend {
    /// The backend `Auto` resolves to on this machine.
    pub fn resolve(self) -> Backend {
        match self {
            Backend::Auto if crate::gf2x::backend() != "portable" => Backend::Additive,
            Backend::Auto => Backend::Float,
            b => b,
        }
    }

    /// Name for reports: `"additive-gf2^64"` or `"float-f64"`.
    pub fn name(self) -> &'static str {
        match self.resolve() {
            Backend::Additive => "additive-gf2^64",
            _ => "float-f64",
        }
    }
}

/// A Toeplitz hasher that keeps its FFT plans (twiddle factors) and work buffers for reuse
/// across blocks: fresh multi-gigabyte buffers cost more in page faults than the FFTs.
/// Buffers hold key-derived values and are zeroized after every hash and on drop.
pub struct Hasher {
    backend: Backend,
    gf2x: crate::gf2x::Workspace,
    planner: RealFftPlanner<f64>,
    len: usize,
    real: Vec<f64>,
    spec_a: Vec<Complex<f64>>,
    spec_b: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    /// A hasher with empty caches and the fastest exact backend of this machine.
    pub fn new() -> Self {
        Self::with_backend(Backend::Auto)
    }

    /// A hasher with empty caches and the given backend.
    pub fn with_backend(backend: Backend) -> Self {
        Self {
            backend: backend.resolve(),
            gf2x: crate::gf2x::Workspace::default(),
            planner: RealFftPlanner::new(),
            len: 0,
            real: Vec::new(),
            spec_a: Vec::new(),
            spec_b: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn wipe(&mut self) {
        self.gf2x.wipe();
        self.real.as_mut_slice().zeroize();
        for v in [&mut self.spec_a, &mut self.spec_b, &mut self.scratch] {
            v.iter_mut().for_each(|c| *c = Complex::new(0.0, 0.0));
            // Keep the stores observable (the buffers may be freed next).
            std::hint::black_box(v.as_slice());
        }
    }

    /// `T x` for the Toeplitz matrix with `seed` (m × n, n = `x.len()`), by FFT, exact.
    pub fn hash(&mut self, seed: &Bits, x: &Bits, m: usize) -> Result<Bits, ToeplitzError> {
        let r = self.hash_inner(seed, x, m, false);
        self.wipe();
        r
    }

    /// `T x` for the Toeplitz matrix whose seed is [`expand_seed`]`(draw)`: the hash
    /// privacy amplification uses. `draw` is the uniformly random string both ends share;
    /// the seed it expands to is uniformly random too (a fixed bijection), so the family is
    /// the Toeplitz family, 2-universal as before. The additive backend then skips one of
    /// its three basis conversions (the draw is what that conversion would produce); the
    /// float backend expands the seed first. Both give the same bits.
    pub fn hash_expanded(
        &mut self,
        draw: &Bits,
        x: &Bits,
        m: usize,
    ) -> Result<Bits, ToeplitzError> {
        let r = self.hash_inner(draw, x, m, true);
        self.wipe();
        r
    }

    /// The hash with `seed` itself (`expanded` false) or with [`expand_seed`]`(seed)`.
    fn hash_inner(
        &mut self,
        seed: &Bits,
        x: &Bits,
        m: usize,
        expanded: bool,
    ) -> Result<Bits, ToeplitzError> {
        let n = x.len();
        if m == 0 || n == 0 {
            return Ok(Bits::zeros(m));
        }
        let need = n + m - 1;
        if seed.len() != need {
            return Err(ToeplitzError::SeedLength {
                got: seed.len(),
                need,
                m,
                n,
            });
        }
        if self.backend == Backend::Additive {
            let y = crate::gf2x::toeplitz_words(
                &mut self.gf2x,
                seed.words(),
                x.words(),
                n,
                m,
                expanded,
            );
            return Ok(Bits::from_words(y, m));
        }
        let expanded_seed;
        let seed = if expanded {
            expanded_seed = expand_seed(seed);
            &expanded_seed
        } else {
            seed
        };
        let bound = fft_error_bound(n, m);
        if bound >= 0.25 {
            return Err(ToeplitzError::TooLong { n, bound });
        }
        let len = fft_len(need);
        let fwd = self.planner.plan_fft_forward(len);
        let inv = self.planner.plan_fft_inverse(len);
        if self.len != len {
            self.len = len;
            self.real = fwd.make_input_vec();
            self.spec_a = fwd.make_output_vec();
            self.spec_b = fwd.make_output_vec();
            let sl = fwd.get_scratch_len().max(inv.get_scratch_len());
            self.scratch = vec![Complex::new(0.0, 0.0); sl];
        }
        let fft_err = |e: realfft::FftError| ToeplitzError::Fft(e.to_string());
        unpack(seed, &mut self.real);
        fwd.process_with_scratch(&mut self.real, &mut self.spec_a, &mut self.scratch)
            .map_err(fft_err)?;
        unpack(x, &mut self.real);
        fwd.process_with_scratch(&mut self.real, &mut self.spec_b, &mut self.scratch)
            .map_err(fft_err)?;
        for (a, b) in self.spec_a.iter_mut().zip(&self.spec_b) {
            *a *= *b;
        }
        inv.process_with_scratch(&mut self.spec_a, &mut self.real, &mut self.scratch)
            .map_err(fft_err)?;
        let scale = 1.0 / len as f64;
        let mut out = vec![0u64; m.div_ceil(64)];
        let mut worst = 0.0f64;
        for (i, c) in self.real[n - 1..n - 1 + m].iter().enumerate() {
            let v = c * scale;
            let r = v.round();
            worst = worst.max((v - r).abs());
            if (r as i64) & 1 == 1 {
                out[i / 64] |= 1u64 << (i % 64);
            }
        }
        if worst >= 0.25 {
            return Err(ToeplitzError::Inexact { residual: worst });
        }
        Ok(Bits::from_words(out, m))
    }
}

fn unpack(bits: &Bits, buf: &mut [f64]) {
    let n = bits.len();
    for (k, &w) in bits.words().iter().enumerate() {
        let base = k * 64;
        let end = (base + 64).min(n);
        for (j, v) in buf[base..end].iter_mut().enumerate() {
            *v = ((w >> j) & 1) as f64;
        }
    }
    buf[n..].iter_mut().for_each(|v| *v = 0.0);
}

/// `T x` for the Toeplitz matrix with `seed` (m × n, n = `x.len()`), by FFT, exact
/// (a one-off [`Hasher`]).
pub fn hash(seed: &Bits, x: &Bits, m: usize) -> Result<Bits, ToeplitzError> {
    Hasher::new().hash(seed, x, m)
}

/// The Toeplitz seed a shared random `draw` stands for in [`Hasher::hash_expanded`]: its
/// 32-bit pieces read as the coefficients the additive FFT's transposed product starts
/// from ([`crate::gf2x::expand_transposed`], a triangular change of basis after Lin, Chung
/// and Han 2014). A bijection on bit strings of each length, so a uniform `draw` gives a
/// uniform seed. Like the draw, the seed is public.
pub fn expand_seed(draw: &Bits) -> Bits {
    Bits::from_words(
        crate::gf2x::expand_transposed(draw.words(), draw.len()),
        draw.len(),
    )
}

/// `T x` bit by bit, word-parallel per row: the slow, obvious twin of [`hash`].
pub fn hash_naive(seed: &Bits, x: &Bits, m: usize) -> Bits {
    let n = x.len();
    let mut out = Bits::zeros(m);
    for i in 0..m {
        let mut p = false;
        for j in 0..n {
            p ^= seed.get(i + n - 1 - j) & x.get(j);
        }
        out.set(i, p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_bits(rng: &mut impl Rng, n: usize) -> Bits {
        let words: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.gen()).collect();
        Bits::from_words(words, n)
    }

    #[test]
    fn fft_hash_matches_naive_on_random_inputs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(n, m) in &[
            (1, 1),
            (2, 1),
            (64, 10),
            (65, 64),
            (500, 123),
            (1000, 999),
            (3000, 1500),
        ] {
            for _ in 0..3 {
                let x = random_bits(&mut rng, n);
                let s = random_bits(&mut rng, n + m - 1);
                let naive = hash_naive(&s, &x, m);
                for b in [Backend::Float, Backend::Additive] {
                    let fast = Hasher::with_backend(b).hash(&s, &x, m).unwrap();
                    assert!(fast == naive, "n={n} m={m} {b:?}");
                }
            }
        }
    }

    #[test]
    fn expanded_seed_hash_matches_naive_on_both_backends() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for &(n, m) in &[(1, 1), (65, 64), (500, 123), (3000, 1500), (20_000, 300)] {
            let x = random_bits(&mut rng, n);
            let draw = random_bits(&mut rng, n + m - 1);
            let seed = expand_seed(&draw);
            assert!(
                seed != draw || n + m - 1 <= 32,
                "n={n} m={m}: the expansion is not the identity"
            );
            let naive = hash_naive(&seed, &x, m);
            for b in [Backend::Float, Backend::Additive] {
                let fast = Hasher::with_backend(b).hash_expanded(&draw, &x, m).unwrap();
                assert!(fast == naive, "n={n} m={m} {b:?}");
            }
        }
        let x = Bits::zeros(10);
        assert!(matches!(
            Hasher::new().hash_expanded(&Bits::zeros(5), &x, 4),
            Err(ToeplitzError::SeedLength { need: 13, .. })
        ));
    }

    #[test]
    fn all_ones_is_the_worst_case_and_still_exact() {
        // All-ones operands give the largest coefficients (min(n, m)).
        let n: usize = 200_000;
        let m: usize = 100_000;
        let x = Bits::from_words(vec![u64::MAX; n.div_ceil(64)], n);
        let s = Bits::from_words(vec![u64::MAX; (n + m - 1).div_ceil(64)], n + m - 1);
        for b in [Backend::Float, Backend::Additive] {
            let mut h = Hasher::with_backend(b);
            // Every row sums n ones: parity of n (even) = 0.
            assert_eq!(h.hash(&s, &x, m).unwrap().count_ones(), 0);
            let x = Bits::from_words(vec![u64::MAX; (n - 1).div_ceil(64)], n - 1);
            let s = Bits::from_words(vec![u64::MAX; (n + m - 2).div_ceil(64)], n + m - 2);
            assert_eq!(h.hash(&s, &x, m).unwrap().count_ones(), m);
        }
    }

    #[test]
    fn errors_and_bounds() {
        let x = Bits::zeros(10);
        let s = Bits::zeros(5);
        assert!(matches!(
            hash(&s, &x, 4),
            Err(ToeplitzError::SeedLength { need: 13, .. })
        ));
        assert!(fft_error_bound(100_000_000, 50_000_000) < 1e-4);
        assert!(fft_len(1000) >= 1000 && fft_len(1000) <= 1024);
        assert_eq!(fft_len(1025), 1152);
    }
}
