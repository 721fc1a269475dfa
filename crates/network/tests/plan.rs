//! The planner on the shipped networks, against the seed papers' figures, and bad files.

use qkdnet_network::plan::{plan, PlanOptions};
use qkdnet_network::spec::{self, Network};
use std::path::{Path, PathBuf};

fn networks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../networks")
}

fn load(name: &str) -> Network {
    spec::load(&networks().join(name)).expect("shipped network loads")
}

fn parse(text: &str) -> Result<Network, String> {
    // Scenario paths in the snippets are relative to networks/.
    spec::parse(text, &networks().join("test.toml")).map_err(|e| e.0)
}

#[test]
fn all_ten_star_pairs_beat_the_repeaterless_bound_at_370_km() {
    // Zheng et al., Nature 651, 68 (2026): all ten pairs of the 20-user star 51.5–251.4 %
    // above PLOB over 370 km (185 + 185 km).
    let net = load("zheng-star-20.toml");
    let p = plan(&net, &PlanOptions::default());
    assert_eq!(p.links.len(), 10);
    let mut channels = std::collections::BTreeSet::new();
    for l in &p.links {
        let r = l.row.as_ref().expect("assigned");
        assert!((l.arm_km.iter().sum::<f64>() - 370.0).abs() < 1e-9);
        let above = r.key_rate_per_pulse / r.plob_per_pulse;
        assert!(above > 1.0, "{} only {above:.2}× PLOB", l.id);
        // Within the published spread, 1.515–3.514 × PLOB, with its 45 % tolerance.
        assert!(
            (1.515 * 0.55..=3.514 * 1.45).contains(&above),
            "{} {above}",
            l.id
        );
        // The relay separates pairs by wavelength: each pair its own channel.
        assert!(channels.insert(l.channels.clone().expect("channel")[0]));
    }
}

#[test]
fn nice_links_reproduce_the_published_rates_and_relay_through_nice() {
    // Lecaron et al. 2025: 7.069 kbit/s at 33.5 dB (50 km), 175 bit/s at 45 dB (100 km).
    let net = load("nice-4-node.toml");
    let p = plan(&net, &PlanOptions::default());
    let by = |id: &str| p.links.iter().find(|l| l.id == id).expect("link");
    let l50 = by("nice-inria");
    let l100 = by("nice-oca");
    // The published totals (the 0.35 dB/km holds at 1560 nm; the channels sit at
    // 1558–1561 nm, whose Rayleigh correction is a few hundredths of a dB).
    assert!((l50.loss_db - 33.5).abs() < 0.05 && (l100.loss_db - 45.0).abs() < 0.05);
    assert!(
        (l50.key_rate_bps() / 7069.0 - 1.0).abs() < 0.15,
        "{}",
        l50.key_rate_bps()
    );
    assert!(
        (l100.key_rate_bps() / 175.0 - 1.0).abs() < 0.15,
        "{}",
        l100.key_rate_bps()
    );
    // The two links share the Nice–patch and patch–INRIA spans: different channel pairs.
    assert_ne!(l50.channels, l100.channels);
    // INRIA ↔ Observatory has no link: relayed through Nice, limited by the 100 km link.
    let q = p
        .pairs
        .iter()
        .find(|q| {
            q.saes.contains(&"sae-inria".to_string()) && q.saes.contains(&"sae-oca".to_string())
        })
        .expect("pair");
    assert_eq!(q.path, ["inria", "nice", "oca"]);
    assert_eq!(q.bottleneck.as_deref(), Some("nice-oca"));
    assert_eq!(q.key_rate_bps, l100.key_rate_bps());
}

