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
    use qkdnet_distill::toeplitz::Backend;
    let backend = match std::env::args().nth(2).as_deref() {
        Some("float") => Backend::Float,
        Some("additive") => Backend::Additive,
        _ => Backend::Auto,
    };
    let mut hasher = qkdnet_distill::toeplitz::Hasher::with_backend(backend);
    println!("backend {}", hasher.backend().name());
    let t0 = std::time::Instant::now();
    let expanded = std::env::var("PLAIN").is_err();
    let run = |h: &mut qkdnet_distill::toeplitz::Hasher| {
        if expanded {
            h.hash_expanded(&s, &x, m).unwrap()
        } else {
            h.hash(&s, &x, m).unwrap()
        }
    };
    let _ = run(&mut hasher);
    println!("cold {:.3}s", t0.elapsed().as_secs_f64());
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let mut times = Vec::new();
    let mut ones = 0;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        let h = run(&mut hasher);
        times.push(t.elapsed().as_secs_f64());
        ones = h.count_ones();
    }
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[reps / 2]);
    println!(
        "n={n} best {:.4}s median {:.4}s: {:.1} / {:.1} Mbit/s ones={ones}",
        best,
        median,
        n as f64 / best / 1e6,
        n as f64 / median / 1e6,
    );
}
