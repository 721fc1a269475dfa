//! Cascade efficiency, frame error rate and speed over many frames (a quick measurement
//! tool): `cascade_eff VARIANT FRAME_BITS FRAMES [BICONF]`.
#![allow(missing_docs, clippy::unwrap_used)]
use qkdnet_core::Bits;
use qkdnet_distill::cascade::{reconcile_local, Schedule, Variant};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = Variant::parse(&args[1]).unwrap();
    let n: usize = args[2].parse().unwrap();
    let frames: usize = args[3].parse().unwrap();
    let biconf: usize = args.get(4).map_or(0, |v| v.parse().unwrap());
    for q in [0.01, 0.02, 0.05] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (mut leak, mut rt, mut fail, mut t) = (0u64, 0u64, 0, 0.0);
        let sh = std::sync::Arc::new(qkdnet_distill::cascade::Shuffles::new(
            [7; 32],
            n,
            10 + biconf,
        ));
        for _ in 0..frames {
            let a: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.gen()).collect();
            let a = Bits::from_words(a, n);
            let mut b = a.duplicate();
            for i in 0..n {
                if rng.gen_bool(q) {
                    b.flip(i);
                }
            }
            let t0 = Instant::now();
            let (fixed, st) =
                reconcile_local(&a, b, Schedule::with_biconf(variant, q, n, biconf), &sh).unwrap();
            t += t0.elapsed().as_secs_f64();
            leak += st.leaked_bits;
            rt += st.round_trips;
            if fixed != a {
                fail += 1;
            }
        }
        let h = -q * q.log2() - (1.0 - q) * (1.0 - q).log2();
        println!(
            "q={q} f={:.4} rt={:.1} fer={} Mbit/s={:.1}",
            leak as f64 / (frames * n) as f64 / h,
            rt as f64 / frames as f64,
            fail as f64 / frames as f64,
            (frames * n) as f64 / t / 1e6
        );
    }
}
