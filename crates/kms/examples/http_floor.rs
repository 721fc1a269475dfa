//! The floor of the ETSI 014 server's request path: requests per second, over mutual TLS
//! on loopback from 32 SAE connections for 3 s, of a request that never reaches the key
//! store (`status` for an unknown slave, answered 400). Everything but the store: TLS,
//! HTTP, routing, JSON, the hop to the blocking pool, the client side.
//! `cargo run --release -p qkdnet-kms --example http_floor`.
#![allow(missing_docs, clippy::unwrap_used)]
use qkdnet_kms::client::SaeClient;
use qkdnet_kms::etsi::{self, Kme, KmeConfig, PeerLink};
use qkdnet_kms::sql::SqlStore;
use qkdnet_kms::Assignment;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Nowhere;
impl PeerLink for Nowhere {
    fn send_assignments(&self, _: &str, _: &[Assignment]) -> Result<(), String> {
        Err("none".into())
    }
}

fn main() {
    let ca = qkdnet_kms::pki::Ca::new("x").unwrap();
    let s = ca.server("A", &["localhost"]).unwrap();
    let tls = etsi::server_tls(
        ca.cert_pem().as_bytes(),
        s.cert_pem.as_bytes(),
        s.key_pem.as_bytes(),
    )
    .unwrap();
    let mut cfg = KmeConfig::new("A");
    for i in 0..32 {
        cfg.sae_kme.insert(format!("a{i}"), "A".into());
    }
    let kme = Arc::new(Kme::new(
        cfg,
        Arc::new(SqlStore::in_memory().unwrap()),
        Arc::new(Nowhere),
        Box::new(|| 0),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = l.local_addr().unwrap();
    rt.spawn(etsi::serve(l, tls, kme));
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let c = ca.client(&format!("a{i}")).unwrap();
            etsi::client_tls(
                ca.cert_pem().as_bytes(),
                c.cert_pem.as_bytes(),
                c.key_pem.as_bytes(),
            )
            .unwrap()
        })
        .collect();
    let n = rt.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(3);
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|tls| {
                tokio::spawn(async move {
                    let mut c = SaeClient::connect(addr, tls, "localhost").await.unwrap();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let _ = c.status("nobody").await;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n
    });
    println!("requests_per_second={:.0}", n as f64 / 3.0);
}
