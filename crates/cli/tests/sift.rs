//! `qkdnet sift alice|bob` as two processes on emulated Nice recordings: Alice never sees
//! Bob's recording, locks her clock model on his announcements, and both ends write the
//! same number of sifted key bits with the link's error rates; bad flags and files are
//! refused with the flag or file named.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{qkdnet, root};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkdnet-sift-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Emulated recordings of the Nice 50 km link with a weak pump (the scenario's clocks:
/// Bob 0.25 s off, 7 ps/s apart), and a pre-shared key.
fn recordings(d: &Path, seconds: &str) {
    let scenario = std::fs::read_to_string(root().join("scenarios/nice-50km.toml"))
        .unwrap()
        .replace("pump_power_mw = 5.0", "pump_power_mw = 0.3");
    std::fs::write(d.join("s.toml"), scenario).unwrap();
    let (code, _, err) = qkdnet(&[
        "emulate",
        "--scenario",
        d.join("s.toml").to_str().unwrap(),
        "--seconds",
        seconds,
        "--formats",
        "qtt",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let psk: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("psk.bin"), psk).unwrap();
}

/// A connected pair of TCP transports on loopback.
fn tcp_pair() -> (qkdnet_link::TcpTransport, qkdnet_link::TcpTransport) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (
        qkdnet_link::TcpTransport::new(c, 1 << 30).unwrap(),
        qkdnet_link::TcpTransport::new(s, 1 << 30).unwrap(),
    )
}

/// A pre-shared authentication key (1024 bits) for one pair of parties.
fn psk_bits(seed: u64) -> qkdnet_core::Bits {
    qkdnet_core::Bits::from_words((0..16u64).map(|i| i * 0x9e37_79b9 + seed).collect(), 1024)
}

