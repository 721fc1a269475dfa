//! Continuous-variable QKD reconciliation (GG02, reverse reconciliation).

pub mod block;
pub mod code;
pub mod design;
pub mod mdr;

/// Test and bench helper: `n` pairs through a real Gaussian channel `y = √snr · x + n`
/// with unit variances: Alice's `x`, Bob's `y`.
pub fn gaussian_channel(n: usize, snr: f64, rng: &mut impl rand::Rng) -> (Vec<f64>, Vec<f64>) {
    use rand_distr::StandardNormal;
    let g = snr.sqrt();
    let x: Vec<f64> = (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal))
        .collect();
    let y = x
        .iter()
        .map(|&v| g * v + rng.sample::<f64, _>(StandardNormal))
        .collect();
    (x, y)
}
