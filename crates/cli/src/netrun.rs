//! `qkdnet run NETWORK.toml`: every runnable link of a network together in virtual time,
//! keys stored at both ends (in each node's KME store with `--store-dir`), the network's
//! events in one ordered log, and a report per link beside the planner's prediction.

use crate::run::RunArgs;
use crate::CliError;
use qkdnet_core::bits::Bits;
use qkdnet_kms::sql::SqlStore;
use qkdnet_kms::KeyStore;
use qkdnet_network::plan::{plan, PlanOptions};
use qkdnet_network::runner::{Runner, RunnerConfig, WINDOW_S};
use qkdnet_network::sim::{CountingSink, KeySink, NetEvent, NetworkSim, SimConfig};
use qkdnet_network::spec::NodeKind;
use serde_json::json;
use std::collections::BTreeMap;

/// Keys into one SQLite KME store per trusted node.
struct StoreSink {
    stores: BTreeMap<String, SqlStore>,
    bits: BTreeMap<String, u64>,
}

impl KeySink for StoreSink {
    fn store(&mut self, node: &str, peer: &str, block_id: u64, key: &Bits) -> Result<(), String> {
        let s = self
            .stores
            .get(node)
            .ok_or_else(|| format!("no store for node {node}"))?;
        // Keys live a year in the store; the KME serving it applies its own TTL policy.
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(365 * 86_400);
        s.add_block(peer, block_id, key, expires)
            .map_err(|e| format!("{node}: storing block {block_id} shared with {peer}: {e}"))?;
        *self.bits.entry(node.to_string()).or_default() += key.len() as u64;
        Ok(())
    }
}

/// Runs a network file.
pub fn run(a: &RunArgs, seconds: f64, runner: RunnerConfig, block_s: f64) -> Result<(), CliError> {
    let net = qkdnet_network::spec::load(&a.scenario)?;
    run_network(a, &net, seconds, runner, block_s)
}

