//! The HTML report of `qkdnet run`: the summary, SVG plots over virtual time of the key
//! rate, the QBERs, the sync offset the tracker follows and the actuators, and the
//! supervisor's events. One self-contained file (inline SVG, no scripts).

use plotters::prelude::*;
use std::fmt::Write as _;

/// One per-minute point of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// End of the minute, s of virtual time.
    pub t_s: f64,
    /// The supervisor's state at the end of the minute.
    pub state: String,
    /// Key-basis coincidences kept per second.
    pub key_coincidences_per_s: f64,
    /// QBER of the key basis (NaN with no coincidences).
    pub qber_z: f64,
    /// QBER of the test basis (NaN with no coincidences).
    pub qber_x: f64,
    /// Pump power, mW.
    pub pump_mw: f64,
    /// Phase shifter, rad.
    pub phase_rad: f64,
    /// Polarisation controllers, Alice and Bob, rad.
    pub polarisation_rad: [f64; 2],
    /// Offset of Bob's tagger against Alice's that the sync tracks (clocks, drift, glitches
    /// and fibre delays), ns.
    pub sync_offset_ns: f64,
}

/// One distilled block.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BlockPoint {
    /// End of the block, s of virtual time.
    pub t_s: f64,
    /// Final key bits kept (after replenishing the authentication pads).
    pub final_bits: u64,
    /// Block length, s.
    pub length_s: f64,
}

/// A supervisor event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Time, s.
    pub t_s: f64,
    /// Transition, e.g. `Producing → Recovering`.
    pub transition: String,
    /// The fault found, if any.
    pub fault: Option<String>,
}

/// Everything the report shows.
pub struct Report<'a> {
    /// Scenario file.
    pub scenario: &'a str,
    /// Summary rows (label, value).
    pub summary: Vec<(&'static str, String)>,
    /// Per-minute samples.
    pub samples: &'a [Sample],
    /// Distilled blocks.
    pub blocks: &'a [BlockPoint],
    /// Events.
    pub events: &'a [Event],
}

struct Series<'a> {
    label: &'a str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Hours on the x axis when the run is longer than three hours, minutes otherwise.
fn time_axis(samples: &[Sample]) -> (f64, &'static str) {
    match samples.last() {
        Some(s) if s.t_s > 3.0 * 3600.0 => (3600.0, "time (h)"),
        _ => (60.0, "time (min)"),
    }
}

/// One line chart as an SVG string; event times as faint vertical lines.
fn chart(
    title: &str,
    y_desc: &str,
    x_desc: &str,
    x_max: f64,
    series: &[Series<'_>],
    events: &[f64],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let ys = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite());
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        let (lo, hi) = if lo <= hi {
            let pad = ((hi - lo) * 0.08).max(hi.abs() * 1e-3).max(1e-9);
            (lo - pad, hi + pad)
        } else {
            (0.0, 1.0)
        };
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max.max(1e-9), lo..hi)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        for &t in events {
            c.draw_series(LineSeries::new(
                [(t, lo), (t, hi)],
                RGBColor(200, 60, 60).mix(0.35),
            ))
            .map_err(|e| e.to_string())?;
        }
        for s in series {
            let colour = s.colour;
            // Gaps (NaN) split the line.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for &p in &s.points {
                if p.1.is_finite() {
                    if let Some(r) = runs.last_mut() {
                        r.push(p);
                    }
                } else if runs.last().is_some_and(|r| !r.is_empty()) {
                    runs.push(Vec::new());
                }
            }
            for (i, r) in runs.into_iter().enumerate() {
                let drawn = c
                    .draw_series(LineSeries::new(r, colour.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
                if i == 0 {
                    drawn.label(s.label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                }
            }
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The report as one HTML document.
pub fn html(r: &Report<'_>) -> Result<String, String> {
    let (unit, x_desc) = time_axis(r.samples);
    let x_max = r.samples.last().map_or(1.0, |s| s.t_s / unit);
    let at = |t: f64| t / unit;
    let ev: Vec<f64> = r.events.iter().map(|e| at(e.t_s)).collect();
    let pts = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        r.samples.iter().map(|s| (at(s.t_s), f(s))).collect()
    };
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let green = RGBColor(44, 160, 44);
    let purple = RGBColor(148, 103, 189);
    let key = r
        .blocks
        .iter()
        .map(|b| (at(b.t_s), b.final_bits as f64 / b.length_s))
        .collect();
    let charts = [
        chart(
            "Secret key rate per distilled block",
            "bit/s",
            x_desc,
            x_max,
            &[Series {
                label: "final key / block length",
                colour: blue,
                points: key,
            }],
            &ev,
        )?,
        chart(
            "QBERs (per minute, while producing)",
            "%",
            x_desc,
            x_max,
            &[
                Series {
                    label: "QBER_Z (key basis)",
                    colour: blue,
                    points: pts(&|s| 100.0 * s.qber_z),
                },
                Series {
                    label: "QBER_X (test basis)",
                    colour: orange,
                    points: pts(&|s| 100.0 * s.qber_x),
                },
            ],
            &ev,
        )?,
        chart(
            "Offset tracked by the sync (Bob's tagger against Alice's)",
            "ns",
            x_desc,
            x_max,
            &[Series {
                label: "clock offset + drift + glitches + fibre delay",
                colour: purple,
                points: pts(&|s| s.sync_offset_ns),
            }],
            &ev,
        )?,
        chart(
            "Pump power (steered to the QBER_Z target)",
            "mW",
            x_desc,
            x_max,
            &[Series {
                label: "pump",
                colour: green,
                points: pts(&|s| s.pump_mw),
            }],
            &ev,
        )?,
        chart(
            "Phase and polarisation actuators",
            "rad",
            x_desc,
            x_max,
            &[
                Series {
                    label: "analyser phase shifter",
                    colour: blue,
                    points: pts(&|s| s.phase_rad),
                },
                Series {
                    label: "polarisation, Alice",
                    colour: orange,
                    points: pts(&|s| s.polarisation_rad[0]),
                },
                Series {
                    label: "polarisation, Bob",
                    colour: green,
                    points: pts(&|s| s.polarisation_rad[1]),
                },
            ],
            &ev,
        )?,
    ];
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>qkdnet run: {}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
         figure{{margin:1em 0}}</style></head><body>\n<h1>qkdnet run: {}</h1>\n<h2>Summary</h2>\n<table>\n",
        escape(r.scenario),
        escape(r.scenario)
    );
    for (k, v) in &r.summary {
        let _ = writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    out.push_str(
        "</table>\n<h2>Over time</h2>\n<p>Faint red lines mark the supervisor's events.</p>\n",
    );
    for c in &charts {
        let _ = writeln!(out, "<figure>{c}</figure>");
    }
    out.push_str(
        "<h2>Events</h2>\n<table><tr><th>time (s)</th><th>transition</th><th>fault</th></tr>\n",
    );
    for e in r.events {
        let _ = writeln!(
            out,
            "<tr><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            e.t_s,
            escape(&e.transition),
            escape(e.fault.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>\n</body></html>\n");
    Ok(out)
}
