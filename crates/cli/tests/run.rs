//! `qkdnet run`: a BBM92 link unattended in virtual time with faults, keys distilled at
//! both ends, the supervisor's restarts and availability in the report.
#![allow(clippy::unwrap_used)]

use std::process::Command;

mod common;
use common::{qkdnet, root};

#[test]
fn a_twenty_minute_run_with_two_faults_restarts_twice_and_produces_key() {
    let base = std::fs::read_to_string(root().join("scenarios/nice-50km.toml")).unwrap();
    // Keep the hardware and emulator sections; replace the 325 h fault history with two
    // early faults.
    let cut = base.find("[[fault]]").unwrap();
    let text = format!(
        "{}\n[[fault]]\nkind = \"detector-cooling\"\nside = \"alice\"\nstart_s = 300.0\nduration_s = 60.0\n\n[[fault]]\nkind = \"clock-glitch\"\nside = \"bob\"\nstart_s = 800.0\noffset_ps = 40000.0\n",
        &base[..cut]
    );
    let dir = std::env::temp_dir().join(format!("qkdnet-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("nice-short.toml");
    std::fs::write(&scenario, text).unwrap();
    let html = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--duration",
            "20min",
            "--block-s",
            "300",
            "--json",
            "--html",
            html.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["automatic_restarts"], 2, "{r}");
    assert_eq!(r["manual_interventions"], 0);
    let availability = r["availability"].as_f64().unwrap();
    // Down: 60 s of cooling plus, per fault, ~10 s to restart, re-acquire and stabilise.
    assert!(availability > 0.92 && availability < 0.98, "{availability}");
    assert!(r["final_key_bits"].as_u64().unwrap() > 1_000_000, "{r}");
    assert!(r["blocks_distilled"].as_u64().unwrap() >= 3, "{r}");
    let qz = r["qber_z"].as_f64().unwrap();
    assert!(
        (qz - 0.043).abs() < 0.004,
        "pump steered to QBER_Z 4.3 %: {qz}"
    );
    for key in [
        "mean_secret_key_rate_bps",
        "qber_x",
        "timeline_per_minute",
        "events",
        "blocks",
    ] {
        assert!(!r[key].is_null(), "{key} missing");
    }
    // The HTML report: five plots over time and the two faults in the event table.
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 5, "plots");
    for needle in [
        "Secret key rate",
        "QBER_X",
        "Offset tracked by the sync",
        "Pump power",
        "polarisation, Bob",
        "CountDrop(0)",
        "SyncLost",
        "Recovering → Acquiring",
    ] {
        assert!(page.contains(needle), "report lacks {needle}");
    }
    assert!(!dir.join("report.html.partial").exists());
    // Bad duration: exit 2 naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
        .args(["run", scenario.to_str().unwrap(), "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The two fidelities of `qkdnet run` on the same link: every detection as a time tag,
/// synchronised from the streams and sifted (`--level event`), against the closed-form
/// windows. Key and test coincidence rates per producing second and both QBERs agree
/// within statistical error (|z| < 4.5). A weak pump keeps the debug build quick; the 60 s
/// run at the Nice pump is in docs/LINK.md.
#[test]
fn event_level_run_agrees_with_window_level() {
    let base = std::fs::read_to_string(root().join("scenarios/nice-50km.toml")).unwrap();
    let cut = base.find("[[fault]]").unwrap();
    let text = base[..cut]
        .replace("pump_power_mw = 5.0", "pump_power_mw = 0.4")
        .replace("[emulator]\n", "[emulator]\nkey_bin_ps = 1000.0\n");
    assert!(text.contains("key_bin_ps") && text.contains("pump_power_mw = 0.4"));
    let dir = std::env::temp_dir().join(format!("qkdnet-run-levels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("nice-binned.toml");
    std::fs::write(&scenario, text).unwrap();
    let run = |level: &str| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
            .args(["run", scenario.to_str().unwrap(), "--duration", "40s"])
            .args(["--level", level, "--fixed-pump", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{level}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (w, e) = (run("window"), run("event"));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(
        f(&e, "producing_s") > 25.0,
        "event level barely produced: {e}"
    );
    for key in ["key_coincidences", "test_coincidences"] {
        let (nw, ne) = (f(&w, key), f(&e, key));
        let (tw, te) = (f(&w, "producing_s"), f(&e, "producing_s"));
        let z = (ne / te - nw / tw) / (ne / (te * te) + nw / (tw * tw)).sqrt();
        assert!(
            z.abs() < 4.5,
            "{key}: event {ne}/{te} s, window {nw}/{tw} s, z {z:.2}"
        );
    }
    for (q, n) in [
        ("qber_z", "key_coincidences"),
        ("qber_x", "test_coincidences"),
    ] {
        let (pw, pe) = (f(&w, q), f(&e, q));
        let var = pw * (1.0 - pw) / f(&w, n) + pe * (1.0 - pe) / f(&e, n);
        let z = (pe - pw) / var.sqrt();
        assert!(z.abs() < 4.5, "{q}: event {pe}, window {pw}, z {z:.2}");
    }
    // The sifted tags went through distillation with equal keys at both ends (57 kbit is
    // too short a block for finite-key key at this pump; the 60 s run at 5 mW gives key).
    assert_eq!(
        (
            e["blocks_distilled"].as_u64(),
            e["blocks_without_key"].as_u64()
        ),
        (Some(1), Some(0)),
        "{e}"
    );
    // Without a key-bit rule there is nothing to sift into bits.
    let plain = dir.join("plain.toml");
    std::fs::write(&plain, &base[..cut]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
        .args(["run", plain.to_str().unwrap(), "--level", "event"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_bin_ps"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A link scenario's `[run]` table sets the runtime's defaults; flags override it; bad
/// values and unknown fields there are named with the file, exit code 2.
#[test]
fn a_scenario_run_table_sets_defaults_and_bad_values_are_named() {
    let base = std::fs::read_to_string(root().join("scenarios/nice-50km.toml")).unwrap();
    let cut = base.find("[[fault]]").unwrap();
    let dir = std::env::temp_dir().join(format!("qkdnet-run-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |table: &str, flags: &[&str]| {
        let scenario = dir.join("s.toml");
        std::fs::write(&scenario, format!("{}\n{table}\n", &base[..cut])).unwrap();
        let mut args = vec![
            "run",
            scenario.to_str().unwrap(),
            "--duration",
            "30s",
            "--json",
        ];
        args.extend_from_slice(flags);
        Command::new(env!("CARGO_BIN_EXE_qkdnet"))
            .args(&args)
            .output()
            .unwrap()
    };
    let out = run("[run]\nblock_s = 20.0\npump_objective = \"key-rate\"", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["block_s"], 20.0);
    assert_eq!(v["pump_objective"], "key-rate");
    let out = run("[run]\nblock_s = 20.0", &["--block-s", "15"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["block_s"], 15.0, "the flag wins");
    assert_eq!(v["pump_objective"], "qber-z");
    for (table, says) in [
        (
            "[run]\nblock_s = -3.0",
            "[run] block_s: must be in 1..=1e7 s, got -3",
        ),
        (
            "[run]\npump_objective = \"max\"",
            "[run] pump_objective: \"max\" is not",
        ),
        ("[run]\nblok_s = 3.0", "unknown field `blok_s`"),
    ] {
        let out = run(table, &[]);
        assert_eq!(out.status.code(), Some(2), "{table}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("s.toml") && err.contains(says),
            "{table}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A link scenario of a family whose runtime lives in network runs runs alone as a network
/// of its two ends and its relay: the Frankfurt–Kehl twin-field scenario for one block of
/// its `[run] block_s` (4000 s, the finite-key block) within 15 % of the plan.
#[test]
fn a_twin_field_scenario_runs_alone() {
    let (code, out, err) = qkdnet(&[
        "run",
        "scenarios/frankfurt-kehl-tf.toml",
        "--duration",
        "4000s",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let l = &v["links"][0];
    assert_eq!(l["blocks_distilled"], 1, "{l}");
    let ratio = l["measured_over_planned"].as_f64().unwrap();
    assert!((0.85..1.15).contains(&ratio), "{l}");
}

/// Liu et al.'s ion memory link (10 km, arXiv:2602.08472) runs alone: its heralds come at
/// the published mean generation time (450 ms), its CHSH value is the heralded state's,
/// and each block says why it gives no key (far fewer key rounds than a block needs).
#[test]
fn the_ion_memory_scenario_runs_and_says_why_it_gives_no_key() {
    let (code, out, err) = qkdnet(&[
        "run",
        "scenarios/ion-memory-10km.toml",
        "--duration",
        "1h",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let l = &v["links"][0];
    let di = &l["di"];
    let rate = di["heralds_per_s_producing"].as_f64().unwrap();
    assert!((rate - 1.0 / 0.45).abs() < 0.15, "{di}");
    let (s, expected) = (
        di["chsh_observed"].as_f64().unwrap(),
        di["chsh_expected"].as_f64().unwrap(),
    );
    let rounds = di["chsh_rounds"].as_f64().unwrap();
    // Each correlator's variance is at most 1/n over n = rounds/4.
    assert!((s - expected).abs() < 5.0 * (16.0 / rounds).sqrt(), "{di}");
    assert_eq!(l["final_key_bits"], 0, "{l}");
    let events = v["events"].as_array().unwrap();
    let short = events
        .iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|w| w.contains("sifted bits, fewer than the 10000 a block needs"))
        })
        .count();
    assert_eq!(short, 6, "{events:?}");
}

/// A CV-QKD scenario runs block by block through the real stack (MDR, LDPC, verification,
/// PA). Its finite-key block (2e11 symbols) is refused with the planner's figure; a block
/// of 6e5 symbols at 120 km reconciles one 2²⁰-bit frame with β near the code's design,
/// estimates the transmittance, and yields no key (the planner agrees: finite size).
#[test]
fn cv_blocks_reconcile_through_the_real_stack() {
    let (code, _, err) = qkdnet(&["run", "scenarios/cv-120km-coexistence.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--block-symbols") && err.contains("8.829e-5"),
        "{err}"
    );
    let block = || {
        let (code, out, err) = qkdnet(&[
            "run",
            "scenarios/cv-120km-coexistence.toml",
            "--block-symbols",
            "6e5",
            "--duration",
            "0.006s",
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let v = block();
    let b = &v["blocks"][0];
    assert_eq!(b["frames"], 1, "{b}");
    assert_eq!(b["frames_kept"], 1, "{b}");
    assert_eq!(b["keys_equal"], true, "{b}");
    let beta = b["beta"].as_f64().unwrap();
    assert!((0.8..1.0).contains(&beta), "{b}");
    let t = b["transmittance"].as_f64().unwrap();
    assert!((t / 10f64.powf(-1.92) - 1.0).abs() < 0.1, "{b}");
    assert_eq!(b["secret_bits"], 0, "{b}");
    assert_eq!(v["planned_key_per_symbol"], 0.0, "{v}");
    // Same scenario and seed, same block (frames decode on several threads).
    let mut w = block();
    let mut first = b.clone();
    first["wall_s"] = 0.into();
    w["blocks"][0]["wall_s"] = 0.into();
    assert_eq!(first, w["blocks"][0]);
    let (code, _, err) = qkdnet(&[
        "run",
        "scenarios/cv-120km-coexistence.toml",
        "--block-symbols",
        "5e9",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("5.00e9 symbols"), "{err}");
    // A family without a runtime is refused, naming it.
    let dir = std::env::temp_dir().join(format!("qkdnet-run-pulsed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pulsed = dir.join("pulsed.toml");
    std::fs::write(
        &pulsed,
        "name = \"pulsed\"\nprotocol = \"bbm92-pulsed\"\n[channel]\nloss_db = 30.0\n",
    )
    .unwrap();
    let (code, _, err) = qkdnet(&["run", pulsed.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no link runtime for \"bbm92-pulsed\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Slow (about 5 min on 2 cores): a 30 km CV link's block of 1e8 symbols yields the key
/// the model gives at the reconciliation efficiency the block's code achieved and the
/// run's modulation variance (the codes' operating point; the plan itself assumes β =
/// 0.925). Measured (stop 21): 5.34e-2 bit/symbol against the model's 5.64e-2 at β 0.922;
/// at the planner's V_A (stop 20), 4.63e-2 against 4.93e-2 at β 0.904.
#[test]
#[ignore = "slow: a 1e8-symbol CV block"]
fn cv_30km_block_gives_the_models_key_at_the_measured_beta() {
    let text = std::fs::read_to_string(root().join("scenarios/cv-120km-coexistence.toml"))
        .unwrap()
        .replace("distance_km = 120.0", "distance_km = 30.0")
        .replace("block_size = 2e11", "block_size = 1e8");
    let dir = std::env::temp_dir().join(format!("qkdnet-cv30-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cv30.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = qkdnet(&["run", p, "--duration", "1s", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let b = &v["blocks"][0];
    assert_eq!(b["keys_equal"], true, "{b}");
    let beta = b["beta"].as_f64().unwrap();
    let va = v["modulation_variance_snu"].as_f64().unwrap();
    let (code, out, err) = qkdnet(&[
        "rate",
        "--scenario",
        p,
        "--set",
        &format!("reconciliation_efficiency={beta}"),
        "--set",
        &format!("modulation_variance_snu={va}"),
        "--fixed",
        "--block-size",
        "1e8",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let model = r["rows"][0]["key_rate_per_pulse"].as_f64().unwrap();
    let ours = v["key_per_symbol"].as_f64().unwrap();
    eprintln!("30 km, 1e8 symbols: β {beta:.3}, {ours:.4e} bit/symbol, model {model:.4e}");
    assert!(
        model > 0.0 && (ours / model - 1.0).abs() < 0.15,
        "{ours} vs {model}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
