//! Key relay between KME processes: A — B — C, each KME behind its own server and
//! runtime, linked over HTTPS with mutual TLS. A key that SAE a1 at A requests for c1 at C
//! crosses the trusted node B (one-time-padded on the B–C hop) and c1 fetches it at C; a
//! relay that cannot reach C fails cleanly and leaves nothing held; books balance.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
use common::client;

use qkdnet_core::Bits;
use qkdnet_kms::client::{ClientError, SaeClient};
use qkdnet_kms::etsi::{self, Kme, KmeConfig};
use qkdnet_kms::peer::{HttpPeerLink, PeerAddr};
use qkdnet_kms::pki::Ca;
use qkdnet_kms::sql::SqlStore;
use qkdnet_kms::KeyStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

fn material(seed: u64) -> Bits {
    Bits::from_words(
        (0..1000u64)
            .map(|i| (i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect(),
        64_000,
    )
}

struct Node {
    rt: tokio::runtime::Runtime,
    kme: Arc<Kme>,
    store: Arc<dyn KeyStore>,
}

fn config(me: &str, links: &[&str], routes: &[(&str, &str)]) -> KmeConfig {
    let mut c = KmeConfig::new(me);
    for (sae, kme) in [("a1", "A"), ("b1", "B"), ("c1", "C"), ("d1", "D")] {
        c.sae_kme.insert(sae.into(), kme.into());
    }
    c.links = links.iter().map(|s| s.to_string()).collect();
    for (dest, via) in routes {
        c.routes.insert(dest.to_string(), vec![via.to_string()]);
    }
    c
}

fn start(ca: &Ca, node: &Node, addr: SocketAddr) {
    let s = ca
        .server(&node.kme.config().kme_id, &["localhost"])
        .unwrap();
    let tls = etsi::server_tls(
        ca.cert_pem().as_bytes(),
        s.cert_pem.as_bytes(),
        s.key_pem.as_bytes(),
    )
    .unwrap();
    let l = node
        .rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .unwrap();
    node.rt.spawn(etsi::serve(l, tls, Arc::clone(&node.kme)));
}

/// A KME named `me` with its own runtime, linked to `links` (addresses in `addr`), with
/// configured `routes` and a block of material shared with each peer in `blocks`.
fn node(
    ca: &Ca,
    addr: &HashMap<&str, SocketAddr>,
    me: &str,
    links: &[&str],
    routes: &[(&str, &str)],
    blocks: &[(&str, u64)],
) -> Node {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(SqlStore::in_memory().unwrap());
    for (peer, seed) in blocks {
        store
            .add_block(peer, 1, &material(*seed), u64::MAX / 4)
            .unwrap();
    }
    let peers = links
        .iter()
        .map(|p| {
            (
                p.to_string(),
                PeerAddr {
                    addr: addr[p],
                    server_name: "localhost".into(),
                },
            )
        })
        .collect();
    let link = HttpPeerLink::new(rt.handle().clone(), client(ca, me), peers);
    let kme = Arc::new(Kme::new(
        config(me, links, routes),
        Arc::clone(&store),
        Arc::new(link),
        Box::new(|| 0),
    ));
    Node { rt, kme, store }
}

/// A free loopback address for each KME.
fn addresses<'a>(kmes: &[&'a str]) -> HashMap<&'a str, SocketAddr> {
    kmes.iter()
        .map(|k| {
            let a = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            (*k, a)
        })
        .collect()
}