#[test]
fn forty_user_network_reports_which_channels_survive_sixteen_classical_channels() {
    let net = load("dwdm-40-user.toml");
    let p = plan(&net, &PlanOptions::default());
    assert_eq!(p.links.len(), 20);
    let mut pairs = std::collections::BTreeSet::new();
    for (i, l) in p.links.iter().enumerate() {
        let ch = l.channels.clone().expect("every link gets a channel pair");
        assert!(pairs.insert(ch.clone()), "{ch:?} given twice");
        let east = i >= 10;
        if east {
            // 16 × 0 dBm on the east feeder: Raman photons swamp the pairs.
            assert_eq!(l.key_rate_bps(), 0.0, "{}", l.id);
            let raman: f64 = l.noise.iter().map(|n| n.raman_hz).sum();
            assert!(raman > 1e8, "{} {raman}", l.id);
            let quiet = l.quiet_row.as_ref().expect("has classical").key_rate_bps;
            assert!(
                quiet > 1e4,
                "{} would make key on dark fibre: {quiet}",
                l.id
            );
            let s = l.survival.expect("survival searched");
            let max = s.max_launch_dbm.expect("survives at some power");
            assert!(max < 0.0 && max > -40.0, "{} {max}", l.id);
        } else {
            assert!(l.key_rate_bps() > 1e4, "{} {}", l.id, l.key_rate_bps());
            assert!(l.survival.is_none() && l.quiet_row.is_none());
        }
    }
}

#[test]
fn cv_link_beside_classical_traffic_matches_its_link_scenario() {
    // The fibre's eight −10 dBm channels give the same Raman excess noise as the link
    // scenario that carries them in its hardware (the model's own Raman term).
    let net = load("cv-120km-coexistence.toml");
    let p = plan(&net, &PlanOptions::default());
    let l = &p.links[0];
    let s =
        qkdnet_network::scenario::load(&networks().join("../scenarios/cv-120km-coexistence.toml"))
            .expect("scenario");
    let proto = qkdnet_network::scenario::build_protocol(
        &s.protocol,
        &s.hardware.clone().unwrap_or_default(),
        "cv",
    )
    .expect("protocol");
    let row = qkdnet_keyrate::sweep::sweep(
        &proto,
        &qkdnet_keyrate::sweep::SweepOptions {
            points: vec![(None, 19.2)],
            free: vec![true],
            security: qkdnet_keyrate::Security::Finite(s.finite_key.unwrap_or_default()),
            optimiser: Default::default(),
        },
    )
    .remove(0);
    let ours = l.key_rate_bps();
    assert!(ours > 0.0);
    assert!(
        (ours / row.key_rate_bps - 1.0).abs() < 0.03,
        "{ours} vs {}",
        row.key_rate_bps
    );
    assert!(l.quiet_row.as_ref().expect("quiet").key_rate_bps > ours);
}

#[test]
fn classical_channels_push_auto_channels_away() {
    // A point-to-point BB84 link on a fibre with classical traffic on ITU 30–38: the
    // planner neither reuses those channels nor sits next to them when quieter ones exist.
    let net = parse(
        r#"
name = "t"
[[node]]
id = "a"
[[node]]
id = "b"
[[fibre]]
id = "ab"
ends = ["a", "b"]
length_km = 20.0
classical = [{ from = "a", itu_channel = 30, count = 9, launch_power_dbm = -20.0 }]
[[link]]
id = "l"
protocol = "decoy-bb84"
ends = ["a", "b"]
"#,
    )
    .expect("valid");
    let p = plan(&net, &PlanOptions::default());
    let ch = p.links[0].channels.clone().expect("assigned")[0];
    assert!(!(29..=39).contains(&ch), "{ch}");
    // The chosen channel has the least noise of all free ones.
    let chosen: f64 = p.links[0].noise.iter().map(|n| n.total_hz()).sum();
    for c in (1..=72).filter(|c| !(30..=38).contains(c)) {
        let n = qkdnet_network::noise::arm_noise(&net, &net.links[0].arms[0], c, 0.0).total_hz();
        assert!(
            chosen <= n * (1.0 + 1e-12),
            "channel {c} is quieter: {n} < {chosen}"
        );
    }
}

