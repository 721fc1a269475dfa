//! Distillation sessions over real transports: TCP on loopback and in-process channels.
#![allow(clippy::unwrap_used, missing_docs)]

use qkdnet_core::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::random::danger::InsecureDeterministic;
use qkdnet_distill::session::Config;
use qkdnet_link::{
    drive_alice, drive_bob, pipeline_alice, pipeline_bob, MemTransport, Pipelining, TcpTransport,
    Transport, TransportError,
};
use std::net::{TcpListener, TcpStream};

fn pair(n: usize, q: f64) -> (Bits, Bits) {
    qkdnet_distill::testdata::correlated(n, q, 3)
}

fn psk() -> Bits {
    Bits::from_words(
        (0..4000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 7)
            .collect(),
        4000 * 64,
    )
}

fn run_over(mut ta: impl Transport + Send + 'static, mut tb: impl Transport + Send + 'static) {
    let (a, b) = pair(300_000, 0.03);
    let bob = std::thread::spawn(move || {
        let mut kb = AuthKeys::from_preshared(psk()).unwrap();
        drive_bob(&mut tb, 5, b, &mut kb).unwrap()
    });
    let mut ka = AuthKeys::from_preshared(psk()).unwrap();
    let mut rng = InsecureDeterministic::new(5, "link test");
    let cfg = Config {
        frame_bits: 1 << 14,
        ..Config::default()
    };
    let fa = drive_alice(&mut ta, 5, a, cfg, &mut ka, &mut rng).unwrap();
    let fb = bob.join().unwrap();
    assert!(fa.key == fb.key);
    assert!(fa.provenance.final_bits > 100_000);
}

#[test]
fn session_over_tcp_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    run_over(
        TcpTransport::new(client, 1 << 28).unwrap(),
        TcpTransport::new(server, 1 << 28).unwrap(),
    );
}

#[test]
fn session_over_in_process_channels() {
    let (a, b) = MemTransport::pair();
    run_over(a, b);
}

#[test]
fn in_process_channels_with_latency_delay_each_message_and_keep_order() {
    let one_way = std::time::Duration::from_millis(20);
    let (mut a, mut b) = MemTransport::pair_with_latency(one_way);
    let t = std::time::Instant::now();
    a.send(b"first").unwrap();
    a.send(b"second").unwrap();
    assert_eq!(b.recv().unwrap(), b"first");
    assert!(t.elapsed() >= one_way);
    assert_eq!(b.recv().unwrap(), b"second");
    // A reply takes its own one-way delay.
    let t = std::time::Instant::now();
    b.send(b"reply").unwrap();
    assert_eq!(a.recv().unwrap(), b"reply");
    assert!(t.elapsed() >= one_way);
    drop(b);
    assert!(matches!(a.recv(), Err(TransportError::Closed)));
    // A whole session runs over a delayed pair.
    let (a, b) = MemTransport::pair_with_latency(std::time::Duration::from_micros(200));
    run_over(a, b);
}

#[test]
fn tcp_refuses_oversized_frames_and_reports_close() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    let mut a = TcpTransport::new(client, 1 << 20).unwrap();
    let mut b = TcpTransport::new(server, 16).unwrap();
    a.send(&[0u8; 64]).unwrap();
    assert!(matches!(
        b.recv(),
        Err(TransportError::Oversized { len: 64, max: 16 })
    ));
    // The stream is out of step after a framing error: it stays closed.
    assert!(matches!(b.recv(), Err(TransportError::Closed)));
    drop(a);
}

#[test]
fn several_blocks_in_flight_over_tcp() {
    // Six blocks, three sessions open at once; block 13 is too noisy and block 14 is
    // unknown to Bob: both fail cleanly, the others produce identical keys.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut ta = TcpTransport::new(client, 1 << 28).unwrap();
    let mut tb = TcpTransport::new(server, 1 << 28).unwrap();
    let qber = |id: u64| if id == 13 { 0.2 } else { 0.02 };
    let blocks: Vec<(u64, Bits, Bits)> = (10..16u64)
        .map(|id| {
            let (a, b) = qkdnet_distill::testdata::correlated(60_000, qber(id), id);
            (id, a, b)
        })
        .collect();
    let bob_bits: std::collections::HashMap<u64, Bits> = blocks
        .iter()
        .filter(|(id, ..)| *id != 14)
        .map(|(id, _, b)| (*id, b.duplicate()))
        .collect();
    let p = Pipelining {
        depth: 3,
        pads_per_block: 1024,
    };
    let psk = || {
        Bits::from_words(
            (0..8000u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 7)
                .collect(),
            8000 * 64,
        )
    };
    let bob = std::thread::spawn(move || {
        let mut kb = AuthKeys::from_preshared(psk()).unwrap();
        let mut bits = bob_bits;
        let r = pipeline_bob(&mut tb, |id| bits.remove(&id), 6, p, &mut kb).unwrap();
        (r, kb.consumed_bits())
    });
    let mut ka = AuthKeys::from_preshared(psk()).unwrap();
    let mut rng = InsecureDeterministic::new(9, "pipeline test");
    let cfg = Config {
        frame_bits: 1 << 13,
        ..Config::default()
    };
    let alice_blocks = blocks.iter().map(|(id, a, _)| (*id, a.duplicate()));
    let ra = pipeline_alice(&mut ta, alice_blocks, cfg, p, &mut ka, &mut rng).unwrap();
    let (rb, consumed_b) = bob.join().unwrap();
    assert_eq!(ra.len(), 6);
    assert_eq!(
        ra.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        (10..16).collect::<Vec<_>>()
    );
    for (id, r) in &ra {
        let theirs = &rb.iter().find(|(b, _)| b == id).unwrap().1;
        match (r, theirs) {
            (Ok(ka), Ok(kb)) => {
                assert!(ka.key == kb.key, "block {id}");
                assert!(*id != 13 && *id != 14);
            }
            (Err(_), Err(_)) => assert!(*id == 13 || *id == 14, "block {id} failed"),
            _ => panic!("block {id}: one end has a key, the other not"),
        }
    }
    // Every block reserved its pads at both ends, in the same order.
    assert_eq!(ka.consumed_bits(), 6 * 1024 * 64);
    assert_eq!(consumed_b, 6 * 1024 * 64);
}