#[test]
fn a_key_crosses_a_trusted_node_between_kme_processes() {
    let ca = Ca::new("relay CA").unwrap();
    let addr = addresses(&["A", "B", "C"]);
    // A–B share material seeded 1, B–C seeded 2.
    let mk = |me, links, routes, blocks| node(&ca, &addr, me, links, routes, blocks);
    let a = mk("A", &["B"], &[("C", "B")], &[("B", 1)]);
    let b = mk("B", &["A", "C"], &[], &[("A", 1), ("C", 2)]);
    let c = mk("C", &["B"], &[("A", "B")], &[("B", 2)]);
    for (n, id) in [(&a, "A"), (&b, "B"), (&c, "C")] {
        start(&ca, n, addr[id]);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ta, tc) = (client(&ca, "a1"), client(&ca, "c1"));
    let relayed = rt.block_on(async {
        let mut a1 = SaeClient::connect(addr["A"], Arc::clone(&ta), "localhost")
            .await
            .unwrap();
        let mut c1 = SaeClient::connect(addr["C"], Arc::clone(&tc), "localhost")
            .await
            .unwrap();
        // The stock for a relayed slave is what the first hop's link holds.
        let st = a1.status("c1").await.unwrap();
        assert_eq!(st["target_KME_ID"], "C");
        assert_eq!(st["stored_key_count"], 4000 / 32);
        let keys = a1.enc_keys("c1", 2, 256).await.unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let got = c1.dec_keys("a1", &ids).await.unwrap();
        assert!(keys.iter().zip(&got).all(|(x, y)| x.bytes == y.bytes));
        // Once only.
        assert!(c1.dec_keys("a1", &ids[..1]).await.is_err());
        // Only a neighbour KME may carry a hop, and only a well-formed one.
        let hop = |visited: &str| {
            format!(
                r#"{{"origin":"A","destination":"C","master_sae":"a1","slave_saes":["c1"],"key_ID":"x","size_bytes":32,"expires_at":9,"pad":null,"visited":[{visited}]}}"#
            )
            .replace("key_ID", "key_id")
        };
        let mut as_b = SaeClient::connect(addr["C"], client(&ca, "B"), "localhost").await.unwrap();
        for (body, want) in [
            (hop(r#""X""#), 400),  // the sender is not the last KME visited
            (hop(r#""A","B""#), 409), // no such key at C
            ("{".to_string(), 400),
        ] {
            match as_b.post_json(qkdnet_kms::hops::KME_RELAY, body.clone()).await {
                Err(ClientError::Status { status, .. }) => assert_eq!(status, want, "{body}"),
                other => panic!("{body}: {:?}", other.map(|_| ())),
            }
        }
        let mut as_sae = SaeClient::connect(addr["C"], client(&ca, "b1"), "localhost").await.unwrap();
        match as_sae.post_json(qkdnet_kms::hops::KME_RELAY, hop(r#""A","B""#)).await {
            Err(ClientError::Status { status: 401, .. }) => {}
            other => panic!("an SAE carried a relay hop: {:?}", other.map(|_| ())),
        }
        keys.len()
    });
    assert_eq!(relayed, 2);
    // C is down: the relay fails at B, A discards the key, nothing is held anywhere.
    c.rt.shutdown_background();
    let before = a.store.accounting("B").unwrap();
    let r = rt.block_on(async {
        let mut a1 = SaeClient::connect(addr["A"], Arc::clone(&ta), "localhost")
            .await
            .unwrap();
        a1.enc_keys("c1", 1, 256).await
    });
    match r {
        Err(ClientError::Status {
            status: 503, body, ..
        }) => {
            assert!(body.contains("key relay failed"), "{body}")
        }
        other => panic!("relay to a dead KME: {:?}", other.map(|_| ())),
    }
    let after = a.store.accounting("B").unwrap();
    assert_eq!(after.discarded_bits, before.discarded_bits + 256);
    assert_eq!(after.delivered_bits, before.delivered_bits);
    for (s, peer) in [(&a.store, "B"), (&b.store, "A"), (&b.store, "C")] {
        let acc = s.accounting(peer).unwrap();
        assert!(acc.balances(), "{peer}: {acc:?}");
    }
    // What reached C before it went down: two relayed keys, both delivered, each under a
    // pad cut from the B–C link and used once at both ends (the third pad, cut when C
    // was down, is discarded at B).
    let acc_c = c.store.accounting("relay:A").unwrap();
    assert_eq!(
        (acc_c.produced_bits, acc_c.delivered_bits, acc_c.held_bits),
        (512, 512, 0)
    );
    let pads_b = b.store.accounting("C").unwrap();
    assert_eq!(
        (pads_b.delivered_bits, pads_b.discarded_bits % 256),
        (512, 0)
    );
    assert!(pads_b.discarded_bits >= 256);
    let pads_c = c.store.accounting("B").unwrap();
    assert_eq!((pads_c.delivered_bits, pads_c.held_bits), (512, 0));
    // A's keys came from the A–B link; B took them as relay agent, nothing waits there.
    assert_eq!(b.store.accounting("A").unwrap().held_bits, 0);
}

/// Routes found by the KMEs themselves (no `[routes]`): in the diamond A–B–D, A–C–D with no
/// material on B–D, the advertised bottlenecks send A's key for d1 through C; a
/// non-neighbour cannot advertise, and a malformed advertisement is refused.
#[test]
fn advertised_routes_steer_relayed_keys_to_the_path_with_material() {
    let ca = Ca::new("routing CA").unwrap();
    let addr = addresses(&["A", "B", "C", "D"]);
    let mk = |me, links, blocks| node(&ca, &addr, me, links, &[], blocks);
    // Material: A–B 1, A–C 2, C–D 3; none on B–D.
    let a = mk("A", &["B", "C"], &[("B", 1), ("C", 2)]);
    let b = mk("B", &["A", "D"], &[("A", 1)]);
    let c = mk("C", &["A", "D"], &[("A", 2), ("D", 3)]);
    let d = mk("D", &["B", "C"], &[("C", 3)]);
    for (n, id) in [(&a, "A"), (&b, "B"), (&c, "C"), (&d, "D")] {
        start(&ca, n, addr[id]);
    }
    assert!(!a.kme.has_route("D"), "a route before any advertisement");
    // Advertisements run on blocking threads (the peer link blocks on its runtime).
    let everyone = [&a, &b, &c, &d];
    for _ in 0..2 {
        for n in everyone {
            let kme = Arc::clone(&n.kme);
            let failed = std::thread::spawn(move || kme.advertise_routes())
                .join()
                .unwrap();
            assert!(failed.is_empty(), "{failed:?}");
        }
    }
    assert_eq!(a.kme.learnt_next_hop("D", &["A".into()]), Some("C".into()));
    // B's view: D is a neighbour without material, A–C–D is the way.
    assert_eq!(b.kme.learnt_next_hop("D", &["B".into()]), Some("A".into()));
    let advert = c.kme.route_advert("A");
    let to_d = advert.routes.iter().find(|r| r.destination == "D").unwrap();
    // 64 000 bits on C–D, half of them in the lane C masters.
    assert_eq!((to_d.hops, to_d.bottleneck_bytes), (1, 4000));
    assert!(
        !advert.routes.iter().any(|r| r.destination == "A"),
        "split horizon: {advert:?}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut a1 = SaeClient::connect(addr["A"], client(&ca, "a1"), "localhost")
            .await
            .unwrap();
        let mut d1 = SaeClient::connect(addr["D"], client(&ca, "d1"), "localhost")
            .await
            .unwrap();
        let keys = a1.enc_keys("d1", 3, 256).await.unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let got = d1.dec_keys("a1", &ids).await.unwrap();
        assert!(keys.iter().zip(&got).all(|(x, y)| x.bytes == y.bytes));
        // Only a neighbour KME may advertise, and only sensible entries.
        let bad = r#"{"routes":[{"destination":"D","hops":0,"bottleneck_bytes":5}]}"#;
        let mut as_c = SaeClient::connect(addr["A"], client(&ca, "C"), "localhost")
            .await
            .unwrap();
        match as_c
            .post_json(qkdnet_kms::routing::KME_ROUTES, bad.into())
            .await
        {
            Err(ClientError::Status { status: 400, .. }) => {}
            other => panic!("hops 0 accepted: {:?}", other.map(|_| ())),
        }
        let good = r#"{"routes":[{"destination":"D","hops":1,"bottleneck_bytes":5}]}"#;
        let mut as_d = SaeClient::connect(addr["A"], client(&ca, "D"), "localhost")
            .await
            .unwrap();
        match as_d
            .post_json(qkdnet_kms::routing::KME_ROUTES, good.into())
            .await
        {
            Err(ClientError::Status { status: 401, .. }) => {}
            other => panic!("a non-neighbour advertised: {:?}", other.map(|_| ())),
        }
    });
    // The keys went A → C → D: A's lane to C paid, its lane to B did not.
    assert_eq!(a.store.accounting("C").unwrap().delivered_bits, 3 * 256);
    assert_eq!(a.store.accounting("B").unwrap().delivered_bits, 0);
    for (s, peer) in [(&a.store, "B"), (&a.store, "C"), (&c.store, "D")] {
        let acc = s.accounting(peer).unwrap();
        assert!(acc.balances(), "{peer}: {acc:?}");
    }
}
