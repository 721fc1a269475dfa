//! Distillation kernels on seeded inputs: Cascade frames, Toeplitz hashing, polynomial
//! hashing. Throughput is reported in bits of sifted key (criterion `Throughput::Elements`).
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qkdnet_core::Bits;
use qkdnet_distill::cascade::{reconcile_local, Schedule, Shuffles, Variant};
use qkdnet_distill::{polyhash, toeplitz};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::sync::Arc;

fn random_bits(rng: &mut impl Rng, n: usize) -> Bits {
    Bits::from_words((0..n.div_ceil(64)).map(|_| rng.gen()).collect(), n)
}

fn noisy(rng: &mut impl Rng, a: &Bits, q: f64) -> Bits {
    let mut b = a.duplicate();
    for i in 0..a.len() {
        if rng.gen_bool(q) {
            b.flip(i);
        }
    }
    b
}

/// Frames cycled through per Cascade benchmark (their state is far larger than L2).
const FRAMES: usize = 64;

fn cascade(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for (variant, n) in [(Variant::Original, 10_000), (Variant::YanEtAl, 100_000)] {
        let mut g = c.benchmark_group(format!("cascade/{variant:?}/{n}"));
        g.throughput(Throughput::Elements(n as u64));
        g.sample_size(20);
        let sh = Arc::new(Shuffles::new([3; 32], n, 10));
        for q in [0.01, 0.02, 0.05] {
            // Distinct frames in turn, as a block's frames come: one frame reconciled over
            // and over would keep its whole state (and its error pattern's path through
            // the caches) hot and read ~1.5x faster than a session can run.
            let frames: Vec<(Bits, Bits)> = (0..FRAMES)
                .map(|_| {
                    let a = random_bits(&mut rng, n);
                    let b = noisy(&mut rng, &a, q);
                    (a, b)
                })
                .collect();
            let mut next = 0;
            g.bench_function(format!("qber={q}"), |bench| {
                bench.iter(|| {
                    let (a, b) = &frames[next % FRAMES];
                    next += 1;
                    let sched = Schedule::new(variant, q, n);
                    black_box(reconcile_local(a, b.duplicate(), sched, &sh).unwrap())
                })
            });
        }
        g.finish();
    }
}

fn hashing(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let mut g = c.benchmark_group("toeplitz");
    g.sample_size(10);
    for n in [1_000_000usize, 10_000_000, 100_000_000] {
        let m = n / 2;
        let x = random_bits(&mut rng, n);
        let s = random_bits(&mut rng, n + m - 1);
        g.throughput(Throughput::Elements(n as u64));
        // Steady state of a running link: plans and buffers reused across blocks.
        // `hash_expanded` is what privacy amplification runs (the seed expanded from the
        // shared draw); `hash` takes a literal seed and converts it too.
        let mut hasher = toeplitz::Hasher::new();
        g.bench_function(format!("{}/pa/n={n}", hasher.backend().name()), |b| {
            b.iter(|| black_box(hasher.hash_expanded(&s, &x, m).unwrap()))
        });
        g.bench_function(
            format!("{}/literal-seed/n={n}", hasher.backend().name()),
            |b| b.iter(|| black_box(hasher.hash(&s, &x, m).unwrap())),
        );
        if n == 1_000_000 {
            let mut float = toeplitz::Hasher::with_backend(toeplitz::Backend::Float);
            g.bench_function(format!("float-f64/n={n}"), |b| {
                b.iter(|| black_box(float.hash(&s, &x, m).unwrap()))
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("polyhash");
    let n = 10_000_000usize;
    let x = random_bits(&mut rng, n);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("n=1e7", |b| {
        b.iter(|| {
            let mut h = polyhash::PolyHash::new(0x1234_5678_9abc_def0_1357_9bdf_2468_ace0);
            h.update_words(x.words());
            black_box(h.finish())
        })
    });
    g.finish();
}

/// AOPP on 10⁶ raw SNS bits (Frankfurt–Kehl-like error rates: 8 % in Bob's not-sent group,
/// 50 % in his sent group): Bob's pairing, Alice's parities, both ends' kept keys.
fn aopp(c: &mut Criterion) {
    use qkdnet_distill::aopp;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let n = 1_000_000;
    let bob = random_bits(&mut rng, n);
    let mut alice = bob.duplicate();
    for i in 0..n {
        if rng.gen_bool(if bob.get(i) { 0.08 } else { 0.5 }) {
            alice.flip(i);
        }
    }
    let mut g = c.benchmark_group("aopp");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("pair_and_keep_1e6", |b| {
        b.iter(|| {
            let pairs = aopp::bob_pairs(&bob, &mut rng);
            let odd = aopp::alice_odd(&alice, &pairs).unwrap();
            let ka = aopp::kept(&alice, &pairs, &odd).unwrap();
            let kb = aopp::kept(&bob, &pairs, &odd).unwrap();
            black_box((ka.len(), kb.len()))
        })
    });
    g.finish();
}

/// CV reconciliation: one 2¹⁸-bit frame at SNR 0.03 (a 120 km-class link) with a code
/// designed for SNR 0.03/1.15 (a short frame needs the wider margin), Bob's MDR
/// announcement and syndrome, and Alice's decoding of it (one thread).
fn cv(c: &mut Criterion) {
    use qkdnet_distill::cv::{code, design, gaussian_channel, mdr};
    let snr = 0.03;
    let ens = design::design(&design::DesignTarget::at(snr / 1.15)).expect("design");
    let code = code::MetCode::new(&ens, 1 << 18, 1).expect("code");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let n = code.len();
    let g = f64::sqrt(snr);
    let (x, y) = gaussian_channel(n, snr, &mut rng);
    let bits = random_bits(&mut rng, n);
    let mut grp = c.benchmark_group("cv");
    grp.throughput(Throughput::Elements(n as u64));
    grp.sample_size(10);
    grp.bench_function("bob_mdr_syndrome_2e18", |b| {
        b.iter(|| {
            let ann = mdr::bob_announce(&y, &bits, 8);
            black_box((ann.norms.len(), code.syndrome(&bits).len()))
        })
    });
    let ann = mdr::bob_announce(&y, &bits, 8);
    let syn = code.syndrome(&bits);
    grp.bench_function("alice_decode_2e18_snr0.03", |b| {
        b.iter(|| {
            let llr = mdr::alice_llr(&x, &ann, g, 1.0);
            black_box(code.decode(&llr, &syn, 300).map(|w| w.1))
        })
    });
    // The same frame eight times in the decoder's SIMD lanes (throughput: all eight).
    let llr = mdr::alice_llr(&x, &ann, g, 1.0);
    let eight: Vec<(&[f32], &Bits)> = (0..code::LANES).map(|_| (llr.as_slice(), &syn)).collect();
    grp.throughput(Throughput::Elements((n * code::LANES) as u64));
    grp.bench_function("alice_decode_8x2e18_lanes_snr0.03", |b| {
        b.iter(|| black_box(code.decode_many(&eight, 300).len()))
    });
    grp.finish();
}

criterion_group!(benches, cascade, hashing, aopp, cv);
criterion_main!(benches);