#[test]
fn bad_network_files_name_the_item() {
    let base = r#"
name = "t"
[[node]]
id = "a"
saes = ["sa"]
[[node]]
id = "b"
saes = ["sb"]
[[node]]
id = "c"
saes = ["sc"]
[[node]]
id = "r"
kind = "relay"
[[fibre]]
id = "ab"
ends = ["a", "b"]
length_km = 10.0
"#;
    let cases: &[(&str, &str)] = &[
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"x\"]\n",
            "link[0] \"l1\": ends[1]: unknown node \"x\"",
        ),
        (
            "[[fibre]]\nid = \"f2\"\nends = [\"a\", \"nowhere\"]\nlength_km = 1.0\n",
            "fibre[1] \"f2\": ends[1]: unknown node \"nowhere\"",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"b\"]\nchannel = 34\n[[link]]\nid = \"l2\"\nprotocol = \"cv-gg02\"\nends = [\"b\", \"a\"]\nchannel = 34\n",
            "fibre \"ab\": ITU 34 is used twice (by link \"l1\" and link \"l2\")",
        ),
        (
            "[[fibre.classical]]\nfrom = \"a\"\nitu_channel = 34\nlaunch_power_dbm = 0.0\n[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"b\"]\nchannel = 34\n",
            "fibre \"ab\": ITU 34 is used twice (by a classical channel and link \"l1\")",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"b\"]\n[[sae_pair]]\nsaes = [\"sa\", \"sc\"]\n",
            "sae_pair[0] (\"sa\" ↔ \"sc\"): no path of links through trusted nodes joins \"a\" and \"c\"",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"sns-aopp\"\nends = [\"a\", \"b\"]\n",
            "link[0] \"l1\": via: a sns-aopp link needs its relay node",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"r\"]\n",
            "link[0] \"l1\": ends[1]: \"r\" is a relay node; a link's ends hold keys and must be trusted",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"bbm92-cw\"\nends = [\"a\", \"b\"]\nchannel = [21, 24]\n",
            "link[0] \"l1\": channel: [21, 24] is not an energy-conjugate pair",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"c\"]\n",
            "link[0] \"l1\": no fibre route from \"a\" to \"c\"",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"b\"]\nroutes = [[\"zz\"]]\n",
            "link[0] \"l1\": routes[0][0]: unknown fibre \"zz\"",
        ),
        (
            "[[link]]\nid = \"l1\"\nscenario = \"missing.toml\"\nends = [\"a\", \"b\"]\n",
            "link[0] \"l1\": ",
        ),
        (
            "[[link]]\nid = \"l1\"\nprotocol = \"decoy-bb84\"\nends = [\"a\", \"b\"]\nhardware = { detector_efficiency = 7.0 }\n",
            "link[0] \"l1\": hardware.detector_efficiency",
        ),
    ];
    for (extra, want) in cases {
        let text = format!("{base}{extra}");
        let e = parse(&text).expect_err(extra);
        assert!(e.contains(want), "{e}\n  wanted: {want}");
        assert!(
            e.starts_with(&networks().join("test.toml").display().to_string()),
            "{e}"
        );
    }
    let e = parse("name = \"t\"\n[[node]]\nid = \"a\"\nkind = \"router\"\n").expect_err("kind");
    assert!(e.contains("router") && e.contains("line 4"), "{e}");
}

