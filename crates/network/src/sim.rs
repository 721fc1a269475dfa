//! Every link of a network run together in virtual time: one [`LinkRunner`] per link (the
//! emulated hardware of its scenario, placed on the channels, loss and route noise the
//! planner gives it), its sifted key distilled in blocks, each final key handed to the two
//! ends' key stores through a [`KeySink`], and the network's events in one ordered log.
//!
//! Links advance in lockstep, window by window; within a window, events are ordered by
//! link (the file's order), so the log is the same on every run. Each link's random streams
//! come from (network seed, link ID), so links are independent and a run is reproducible.
//!
//! Runnable so far: BBM92 CW links, decoy-state BB84 (its blocks finished under Lim et al.
//! 2014's bound on the block's decoy tallies), MDI-QKD (window level, the MDI bound on
//! the block's Bell-state announcements), SNS-AOPP twin-field, and CV-QKD (a processed
//! share of the symbols through the CV stack, [`crate::cv`]). Other links are listed as
//! not run, with the reason, and do not stop the rest.

use crate::plan::Plan;
use crate::runner::{
    Bb84Runner, BlockBuffer, Distilled, LinkRunner, LocalDistiller, MdiRunner, PumpObjective,
    Runner, RunnerConfig, TfRunner, WindowOutput, WINDOW_S,
};
use crate::scenario::emulator_settings;
use crate::spec::{Network, NodeKind};
use crate::InputError;
use qkdnet_emulator::bb84::{Bb84Emulation, Bb84Link};
use qkdnet_emulator::bbm92::{Bbm92Emulation, Bbm92Link};
use qkdnet_emulator::mdi::{MdiEmulation, MdiLink};
use qkdnet_emulator::tf::{TfEmulation, TfLink};
use qkdnet_keyrate::Protocol;

/// How a network run runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Each link's runtime settings.
    pub runner: RunnerConfig,
    /// Distillation block, s of virtual time (links may set their own).
    pub block_s: f64,
    /// Master seed; each link's streams derive from it and the link's ID.
    pub seed: u64,
}

/// Where distilled keys go: both ends of a link store the same key under the same block ID.
pub trait KeySink {
    /// Stores `key` (MSB-first bits as `Bits`) at `node`, shared with `peer`, under
    /// `block_id`. An error stops the run.
    fn store(
        &mut self,
        node: &str,
        peer: &str,
        block_id: u64,
        key: &qkdnet_core::bits::Bits,
    ) -> Result<(), String>;
}

/// A sink that only counts (no stores).
#[derive(Debug, Default)]
pub struct CountingSink {
    /// Bits stored per node.
    pub bits: std::collections::BTreeMap<String, u64>,
}

impl KeySink for CountingSink {
    fn store(
        &mut self,
        node: &str,
        _peer: &str,
        _block_id: u64,
        key: &qkdnet_core::bits::Bits,
    ) -> Result<(), String> {
        *self.bits.entry(node.to_string()).or_default() += key.len() as u64;
        Ok(())
    }
}

/// One entry of the network's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct NetEvent {
    /// Virtual time, s.
    pub t_s: f64,
    /// Link ID.
    pub link: String,
    /// What happened.
    pub what: String,
}

/// Per-link totals of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkTotals {
    /// Final key bits stored at both ends (after the authentication pads' share).
    pub final_bits: u64,
    /// Blocks distilled.
    pub blocks: u64,
    /// Blocks without key.
    pub blocks_without_key: u64,
    /// Key-basis coincidences and errors in producing windows.
    pub z: (u64, u64),
    /// Test-basis coincidences and errors in producing windows.
    pub x: (u64, u64),
    /// Windows that produced key.
    pub producing_windows: u64,
    /// CV-QKD: estimation sums of the symbols disclosed in producing windows.
    pub cv: qkdnet_keyrate::cv::CvEstimate,
    /// DI-QKD: CHSH and key tallies of producing windows.
    pub di: qkdnet_keyrate::di::DiCounts,
}

struct SimLink {
    index: usize,
    ends: [String; 2],
    runner: Runner,
    buffer: BlockBuffer,
    distiller: LocalDistiller,
    block_start_s: f64,
    block_s: f64,
    block_base: u64,
    finite_key: qkdnet_keyrate::FiniteKey,
    totals: LinkTotals,
}

/// A network's runnable links in virtual time.
pub struct NetworkSim {
    links: Vec<SimLink>,
    skipped: Vec<(String, String)>,
    t_s: f64,
    decoding: Option<Box<DecodeProgress>>,
}

