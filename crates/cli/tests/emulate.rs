//! End-to-end tests of `qkdnet emulate`: files in both formats that read back as the same
//! streams, determinism across thread counts, and bad scenarios refused with the field named.
#![allow(clippy::unwrap_used)]

use qkdnet_core::samples::read_samples;
use qkdnet_core::timetag::{read_ptu_t2, read_qtt};
use std::path::{Path, PathBuf};

mod common;
use common::{qkdnet, root};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkdnet-emulate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn emulate(out: &Path, threads: &str) -> serde_json::Value {
    let (code, stdout, err) = qkdnet(&[
        "emulate",
        "--scenario",
        "scenarios/nice-100km.toml",
        "--seconds",
        "0.05",
        "--threads",
        threads,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&stdout).unwrap()
}

/// Runs `qkdnet emulate --json` and returns the manifest.
fn emulate_json(scenario: &str, seconds: &str, out: &str) -> serde_json::Value {
    let (code, stdout, err) = qkdnet(&[
        "emulate",
        "--scenario",
        scenario,
        "--seconds",
        seconds,
        "--out",
        out,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn writes_both_formats_deterministically() {
    let a = tmp("a");
    let b = tmp("b");
    let m = emulate(&a, "1");
    emulate(&b, "2");
    for who in ["alice", "bob"] {
        let qtt = std::fs::read(a.join(format!("{who}.qtt"))).unwrap();
        // Same seed, different thread count: the same bytes.
        assert_eq!(qtt, std::fs::read(b.join(format!("{who}.qtt"))).unwrap());
        let tags = read_qtt(&mut qtt.as_slice()).unwrap();
        assert_eq!(tags.len() as u64, m["tags"][who].as_u64().unwrap());
        assert!(tags.len() > 10_000, "{}", tags.len());
        assert!(tags.iter().all(|t| t.channel < 3));
        // The PTU file holds the same detections (channels shifted by one, as PicoQuant's
        // readers number them).
        let ptu = std::fs::read(a.join(format!("{who}.ptu"))).unwrap();
        let (back, _) = read_ptu_t2(&mut ptu.as_slice()).unwrap();
        assert_eq!(back.len(), tags.len());
        assert!(back
            .iter()
            .zip(&tags)
            .all(|(p, q)| p.time_ps == q.time_ps && p.channel == q.channel + 1));
    }
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    assert!(names.contains(&"manifest.json".to_string()));
    let g = &m["ground_truth"];
    assert!(g["key_coincidences_hz"].as_f64().unwrap() > 100.0, "{m}");
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn bad_scenarios_are_refused_with_the_field() {
    let d = tmp("bad");
    let base = std::fs::read_to_string(root().join("scenarios/nice-50km.toml")).unwrap();
    let cases = [
        (
            base.replace(
                "polarisation_dependence = 0.03",
                "polarisation_dependence = -0.5",
            ),
            "emulator.polarisation_dependence",
        ),
        (
            base.replace("bob_channel = 22", "bob_channel = 99"),
            "emulator.wdm.bob_channel",
        ),
        (
            base.replace("visibility_test = 0.997", "visibility_test = 1.5"),
            "hardware.visibility_test",
        ),
        (
            base.replace("start_s = 201600.0", "start_s = 72100.0")
                .replace(
                    "side = \"bob\"\nstart_s = 72100.0",
                    "side = \"alice\"\nstart_s = 72100.0",
                ),
            "fault[1].start_s",
        ),
        (base.replace("umzi_fsr_ghz", "umzi_fsr"), "umzi_fsr"),
        (
            base.replace("protocol = \"bbm92-cw\"", "protocol = \"bbm92-pulsed\"")
                .split("[hardware]")
                .next()
                .unwrap()
                .to_string(),
            "bbm92-cw",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let p = d.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let (code, _, err) = qkdnet(&[
            "emulate",
            "--scenario",
            p.to_str().unwrap(),
            "--seconds",
            "0.01",
            "--out",
            d.join("out").to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "case {i}: {err}");
        assert!(err.contains(field), "case {i}: expected {field} in: {err}");
        assert!(err.contains(&format!("bad{i}.toml")), "case {i}: {err}");
    }
    let (code, _, err) = qkdnet(&[
        "emulate",
        "--scenario",
        "scenarios/nice-50km.toml",
        "--seconds=-1",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--seconds"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn cv_link_writes_symbols_and_samples() {
    let d = tmp("cv");
    let m = emulate_json(
        "scenarios/cv-120km-coexistence.toml",
        "0.001",
        d.to_str().unwrap(),
    );
    assert_eq!(m["symbols"].as_u64().unwrap(), 100_000);
    for who in ["alice", "bob"] {
        let bytes = std::fs::read(d.join(format!("{who}.cvq"))).unwrap();
        let (cols, values) = read_samples(&mut bytes.as_slice()).unwrap();
        assert_eq!(cols, 2);
        assert_eq!(values.len(), 200_000);
    }
    // Alice's modulation variance is the scenario's 8.41 SNU, within 1 %.
    let va = m["measured"]["var_a"].as_f64().unwrap();
    assert!((va / 8.41 - 1.0).abs() < 0.01, "{va}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn ion_link_writes_heralds_and_deliveries() {
    let d = tmp("ion");
    let m = emulate_json("scenarios/ion-memory-10km.toml", "600", d.to_str().unwrap());
    let heralds = std::fs::read_to_string(d.join("heralds.tsv")).unwrap();
    let n = heralds.lines().count() - 1;
    assert_eq!(n as u64, m["measured"]["heralds"].as_u64().unwrap());
    // About 2.2 heralds/s at 10 km (keyrate: 450 ms generation time).
    let rate = n as f64 / 600.0;
    assert!((rate - 2.22).abs() < 0.3, "{rate}");
    let deliveries = std::fs::read_to_string(d.join("deliveries.tsv")).unwrap();
    assert_eq!(deliveries.lines().count() - 1, 599);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn twin_field_link_writes_relay_clicks_and_emission_logs() {
    let d = tmp("tf");
    let m = emulate_json(
        "scenarios/frankfurt-kehl-tf.toml",
        "0.2",
        d.to_str().unwrap(),
    );
    let read = |name: &str| {
        let bytes = std::fs::read(d.join(format!("{name}.qtab"))).unwrap();
        read_samples(&mut bytes.as_slice()).unwrap()
    };
    let (c, relay) = read("relay");
    assert_eq!(c, 2);
    let clicks = relay.len() / 2;
    assert_eq!(clicks as u64, m["measured"]["clicks"].as_u64().unwrap());
    assert!(clicks > 1000, "{clicks}");
    let (c, alice) = read("alice");
    assert_eq!(c, 3);
    assert_eq!(alice.len() / 3, clicks);
    // The logs and the relay name the same pulses, in order.
    assert!(relay
        .chunks(2)
        .zip(alice.chunks(3))
        .all(|(r, a)| r[0] == a[0]));
    let (c, sent) = read("sent");
    assert_eq!(c, 27);
    let pulses: f64 = sent.chunks(27).map(|r| r[1]).sum();
    assert_eq!(pulses as u64, m["pulses"].as_u64().unwrap());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn decoy_bb84_link_writes_clicks_and_logs() {
    let d = tmp("bb84");
    let scenario = d.join("bb84.toml");
    std::fs::write(
        &scenario,
        "name = \"bb84\"\nprotocol = \"decoy-bb84\"\n[channel]\ndistance_km = 50.0\n",
    )
    .unwrap();
    let out = d.join("out");
    let m = emulate_json(scenario.to_str().unwrap(), "0.01", out.to_str().unwrap());
    let bytes = std::fs::read(out.join("bob.qtab")).unwrap();
    let (cols, bob) = read_samples(&mut bytes.as_slice()).unwrap();
    assert_eq!(cols, 3);
    assert_eq!(
        (bob.len() / 3) as u64,
        m["measured"]["clicks"].as_u64().unwrap()
    );
    let q = m["measured"]["qber_z"].as_f64().unwrap();
    assert!(q > 0.003 && q < 0.05, "{q}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn mdi_link_writes_relay_events() {
    let d = tmp("mdi");
    let scenario = d.join("mdi.toml");
    std::fs::write(
        &scenario,
        "name = \"mdi\"\nprotocol = \"mdi\"\n[channel]\nloss_db = 10.0\n",
    )
    .unwrap();
    let out = d.join("out");
    let m = emulate_json(scenario.to_str().unwrap(), "0.002", out.to_str().unwrap());
    let bytes = std::fs::read(out.join("relay.qtab")).unwrap();
    let (cols, relay) = read_samples(&mut bytes.as_slice()).unwrap();
    assert_eq!(cols, 2);
    assert_eq!(
        (relay.len() / 2) as u64,
        m["measured"]["clicks"].as_u64().unwrap()
    );
    assert!(relay.chunks(2).all(|r| r[1] >= 1.0 && r[1] <= 15.0));
    let bytes = std::fs::read(out.join("sent.qtab")).unwrap();
    assert_eq!(read_samples(&mut bytes.as_slice()).unwrap().0, 66);
    let _ = std::fs::remove_dir_all(&d);
}

/// `[[fault]]` acts on the pulsed families too: Bob's detectors cooling for the whole run
/// leave a decoy-BB84 link without a click; a clock glitch, which no pulse record can
/// show, is refused with its field named.
#[test]
fn faults_reach_the_pulsed_families() {
    let d = tmp("bb84-faults");
    let scenario = d.join("bb84.toml");
    let base = "name = \"bb84\"\nprotocol = \"decoy-bb84\"\n[channel]\ndistance_km = 50.0\n";
    std::fs::write(
        &scenario,
        format!("{base}[[fault]]\nkind = \"detector-cooling\"\nside = \"bob\"\nstart_s = 0.0\nduration_s = 1.0\n"),
    )
    .unwrap();
    let out = d.join("out");
    let m = emulate_json(scenario.to_str().unwrap(), "0.01", out.to_str().unwrap());
    assert_eq!(m["measured"]["clicks"].as_u64(), Some(0), "{m}");
    std::fs::write(
        &scenario,
        format!("{base}[[fault]]\nkind = \"clock-glitch\"\nside = \"bob\"\nstart_s = 0.0\noffset_ps = 5.0\n"),
    )
    .unwrap();
    let (code, _, err) = common::qkdnet(&[
        "emulate",
        "--scenario",
        scenario.to_str().unwrap(),
        "--seconds",
        "0.01",
        "--out",
        d.join("out2").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("fault[0].kind"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