/// The relay and the two users as three parties over TCP on loopback: the relay announces
/// `events` to both, Bob runs in a thread, Alice here. Alice's and Bob's results.
fn three_parties<A, B: Send + 'static>(
    events: Vec<qkdnet_wire::RelayEvent>,
    bob: impl FnOnce(
            &mut dyn qkdnet_link::Transport,
            &mut qkdnet_distill::auth::AuthKeys,
            &mut dyn qkdnet_link::Transport,
            &mut qkdnet_distill::auth::AuthKeys,
        ) -> B
        + Send
        + 'static,
    alice: impl FnOnce(
        &mut dyn qkdnet_link::Transport,
        &mut qkdnet_distill::auth::AuthKeys,
        &mut dyn qkdnet_link::Transport,
        &mut qkdnet_distill::auth::AuthKeys,
    ) -> A,
) -> (A, B) {
    use qkdnet_distill::auth::AuthKeys;
    let pool = |seed| AuthKeys::from_preshared(psk_bits(seed)).unwrap();
    // Links: relay–Alice, relay–Bob, Alice–Bob; pools 1 (relay–Alice), 2 (relay–Bob),
    // 3 (Alice–Bob).
    let (mut ra, mut ar) = tcp_pair();
    let (mut rb, mut br) = tcp_pair();
    let (mut ab, mut ba) = tcp_pair();
    let relay = std::thread::spawn(move || {
        let (mut ka, mut kb) = (pool(1), pool(2));
        qkdnet_link::sift_mdi::relay_announce(&mut ra, &mut ka, &mut rb, &mut kb, 0, &events)
            .unwrap();
    });
    let bob = std::thread::spawn(move || bob(&mut br, &mut pool(2), &mut ba, &mut pool(3)));
    let a = alice(&mut ar, &mut pool(1), &mut ab, &mut pool(3));
    relay.join().unwrap();
    (a, bob.join().unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn alice_and_bob_sift_their_own_recordings_over_tcp() {
    let d = tmp("two");
    recordings(&d, "9");
    let addr = format!("127.0.0.1:{}", free_port());
    let path = |f: &str| d.join(f).to_str().unwrap().to_string();
    let alice = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
        .args([
            "sift",
            "alice",
            "--records",
            &path("alice.qtt"),
            "--listen",
            &addr,
            "--psk",
            &path("psk.bin"),
            "--out",
            &path("alice.bits"),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, bob_out, err) = qkdnet(&[
        "sift",
        "bob",
        "--records",
        &path("bob.qtt"),
        "--connect",
        &addr,
        "--psk",
        &path("psk.bin"),
        "--out",
        &path("bob.bits"),
        "--json",
    ]);
    assert_eq!(code, 0, "bob: {err}");
    let a = alice.wait_with_output().unwrap();
    assert!(
        a.status.success(),
        "alice: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    let ja: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_str(&bob_out).unwrap();
    // The same tallies at both ends; Alice found the model from the announcements.
    for f in [
        "batches",
        "key_bits",
        "test_coincidences",
        "test_errors",
        "key_off_peak",
    ] {
        assert_eq!(ja[f], jb[f], "{f}");
    }
    assert!(
        ja["locked_at_batch"].as_u64().is_some_and(|k| k <= 3),
        "{ja}"
    );
    let ka = std::fs::read(d.join("alice.bits")).unwrap();
    let kb = std::fs::read(d.join("bob.bits")).unwrap();
    assert_eq!(ka.len(), kb.len());
    assert_eq!(ka.len() as u64 * 8, ja["key_bits"].as_u64().unwrap());
    assert!(ka.len() > 500, "{} key bytes", ka.len());
    let errors: u32 = ka.iter().zip(&kb).map(|(x, y)| (x ^ y).count_ones()).sum();
    let qber_z = f64::from(errors) / (8 * ka.len()) as f64;
    // The emulator's closed forms at this pump: QBER_X 2.6 %; QBER_Z from bin edges and
    // accidentals (through both fold candidates) under 1.5 %.
    assert!(qber_z < 0.015, "QBER_Z {qber_z}");
    let qber_x = ja["qber_x"].as_f64().unwrap();
    assert!((0.015..0.04).contains(&qber_x), "QBER_X {qber_x}");

    // A pre-shared key with pads for two batches only: Bob cannot authenticate the third
    // announcement and stops; Alice sees the connection drop before the stream's end, and
    // neither writes a key file.
    std::fs::write(
        d.join("short.bin"),
        &std::fs::read(d.join("psk.bin")).unwrap()[..48],
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let alice = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
        .args([
            "sift",
            "alice",
            "--records",
            &path("alice.qtt"),
            "--listen",
            &addr,
            "--psk",
            &path("short.bin"),
            "--out",
            &path("alice2.bits"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, _, err) = qkdnet(&[
        "sift",
        "bob",
        "--records",
        &path("bob.qtt"),
        "--connect",
        &addr,
        "--psk",
        &path("short.bin"),
        "--out",
        &path("bob2.bits"),
    ]);
    assert_eq!(code, 1, "bob: {err}");
    assert!(err.contains("authentication"), "{err}");
    let a = alice.wait_with_output().unwrap();
    let aerr = String::from_utf8_lossy(&a.stderr);
    assert_eq!(a.status.code(), Some(1), "alice: {aerr}");
    assert!(aerr.contains("nothing written"), "{aerr}");
    assert!(!d.join("alice2.bits").exists() && !d.join("bob2.bits").exists());
}

/// Runs both ends on the recordings in `d` (extra flags for both); Alice's and Bob's JSON.
fn run_pair(d: &Path, extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let addr = format!("127.0.0.1:{}", free_port());
    let path = |f: &str| d.join(f).to_str().unwrap().to_string();
    let mut args_a = vec![
        "sift".to_string(),
        "alice".into(),
        "--records".into(),
        path("alice.qtt"),
        "--listen".into(),
        addr.clone(),
        "--psk".into(),
        path("psk.bin"),
        "--out".into(),
        path("alice.bits"),
        "--json".into(),
    ];
    args_a.extend(extra.iter().map(|x| x.to_string()));
    let alice = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
        .args(&args_a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ra, rb) = (path("bob.qtt"), path("bob.bits"));
    let (psk, addr_b) = (path("psk.bin"), addr.clone());
    let mut args_b = vec![
        "sift",
        "bob",
        "--records",
        &ra,
        "--connect",
        &addr_b,
        "--psk",
        &psk,
        "--out",
        &rb,
        "--json",
    ];
    args_b.extend_from_slice(extra);
    let (code, bob_out, err) = qkdnet(&args_b);
    assert_eq!(code, 0, "bob: {err}");
    let a = alice.wait_with_output().unwrap();
    assert!(
        a.status.success(),
        "alice: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    (
        serde_json::from_slice(&a.stdout).unwrap(),
        serde_json::from_str(&bob_out).unwrap(),
    )
}

/// Three seconds without light at both nodes (a fibre cut): Alice's tracker loses the
/// peak, she acquires again on the announcements after it, and key resumes.
#[test]
fn alice_acquires_again_after_an_outage() {
    use qkdnet_core::timetag::{read_qtt, write_qtt};
    let d = tmp("outage");
    recordings(&d, "16");
    for who in ["alice", "bob"] {
        let p = d.join(format!("{who}.qtt"));
        let tags = read_qtt(&mut std::fs::File::open(&p).unwrap()).unwrap();
        // Each node's own clock: Bob's runs 0.25 s ahead (the scenario), so his gap is too.
        let shift = if who == "bob" { 250_000_000_000 } else { 0 };
        let kept: Vec<_> = tags
            .into_iter()
            .filter(|t| {
                !(6_000_000_000_000 + shift..9_000_000_000_000 + shift).contains(&t.time_ps)
            })
            .collect();
        write_qtt(&mut std::fs::File::create(&p).unwrap(), &kept).unwrap();
    }
    let (ja, jb) = run_pair(&d, &["--batch-s", "0.5"]);
    assert_eq!(ja["key_bits"], jb["key_bits"]);
    assert!(ja["lock_losses"].as_u64().unwrap() >= 1, "{ja}");
    // Locked again after the gap (batch 18 ends at 9 s), with key after it.
    assert!(ja["locked_at_batch"].as_u64().unwrap() >= 18, "{ja}");
    let ka = std::fs::read(d.join("alice.bits")).unwrap();
    let kb = std::fs::read(d.join("bob.bits")).unwrap();
    let errors: u32 = ka.iter().zip(&kb).map(|(x, y)| (x ^ y).count_ones()).sum();
    assert!(
        f64::from(errors) / ((8 * ka.len()) as f64) < 0.015,
        "{errors} errors in {} bytes",
        ka.len()
    );
}

#[test]
fn bad_flags_and_files_are_named() {
    let d = tmp("bad");
    let path = |f: &str| d.join(f).to_str().unwrap().to_string();
    std::fs::write(d.join("psk.bin"), [7u8; 512]).unwrap();
    std::fs::write(d.join("junk.qtt"), b"not a recording at all").unwrap();
    let run = |args: &[&str]| {
        let mut v = vec!["sift"];
        v.extend_from_slice(args);
        qkdnet(&v)
    };
    let (code, _, err) = run(&[
        "alice",
        "--records",
        &path("junk.qtt"),
        "--listen",
        "127.0.0.1:0",
        "--psk",
        &path("psk.bin"),
        "--out",
        &path("o.bits"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--records") && err.contains("junk.qtt"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "bob",
        "--records",
        &path("junk.qtt"),
        "--psk",
        &path("psk.bin"),
        "--out",
        &path("o.bits"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--connect"), "{err}");
    let (code, _, err) = run(&[
        "alice",
        "--records",
        &path("junk.qtt"),
        "--listen",
        "127.0.0.1:0",
        "--psk",
        &path("psk.bin"),
        "--out",
        &path("o.bits"),
        "--window-ps",
        "20000",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--window-ps"), "{err}");
    std::fs::write(d.join("short.bin"), [1u8; 4]).unwrap();
    let (code, _, err) = run(&[
        "alice",
        "--records",
        &path("junk.qtt"),
        "--listen",
        "127.0.0.1:0",
        "--psk",
        &path("short.bin"),
        "--out",
        &path("o.bits"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--psk"), "{err}");
    assert!(!d.join("o.bits").exists(), "no output after a refusal");
}

/// Decoy-state BB84 over TCP on an emulated link (Lim et al.'s parameters, 20 dB): Bob's
/// clicks and Alice's log never meet; the exchange's per-intensity tallies are the
/// emulator's own basis-matched counts.
#[test]
fn decoy_bb84_sifting_over_tcp_matches_the_emulators_tally() {
    use qkdnet_distill::auth::AuthKeys;
    use qkdnet_emulator::bb84::{tally, Bb84Emulation, Bb84Emulator, Bb84Link};
    use qkdnet_keyrate::decoy_bb84::DecoyBb84;
    use qkdnet_link::sift_bb84::{sift_alice, sift_bob, Detection, Emission};
    use qkdnet_link::TcpTransport;
    let link = Bb84Link::new(DecoyBb84::default(), 20.0, Bb84Emulation::default()).unwrap();
    let mut emu = Bb84Emulator::new(link, 0.01).unwrap();
    let w = emu.step_events();
    let t = tally(&w);
    // Split the emulator's records into what each end holds (one record per pulse).
    let mut clicks = w.clicks.clone();
    clicks.dedup_by_key(|c| c.pulse);
    let bob: Vec<Detection> = clicks
        .iter()
        .map(|c| Detection {
            pulse: c.pulse,
            basis: c.bob_basis,
            // Double clicks squashed to a bit Bob draws (here from the pulse number).
            bit: c.bob_bit((c.pulse % 2) as u8),
        })
        .collect();
    let log: Vec<Emission> = clicks
        .iter()
        .map(|c| Emission {
            pulse: c.pulse,
            basis: c.alice_basis,
            bit: c.alice_bit,
            intensity: c.intensity,
        })
        .collect();
    let psk =
        qkdnet_core::Bits::from_words((0..16u64).map(|i| i * 0x9e37_79b9 + 1).collect(), 1024);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let psk_b = psk.duplicate();
    let h = std::thread::spawn(move || {
        let mut tr =
            TcpTransport::new(std::net::TcpStream::connect(addr).unwrap(), 1 << 30).unwrap();
        let mut auth = AuthKeys::from_preshared(psk_b).unwrap();
        sift_bob(&mut tr, &mut auth, 0, &bob).unwrap()
    });
    let mut tr = TcpTransport::new(listener.accept().unwrap().0, 1 << 30).unwrap();
    let mut auth = AuthKeys::from_preshared(psk).unwrap();
    let a = sift_alice(&mut tr, &mut auth, 0, &log).unwrap();
    let b = h.join().unwrap();
    assert_eq!(a.tally, b.tally);
    assert_eq!(a.key.len(), b.key.len());
    let dups = w.clicks.len() - clicks.len();
    for k in 0..3 {
        let (key, test) = (t.clicks[k][0], t.clicks[k][1]);
        assert!(key.abs_diff(a.tally.key[k]) <= dups as u64, "key[{k}]");
        assert!(test.abs_diff(a.tally.test[k]) <= dups as u64, "test[{k}]");
        // Double clicks: half an error in the emulator's tally, a coin here.
        let (e, got) = (t.errors[k][1], a.tally.test_errors[k] as f64);
        assert!(
            (got - e).abs() <= 3.0 * e.max(1.0).sqrt() + 2.0,
            "test errors[{k}]: {got} vs {e}"
        );
    }
    let errors = a.key.hamming_distance(&b.key) as f64;
    let want: f64 = (0..3).map(|k| t.errors[k][0]).sum();
    assert!(
        (errors - want).abs() <= 3.0 * want.max(1.0).sqrt() + 2.0,
        "key errors {errors} vs {want}"
    );
    assert!(a.key.len() > 1_000, "{} key bits", a.key.len());
}

/// MDI-QKD with the relay and the two users as three parties over TCP on an emulated
/// window (Ma & Razavi's parameters, 10 dB): the relay announces its Bell-state
/// measurements, the users exchange bases; the tallies are the emulator's own counts.
#[test]
fn mdi_sifting_among_relay_and_users_matches_the_emulators_counts() {
    use qkdnet_emulator::mdi::{counts, MdiEmulation, MdiEmulator, MdiLink, State};
    use qkdnet_keyrate::mdi::Mdi;
    use qkdnet_link::sift_mdi::{sift_alice, sift_bob, Sent};
    use qkdnet_wire::RelayEvent;
    let link = MdiLink::new(Mdi::default(), 10.0, MdiEmulation::default()).unwrap();
    let mut emu = MdiEmulator::new(link, 0.01).unwrap();
    let w = emu.step_events();
    let want = counts(&w);
    let announced: Vec<_> = w
        .clicks
        .iter()
        .filter(|c| c.psi_minus() || c.psi_plus())
        .collect();
    let events: Vec<RelayEvent> = announced
        .iter()
        .map(|c| RelayEvent {
            pulse: c.pulse,
            bell: u8::from(c.psi_plus()),
        })
        .collect();
    let log = |u: usize| -> Vec<Sent> {
        announced
            .iter()
            .map(|c| {
                let s = State::from_index(c.states[u] as usize);
                Sent {
                    pulse: c.pulse,
                    basis: s.basis,
                    bit: s.bit,
                    intensity: s.intensity,
                }
            })
            .collect()
    };
    let (log_a, log_b) = (log(0), log(1));
    let (a, b) = three_parties(
        events,
        move |r, kr, a, k| sift_bob(r, kr, a, k, 0, &log_b).unwrap(),
        |r, kr, b, k| sift_alice(r, kr, b, k, 0, &log_a).unwrap(),
    );
    assert_eq!(a.tally, b.tally);
    assert_eq!(a.tally.z_events as f64, want.z_clicks);
    assert_eq!(a.key.hamming_distance(&b.key) as f64, want.z_errors);
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(
                a.tally.x_events[i][j] as f64, want.x_clicks[i][j],
                "({i}, {j})"
            );
            assert_eq!(
                a.tally.x_errors[i][j] as f64, want.x_errors[i][j],
                "({i}, {j})"
            );
        }
    }
    assert!(a.key.len() > 100, "{} key bits", a.key.len());
}

/// Twin-field sifting (SNS and PM) among the relay and the two users over TCP on emulated
/// windows at 30 dB: the relay announces its single clicks, the users their windows and
/// phase slices; the tallies are the emulator's own, and the key errors its error counts.
#[test]
fn twin_field_sifting_among_relay_and_users_matches_the_emulators_tally() {
    use qkdnet_emulator::tf::{TfEmulation, TfEmulator, TfLink};
    use qkdnet_keyrate::tf::{TfVariant, TwinField};
    use qkdnet_link::sift_tf::{sift_alice, sift_bob, TfProtocol, TfSent};
    use qkdnet_wire::RelayEvent;
    for variant in [TfVariant::Sns, TfVariant::Pm] {
        let hw = TwinField {
            variant,
            ..TwinField::default()
        };
        let link = TfLink::new(hw, 30.0, TfEmulation::default()).unwrap();
        let mut emu = TfEmulator::new(link.clone(), 0.01).unwrap();
        let w = emu.step_events();
        let want = link.tally(&w);
        let singles: Vec<_> = w.clicks.iter().filter(|c| c.detector < 2).collect();
        let events: Vec<RelayEvent> = singles
            .iter()
            .map(|c| RelayEvent {
                pulse: c.pulse,
                bell: c.detector,
            })
            .collect();
        let log = |u: usize| -> Vec<TfSent> {
            singles
                .iter()
                .map(|c| TfSent {
                    pulse: c.pulse,
                    setting: c.settings[u],
                    slice: c.slices[u],
                })
                .collect()
        };
        let (log_a, log_b) = (log(0), log(1));
        let p = TfProtocol {
            pm: variant == TfVariant::Pm,
            phase_slices: 16,
        };
        let (a, b) = three_parties(
            events,
            move |r, kr, a, k| sift_bob(r, kr, a, k, 0, &log_b, &p).unwrap(),
            |r, kr, b, k| sift_alice(r, kr, b, k, 0, &log_a, &p).unwrap(),
        );
        assert_eq!(a.tally, b.tally, "{variant:?}");
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(
                    a.tally.decoy[i][j],
                    want.single[2 + i][2 + j],
                    "{variant:?} ({i}, {j})"
                );
            }
        }
        assert_eq!(a.tally.matched, want.matched_clicks, "{variant:?}");
        let errors = a.key.hamming_distance(&b.key) as u64;
        if variant == TfVariant::Pm {
            assert_eq!(a.tally.key, want.matched_clicks);
            assert_eq!(errors, want.matched_errors);
        } else {
            let key: u64 = (0..2)
                .flat_map(|x| (0..2).map(move |y| (x, y)))
                .map(|(x, y)| want.single[x][y])
                .sum();
            assert_eq!(a.tally.key, key);
            assert_eq!(errors, want.single[0][0] + want.single[1][1]);
            assert_eq!(a.tally.matched_errors, want.matched_errors);
        }
        assert!(a.key.len() > 100, "{variant:?}: {} key bits", a.key.len());
    }
}