/// Told as a CV block's frames decode (a block of 1e7 symbols takes tens of seconds): the
/// link's ID, its block number and the frames decoded so far.
pub type DecodeProgress = dyn Fn(&str, u64, usize) + Sync;

/// The seed of a link's random streams in a network run: (master seed, link ID).
pub fn link_seed(seed: u64, id: &str) -> u64 {
    // FNV-1a over the ID, mixed with the master seed (splitmix64 finaliser).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The runtime settings of one link: its scenario's `[run]` pump objective over the
/// run's, unless the run holds every pump fixed.
pub fn link_runner_config(l: &crate::spec::Link, base: &RunnerConfig) -> RunnerConfig {
    let pump = match (base.pump, l.run.pump_objective.as_deref()) {
        (PumpObjective::Fixed, _) => PumpObjective::Fixed,
        (_, Some("key-rate")) => PumpObjective::KeyRate,
        (base_pump, Some(_)) => {
            PumpObjective::QberZ(l.run.qber_target.unwrap_or(match base_pump {
                PumpObjective::QberZ(t) => t,
                _ => 0.043,
            }))
        }
        (PumpObjective::QberZ(t), None) => PumpObjective::QberZ(l.run.qber_target.unwrap_or(t)),
        (base_pump, None) => base_pump,
    };
    RunnerConfig { pump, ..*base }
}

/// The runtime of link `i` as `plan` places it, distilling in blocks of `block_s` (the
/// run's; the link's own first): `Ok(Err(reason))` when the link cannot run (no runtime
/// for its family, no channel), `Err` on bad emulator settings.
pub fn build_runner(
    net: &Network,
    plan: &Plan,
    i: usize,
    runner: &RunnerConfig,
    seed: u64,
    block_s: f64,
) -> Result<Result<Runner, String>, InputError> {
    let l = &net.links[i];
    let runner = &link_runner_config(l, runner);
    let lp = &plan.links[i];
    let item = format!("{}: link \"{}\"", net.origin, l.id);
    if lp.channels.is_none() {
        return Ok(Err("no free channel".into()));
    }
    let faults = link_faults(net, i)?;
    let bad = |e: qkdnet_optics::ParamError| {
        InputError::new(format!("{item}: {}: {}", e.field, e.reason))
    };
    match (&l.protocol, lp.configured.clone()) {
        (Protocol::Bbm92Cw(orig), Protocol::Bbm92Cw(mut hw)) => {
            let ch = lp.channels.clone().unwrap_or_default();
            // The planner's configured hardware (loss split, route noise, a CWDM pair's
            // dispersion), with the pair brightness left to the emulator, which scales it
            // by the channel pair's envelope itself (the band gain stays here).
            let pair = [ch[0], ch[1]];
            hw.brightness_pairs_per_s_per_mw =
                orig.brightness_pairs_per_s_per_mw * crate::plan::band_gain(net, pair);
            let mut emu: Bbm92Emulation = emulator_settings(&l.emulator, &item)?;
            let wdm = crate::plan::pair_wdm(net, pair);
            emu.wdm = qkdnet_emulator::wdm::Wdm {
                adjacent_crosstalk_db: emu.wdm.adjacent_crosstalk_db,
                demux_loss_db: emu.wdm.demux_loss_db,
                ..wdm
            };
            emu.seed = link_seed(seed, &l.id);
            let km: f64 = lp.arm_km.iter().sum();
            let link = Bbm92Link::new(hw, lp.loss_db, km, emu, faults).map_err(bad)?;
            LinkRunner::new(link, runner)
                .map(|r| Ok(Runner::Bbm92(Box::new(r))))
                .map_err(|e| InputError::new(format!("{item}: {e}")))
        }
        (Protocol::DecoyBb84(_), Protocol::DecoyBb84(hw)) => {
            // The planner's configured hardware: its route's noise as dark counts.
            let mut emu: Bb84Emulation = emulator_settings(&l.emulator, &item)?;
            emu.seed = link_seed(seed, &l.id);
            let link = Bb84Link::new(hw, lp.loss_db, emu)
                .and_then(|k| k.with_faults(faults))
                .map_err(bad)?;
            Bb84Runner::new(link, emu.seed)
                .map(|r| Ok(Runner::Bb84(Box::new(r))))
                .map_err(|e| InputError::new(format!("{item}: {e}")))
        }
        (Protocol::Mdi(_), Protocol::Mdi(hw)) => {
            // The planner's configured hardware: loss split (balanced), route noise.
            let mut emu: MdiEmulation = emulator_settings(&l.emulator, &item)?;
            emu.seed = link_seed(seed, &l.id);
            let link = MdiLink::new(hw, lp.loss_db, emu)
                .and_then(|k| k.with_faults(faults))
                .map_err(bad)?;
            MdiRunner::new(link, emu.seed)
                .map(|r| Ok(Runner::Mdi(Box::new(r))))
                .map_err(|e| InputError::new(format!("{item}: {e}")))
        }
        (Protocol::TwinField(_), Protocol::TwinField(m)) => {
            // The planner's configured hardware (loss split, route noise as dark counts) at
            // the intensities and probabilities its optimiser chose, as an operator would
            // set them.
            let hw = m.hw.with_parameters(&lp.parameters());
            let mut emu: TfEmulation = emulator_settings(&l.emulator, &item)?;
            emu.seed = link_seed(seed, &l.id);
            let link = TfLink::new(hw, lp.loss_db, emu)
                .and_then(|k| k.with_faults(faults))
                .map_err(bad)?;
            TfRunner::new(link, emu.seed)
                .map(|r| Ok(Runner::Tf(Box::new(r))))
                .map_err(|e| InputError::new(format!("{item}: {e}")))
        }
        (Protocol::Cv(_), Protocol::Cv(hw)) => {
            // The planner's configured hardware (route Raman noise in the excess noise),
            // at the modulation variance the optimiser chooses for the processed block.
            let mut emu: qkdnet_emulator::cv::CvEmulation = emulator_settings(&l.emulator, &item)?;
            emu.seed = link_seed(seed, &l.id);
            let link = qkdnet_emulator::cv::CvLink::new(hw, lp.loss_db, emu)
                .and_then(|k| k.with_faults(faults))
                .map_err(bad)?;
            let block_s = l.block_seconds(block_s);
            let symbols = l
                .run
                .block_symbols
                .unwrap_or(crate::cv::DEFAULT_BLOCK_SYMBOLS);
            let psk = crate::runner::emulated_preshared_key(emu.seed);
            crate::cv::CvRunner::new(link, block_s, symbols, l.finite_key, &psk)
                .map(|r| Ok(Runner::Cv(Box::new(r))))
                .map_err(|e| InputError::new(format!("{item}: {e}")))
        }
        (Protocol::Di(_), Protocol::Di(hw)) => {
            // The plan's share of test rounds sets the emulator's key fraction, so that
            // run and plan count alike.
            let mut emu: qkdnet_emulator::ion::IonEmulation =
                emulator_settings(&l.emulator, &item)?;
            emu.seed = link_seed(seed, &l.id);
            emu.key_fraction = 1.0 - hw.test_fraction;
            let km: f64 = lp.arm_km.iter().sum();
            let link = qkdnet_emulator::ion::IonLink::new(hw.link, lp.loss_db, km, emu)
                .and_then(|k| k.with_faults(faults))
                .map_err(bad)?;
            crate::di::DiRunner::new(link, hw, emu.seed)
                .map(|r| Ok(Runner::Di(Box::new(r))))
                .map_err(|e| InputError::new(format!("{item}: {e}")))
        }
        _ => Ok(Err(format!(
            "{}: no link runtime for this family yet (BBM92 CW, decoy BB84, MDI, \
             twin-field SNS, SNS-AOPP and PM, CV-QKD and DI-QKD over ion memories run)",
            l.protocol_name
        ))),
    }
}

/// Link `i`'s faults: its scenario's, and the network's fibre faults on the arms that cross
/// those fibres (arm 0 is Alice's side, arm 1 Bob's). Cuts of several fibres of one arm
/// that overlap in time merge into one outage; overlapping loss steps on one arm are
/// refused (name them apart in time).
pub fn link_faults(net: &Network, i: usize) -> Result<Vec<qkdnet_emulator::Fault>, InputError> {
    use qkdnet_emulator::faults::{FaultKind, Side};
    let l = &net.links[i];
    let mut out = l.faults.clone();
    for (k, arm) in l.arms.iter().enumerate() {
        let side = if l.arms.len() == 1 {
            Side::Both
        } else if k == 0 {
            Side::Alice
        } else {
            Side::Bob
        };
        for ff in net
            .fibre_faults
            .iter()
            .filter(|ff| arm.fibres.contains(&ff.fibre))
        {
            let mut f = ff.fault;
            f.side = side;
            let overlapping = out.iter().position(|g| {
                g.kind == f.kind
                    && (0..2).any(|s| g.side.hits(s) && f.side.hits(s))
                    && f.start_s < g.end_s()
                    && g.start_s < f.end_s()
            });
            match (overlapping, f.kind) {
                (Some(j), FaultKind::FibreCut) if out[j].side == f.side => {
                    let (s0, e0) = (out[j].start_s.min(f.start_s), out[j].end_s().max(f.end_s()));
                    out[j].start_s = s0;
                    out[j].duration_s = e0 - s0;
                }
                (Some(_), _) => {
                    return Err(InputError::new(format!(
                        "{}: link \"{}\": a {:?} on fibre \"{}\" at {} s overlaps another fault of the same kind on the same arm",
                        net.origin, l.id, f.kind, net.fibres[ff.fibre].id, f.start_s
                    )))
                }
                (None, _) => out.push(f),
            }
        }
    }
    Ok(out)
}

impl NetworkSim {
    /// Builds every runnable link as `plan` places it.
    pub fn new(net: &Network, plan: &Plan, cfg: &SimConfig) -> Result<Self, InputError> {
        if !(cfg.block_s.is_finite() && cfg.block_s >= 1.0) {
            return Err(InputError::new(format!(
                "block: must be ≥ 1 s, got {}",
                cfg.block_s
            )));
        }
        let mut links = Vec::new();
        let mut skipped = Vec::new();
        for (i, l) in net.links.iter().enumerate() {
            let runner = match build_runner(net, plan, i, &cfg.runner, cfg.seed, cfg.block_s)? {
                Ok(r) => r,
                Err(why) => {
                    skipped.push((l.id.clone(), why));
                    continue;
                }
            };
            let seed = link_seed(cfg.seed, &l.id);
            let ends = l.ends.map(|e| net.nodes[e].id.clone());
            debug_assert!(l
                .ends
                .iter()
                .all(|&e| net.nodes[e].kind == NodeKind::Trusted));
            let distiller = LocalDistiller::new(seed).map_err(InputError::new)?;
            links.push(SimLink {
                index: i,
                ends,
                runner,
                buffer: BlockBuffer::default(),
                distiller,
                block_start_s: 0.0,
                block_s: l.block_seconds(cfg.block_s),
                block_base: (i as u64) << 40,
                finite_key: l.finite_key,
                totals: LinkTotals::default(),
            });
        }
        Ok(Self {
            links,
            skipped,
            t_s: 0.0,
            decoding: None,
        })
    }

    /// Reports the decoding of CV blocks to `f` (progress displays).
    pub fn on_decode(&mut self, f: Box<DecodeProgress>) {
        self.decoding = Some(f);
    }

    /// Links not run, with the reason.
    pub fn skipped(&self) -> &[(String, String)] {
        &self.skipped
    }

    /// Virtual time reached, s.
    pub fn time_s(&self) -> f64 {
        self.t_s
    }

    /// IDs and totals of the links that run, with their runners.
    pub fn links(&self) -> impl Iterator<Item = (usize, &Runner, &LinkTotals)> {
        self.links.iter().map(|l| (l.index, &l.runner, &l.totals))
    }

    /// Advances every link one window; events and keys go to `log` and `sink`. Each
    /// link's window output is also passed to `watch` (for timelines).
    pub fn step(
        &mut self,
        net: &Network,
        sink: &mut dyn KeySink,
        log: &mut dyn FnMut(NetEvent),
        watch: &mut dyn FnMut(usize, &WindowOutput),
    ) -> Result<(), String> {
        let (t0, t1) = (self.t_s, self.t_s + WINDOW_S);
        self.t_s = t1;
        for ff in &net.fibre_faults {
            let fibre = &net.fibres[ff.fibre].id;
            let what = match ff.fault.kind {
                qkdnet_emulator::FaultKind::LossStep => {
                    format!("loss step of {} dB", ff.fault.loss_db)
                }
                _ => "cut".to_string(),
            };
            for (at, verb) in [(ff.fault.start_s, "starts"), (ff.fault.end_s(), "ends")] {
                if at >= t0 && at < t1 {
                    log(NetEvent {
                        t_s: at,
                        link: format!("fibre {fibre}"),
                        what: format!("{what} {verb}"),
                    });
                }
            }
        }
        for l in &mut self.links {
            let id = &net.links[l.index].id;
            let out = l.runner.step();
            for (from, to, fault) in &out.transitions {
                log(NetEvent {
                    t_s: out.t_s,
                    link: id.clone(),
                    what: match fault {
                        Some(f) => format!("{from} → {to} ({f})"),
                        None => format!("{from} → {to}"),
                    },
                });
            }
            if let Some(c) = &out.cv {
                l.totals.cv.add(c);
                l.totals.producing_windows += 1;
            }
            if let Some(c) = &out.di {
                l.totals.di.add(c);
            }
            if l.buffer.push_window(&out) {
                l.totals.producing_windows += 1;
                l.totals.z.0 += out.z.coincidences;
                l.totals.z.1 += out.z.errors;
                l.totals.x.0 += out.x.coincidences;
                l.totals.x.1 += out.x.errors;
            }
            watch(l.index, &out);
            if out.t_s - l.block_start_s >= l.block_s {
                l.block_start_s = out.t_s;
                flush(l, id, out.t_s, sink, log, self.decoding.as_deref())?;
            }
        }
        Ok(())
    }

    /// Distils what every link has gathered (the end of a run).
    pub fn finish(
        &mut self,
        net: &Network,
        sink: &mut dyn KeySink,
        log: &mut dyn FnMut(NetEvent),
    ) -> Result<(), String> {
        let t = self.t_s;
        for l in &mut self.links {
            let id = net.links[l.index].id.clone();
            flush(l, &id, t, sink, log, self.decoding.as_deref())?;
        }
        Ok(())
    }
}

fn flush(
    l: &mut SimLink,
    id: &str,
    t_s: f64,
    sink: &mut dyn KeySink,
    log: &mut dyn FnMut(NetEvent),
    decoding: Option<&DecodeProgress>,
) -> Result<(), String> {
    if let Runner::Cv(r) = &mut l.runner {
        if r.gathered_symbols() == 0 {
            return Ok(());
        }
        let (block, frames) = (r.blocks_taken(), std::sync::atomic::AtomicUsize::new(0));
        let tick = || {
            let done = frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if let Some(f) = decoding {
                f(id, block, done);
            }
        };
        let (report, keys) = r.distil(l.finite_key, &tick)?;
        let b = report.block;
        match keys {
            Some(k) => {
                let block_id = l.block_base | b;
                sink.store(&l.ends[0], &l.ends[1], block_id, &k.alice)?;
                sink.store(&l.ends[1], &l.ends[0], block_id, &k.bob)?;
                l.totals.final_bits += k.alice.len() as u64;
                l.totals.blocks += 1;
                log(NetEvent {
                    t_s,
                    link: id.to_string(),
                    what: format!(
                        "block {b}: {} symbols (T̂ {:.3e}, ξ̂ {:.2e} SNU, β {:.3}, {}/{} frames) → {} bits of key at both ends",
                        report.symbols,
                        report.transmittance,
                        report.excess_noise_snu,
                        report.beta,
                        report.frames_kept,
                        report.frames,
                        k.alice.len()
                    ),
                });
            }
            None => {
                l.totals.blocks_without_key += 1;
                log(NetEvent {
                    t_s,
                    link: id.to_string(),
                    what: format!(
                        "no key: block {b}: {} symbols: {}",
                        report.symbols,
                        report.no_key.as_deref().unwrap_or("no key")
                    ),
                });
            }
        }
        return Ok(());
    }
    let block = l.buffer.take();
    let sifted = block.alice.len();
    let result = if let Some(why) = crate::runner::too_short(&block) {
        Err(why)
    } else if sifted == 0 {
        Ok(None)
    } else {
        l.runner
            .external_bound(&block, l.finite_key)
            .and_then(|bound| l.distiller.distil_with(block, bound))
    };
    match result {
        Ok(None) => {}
        Ok(Some(Distilled {
            id: b,
            alice,
            bob,
            replenished_bits,
        })) => {
            let n = alice.key.len() - replenished_bits;
            let ka = alice.key.slice(replenished_bits, alice.key.len());
            let kb = bob.key.slice(replenished_bits, bob.key.len());
            let block_id = l.block_base | b;
            sink.store(&l.ends[0], &l.ends[1], block_id, &ka)?;
            sink.store(&l.ends[1], &l.ends[0], block_id, &kb)?;
            l.totals.final_bits += n as u64;
            l.totals.blocks += 1;
            log(NetEvent {
                t_s,
                link: id.to_string(),
                what: format!("block {b}: {sifted} sifted bits → {n} bits of key at both ends"),
            });
        }
        Err(e) => {
            l.totals.blocks_without_key += 1;
            log(NetEvent {
                t_s,
                link: id.to_string(),
                what: format!("no key: {e}"),
            });
        }
    }
    Ok(())
}