#[test]
fn an_o_band_cwdm_channel_escapes_c_band_raman_at_the_cost_of_fibre_loss() {
    // Decoy BB84 over 25 km beside 16 × 0 dBm C-band channels: on ITU 30 (C band, next to
    // the traffic's Stokes side) Raman photons swamp it; on CWDM 1311 (O band, 35 THz
    // away, beyond silica's Raman band) it keeps its key, with the O band's higher loss.
    let text = |ch: &str| {
        format!(
            r#"
name = "t"
[[node]]
id = "a"
[[node]]
id = "b"
[[fibre]]
id = "ab"
ends = ["a", "b"]
length_km = 25.0
classical = [{{ from = "a", itu_channel = 44, count = 16, launch_power_dbm = 0.0 }}]
[[link]]
id = "l"
protocol = "decoy-bb84"
ends = ["a", "b"]
channel = {ch}
"#
        )
    };
    let c_band = plan(&parse(&text("30")).expect("valid"), &PlanOptions::default());
    let o_band = plan(
        &parse(&text("1311")).expect("valid"),
        &PlanOptions::default(),
    );
    let (c, o) = (&c_band.links[0], &o_band.links[0]);
    assert!(c.noise[0].raman_hz > 1e7, "{:?}", c.noise);
    assert_eq!(o.noise[0].raman_hz, 0.0);
    // What is left is the demultiplexer's finite isolation (110 dB) from the C-band power.
    assert!(
        o.noise[0].total_hz() < 1e-3 * c.noise[0].total_hz(),
        "{:?}",
        o.noise
    );
    assert!(
        o.key_rate_bps() > 10.0 * c.key_rate_bps(),
        "{} vs {}",
        o.key_rate_bps(),
        c.key_rate_bps()
    );
    // Rayleigh scattering: ~0.35 dB/km at 1311 nm against 0.2 at 1550 nm.
    assert!(
        o.loss_db > c.loss_db + 3.0,
        "{} vs {}",
        o.loss_db,
        c.loss_db
    );
    // A CWDM band takes 13 nm: a DWDM channel inside it clashes.
    let e = parse(&text("1531")).expect_err("CWDM 1531 covers ITU 44…");
    assert!(e.contains("fibre \"ab\": CWDM 1531 overlaps ITU"), "{e}");
}

#[test]
fn entangled_pairs_on_cwdm_bands_pay_for_dispersion() {
    // A CWDM pair collects 13 nm / 0.6 nm ≈ 22 times the pairs of a DWDM pair, but each
    // photon's 13 nm band spreads the coincidence peak by ~17 ps/(nm·km) × 13 nm per km of
    // fibre on both arms: 1 km a side gives ~450 ps, 10 km a side ~4.5 ns, against a 120 ps
    // coincidence window.
    let net = |km: f64, ch: &str| {
        format!(
            r#"
name = "t"
[[node]]
id = "a"
[[node]]
id = "s"
kind = "source"
[[node]]
id = "b"
[[fibre]]
id = "as"
ends = ["a", "s"]
length_km = {km}
[[fibre]]
id = "sb"
ends = ["s", "b"]
length_km = {km}
[[link]]
id = "e"
scenario = "../scenarios/nice-50km.toml"
ends = ["a", "b"]
via = "s"
channel = {ch}
"#
        )
    };
    let rate = |km: f64, ch: &str| {
        let n = parse(&net(km, ch)).expect("valid");
        let p = plan(&n, &PlanOptions::default());
        let spread = match &p.links[0].configured {
            qkdnet_keyrate::protocol::Protocol::Bbm92Cw(h) => h.dispersion_spread_ps,
            other => panic!("{other:?}"),
        };
        (p.links[0].key_rate_bps(), spread)
    };
    let (short, s1) = rate(1.0, "[1571, 1551]");
    let (long, s10) = rate(10.0, "[1571, 1551]");
    let (dwdm, s0) = rate(1.0, "[21, 22]");
    assert!((400.0..500.0).contains(&s1), "{s1} ps");
    assert!((s10 / s1 - 10.0).abs() < 1e-9, "{s10} vs {s1}");
    assert_eq!(s0, 0.0, "DWDM: the scenario's FWHM includes dispersion");
    assert!(short > 0.0 && long < 0.3 * short, "{short} vs {long}");
    assert!(dwdm > 0.0, "{dwdm}");
    // One photon on each grid, or a CWDM pair that does not conserve energy: refused.
    let e = parse(&net(1.0, "[1571, 22]")).expect_err("mixed");
    assert!(e.contains("mixes a DWDM channel and a CWDM band"), "{e}");
    let e = parse(&net(1.0, "[1591, 1551]")).expect_err("not conjugate");
    assert!(
        e.contains("[1591, 1551] is not an energy-conjugate pair"),
        "{e}"
    );
}
