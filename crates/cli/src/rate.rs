//! `qkdnet rate`: key-rate predictions from flags or a scenario file.

use crate::scenario::{self, Channel, Reference};
use crate::CliError;
use qkdnet_keyrate::optimise::OptimiseOptions;
use qkdnet_keyrate::{sweep, FiniteKey, Protocol, Row, Security, SweepOptions};
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `qkdnet rate`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Protocols: decoy-bb84, bbm92-cw, bbm92-pulsed, mdi, sns, sns-aopp, pm, cv-gg02, di-memory.\n\
Examples:\n  qkdnet rate --protocol sns-aopp --distance-km 0:600:20\n  \
qkdnet rate --scenario scenarios/nice-50km.toml\n  \
qkdnet rate --protocol decoy-bb84 --set detector_efficiency=0.2 --loss-db 0:40:5 --json"
)]
pub struct RateArgs {
    /// Protocol family (see the list below). Not needed with --scenario.
    #[arg(long)]
    protocol: Option<String>,
    /// Scenario file (TOML) with protocol, hardware, channel and published figures.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Distance sweep in km: START:STOP:STEP, a single value, or a comma list.
    #[arg(long, value_name = "KM", allow_hyphen_values = true)]
    distance_km: Option<String>,
    /// Loss sweep in dB (instead of distance): START:STOP:STEP, a value, or a list.
    #[arg(long, value_name = "DB", allow_hyphen_values = true)]
    loss_db: Option<String>,
    /// Fibre attenuation for distance sweeps, dB/km (default 0.2 or the scenario's).
    #[arg(long, allow_hyphen_values = true)]
    fibre_db_per_km: Option<f64>,
    /// Extra loss added to the fibre's, dB (components, connectors).
    #[arg(long, allow_hyphen_values = true)]
    extra_loss_db: Option<f64>,
    /// Hardware override FIELD=VALUE (repeatable; nested fields with dots, e.g.
    /// phase_noise.laser_linewidth_hz=1e3).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Asymptotic (infinite-block) rates: planning only, not a security claim.
    #[arg(long)]
    asymptotic: bool,
    /// Finite-key block size (signals per block).
    #[arg(long, allow_hyphen_values = true)]
    block_size: Option<f64>,
    /// Finite-key secrecy parameter ε_sec.
    #[arg(long, allow_hyphen_values = true)]
    eps_sec: Option<f64>,
    /// Finite-key correctness parameter ε_cor.
    #[arg(long, allow_hyphen_values = true)]
    eps_cor: Option<f64>,
    /// Keep every parameter at its configured value (no optimisation).
    #[arg(long)]
    fixed: bool,
    /// Optimise only these free parameters (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    free: Option<Vec<String>>,
    /// Print JSON: {"rows": [...], "references": [...]}.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV.
    #[arg(long)]
    csv: bool,
    /// Draw key rate against distance (or loss) with PLOB and TGW to an SVG file.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<PathBuf>,
}

/// Parses `START:STOP:STEP`, a single value, or a comma list; values must be finite ≥ 0.
pub fn parse_range(flag: &str, s: &str) -> Result<Vec<f64>, CliError> {
    let num = |t: &str| -> Result<f64, CliError> {
        let v: f64 = t
            .trim()
            .parse()
            .map_err(|_| CliError::input(format!("{flag}: \"{t}\" is not a number")))?;
        if !v.is_finite() {
            return Err(CliError::input(format!("{flag}: must be finite, got {t}")));
        }
        if v < 0.0 {
            return Err(CliError::input(format!("{flag}: must be ≥ 0, got {v}")));
        }
        Ok(v)
    };
    let parts: Vec<&str> = s.split(':').collect();
    match parts.len() {
        1 => s.split(',').map(num).collect(),
        3 => {
            let (a, b, step) = (num(parts[0])?, num(parts[1])?, num(parts[2])?);
            if step <= 0.0 {
                return Err(CliError::input(format!(
                    "{flag}: step must be > 0, got {step}"
                )));
            }
            if b < a {
                return Err(CliError::input(format!(
                    "{flag}: stop {b} is below start {a}"
                )));
            }
            let n = ((b - a) / step + 1e-9).floor() as usize + 1;
            if n > 1_000_000 {
                return Err(CliError::input(format!(
                    "{flag}: {n} points is too many (max 1000000)"
                )));
            }
            Ok((0..n).map(|i| a + i as f64 * step).collect())
        }
        _ => Err(CliError::input(format!(
            "{flag}: expected START:STOP:STEP, a value or a comma list, got \"{s}\""
        ))),
    }
}

