//! The planner on the shipped networks: one whole plan (channel assignment, every link's
//! optimised finite-key rate, SAE pairs), without and with the classical-load search.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use qkdnet_network::plan::{plan, PlanOptions};
use std::path::Path;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../networks");
    for name in ["nice-4-node", "zheng-star-20", "dwdm-40-user"] {
        let Ok(net) = qkdnet_network::spec::load(&root.join(format!("{name}.toml"))) else {
            continue;
        };
        let quick = PlanOptions::PLACEMENT;
        c.bench_function(&format!("plan {name}"), |b| {
            b.iter(|| std::hint::black_box(plan(&net, &quick)))
        });
        c.bench_function(&format!("plan {name} with survival"), |b| {
            b.iter(|| std::hint::black_box(plan(&net, &PlanOptions::default())))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