/// Runs `net` (a network file, or one link scenario wrapped as a network).
pub fn run_network(
    a: &RunArgs,
    net: &qkdnet_network::spec::Network,
    seconds: f64,
    runner: RunnerConfig,
    block_s: f64,
) -> Result<(), CliError> {
    let net = net.clone();
    let p = plan(&net, &PlanOptions::PLACEMENT);
    let cfg = SimConfig {
        runner,
        block_s,
        seed: a.seed.unwrap_or(1),
    };
    let mut sim = NetworkSim::new(&net, &p, &cfg)?;
    let mut sink: Box<dyn KeySinkWithBits> = match &a.store_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::runtime(format!("--store-dir: {}: {e}", dir.display())))?;
            let mut stores = BTreeMap::new();
            for n in net.nodes.iter().filter(|n| n.kind == NodeKind::Trusted) {
                let path = dir.join(format!("{}.sqlite", n.id));
                let s = SqlStore::open(&path)
                    .map_err(|e| CliError::runtime(format!("{}: {e}", path.display())))?;
                stores.insert(n.id.clone(), s);
            }
            Box::new(StoreSink {
                stores,
                bits: BTreeMap::new(),
            })
        }
        None => Box::new(CountingSink::default()),
    };
    let windows = (seconds / WINDOW_S).ceil() as u64;
    let bar = indicatif::ProgressBar::new(windows);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{wide_bar} {pos}/{len} windows {msg}")
    {
        bar.set_style(style);
    }
    // A CV block decodes for tens of seconds between two windows: say so.
    let decode_bar = bar.clone();
    sim.on_decode(Box::new(move |link, block, frames| {
        decode_bar.set_message(format!(
            "(link {link}: block {block}, {frames} frames decoded)"
        ));
    }));
    let started = std::time::Instant::now();
    let mut events: Vec<NetEvent> = Vec::new();
    let sink_err = |e: String| CliError::runtime(e);
    let dash = crate::run::start_dashboard(a, &format!("qkdnet run — {}", net.name))?;
    let mut feed = Feed::new(net.links.len(), block_s);
    for w in 0..windows {
        sim.step(
            &net,
            sink.as_sink(),
            &mut |e| {
                if let Some(d) = &dash {
                    d.event(e.t_s, &e.link, &e.what);
                }
                events.push(e);
            },
            &mut |i, out| feed.window(i, out),
        )
        .map_err(sink_err)?;
        if let Some(d) = &dash {
            if (w + 1) % FEED_WINDOWS == 0 {
                for (i, _, t) in sim.links() {
                    feed.point(d, &net.links[i].id, i, t.final_bits);
                }
                for (node, bits) in sink.bits() {
                    d.buffer(&format!("{node} (stored)"), sim.time_s(), bits as f64);
                }
            }
        }
        crate::run::pace(started, sim.time_s(), a.time_scale);
        if w % 256 == 0 {
            bar.set_position(w);
            bar.set_message("");
        }
    }
    sim.finish(&net, sink.as_sink(), &mut |e| events.push(e))
        .map_err(sink_err)?;
    if let Some(d) = &dash {
        // The last blocks, distilled at the end, on the charts too.
        for (i, _, t) in sim.links() {
            feed.point(d, &net.links[i].id, i, t.final_bits);
        }
        for (node, bits) in sink.bits() {
            d.buffer(&format!("{node} (stored)"), sim.time_s(), bits as f64);
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let duration = sim.time_s();
    let ratio = |e: u64, n: u64| if n > 0 { e as f64 / n as f64 } else { f64::NAN };
    let mut links = Vec::new();
    for (i, runner, t) in sim.links() {
        let lp = &p.links[i];
        let predicted = lp.key_rate_bps();
        let measured = t.final_bits as f64 / duration;
        // A CV link's channel as its disclosed symbols estimate it over the run.
        let cv = match runner {
            Runner::Cv(r) if t.cv.pairs >= 2.0 => {
                let (g, noise) = t.cv.gain_noise();
                let (tr, xi) = r.hardware().channel_from(g, noise);
                json!({
                    "block_symbols": r.block_plan().0,
                    "planned_key_per_symbol_at_block": r.block_plan().1,
                    "modulation_variance_snu": r.hardware().modulation_variance_snu,
                    "estimated_transmittance": tr,
                    "estimated_excess_noise_snu": xi,
                    "estimation_pairs": t.cv.pairs,
                })
            }
            _ => serde_json::Value::Null,
        };
        // A DI link's CHSH value over the run against the heralded state's.
        let di = match runner {
            Runner::Di(r) => {
                let chsh_rounds: f64 = t.di.chsh_rounds.iter().flatten().sum();
                let producing_s = t.producing_windows as f64 * WINDOW_S;
                json!({
                    "chsh_observed": if chsh_rounds > 0.0 { json!(t.di.chsh()) } else { serde_json::Value::Null },
                    "chsh_expected": r.link().chsh_after(r.link().emulation().measure_delay_s),
                    "chsh_rounds": chsh_rounds,
                    "key_rounds": t.di.key_rounds,
                    "heralds_per_s_producing": if producing_s > 0.0 { json!((chsh_rounds + t.di.key_rounds) / producing_s) } else { serde_json::Value::Null },
                    "test_fraction": r.hardware().test_fraction,
                })
            }
            _ => serde_json::Value::Null,
        };
        links.push(json!({
            "id": lp.id,
            "ends": lp.ends,
            "channels": lp.channels,
            "loss_db": lp.loss_db,
            "mean_secret_key_rate_bps": measured,
            "planned_key_rate_bps": predicted,
            "measured_over_planned": if predicted > 0.0 { json!(measured / predicted) } else { serde_json::Value::Null },
            "final_key_bits": t.final_bits,
            "blocks_distilled": t.blocks,
            "blocks_without_key": t.blocks_without_key,
            "availability": runner.supervisor().availability(),
            "automatic_restarts": runner.supervisor().restarts,
            "qber_z": ratio(t.z.1, t.z.0),
            "qber_x": ratio(t.x.1, t.x.0),
            "final_pump_mw": runner.pump_mw(),
            "cv": cv,
            "di": di,
        }));
    }
    let report = json!({
        "network": net.name,
        "file": net.origin,
        "duration_s": duration,
        "seed": cfg.seed,
        "wall_seconds": wall,
        "links": links,
        "not_run": sim.skipped().iter().map(|(id, why)| json!({"id": id, "reason": why})).collect::<Vec<_>>(),
        "key_bits_per_node": sink.bits(),
        "store_dir": a.store_dir.as_ref().map(|d| d.display().to_string()),
        "events": events.iter().map(|e| json!({"t_s": e.t_s, "link": e.link, "event": e.what})).collect::<Vec<_>>(),
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        crate::run::linger(&dash);
        return Ok(());
    }
    println!(
        "ran {} ({} links) for {duration:.0} s of virtual time in {wall:.1} s",
        net.name,
        links.len()
    );
    println!(
        "  {:<16} {:>14} {:>14} {:>8} {:>8} {:>8} {:>9}",
        "link", "key rate", "planned", "QBER_Z", "QBER_X", "avail.", "restarts"
    );
    for l in &links {
        let f = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
        // A rate with no counts behind it (a CV link, a basis never tested) shows as "—".
        let pct = |k: &str| {
            let v = f(k);
            if v.is_finite() {
                format!("{:>7.2}%", 100.0 * v)
            } else {
                format!("{:>8}", "—")
            }
        };
        println!(
            "  {:<16} {:>10.1} b/s {:>10.1} b/s {} {} {} {:>9}",
            l["id"].as_str().unwrap_or(""),
            f("mean_secret_key_rate_bps"),
            f("planned_key_rate_bps"),
            pct("qber_z"),
            pct("qber_x"),
            pct("availability"),
            l["automatic_restarts"]
        );
    }
    for l in links.iter().filter(|l| !l["cv"].is_null()) {
        let c = &l["cv"];
        let f = |k: &str| c[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:<16} CV: T̂ {:.3e}, ξ̂ {:.2e} SNU over the run; {:.2e} symbols processed per block \
             (plan at that size {:.2e} bit/symbol)",
            l["id"].as_str().unwrap_or(""),
            f("estimated_transmittance"),
            f("estimated_excess_noise_snu"),
            f("block_symbols"),
            f("planned_key_per_symbol_at_block"),
        );
    }
    for l in links.iter().filter(|l| !l["di"].is_null()) {
        let c = &l["di"];
        let f = |k: &str| c[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:<16} DI: CHSH {:.3} over {:.0} rounds (heralded state's {:.3}); {:.0} key rounds, {:.2} heralds/s while producing",
            l["id"].as_str().unwrap_or(""),
            f("chsh_observed"),
            f("chsh_rounds"),
            f("chsh_expected"),
            f("key_rounds"),
            f("heralds_per_s_producing"),
        );
    }
    for (id, why) in sim.skipped() {
        println!("  {id:<16} not run: {why}");
    }
    // The log in full is in --json; here the blocks and the first transitions.
    let transitions = events
        .iter()
        .filter(|e| !e.what.starts_with("block "))
        .count();
    println!(
        "events ({} in all, {transitions} supervisor transitions; --json has every one):",
        events.len()
    );
    let mut shown = 0;
    for e in &events {
        let block = e.what.starts_with("block ") || e.what.starts_with("no key");
        if block || shown < 12 {
            println!("  {:>10.1} s  {:<16} {}", e.t_s, e.link, e.what);
            shown += usize::from(!block);
        }
    }
    if let Some(d) = &a.store_dir {
        println!("keys stored per node under {}", d.display());
    }
    crate::run::linger(&dash);
    Ok(())
}

/// Windows per dashboard point (10 s of virtual time).
pub(crate) const FEED_WINDOWS: u64 = 20;

/// Per-link tallies between dashboard points.
pub(crate) struct Feed {
    acc: Vec<(u64, u64, u64, u64, f64, f64)>,
    last_bits: Vec<u64>,
    rate: Vec<f64>,
    block_s: f64,
}

impl Feed {
    pub(crate) fn new(links: usize, block_s: f64) -> Self {
        Self {
            acc: vec![(0, 0, 0, 0, 0.0, 0.0); links],
            last_bits: vec![0; links],
            rate: vec![f64::NAN; links],
            block_s,
        }
    }

    pub(crate) fn window(&mut self, i: usize, out: &qkdnet_network::runner::WindowOutput) {
        let a = &mut self.acc[i];
        a.0 += out.z.coincidences;
        a.1 += out.z.errors;
        a.2 += out.x.coincidences;
        a.3 += out.x.errors;
        a.4 = out.sync_offset_ps;
        a.5 = out.t_s;
    }

    pub(crate) fn point(
        &mut self,
        d: &crate::dashboard::Dashboard,
        id: &str,
        i: usize,
        final_bits: u64,
    ) {
        if final_bits != self.last_bits[i] {
            self.rate[i] = (final_bits - self.last_bits[i]) as f64 / self.block_s;
            self.last_bits[i] = final_bits;
        }
        let a = std::mem::replace(&mut self.acc[i], (0, 0, 0, 0, 0.0, 0.0));
        let r = |e: u64, n: u64| if n > 0 { e as f64 / n as f64 } else { f64::NAN };
        d.point(
            id,
            crate::dashboard::Point {
                t_s: a.5,
                key_rate_bps: self.rate[i],
                qber_z: r(a.1, a.0),
                qber_x: r(a.3, a.2),
                sync_offset_ns: a.4 * 1e-3,
            },
        );
    }
}

/// A sink that can say how many bits each node stored.
trait KeySinkWithBits {
    fn as_sink(&mut self) -> &mut dyn KeySink;
    fn bits(&self) -> BTreeMap<String, u64>;
}

impl KeySinkWithBits for StoreSink {
    fn as_sink(&mut self) -> &mut dyn KeySink {
        self
    }
    fn bits(&self) -> BTreeMap<String, u64> {
        self.bits.clone()
    }
}

impl KeySinkWithBits for CountingSink {
    fn as_sink(&mut self) -> &mut dyn KeySink {
        self
    }
    fn bits(&self) -> BTreeMap<String, u64> {
        self.bits.clone()
    }
}
