//! Store throughput under concurrent single-key requests (a quick measurement tool):
//! `cargo run --release -p qkdnet-kms --example kms_load -- THREADS SECONDS [postgres]`
//! (the last on a PostgreSQL server started on loopback).
#![allow(missing_docs, clippy::unwrap_used)]
use qkdnet_core::Bits;
use qkdnet_kms::sql::SqlStore;
use qkdnet_kms::{KeyRequest, KeyStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(32);
    let secs: f64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let dir = std::env::temp_dir().join(format!("qkdnet-kms-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pg = args.get(3).is_some_and(|a| a == "postgres");
    let server = pg.then(|| qkdnet_kms::pg::local::LocalServer::start().unwrap());
    let store = Arc::new(match &server {
        Some(s) => SqlStore::postgres(&s.create_db("load").unwrap()).unwrap(),
        None => SqlStore::open(&dir.join("store.sqlite")).unwrap(),
    });
    // 64 Mbit of material for the peer.
    for b in 0..8u64 {
        let words: Vec<u64> = (0..125_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b)
            .collect();
        store
            .add_block("B", b, &Bits::from_words(words, 8_000_000), u64::MAX / 2)
            .unwrap();
    }
    let slaves = vec!["s".to_string()];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = Arc::clone(&store);
            let slaves = slaves.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = KeyRequest {
                        lane: 0,
                        master_sae: "m",
                        slave_saes: &slaves,
                        number: 1,
                        size_bytes: 32,
                    };
                    store.allocate("B", &req, 0).unwrap();
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let wall = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "store={} threads={threads} keys={} keys_per_second={:.0} p50_ms={:.3} p99_ms={:.3}",
        store.backend(),
        lat.len(),
        lat.len() as f64 / wall,
        q(0.5),
        q(0.99)
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
