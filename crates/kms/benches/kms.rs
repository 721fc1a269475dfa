//! CPU cost of the key manager's hot paths, without the disk (stores in memory, so fsync
//! noise stays out): one 256-bit allocation in the store, and one enc_keys + dec_keys pair
//! through `Kme::handle` (routing, JSON, the cut, the peer's assignment, the fetch).
//! Durable throughput under load is `qkdnet bench kms`.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qkdnet_core::Bits;
use qkdnet_kms::etsi::{Kme, KmeConfig, PeerLink};
use qkdnet_kms::sql::SqlStore;
use qkdnet_kms::{Assignment, KeyRequest, KeyStore};
use std::sync::Arc;

fn material(b: u64) -> Bits {
    let words: Vec<u64> = (0..125_000u64)
        .map(|i| (i ^ (b << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    Bits::from_words(words, 8_000_000)
}

struct ToStore(Arc<dyn KeyStore>);

impl PeerLink for ToStore {
    fn send_assignments(&self, _: &str, run: &[Assignment]) -> Result<(), String> {
        self.0.assign_many("A", run, 0).map_err(|e| e.to_string())
    }
}

fn store(c: &mut Criterion) {
    let s = SqlStore::in_memory().unwrap();
    let mut next = 0u64;
    let slaves = vec!["b1".to_string()];
    let req = KeyRequest {
        lane: 0,
        master_sae: "a1",
        slave_saes: &slaves,
        number: 1,
        size_bytes: 32,
    };
    let mut g = c.benchmark_group("kms/store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("allocate_256bit", |b| {
        b.iter(|| {
            if s.available_bytes("B", 0).unwrap() < 32 {
                s.add_block("B", next, &material(next), u64::MAX / 4)
                    .unwrap();
                next += 1;
            }
            s.allocate("B", &req, 0).unwrap()
        })
    });
    g.finish();
}

fn etsi(c: &mut Criterion) {
    let sa: Arc<dyn KeyStore> = Arc::new(SqlStore::in_memory().unwrap());
    let sb: Arc<dyn KeyStore> = Arc::new(SqlStore::in_memory().unwrap());
    let mut cfg = KmeConfig::new("A");
    cfg.sae_kme.insert("a1".into(), "A".into());
    cfg.sae_kme.insert("b1".into(), "B".into());
    let mut cfg_b = cfg.clone();
    cfg_b.kme_id = "B".into();
    let a = Kme::new(
        cfg,
        Arc::clone(&sa),
        Arc::new(ToStore(Arc::clone(&sb))),
        Box::new(|| 0),
    );
    let b = Kme::new(
        cfg_b,
        Arc::clone(&sb),
        Arc::new(ToStore(Arc::clone(&sa))),
        Box::new(|| 0),
    );
    let json = Some("application/json");
    let mut next = 0u64;
    let mut g = c.benchmark_group("kms/etsi");
    g.throughput(Throughput::Elements(1));
    g.bench_function("enc_dec_pair_256bit", |bench| {
        bench.iter(|| {
            if sa.available_bytes("B", 0).unwrap() < 32 {
                sa.add_block("B", next, &material(next), u64::MAX / 4)
                    .unwrap();
                sb.add_block("A", next, &material(next), u64::MAX / 4)
                    .unwrap();
                next += 1;
            }
            let r = a.handle("a1", "POST", "/api/v1/keys/b1/enc_keys", None, json, b"{}");
            let id = r.body.as_ref().unwrap()["keys"][0]["key_ID"]
                .as_str()
                .unwrap()
                .to_string();
            let body = format!(r#"{{"key_IDs":[{{"key_ID":"{id}"}}]}}"#);
            let r = b.handle(
                "b1",
                "POST",
                "/api/v1/keys/a1/dec_keys",
                None,
                json,
                body.as_bytes(),
            );
            assert_eq!(r.status, 200);
        })
    });
    g.finish();
}

criterion_group!(benches, store, etsi);
criterion_main!(benches);
