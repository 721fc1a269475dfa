//! End-to-end tests of the `qkdnet` binary: scenarios reproduce their published figures,
//! bad input gives one clear line and exit code 2, edge inputs work.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

mod common;
use common::{qkdnet, root};

fn json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = qkdnet(&a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("valid JSON")
}

/// Every seed scenario's published figures are reproduced within the tolerance the
/// scenario states (Lecaron et al. 2025; Pittaluga et al. 2025; Zheng et al. 2026).
#[test]
fn seed_scenarios_reproduce_published_figures() {
    for name in [
        "nice-50km",
        "nice-100km",
        "nice-lab-56db",
        "frankfurt-kehl-tf",
        "zheng-star-370km",
        "ion-memory-10km",
    ] {
        let v = json(&["rate", "--scenario", &format!("scenarios/{name}.toml")]);
        let refs = v["references"].as_array().expect("references");
        assert!(!refs.is_empty(), "{name} has no reference");
        for r in refs {
            assert!(
                r["within_tolerance"].as_bool().unwrap_or(false),
                "{name}: {r}"
            );
        }
    }
}

#[test]
fn zheng_star_beats_plob_and_cv_is_positive_with_classical_load_and_ion_link_beats_decoherence() {
    let v = json(&["rate", "--scenario", "scenarios/zheng-star-370km.toml"]);
    let row = &v["rows"][0];
    assert!(row["key_rate_per_pulse"].as_f64().unwrap() > row["plob_per_pulse"].as_f64().unwrap());
    let v = json(&["rate", "--scenario", "scenarios/cv-120km-coexistence.toml"]);
    assert!(v["rows"][0]["key_rate_bps"].as_f64().unwrap() > 0.0, "{v}");
    let (code, out, err) = qkdnet(&["rate", "--scenario", "scenarios/ion-memory-10km.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("eta_link"), "{out}");
    let v = json(&["rate", "--scenario", "scenarios/ion-memory-10km.toml"]);
    assert!(v["memory_link"]["eta_link"].as_f64().unwrap() > 1.0, "{v}");
}

#[test]
fn json_rows_have_the_documented_fields_and_zero_km_works() {
    let v = json(&[
        "rate",
        "--protocol",
        "decoy-bb84",
        "--distance-km",
        "0:100:50",
    ]);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for key in [
        "distance_km",
        "loss_db",
        "key_rate_per_pulse",
        "key_rate_bps",
        "plob_per_pulse",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(rows[0]["distance_km"].as_f64(), Some(0.0));
    assert!(rows[0]["key_rate_per_pulse"].as_f64().unwrap() > 0.0);
}

#[test]
fn csv_and_plot_outputs() {
    let (code, out, _) = qkdnet(&[
        "rate",
        "--protocol",
        "mdi",
        "--loss-db",
        "0:30:10",
        "--csv",
        "--fixed",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("distance_km,loss_db,key_rate_per_pulse"));
    assert_eq!(out.lines().count(), 5);
    let svg = root().join("target/test-rate-plot.svg");
    let (code, _, err) = qkdnet(&[
        "rate",
        "--protocol",
        "sns",
        "--distance-km",
        "0:400:50",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("PLOB"));
}

fn bad(args: &[&str], needle: &str) {
    let (code, out, err) = qkdnet(args);
    assert_eq!(code, 2, "args {args:?}: stdout {out} stderr {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

#[test]
fn bad_input_gives_one_line_naming_the_field_and_exit_code_2() {
    bad(&["rate", "--protocol", "bb85"], "unknown protocol \"bb85\"");
    bad(
        &["rate", "--protocol", "decoy-bb84", "--distance-km", "-5"],
        "--distance-km: must be ≥ 0, got -5",
    );
    bad(
        &["rate", "--protocol", "decoy-bb84", "--loss-db", "NaN"],
        "--loss-db: must be finite",
    );
    bad(
        &["rate", "--protocol", "decoy-bb84", "--loss-db", "inf"],
        "--loss-db: must be finite",
    );
    bad(
        &["rate", "--protocol", "decoy-bb84", "--distance-km", "ten"],
        "not a number",
    );
    bad(
        &[
            "rate",
            "--protocol",
            "decoy-bb84",
            "--set",
            "detector_efficiency=1.5",
        ],
        "hardware.detector_efficiency: must be at most 1, got 1.5",
    );
    bad(
        &[
            "rate",
            "--protocol",
            "decoy-bb84",
            "--set",
            "misalignment=-0.1",
        ],
        "hardware.misalignment",
    );
    bad(
        &[
            "rate",
            "--protocol",
            "decoy-bb84",
            "--set",
            "detector_efficiency=\"high\"",
        ],
        "detector_efficiency",
    );
    bad(
        &[
            "rate",
            "--protocol",
            "decoy-bb84",
            "--set",
            "detektor_efficiency=0.1",
        ],
        "unknown field `detektor_efficiency`",
    );
    bad(
        &["rate", "--protocol", "decoy-bb84", "--eps-sec", "2"],
        "eps-sec",
    );
    bad(
        &["rate", "--protocol", "pm", "--set", "asymmetric=true"],
        "hardware.asymmetric",
    );
    bad(
        &["rate", "--protocol", "decoy-bb84", "--free", "nonsense"],
        "free parameter \"nonsense\"",
    );
    bad(
        &["rate", "--scenario", "scenarios/does-not-exist.toml"],
        "cannot read",
    );
}

#[test]
fn bad_scenario_files_name_the_field() {
    let dir = root().join("target/test-bad-scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "misspelled.toml",
            "name = \"x\"\nprotocol = \"decoy-bb84\"\n[channel]\ndistanse_km = 3\n",
            "unknown field `distanse_km`",
        ),
        ("missing.toml", "name = \"x\"\n", "missing field `protocol`"),
        (
            "negative.toml",
            "name = \"x\"\nprotocol = \"mdi\"\n[channel]\nloss_db = -3.0\n",
            "channel.loss_db",
        ),
        (
            "prob.toml",
            "name = \"x\"\nprotocol = \"sns\"\n[hardware]\nsend_probability = 1.2\n",
            "hardware.send_probability: must be at most 1, got 1.2",
        ),
        (
            "string.toml",
            "name = \"x\"\nprotocol = \"cv-gg02\"\n[hardware]\nsymbol_rate_hz = \"fast\"\n",
            "symbol_rate_hz",
        ),
        (
            "nan.toml",
            "name = \"x\"\nprotocol = \"bbm92-cw\"\n[hardware]\ndetector_efficiency = nan\n",
            "hardware.detector_efficiency: must be a finite number",
        ),
    ];
    for (file, text, needle) in cases {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        bad(&["rate", "--scenario", p.to_str().unwrap()], needle);
        bad(&["rate", "--scenario", p.to_str().unwrap()], file);
    }
}

/// `qkdnet bench rate` prints a JSON report with throughput in points per second and the
/// machine it ran on; bad counts are input errors.
#[test]
fn bench_rate_prints_json_with_machine_info() {
    let v = json(&[
        "bench",
        "rate",
        "--protocol",
        "decoy-bb84,pm",
        "--points",
        "20",
        "--repeat",
        "1",
    ]);
    assert!(v["machine"]["logical_cpus"].as_u64().unwrap() >= 1);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert!(r["points_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(r["points"].as_u64(), Some(20));
    }
    assert!(results.iter().all(|r| r["security"] == "finite"));
    let (code, _, err) = qkdnet(&["bench", "rate", "--points", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--points"), "{err}");
    let (code, _, err) = qkdnet(&["bench", "rate", "--protocol", "bb85"]);
    assert_eq!(code, 2);
    assert!(err.contains("bb85"), "{err}");
}

fn write_pair(dir: &std::path::Path, n: usize, q: f64, seed: u64) -> (PathBuf, PathBuf) {
    // A simple LCG is enough to make test data; the protocol's randomness is separate.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 11
    };
    let a: Vec<u8> = (0..n / 8).map(|_| next() as u8).collect();
    let mut b = a.clone();
    for byte in &mut b {
        for bit in 0..8 {
            if (next() as f64 / (1u64 << 53) as f64) < q {
                *byte ^= 1 << bit;
            }
        }
    }
    let (pa, pb) = (
        dir.join(format!("a{seed}.bits")),
        dir.join(format!("b{seed}.bits")),
    );
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    (pa, pb)
}

/// `qkdnet distill` on files: identical keys written with provenance; no files on
/// failure; bad inputs name the file or flag and exit 2.
#[test]
fn distill_files_end_to_end() {
    let dir = std::env::temp_dir().join(format!("qkdnet-distill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = write_pair(&dir, 200_000, 0.02, 1);
    let out = dir.join("keys");
    let (pa_s, pb_s, out_s) = (
        pa.to_str().unwrap(),
        pb.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let v = json(&[
        "distill",
        "--alice",
        pa_s,
        "--bob",
        pb_s,
        "--qber-max",
        "0.11",
        "--out",
        out_s,
        "--insecure-seed",
        "4",
    ]);
    let final_bits = v["final_bits"].as_u64().unwrap();
    assert!(final_bits > 50_000, "{v}");
    let f = v["efficiency_f"].as_f64().unwrap();
    assert!(f > 1.0 && f < 1.2, "{v}");
    let ka = std::fs::read(out.join("alice.key")).unwrap();
    let kb = std::fs::read(out.join("bob.key")).unwrap();
    assert_eq!(ka, kb);
    assert_eq!(ka.len() as u64, final_bits.div_ceil(8));
    assert!(out.join("provenance.json").exists());

    // Above the threshold: exit 1, nothing written.
    let (pa2, pb2) = write_pair(&dir, 100_000, 0.2, 2);
    let out2 = dir.join("keys2");
    let (code, _, err) = qkdnet(&[
        "distill",
        "--alice",
        pa2.to_str().unwrap(),
        "--bob",
        pb2.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exceeds qber_max"), "{err}");
    assert!(!out2.exists());

    // Bad inputs.
    let missing = dir.join("missing.bits");
    let (code, _, err) = qkdnet(&[
        "distill",
        "--alice",
        missing.to_str().unwrap(),
        "--bob",
        pb_s,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.bits"), "{err}");
    let (code, _, err) = qkdnet(&[
        "distill",
        "--alice",
        pa_s,
        "--bob",
        pb_s,
        "--qber-max",
        "0.7",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--qber-max") && err.contains("0.7"), "{err}");
    let (code, _, err) = qkdnet(&[
        "distill", "--alice", pa_s, "--bob", pb_s, "--bits", "9999999",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("a1.bits"), "{err}");
    let (code, _, err) = qkdnet(&["distill", "--alice", pa_s, "--bob", pa2.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("--bits"), "{err}");
    let (code, _, err) = qkdnet(&[
        "distill",
        "--alice",
        pa_s,
        "--bob",
        pb_s,
        "--variant",
        "fast",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("fast"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `qkdnet bench distill` prints the documented fields.
#[test]
fn bench_distill_prints_stage_throughput() {
    let v = json(&[
        "bench", "distill", "--qber", "0.03", "--bits", "2e5", "--rtt-ms", "1",
    ]);
    for field in [
        "sifted_mbps",
        "efficiency_f",
        "round_trips",
        "frame_error_rate",
        "final_bits",
    ] {
        assert!(v[field].is_number(), "{field}: {v}");
    }
    assert!(v["final_bits"].as_u64().unwrap() > 0);
    assert!(v["sifted_mbps_with_rtt"].as_f64().unwrap() < v["sifted_mbps"].as_f64().unwrap());
    // --rtt-ms runs the link's pipeline over a delayed in-process channel, with and
    // without the delay.
    let p = &v["pipelined"];
    assert_eq!(
        (p["depth"].as_u64(), p["blocks"].as_u64()),
        (Some(4), Some(8)),
        "{v}"
    );
    assert_eq!(p["sifted_mbps_with_rtt"], v["sifted_mbps_with_rtt"]);
    assert!(p["sifted_mbps_no_rtt"].as_f64().unwrap() > 0.0);
    assert!(v["sifted_mbps_with_rtt_one_block"].as_f64().unwrap() > 0.0);
    assert_eq!(v["blocks"], 3);
    assert!(v["first_block_sifted_mbps"].as_f64().unwrap() > 0.0);
    let (code, _, err) = qkdnet(&["bench", "distill", "--bits", "lots"]);
    assert_eq!(code, 2);
    assert!(err.contains("lots"), "{err}");
    let (code, _, err) = qkdnet(&["bench", "distill", "--blocks", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--blocks"), "{err}");
    let (code, _, err) = qkdnet(&[
        "bench", "distill", "--bits", "2e4", "--rtt-ms", "1", "--depth", "0",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--depth"), "{err}");
}

#[test]
fn bench_kms_drives_etsi_pairs_over_mutual_tls() {
    let v = json(&["bench", "kms", "--clients", "2", "--seconds", "0.5"]);
    for field in ["keys_per_second", "p50_ms", "p99_ms"] {
        assert!(v[field].as_f64().unwrap() > 0.0, "{field}: {v}");
    }
    assert_eq!(v["errors"], 0, "{v}");
    let (code, _, err) = qkdnet(&["bench", "kms", "--key-bits", "12"]);
    assert_eq!(code, 2);
    assert!(err.contains("--key-bits"), "{err}");
}

#[test]
fn certs_writes_a_pki_that_the_kme_accepts_and_never_overwrites() {
    let dir = std::env::temp_dir().join(format!("qkdnet-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let (code, out, err) = qkdnet(&["certs", "--out", d, "--kme", "A,B", "--sae", "a1,b1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SAE a1"), "{out}");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    // The KME's TLS configuration accepts the files.
    qkdnet_kms::etsi::server_tls(&read("ca.pem"), &read("kme-A.pem"), &read("kme-A.key")).unwrap();
    qkdnet_kms::etsi::client_tls(&read("ca.pem"), &read("sae-a1.pem"), &read("sae-a1.key"))
        .unwrap();
    let cert = std::fs::read_to_string(dir.join("sae-b1.pem")).unwrap();
    let der = rustls_pem_to_der(&cert);
    assert_eq!(qkdnet_kms::etsi::sae_id_of(&der).as_deref(), Some("b1"));
    // A second run refuses to overwrite; bad IDs are input errors.
    let (code, _, err) = qkdnet(&["certs", "--out", d, "--kme", "A"]);
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = qkdnet(&["certs", "--out", d, "--kme", "../evil"]);
    assert_eq!(code, 2);
    assert!(err.contains("../evil"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The DER bytes of the first PEM block (base64 between the armour lines).
fn rustls_pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}
