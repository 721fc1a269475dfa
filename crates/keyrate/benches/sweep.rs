//! Sweep benchmarks: 400 points, fixed parameters and fully optimised under the finite-key
//! bound, for each protocol family. Named `<family>/<fixed|optimised>/400`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use qkdnet_keyrate::optimise::OptimiseOptions;
use qkdnet_keyrate::{sweep, FiniteKey, Protocol, Security, SweepOptions};
use std::hint::black_box;

fn points() -> Vec<(Option<f64>, f64)> {
    (0..400).map(|i| (Some(i as f64), 0.2 * i as f64)).collect()
}

fn bench(c: &mut Criterion) {
    let families = [
        "decoy-bb84",
        "bbm92-cw",
        "bbm92-pulsed",
        "mdi",
        "sns-aopp",
        "cv-gg02",
    ];
    for name in families {
        let p = Protocol::default_for(name).expect("known protocol");
        let n_free = p.model().free_params().len();
        let sec = Security::Finite(FiniteKey::default());
        let fixed = SweepOptions {
            points: points(),
            free: vec![false; n_free],
            security: sec,
            optimiser: OptimiseOptions::default(),
        };
        let optimised = SweepOptions {
            free: vec![true; n_free],
            ..fixed.clone()
        };
        let mut g = c.benchmark_group(name);
        g.sample_size(10);
        g.bench_function("fixed/400", |b| {
            b.iter(|| black_box(sweep(&p, black_box(&fixed))))
        });
        g.bench_function("optimised/400", |b| {
            b.iter(|| black_box(sweep(&p, black_box(&optimised))))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
