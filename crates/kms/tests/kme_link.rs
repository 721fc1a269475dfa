//! Two KMEs behind their own servers exchange assignments over HTTPS with mutual TLS
//! (`peer::HttpPeerLink` and the `/api/v1/kme/assignments` endpoint): keys cut at A reach
//! B's store, only a neighbour KME may post assignments, and a peer that was down is
//! brought back in step by the next delivery.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
use common::client;

use qkdnet_core::Bits;
use qkdnet_kms::client::{ClientError, SaeClient};
use qkdnet_kms::etsi::{self, Kme, KmeConfig, KME_ASSIGNMENTS};
use qkdnet_kms::peer::{HttpPeerLink, PeerAddr};
use qkdnet_kms::pki::Ca;
use qkdnet_kms::sql::SqlStore;
use qkdnet_kms::KeyStore;
use std::collections::HashMap;
use std::sync::Arc;

#[test]
fn assignments_travel_between_kme_processes_over_mutual_tls() {
    let ca = Ca::new("link CA").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // B runs on its own runtime: dropping it ends every task of B's, as a killed process.
    let new_rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let rt_b = new_rt();
    let la = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let lb = rt_b
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let (addr_a, addr_b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let k = Bits::from_words((0..1000u64).map(|i| i ^ 0xa5a5).collect(), 64_000);
    let sa: Arc<dyn KeyStore> = Arc::new(SqlStore::in_memory().unwrap());
    let sb: Arc<dyn KeyStore> = Arc::new(SqlStore::in_memory().unwrap());
    sa.add_block("B", 1, &k, u64::MAX / 4).unwrap();
    sb.add_block("A", 1, &k, u64::MAX / 4).unwrap();
    let mut cfg = KmeConfig::new("A");
    cfg.sae_kme.insert("a1".into(), "A".into());
    cfg.sae_kme.insert("b1".into(), "B".into());
    let mut cfg_b = cfg.clone();
    cfg_b.kme_id = "B".into();
    let link = |me: &str, peer: &str, addr, rt: &tokio::runtime::Runtime| {
        let peers = HashMap::from([(
            peer.to_string(),
            PeerAddr {
                addr,
                server_name: "localhost".into(),
            },
        )]);
        Arc::new(HttpPeerLink::new(
            rt.handle().clone(),
            client(&ca, me),
            peers,
        ))
    };
    let kme_a = Arc::new(Kme::new(
        cfg,
        Arc::clone(&sa),
        link("A", "B", addr_b, &rt),
        Box::new(|| 0),
    ));
    let kme_b = Arc::new(Kme::new(
        cfg_b,
        Arc::clone(&sb),
        link("B", "A", addr_a, &rt_b),
        Box::new(|| 0),
    ));
    let server = |id: &str| {
        let s = ca.server(id, &["localhost"]).unwrap();
        etsi::server_tls(
            ca.cert_pem().as_bytes(),
            s.cert_pem.as_bytes(),
            s.key_pem.as_bytes(),
        )
        .unwrap()
    };
    let (tls_a, tls_b) = (server("A"), server("B"));
    rt.spawn(etsi::serve(la, tls_a, kme_a));
    rt_b.spawn(etsi::serve(lb, Arc::clone(&tls_b), Arc::clone(&kme_b)));
    let (ca1, cb1) = (client(&ca, "a1"), client(&ca, "b1"));
    rt.block_on(async {
        let mut a1 = SaeClient::connect(addr_a, Arc::clone(&ca1), "localhost")
            .await
            .unwrap();
        let mut b1 = SaeClient::connect(addr_b, Arc::clone(&cb1), "localhost")
            .await
            .unwrap();
        // A cut at A reaches B's store over the KME link.
        let keys = a1.enc_keys("b1", 2, 256).await.unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let got = b1.dec_keys("a1", &ids).await.unwrap();
        assert!(keys.iter().zip(&got).all(|(x, y)| x.bytes == y.bytes));
        // An SAE may not post assignments, even with a valid certificate.
        match b1.post_json(KME_ASSIGNMENTS, "[]".into()).await {
            Err(ClientError::Status { status: 401, .. }) => {}
            other => panic!("an SAE posted assignments: {:?}", other.map(|_| ())),
        }
    });
    // B goes down: A's requests fail and its lane falls behind.
    rt_b.shutdown_background();
    let r = rt.block_on(async {
        let mut a1 = SaeClient::connect(addr_a, Arc::clone(&ca1), "localhost")
            .await
            .unwrap();
        a1.enc_keys("b1", 1, 256).await
    });
    assert!(
        matches!(r, Err(ClientError::Status { status: 503, .. })),
        "{:?}",
        r.map(|_| ())
    );
    // B is back on the same address: the next request re-sends the lost cut first.
    let rt_b = new_rt();
    let lb = rt_b
        .block_on(tokio::net::TcpListener::bind(addr_b))
        .unwrap();
    rt_b.spawn(etsi::serve(lb, tls_b, kme_b));
    rt.block_on(async {
        let mut a1 = SaeClient::connect(addr_a, ca1, "localhost").await.unwrap();
        let mut b1 = SaeClient::connect(addr_b, cb1, "localhost").await.unwrap();
        let keys = a1.enc_keys("b1", 1, 256).await.unwrap();
        let got = b1.dec_keys("a1", &[keys[0].id.as_str()]).await.unwrap();
        assert_eq!(got[0].bytes, keys[0].bytes);
    });
    for (s, peer) in [(&sa, "B"), (&sb, "A")] {
        assert!(s.accounting(peer).unwrap().balances());
    }
    assert_eq!(
        sa.available_bytes("B", 0).unwrap(),
        sb.available_bytes("A", 0).unwrap()
    );
}
