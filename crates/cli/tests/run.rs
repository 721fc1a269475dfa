//! `qkdnet run`: a BBM92 link unattended in virtual time with faults, keys distilled at
//! both ends, the supervisor's restarts and availability in the report.
#![allow(clippy::unwrap_used)]

use std::process::Command;

mod common;
use common::root;

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
