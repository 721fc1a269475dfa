//! Times one Toeplitz hash (a quick measurement tool).
#![allow(missing_docs, clippy::unwrap_used)]
use qkdnet_core::Bits;
use rand::{Rng, SeedableRng};
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let m = n / 2;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x = Bits::from_words((0..n.div_ceil(64)).map(|_| rng.gen()).collect(), n);
    let s = Bits::from_words(
        (0..(n + m - 1).div_ceil(64)).map(|_| rng.gen()).collect(),
        n + m - 1,
    );
    let mut hasher = qkdnet_distill::toeplitz::Hasher::new();
    let t0 = std::time::Instant::now();
    let _ = hasher.hash(&s, &x, m).unwrap();
    println!("cold {:.3}s", t0.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let h = hasher.hash(&s, &x, m).unwrap();
    let dt = t.elapsed().as_secs_f64();
    println!(
        "n={n} len={} {:.3}s {:.1} Mbit/s ones={}",
        qkdnet_distill::toeplitz::fft_len(n + m - 1),
        dt,
        n as f64 / dt / 1e6,
        h.count_ones()
    );
}
