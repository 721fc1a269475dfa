//! Interferometers: visibility and phase error to error probability.

/// Error probability of a two-outcome interference measurement with fringe visibility `v`
/// and phase offset `delta` (rad): `(1 − V cos δ) / 2`.
#[inline]
pub fn error_probability(visibility: f64, delta_rad: f64) -> f64 {
    0.5 * (1.0 - visibility * delta_rad.cos())
}

/// Error probability at perfect phase: `(1 − V) / 2`.
#[inline]
pub fn visibility_error(visibility: f64) -> f64 {
    0.5 * (1.0 - visibility)
}

/// Visibility reduction `E[cos δ] = e^{−σ²/2}` for a Gaussian phase error of variance
/// `sigma2` rad² (characteristic function of the normal distribution).
#[inline]
pub fn gaussian_phase_visibility(sigma2_rad2: f64) -> f64 {
    (-0.5 * sigma2_rad2).exp()
}

/// Free spectral range (Hz) of an unbalanced Mach–Zehnder with delay `delay_s`: `1/τ`.
#[inline]
pub fn umzi_fsr_hz(delay_s: f64) -> f64 {
    1.0 / delay_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_interferometer_visibility_gives_0_15_percent() {
        // V = 99.7 % (Lecaron et al. 2025) → intrinsic QBER_X 0.15 %.
        assert!((visibility_error(0.997) - 0.0015).abs() < 1e-12);
        assert!((error_probability(1.0, std::f64::consts::PI) - 1.0).abs() < 1e-12);
        // FSR 2.5 GHz ↔ 400 ps delay.
        assert!((umzi_fsr_hz(400e-12) - 2.5e9).abs() < 1.0);
        assert!((gaussian_phase_visibility(0.0) - 1.0).abs() < 1e-15);
    }
}
