//! `qkdnet plan` end to end: every shipped network plans, JSON carries the per-link and
//! per-pair figures, the SVG drawing is written, bad files exit 2 naming the item.
#![allow(clippy::unwrap_used)]

mod common;
use common::{qkdnet, root};

#[test]
fn every_shipped_network_plans_with_json_and_a_drawing() {
    let dir = std::env::temp_dir().join(format!("qkdnet-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(root().join("networks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in &names {
        let svg = dir.join(name.replace(".toml", ".svg"));
        let (code, out, err) = qkdnet(&[
            "plan",
            &format!("networks/{name}"),
            "--json",
            "--svg",
            svg.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{name}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let links = v["links"].as_array().unwrap();
        assert!(!links.is_empty(), "{name}");
        for l in links {
            assert!(l["key_rate_bps"].as_f64().is_some(), "{name}: {l}");
            assert!(l["channels"].as_array().is_some(), "{name}: {l}");
        }
        for p in v["sae_pairs"].as_array().unwrap() {
            assert!(p["path"].as_array().unwrap().len() >= 2, "{name}: {p}");
        }
        let drawing = std::fs::read_to_string(&svg).unwrap();
        assert!(
            drawing.starts_with("<svg") && drawing.contains("</svg>"),
            "{name}"
        );
        // Every link is labelled with its rate.
        for l in links {
            assert!(drawing.contains(l["id"].as_str().unwrap()), "{name}");
        }
    }
    // The table form names the relayed pair's path and bottleneck.
    let (code, out, err) = qkdnet(&["plan", "networks/nice-4-node.toml", "--no-survival"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("inria → nice → oca (nice-oca)"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_network_file_exits_2_naming_the_item() {
    let dir = std::env::temp_dir().join(format!("qkdnet-plan-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "name = \"bad\"\n[[node]]\nid = \"a\"\n[[link]]\nid = \"l\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"ghost\"]\n",
    )
    .unwrap();
    let (code, _out, err) = qkdnet(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("link[0] \"l\": ends[1]: unknown node \"ghost\""),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _out, err) = qkdnet(&["plan", "networks/none-such.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("none-such.toml: cannot read"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn network_run_stores_each_nodes_keys_and_reports_beside_the_plan() {
    let dir = std::env::temp_dir().join(format!("qkdnet-netrun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out, err) = qkdnet(&[
        "run",
        "networks/nice-4-node.toml",
        "--duration",
        "4min",
        "--block-s",
        "120",
        "--fixed-pump",
        "--json",
        "--store-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let links = v["links"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    let l50 = &links[0];
    assert_eq!(l50["id"], "nice-inria");
    assert!(l50["final_key_bits"].as_u64().unwrap() > 100_000, "{l50}");
    assert!(l50["planned_key_rate_bps"].as_f64().unwrap() > 1000.0);
    // Both ends of the 50 km link stored the same number of bits.
    let per_node = &v["key_bits_per_node"];
    assert_eq!(
        per_node["inria"],
        per_node["nice"].as_u64().unwrap() - per_node["oca"].as_u64().unwrap_or(0)
    );
    for n in ["nice", "inria", "oca"] {
        assert!(dir.join(format!("{n}.sqlite")).exists(), "{n}");
    }
    assert!(v["events"].as_array().unwrap().len() >= 2);
    // A link scenario is not a network: --store-dir is refused.
    let (code, _, err) = qkdnet(&[
        "run",
        "scenarios/nice-50km.toml",
        "--store-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
