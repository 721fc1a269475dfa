//! `qkdnet plan NETWORK.toml`: the planner's table, JSON and an SVG drawing of the network.

use crate::CliError;
use clap::Args;
use plotters::prelude::*;
use qkdnet_network::plan::{plan, LinkPlan, Plan, PlanOptions};
use qkdnet_network::spec::{Network, NodeKind};
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `qkdnet plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Network file (see docs/NETWORK.md and networks/).
    pub network: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG drawing of the network with each link's predicted rate.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Asymptotic rates (planning only; the default is each link's finite-key bound).
    #[arg(long)]
    pub asymptotic: bool,
    /// Skip the search for the classical load each link survives.
    #[arg(long)]
    pub no_survival: bool,
}

fn fmt_rate(bps: f64) -> String {
    if bps <= 0.0 {
        "0".into()
    } else if bps >= 1e6 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.2} kbit/s", bps / 1e3)
    } else if bps >= 1.0 {
        format!("{bps:.1} bit/s")
    } else {
        format!("{bps:.2e} bit/s")
    }
}

fn nonfinite_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!(x)
    } else if x > 0.0 {
        json!("inf")
    } else {
        serde_json::Value::Null
    }
}

fn link_json(l: &LinkPlan) -> serde_json::Value {
    let row = |r: &Option<qkdnet_keyrate::sweep::Row>| {
        r.as_ref().map(|r| {
            json!({
                "key_rate_bps": r.key_rate_bps.max(0.0),
                "key_rate_per_pulse": r.key_rate_per_pulse.max(0.0),
                "plob_per_pulse": r.plob_per_pulse,
                "above_plob": if r.plob_per_pulse > 0.0 { json!(r.key_rate_per_pulse.max(0.0) / r.plob_per_pulse) } else { serde_json::Value::Null },
                "qber_key": r.qber_key,
                "qber_test": r.qber_test,
                "parameters": r.parameters.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            })
        })
    };
    json!({
        "id": l.id,
        "protocol": l.protocol,
        "ends": l.ends,
        "via": l.via,
        "channels": l.channels,
        "channels_assigned_by_planner": l.assigned,
        "arm_km": l.arm_km,
        "loss_db": l.loss_db,
        "balance_db": l.balance_db,
        "noise_photons_per_s": l.noise.iter().map(|n| json!({"raman": n.raman_hz, "crosstalk": n.crosstalk_hz})).collect::<Vec<_>>(),
        "noise_modelled": l.noise_modelled,
        "key_rate_bps": l.key_rate_bps(),
        "produces_key": l.key_rate_bps() > 0.0,
        "prediction": row(&l.row),
        "without_classical": row(&l.quiet_row),
        "survives": l.survival.map(|s| json!({
            "max_offset_db": s.max_offset_db.map(nonfinite_null),
            "max_launch_dbm_per_channel": s.max_launch_dbm.map(nonfinite_null),
        })),
    })
}

fn plan_json(net: &Network, p: &Plan) -> serde_json::Value {
    json!({
        "network": p.name,
        "file": net.origin,
        "security": if p.asymptotic { "asymptotic (planning only)" } else { "finite key (each link's block and ε)" },
        "links": p.links.iter().map(link_json).collect::<Vec<_>>(),
        "sae_pairs": p.pairs.iter().map(|q| json!({
            "saes": q.saes, "nodes": q.nodes, "path": q.path, "links": q.links,
            "key_rate_bps": q.key_rate_bps, "bottleneck": q.bottleneck,
        })).collect::<Vec<_>>(),
        "fibres": p.fibres.iter().map(|f| json!({
            "id": f.id,
            "channels": f.channels.iter().map(|(c, who)| json!({"itu": c, "wavelength_nm": qkdnet_network::grid::wavelength_nm(*c), "use": who})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "warnings": p.warnings,
    })
}

fn print_tables(net: &Network, p: &Plan) {
    println!(
        "{} — {} nodes, {} fibres, {} links — {}",
        p.name,
        net.nodes.len(),
        net.fibres.len(),
        net.links.len(),
        if p.asymptotic {
            "asymptotic (planning only)"
        } else {
            "finite key"
        }
    );
    println!();
    println!(
        "  {:<16} {:<10} {:<24} {:<9} {:>6} {:>7} {:>10} {:>14} {:>7} {:>7}  notes",
        "link",
        "protocol",
        "ends (via)",
        "ITU ch",
        "km",
        "loss dB",
        "noise/s",
        "key rate",
        "qber_k",
        "qber_t"
    );
    for l in &p.links {
        let ends = match &l.via {
            Some(v) if v != &l.ends[0] => format!("{}–{} ({v})", l.ends[0], l.ends[1]),
            _ => format!("{}–{}", l.ends[0], l.ends[1]),
        };
        let ch = l.channels.as_ref().map_or("none".into(), |c| {
            c.iter().map(u32::to_string).collect::<Vec<_>>().join("/")
        });
        let km: f64 = l.arm_km.iter().sum();
        let noise: f64 = l.noise.iter().map(|n| n.total_hz()).sum();
        let mut notes = Vec::new();
        if l.assigned {
            notes.push("channel assigned".to_string());
        }
        if l.balance_db > 0.05 {
            notes.push(format!("short arm +{:.1} dB", l.balance_db));
        }
        if let Some(r) = &l.row {
            if l.protocol.starts_with("sns") || l.protocol == "pm" {
                notes.push(format!(
                    "{:.2}× PLOB",
                    r.key_rate_per_pulse.max(0.0) / r.plob_per_pulse
                ));
            }
        }
        if let Some(q) = &l.quiet_row {
            notes.push(format!("{} without classical", fmt_rate(q.key_rate_bps)));
        }
        if let Some(s) = l.survival {
            notes.push(match s.max_launch_dbm {
                None => "no key even at −60 dB of classical power".into(),
                Some(x) if x.is_infinite() => "survives +40 dB more classical power".into(),
                Some(x) => format!("survives ≤ {x:.1} dBm per classical channel"),
            });
        }
        if !l.noise_modelled {
            notes.push("noise not modelled for this family".into());
        }
        let (qk, qt) = l
            .row
            .as_ref()
            .map_or((f64::NAN, f64::NAN), |r| (r.qber_key, r.qber_test));
        println!(
            "  {:<16} {:<10} {:<24} {:<9} {:>6.1} {:>7.2} {:>10.3e} {:>14} {:>7.4} {:>7.4}  {}",
            l.id,
            l.protocol,
            ends,
            ch,
            km,
            l.loss_db,
            noise,
            fmt_rate(l.key_rate_bps()),
            qk,
            qt,
            notes.join("; ")
        );
    }
    if !p.pairs.is_empty() {
        println!();
        println!("  {:<30} {:>14}  path (bottleneck)", "SAE pair", "key rate");
        for q in &p.pairs {
            println!(
                "  {:<30} {:>14}  {}{}",
                format!("{} ↔ {}", q.saes[0], q.saes[1]),
                fmt_rate(q.key_rate_bps),
                q.path.join(" → "),
                q.bottleneck
                    .as_ref()
                    .filter(|_| q.links.len() > 1)
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default()
            );
        }
    }
    let busy: Vec<_> = p.fibres.iter().filter(|f| !f.channels.is_empty()).collect();
    if !busy.is_empty() {
        println!();
        println!("  fibre channel plan (ITU 100 GHz channel: use)");
        for f in busy {
            let mut parts: Vec<String> = Vec::new();
            let mut classical: Vec<u32> = Vec::new();
            for (c, who) in &f.channels {
                if who == "classical" {
                    classical.push(*c);
                } else {
                    parts.push(format!("{c}:{who}"));
                }
            }
            if let (Some(a), Some(b)) = (classical.first(), classical.last()) {
                parts.push(format!("classical {}× ({a}–{b})", classical.len()));
            }
            println!("  {:<16} {}", f.id, parts.join(", "));
        }
    }
    for w in &p.warnings {
        println!("warning: {w}");
    }
}

/// Node positions for the drawing: the file's, or a circle.
fn positions(net: &Network) -> Vec<(f64, f64)> {
    let n = net.nodes.len();
    if net.nodes.iter().all(|x| x.position_km.is_some()) {
        return net
            .nodes
            .iter()
            .map(|x| {
                let [a, b] = x.position_km.unwrap_or_default();
                (a, b)
            })
            .collect();
    }
    (0..n)
        .map(|i| {
            let t = std::f64::consts::TAU * i as f64 / n.max(1) as f64;
            (100.0 * t.cos(), 100.0 * t.sin())
        })
        .collect()
}

/// Draws the network: fibres grey, links coloured by whether they make key, labelled with
/// their predicted rate; trusted nodes filled, relays and sources hollow.
fn draw(path: &std::path::Path, net: &Network, p: &Plan) -> Result<(), String> {
    let (w, h) = (1100u32, 800u32);
    let pos = positions(net);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &pos {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let span = (x1 - x0).max(y1 - y0).max(1e-9);
    let margin = 90.0;
    let scale = ((w as f64 - 2.0 * margin) / span).min((h as f64 - 2.0 * margin - 40.0) / span);
    let at = |i: usize| -> (i32, i32) {
        let (x, y) = pos[i];
        (
            (margin + (x - x0) * scale) as i32,
            (h as f64 - margin - (y - y0) * scale) as i32,
        )
    };
    let root = SVGBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "{} — predicted {} key rates",
        p.name,
        if p.asymptotic {
            "asymptotic"
        } else {
            "finite-key"
        }
    );
    root.draw(&Text::new(title, (20, 20), ("sans-serif", 20)))
        .map_err(|e| e.to_string())?;
    let grey = RGBColor(170, 170, 170);
    for f in &net.fibres {
        let (a, b) = (at(f.ends[0]), at(f.ends[1]));
        let colour = if f.classical.is_empty() {
            grey
        } else {
            RGBColor(230, 150, 60)
        };
        root.draw(&PathElement::new(vec![a, b], colour.stroke_width(3)))
            .map_err(|e| e.to_string())?;
        let mid = ((a.0 + b.0) / 2 + 4, (a.1 + b.1) / 2 + 14);
        let label = if f.classical.is_empty() {
            format!("{:.1} km", f.length_km)
        } else {
            format!("{:.1} km, {} classical", f.length_km, f.classical.len())
        };
        root.draw(&Text::new(
            label,
            mid,
            ("sans-serif", 11)
                .into_font()
                .color(&RGBColor(120, 120, 120)),
        ))
        .map_err(|e| e.to_string())?;
    }
    for (li, l) in net.links.iter().enumerate() {
        let plan = &p.links[li];
        let good = plan.key_rate_bps() > 0.0;
        let colour = if good {
            RGBColor(30, 110, 200)
        } else {
            RGBColor(200, 50, 50)
        };
        let (a, b) = (at(l.ends[0]), at(l.ends[1]));
        // Bow each link off the straight line so parallel links stay apart.
        let bow = 18 + 10 * (li % 4) as i32;
        let (dx, dy) = ((b.0 - a.0) as f64, (b.1 - a.1) as f64);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (nx, ny) = (-dy / len, dx / len);
        let via = l.via.filter(|&v| v != l.ends[0] && v != l.ends[1]).map(at);
        let mid = via.unwrap_or((
            (a.0 + b.0) / 2 + (nx * bow as f64) as i32,
            (a.1 + b.1) / 2 + (ny * bow as f64) as i32,
        ));
        let style = if good {
            colour.stroke_width(2)
        } else {
            colour.mix(0.6).stroke_width(1)
        };
        root.draw(&PathElement::new(vec![a, mid, b], style))
            .map_err(|e| e.to_string())?;
        let label = format!("{}: {}", l.id, fmt_rate(plan.key_rate_bps()));
        let lp = if via.is_some() {
            (
                (a.0 + mid.0) / 2 + (nx * 12.0) as i32,
                (a.1 + mid.1) / 2 + (ny * 12.0) as i32,
            )
        } else {
            (mid.0 + 4, mid.1 - 4)
        };
        root.draw(&Text::new(
            label,
            lp,
            ("sans-serif", 12).into_font().color(&colour),
        ))
        .map_err(|e| e.to_string())?;
    }
    for (i, n) in net.nodes.iter().enumerate() {
        let c = at(i);
        let style = match n.kind {
            NodeKind::Trusted => RGBColor(20, 60, 120).filled(),
            NodeKind::Relay => RGBColor(140, 40, 140).stroke_width(3),
            NodeKind::Source => RGBColor(20, 140, 80).stroke_width(3),
            NodeKind::Patch => grey.filled(),
        };
        let r = if n.kind == NodeKind::Patch { 4 } else { 9 };
        root.draw(&Circle::new(c, r, style))
            .map_err(|e| e.to_string())?;
        let label = if n.saes.is_empty() {
            n.id.clone()
        } else {
            format!("{} [{} SAE]", n.id, n.saes.len())
        };
        root.draw(&Text::new(label, (c.0 + 12, c.1 - 12), ("sans-serif", 13)))
            .map_err(|e| e.to_string())?;
    }
    root.draw(&Text::new(
        "● trusted node   ○ relay (purple) / source (green)   blue: link makes key   red: no key   orange fibre: classical traffic",
        (20, h as i32 - 24),
        ("sans-serif", 12),
    ))
    .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Runs `qkdnet plan`.
pub fn run(args: &PlanArgs) -> Result<(), CliError> {
    let net = qkdnet_network::spec::load(&args.network)?;
    let opts = PlanOptions {
        asymptotic: args.asymptotic,
        survival: !args.no_survival,
    };
    let p = plan(&net, &opts);
    if let Some(svg) = &args.svg {
        let tmp = svg.with_extension("svg.tmp");
        draw(&tmp, &net, &p).map_err(|e| CliError::runtime(format!("{}: {e}", svg.display())))?;
        std::fs::rename(&tmp, svg)
            .map_err(|e| CliError::runtime(format!("{}: {e}", svg.display())))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan_json(&net, &p)).unwrap_or_default()
        );
    } else {
        print_tables(&net, &p);
        if let Some(svg) = &args.svg {
            println!("drawing: {}", svg.display());
        }
    }
    Ok(())
}