fn apply_override(table: &mut toml::Table, spec: &str) -> Result<(), CliError> {
    let (key, value) = spec
        .split_once('=')
        .ok_or_else(|| CliError::input(format!("--set: expected FIELD=VALUE, got \"{spec}\"")))?;
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    if let toml::Value::Float(f) = parsed {
        if !f.is_finite() {
            return Err(CliError::input(format!(
                "--set {key}: must be finite, got {value}"
            )));
        }
    }
    let mut path: Vec<&str> = key.split('.').collect();
    let last = path.pop().unwrap_or(key);
    let mut t = table;
    for p in path {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| CliError::input(format!("--set {key}: {p} is not a table")))?;
    }
    t.insert(last.to_string(), parsed);
    Ok(())
}

struct Setup {
    protocol: Protocol,
    name: String,
    channel: Channel,
    free: Option<Vec<String>>,
    finite: FiniteKey,
    references: Vec<Reference>,
    title: String,
}

fn setup(args: &RateArgs) -> Result<Setup, CliError> {
    let (name, mut hardware, channel, free, finite, references, title) = match &args.scenario {
        Some(path) => {
            let s = scenario::load(path)?;
            (
                s.protocol,
                s.hardware.unwrap_or_default(),
                s.channel,
                s.optimise.free,
                s.finite_key,
                s.references,
                s.name,
            )
        }
        None => {
            let name = args.protocol.clone().ok_or_else(|| {
                CliError::input(format!(
                    "give --protocol NAME or --scenario FILE (protocols: {})",
                    qkdnet_keyrate::protocol::NAMES.join(", ")
                ))
            })?;
            (
                name.clone(),
                toml::Table::new(),
                Channel::default(),
                None,
                None,
                Vec::new(),
                name,
            )
        }
    };
    for spec in &args.set {
        apply_override(&mut hardware, spec)?;
    }
    let origin = args
        .scenario
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "--protocol".into());
    let protocol = scenario::build_protocol(&name, &hardware, &origin)?;
    let mut finite = finite.unwrap_or_default();
    if let Some(b) = args.block_size {
        finite.block_size = b;
    }
    if let Some(e) = args.eps_sec {
        finite.eps_sec = e;
    }
    if let Some(e) = args.eps_cor {
        finite.eps_cor = e;
    }
    finite.validate().map_err(|e| {
        CliError::input(format!(
            "--{}: {}",
            e.field.replace("finite_key.", "").replace('_', "-"),
            e.reason
        ))
    })?;
    let mut channel = channel;
    if let Some(a) = args.fibre_db_per_km {
        if !a.is_finite() || a < 0.0 {
            return Err(CliError::input(format!(
                "--fibre-db-per-km: must be a finite number ≥ 0, got {a}"
            )));
        }
        channel.fibre_loss_db_per_km = a;
    }
    if let Some(x) = args.extra_loss_db {
        if !x.is_finite() || x < 0.0 {
            return Err(CliError::input(format!(
                "--extra-loss-db: must be a finite number ≥ 0, got {x}"
            )));
        }
        channel.extra_loss_db = x;
    }
    let free = if args.fixed {
        Some(Vec::new())
    } else {
        args.free.clone().or(free)
    };
    Ok(Setup {
        protocol,
        name,
        channel,
        free,
        finite,
        references,
        title,
    })
}

