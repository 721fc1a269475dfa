//! Distillation sessions over real transports: TCP on loopback and in-process channels.
#![allow(clippy::unwrap_used, missing_docs)]

use qkdnet_core::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::random::danger::InsecureDeterministic;
use qkdnet_distill::session::Config;
use qkdnet_link::{drive_alice, drive_bob, MemTransport, TcpTransport, Transport, TransportError};
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
