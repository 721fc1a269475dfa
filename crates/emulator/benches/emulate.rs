//! Criterion benches of the emulator: event level (detections per second) and window
//! level (windows per second) on the Nice 50 km link.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qkdnet_emulator::bbm92::{Bbm92Emulation, Bbm92Emulator, Bbm92Link};
use qkdnet_keyrate::bbm92::Bbm92Cw;

fn nice() -> Bbm92Link {
    Bbm92Link::new(
        Bbm92Cw {
            pump_power_mw: 5.0,
            coincidence_fwhm_ps: 150.0,
            ..Bbm92Cw::default()
        },
        33.5,
        50.0,
        Bbm92Emulation::default(),
        vec![],
    )
    .expect("valid link")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("emulator/bbm92");
    let mut emu = Bbm92Emulator::new(nice(), 0.01).expect("window");
    let events: usize = (0..5)
        .map(|_| {
            let w = emu.step_events();
            w.tags[0].len() + w.tags[1].len()
        })
        .sum::<usize>()
        / 5;
    g.throughput(Throughput::Elements(events as u64));
    g.bench_function("event_window_10ms_33.5dB", |b| b.iter(|| emu.step_events()));
    let mut emu = Bbm92Emulator::new(nice(), 0.5).expect("window");
    g.throughput(Throughput::Elements(1));
    g.bench_function("stats_window_0.5s", |b| b.iter(|| emu.step_stats()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