fn free_mask(protocol: &Protocol, free: &Option<Vec<String>>) -> Result<Vec<bool>, CliError> {
    let params = protocol.model().free_params();
    match free {
        None => Ok(vec![true; params.len()]),
        Some(names) => {
            for n in names {
                if !params.iter().any(|p| p.name == n) {
                    let known: Vec<&str> = params.iter().map(|p| p.name).collect();
                    return Err(CliError::input(format!(
                        "free parameter \"{n}\" is not one of this protocol's: {}",
                        if known.is_empty() {
                            "(none)".into()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
            }
            Ok(params
                .iter()
                .map(|p| names.iter().any(|n| n == p.name))
                .collect())
        }
    }
}

fn row_json(r: &Row) -> serde_json::Value {
    let params: serde_json::Map<String, serde_json::Value> = r
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "distance_km": r.distance_km,
        "loss_db": r.loss_db,
        "key_rate_per_pulse": r.key_rate_per_pulse,
        "key_rate_bps": r.key_rate_bps,
        "plob_per_pulse": r.plob_per_pulse,
        "tgw_per_pulse": r.tgw_per_pulse,
        "qber_key": r.qber_key,
        "qber_test": r.qber_test,
        "parameters": params,
    })
}

fn quantity(r: &Row, q: &str) -> Option<f64> {
    Some(match q {
        "key_rate_bps" => r.key_rate_bps,
        "key_rate_per_pulse" => r.key_rate_per_pulse,
        "qber_key" => r.qber_key,
        "qber_test" => r.qber_test,
        "above_plob" => r.key_rate_per_pulse / r.plob_per_pulse,
        _ => return None,
    })
}

/// The memory-link figures of merit at a point, for DI-QKD over memories.
fn memory_point(
    p: &Protocol,
    loss_db: f64,
    distance_km: Option<f64>,
) -> Option<qkdnet_keyrate::di::MemoryLinkPoint> {
    match p {
        Protocol::Di(m) => {
            let len = distance_km.unwrap_or(loss_db / m.fibre_attenuation_db_per_km);
            Some(m.link.point(loss_db, len))
        }
        _ => None,
    }
}

/// Runs `qkdnet rate`.
pub fn run(args: &RateArgs) -> Result<(), CliError> {
    let s = setup(args)?;
    let security = if args.asymptotic {
        Security::Asymptotic
    } else {
        Security::Finite(s.finite)
    };
    let mask = free_mask(&s.protocol, &s.free)?;
    let ch = &s.channel;
    let to_loss = |d: f64| d * ch.fibre_loss_db_per_km + ch.extra_loss_db;
    let points: Vec<(Option<f64>, f64)> = if let Some(l) = &args.loss_db {
        if args.distance_km.is_some() {
            return Err(CliError::input("give --distance-km or --loss-db, not both"));
        }
        parse_range("--loss-db", l)?
            .into_iter()
            .map(|l| (None, l))
            .collect()
    } else if let Some(d) = &args.distance_km {
        parse_range("--distance-km", d)?
            .into_iter()
            .map(|d| (Some(d), to_loss(d)))
            .collect()
    } else if let Some(l) = ch.loss_db {
        vec![(ch.distance_km, l)]
    } else if let Some(d) = ch.distance_km {
        vec![(Some(d), to_loss(d))]
    } else {
        (0..=20)
            .map(|i| (Some(i as f64 * 10.0), to_loss(i as f64 * 10.0)))
            .collect()
    };
    let opts = SweepOptions {
        points,
        free: mask.clone(),
        security,
        optimiser: OptimiseOptions::default(),
    };
    let rows = sweep(&s.protocol, &opts);
    // Published figures: evaluate at each reference's own point.
    let mut refs = Vec::new();
    for r in &s.references {
        let loss = r
            .loss_db
            .unwrap_or_else(|| to_loss(r.distance_km.unwrap_or(0.0)));
        let one = SweepOptions {
            points: vec![(r.distance_km, loss)],
            ..opts.clone()
        };
        let row = sweep(&s.protocol, &one).remove(0);
        let memory = memory_point(&s.protocol, loss, r.distance_km);
        let ours = quantity(&row, &r.quantity)
            .or(if r.quantity == "eta_link" { memory.map(|m| m.eta_link) } else { None })
            .ok_or_else(|| CliError::input(format!("reference quantity \"{}\" is not one of key_rate_bps, key_rate_per_pulse, qber_key, qber_test, above_plob, eta_link (memory links)", r.quantity)))?;
        let rel = if r.value != 0.0 {
            ours / r.value - 1.0
        } else {
            f64::NAN
        };
        refs.push((r.clone(), loss, ours, rel));
    }
    if let Some(path) = &args.plot {
        crate::plot::draw(path, &s.title, &rows)
            .map_err(|e| CliError::runtime(format!("{}: {e}", path.display())))?;
    }
    let security_name = match security {
        Security::Asymptotic => "asymptotic (planning only)".to_string(),
        Security::Finite(f) => format!(
            "finite key: block {:.3e}, eps_sec {:.0e}, eps_cor {:.0e}",
            f.block_size, f.eps_sec, f.eps_cor
        ),
    };
    let memory = rows.first().and_then(|r| {
        memory_point(&s.protocol, r.loss_db, r.distance_km).map(|m| (r.distance_km, m))
    });
    if args.json {
        let out = json!({
            "memory_link": memory.map(|(d, m)| json!({
                "distance_km": d, "generation_time_s": m.generation_time_s, "attempt_rate_hz": m.attempt_rate_hz,
                "success_probability": m.success_probability, "eta_link": m.eta_link, "delivery_fidelity": m.delivery_fidelity,
            })),
            "protocol": s.name,
            "scenario": s.title,
            "security": security_name,
            "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
            "references": refs.iter().map(|(r, loss, ours, rel)| json!({
                "quantity": r.quantity, "published": r.value, "qkdnet": ours, "relative_difference": rel,
                "loss_db": loss, "distance_km": r.distance_km, "citation": r.citation,
                "within_tolerance": rel.abs() <= r.tolerance, "tolerance": r.tolerance,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    if args.csv {
        let pnames: Vec<String> = rows
            .first()
            .map(|r| r.parameters.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        println!("distance_km,loss_db,key_rate_per_pulse,key_rate_bps,qber_key,qber_test,plob_per_pulse,tgw_per_pulse{}", pnames.iter().map(|n| format!(",{n}")).collect::<String>());
        for r in &rows {
            println!(
                "{},{},{:e},{:e},{},{},{:e},{:e}{}",
                r.distance_km.map(|d| d.to_string()).unwrap_or_default(),
                r.loss_db,
                r.key_rate_per_pulse,
                r.key_rate_bps,
                r.qber_key,
                r.qber_test,
                r.plob_per_pulse,
                r.tgw_per_pulse,
                r.parameters
                    .iter()
                    .map(|(_, v)| format!(",{v:e}"))
                    .collect::<String>()
            );
        }
        return Ok(());
    }
    println!("{} — {} — {}", s.title, s.name, security_name);
    println!(
        "{:>9} {:>8} {:>12} {:>12} {:>8} {:>8} {:>11}  parameters",
        "dist_km", "loss_dB", "key/pulse", "key_bit/s", "qber_k", "qber_t", "PLOB/pulse"
    );
    for r in &rows {
        println!(
            "{:>9} {:>8.2} {:>12.4e} {:>12.4e} {:>8.4} {:>8.4} {:>11.4e}  {}",
            r.distance_km
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.loss_db,
            r.key_rate_per_pulse,
            r.key_rate_bps,
            r.qber_key,
            r.qber_test,
            r.plob_per_pulse,
            r.parameters
                .iter()
                .map(|(k, v)| format!("{k}={v:.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some((d, m)) = memory {
        println!(
            "memory link{}: attempts {:.0}/s, success {:.3e}, T_gen {:.3} s, eta_link {:.3}, deterministic-delivery fidelity {:.3}",
            d.map(|d| format!(" at {d} km")).unwrap_or_default(),
            m.attempt_rate_hz, m.success_probability, m.generation_time_s, m.eta_link, m.delivery_fidelity
        );
    }
    for (r, loss, ours, rel) in &refs {
        println!(
            "published {} = {:.4e} at {:.2} dB ({}); qkdnet {:.4e} ({:+.1} %){}",
            r.quantity,
            r.value,
            loss,
            r.citation,
            ours,
            rel * 100.0,
            if rel.abs() <= r.tolerance {
                ""
            } else {
                "  [outside tolerance]"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("--d", "0:400:100").unwrap(),
            vec![0.0, 100.0, 200.0, 300.0, 400.0]
        );
        assert_eq!(parse_range("--d", "0").unwrap(), vec![0.0]);
        assert_eq!(parse_range("--d", "1,2.5").unwrap(), vec![1.0, 2.5]);
        assert!(parse_range("--d", "-1")
            .unwrap_err()
            .message
            .contains("≥ 0"));
        assert!(parse_range("--d", "NaN")
            .unwrap_err()
            .message
            .contains("finite"));
        assert!(parse_range("--d", "x")
            .unwrap_err()
            .message
            .contains("not a number"));
        assert!(parse_range("--d", "0:10:0").is_err());
    }
}
