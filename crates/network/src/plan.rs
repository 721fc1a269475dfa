//! The network planner: channel assignment, each link's predicted finite-key rate with the
//! noise its route collects, the classical load it survives, and each SAE pair's rate
//! through trusted nodes.
//!
//! Per link:
//! - loss: the fibres of each arm plus the link's component loss (split evenly between two
//!   arms), or the pinned `loss_db`. Symmetric twin-field and MDI links are balanced as
//!   deployed systems balance them, by attenuating the shorter arm to the longer (their
//!   interference needs equal arriving intensities; `hardware.asymmetric = true` lifts it);
//! - noise: Raman and crosstalk photons at each receiver ([`crate::noise`]), entered into the
//!   protocol's model: BBM92 CW as noise photons at each side (`alice_noise_hz`,
//!   `bob_noise_hz`); pulsed protocols as dark-count probability `N η_d t_gate / k` over
//!   the `k` detectors sharing the light (BB84, twin-field, pulsed BBM92: 2; MDI: 4); CV as
//!   excess noise `2 n / T` at the channel input with `n = N / (2 Δν)` photons per mode in
//!   the local oscillator's polarisation (crosstalk lies outside a coherent receiver's
//!   band and is left out). The ion memory link's heralds are not modelled against noise;
//! - BBM92 pair brightness scales with the channel pair's place in the SPDC spectrum
//!   (`qkdnet_emulator::wdm`), as the emulator scales it;
//! - rate: `qkdnet_keyrate`'s finite-key bound with the free parameters optimised.
//!
//! Per SAE pair: the widest path (largest bottleneck rate, fewer hops on ties) over links
//! between trusted nodes. A relayed key consumes key on every hop, so its rate is at most
//! the path's weakest link; links shared between pairs are not divided among them.

use crate::grid::{self, Occupancy};
use crate::noise::{arm_noise, has_classical, ArmNoise};
use crate::spec::{other_end, ChannelChoice, Geometry, Link, Network};
use qkdnet_emulator::wdm::{Grid, Wdm};
use qkdnet_keyrate::optimise::OptimiseOptions;
use qkdnet_keyrate::sweep::{sweep, Row, SweepOptions};
use qkdnet_keyrate::{Protocol, Security};

/// Planner options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// Asymptotic rates instead of finite-key (planning only).
    pub asymptotic: bool,
    /// Find, for each link with classical traffic on its route, the largest launch power
    /// it survives.
    pub survival: bool,
}

impl PlanOptions {
    /// Finite key, no classical-load search: what runs and nodes need to place their links.
    pub const PLACEMENT: Self = Self {
        asymptotic: false,
        survival: false,
    };
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            asymptotic: false,
            survival: true,
        }
    }
}

/// The classical load a link survives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Survival {
    /// Largest shift (dB) of every classical launch power on the route at which the link
    /// still makes key; `None` when it makes none even at −60 dB, `+∞` at +40 dB.
    pub max_offset_db: Option<f64>,
    /// The same as the largest single channel's launch power, dBm.
    pub max_launch_dbm: Option<f64>,
}

/// One link's plan.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    /// Link ID.
    pub id: String,
    /// Protocol family.
    pub protocol: String,
    /// End node IDs.
    pub ends: [String; 2],
    /// Source or relay node ID.
    pub via: Option<String>,
    /// ITU channel of each arm (`None`: none free).
    pub channels: Option<Vec<u32>>,
    /// Whether the planner chose them.
    pub assigned: bool,
    /// Fibre length of each arm, km.
    pub arm_km: Vec<f64>,
    /// Total loss the model sees, dB.
    pub loss_db: f64,
    /// Attenuation added to the shorter arm to balance a relay link, dB.
    pub balance_db: f64,
    /// Noise at each arm's receiver.
    pub noise: Vec<ArmNoise>,
    /// Predicted rate with the route's classical traffic.
    pub row: Option<Row>,
    /// Predicted rate with no classical traffic (when the route has some).
    pub quiet_row: Option<Row>,
    /// Classical load survived (when the route has some and survival was asked).
    pub survival: Option<Survival>,
    /// Whether the planner modelled noise for this family.
    pub noise_modelled: bool,
    /// The protocol as the route makes it (loss split, noise photons; BBM92 brightness
    /// scaled by the channel pair), before the optimiser chose its free parameters.
    pub configured: Protocol,
}

impl LinkPlan {
    /// The free parameters the optimiser chose for this link, in the model's order (empty
    /// when unassigned).
    pub fn parameters(&self) -> Vec<f64> {
        self.row
            .iter()
            .flat_map(|r| r.parameters.iter().map(|p| p.1))
            .collect()
    }

    /// Predicted secret key rate, bit/s (0 when unassigned or no key).
    pub fn key_rate_bps(&self) -> f64 {
        self.row.as_ref().map_or(0.0, |r| r.key_rate_bps.max(0.0))
    }
}

/// One SAE pair's plan.
#[derive(Debug, Clone)]
pub struct PairPlan {
    /// SAE IDs.
    pub saes: [String; 2],
    /// Their nodes.
    pub nodes: [String; 2],
    /// Node IDs along the best path (first and last are the SAEs' nodes).
    pub path: Vec<String>,
    /// Link IDs along it.
    pub links: Vec<String>,
    /// Bottleneck rate, bit/s.
    pub key_rate_bps: f64,
    /// The link that limits it.
    pub bottleneck: Option<String>,
}

/// One fibre's channel occupancy.
#[derive(Debug, Clone)]
pub struct FibrePlan {
    /// Fibre ID.
    pub id: String,
    /// (ITU channel, who): classical channels and quantum arms.
    pub channels: Vec<(u32, String)>,
}

/// A whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Network name.
    pub name: String,
    /// Security analysis used.
    pub asymptotic: bool,
    /// Links.
    pub links: Vec<LinkPlan>,
    /// SAE pairs.
    pub pairs: Vec<PairPlan>,
    /// Channel occupancy per fibre.
    pub fibres: Vec<FibrePlan>,
    /// Things a planner should know (no free channel, …).
    pub warnings: Vec<String>,
}

/// Fibre loss of arm `k` at its channel's wavelength (1550 nm before one is chosen).
fn arm_loss_db(net: &Network, link: &Link, k: usize, ch: Option<[u32; 2]>) -> f64 {
    let nm = ch.map_or(1550.0, |c| grid::wavelength_nm(c[k.min(1)]));
    link.arms[k]
        .fibres
        .iter()
        .map(|&f| net.fibres[f].loss_db_at(nm))
        .sum()
}

/// The loss the model sees and the share on Alice's arm, with the balancing attenuation;
/// each arm's fibres at its channel's wavelength.
fn link_loss(net: &Network, link: &Link, ch: Option<[u32; 2]>) -> (f64, f64, f64) {
    if link.arms.len() == 1 {
        let total = link
            .loss_db
            .unwrap_or_else(|| arm_loss_db(net, link, 0, ch) + link.extra_loss_db);
        return (total, 0.5, 0.0);
    }
    let a: Vec<f64> = (0..2)
        .map(|k| arm_loss_db(net, link, k, ch) + link.extra_loss_db / 2.0)
        .collect();
    let balanced = match &link.protocol {
        Protocol::TwinField(m) => !m.hw.asymmetric,
        Protocol::Mdi(_) => true,
        _ => false,
    };
    if balanced {
        let hi = a[0].max(a[1]);
        let total = link.loss_db.unwrap_or(2.0 * hi);
        (total, 0.5, (a[0] - a[1]).abs())
    } else {
        let sum = a[0] + a[1];
        let frac = if sum > 0.0 { a[0] / sum } else { 0.5 };
        (link.loss_db.unwrap_or(sum), frac, 0.0)
    }
}

/// The emulator's WDM settings for a BBM92 channel pair of the network (DWDM channels or
/// ITU CWDM bands).
pub fn pair_wdm(net: &Network, ch: [u32; 2]) -> Wdm {
    Wdm {
        grid: if grid::is_cwdm(ch[0]) {
            Grid::CwdmItu
        } else {
            Grid::Dwdm100Ghz
        },
        alice_channel: ch[0],
        bob_channel: ch[1],
        pump_wavelength_nm: net.wdm.pump_wavelength_nm,
        spdc_fwhm_nm: net.wdm.spdc_fwhm_nm,
        ..Wdm::default()
    }
}

/// How many times more pairs a CWDM band pair collects than the DWDM pair a scenario's
/// brightness is stated for: the ratio of pass bands (13 nm over the DWDM filter's), 1 on
/// DWDM. The spectral envelope's share is the emulator's `relative_brightness`.
pub fn band_gain(net: &Network, ch: [u32; 2]) -> f64 {
    if grid::is_cwdm(ch[0]) {
        qkdnet_emulator::wdm::ITU_CWDM_PASSBAND_NM / net.wdm.filter_bandwidth_nm
    } else {
        1.0
    }
}

/// Relative brightness of a BBM92 channel pair in the SPDC spectrum, with its band gain.
fn pair_brightness(net: &Network, ch: [u32; 2]) -> f64 {
    pair_wdm(net, ch)
        .channel_pair()
        .map_or(0.0, |p| p.relative_brightness * band_gain(net, ch))
}

/// Coincidence spread from chromatic dispersion on a CWDM pair (FWHM, ps): each photon's
/// 13 nm band over its own arm of standard fibre (G.652 at the band's wavelength), the two
/// arms adding (`optics::fibre::entangled_dispersion_spread_ps`). DWDM pairs: 0, their
/// scenario's coincidence FWHM already includes the channel's dispersion (the Nice
/// scenarios' assumption).
fn cwdm_dispersion_spread_ps(net: &Network, link: &Link, ch: [u32; 2]) -> f64 {
    use qkdnet_optics::fibre::{entangled_dispersion_spread_ps, g652_dispersion_ps_per_nm_km};
    if !grid::is_cwdm(ch[0]) || link.arms.len() < 2 {
        return 0.0;
    }
    let d = |k: usize| {
        let km: f64 = link.arms[k]
            .fibres
            .iter()
            .map(|&f| net.fibres[f].length_km)
            .sum();
        g652_dispersion_ps_per_nm_km(ch[k] as f64) * km
    };
    entangled_dispersion_spread_ps(d(0), d(1), qkdnet_emulator::wdm::ITU_CWDM_PASSBAND_NM)
}

/// The protocol as this link's route makes it: loss split, noise, brightness.
fn configured(
    net: &Network,
    link: &Link,
    channels: [u32; 2],
    noise: &[ArmNoise],
    alice_fraction: f64,
    loss_db: f64,
) -> Protocol {
    let n: Vec<f64> = noise.iter().map(ArmNoise::total_hz).collect();
    let n_sum: f64 = n.iter().sum();
    let gate = link.gate_s;
    let mut p = link.protocol.clone();
    match &mut p {
        Protocol::Bbm92Cw(h) => {
            h.alice_loss_fraction = alice_fraction;
            h.alice_noise_hz += n[0];
            h.bob_noise_hz += n[1];
            h.brightness_pairs_per_s_per_mw *= pair_brightness(net, channels);
            h.dispersion_spread_ps = h
                .dispersion_spread_ps
                .hypot(cwdm_dispersion_spread_ps(net, link, channels));
        }
        Protocol::Bbm92Pulsed(h) => {
            h.alice_loss_fraction = alice_fraction;
            let worst = n[0].max(n[1]);
            h.dark_count_probability =
                (h.dark_count_probability + worst * h.detector_efficiency * gate / 2.0).min(0.5);
        }
        Protocol::DecoyBb84(h) => {
            h.dark_count_probability =
                (h.dark_count_probability + n_sum * h.detector_efficiency * gate / 2.0).min(0.5);
        }
        Protocol::Mdi(h) => {
            h.alice_loss_fraction = alice_fraction;
            h.dark_count_probability =
                (h.dark_count_probability + n_sum * h.detector_efficiency * gate / 4.0).min(0.5);
        }
        Protocol::TwinField(m) => {
            let mut hw = m.hw;
            hw.alice_loss_fraction = alice_fraction;
            hw.dark_count_probability =
                (hw.dark_count_probability + n_sum * hw.detector_efficiency * gate / 2.0).min(0.5);
            *m = hw.prepare();
        }
        Protocol::Cv(h) => {
            let raman: f64 = noise.iter().map(|a| a.raman_hz).sum();
            if raman > 0.0 {
                let nm = grid::wavelength_nm(channels[0]);
                let c = qkdnet_optics::consts::SPEED_OF_LIGHT_M_S;
                let band_hz = c / (nm * 1e-9).powi(2) * net.wdm.filter_bandwidth_nm * 1e-9;
                let per_mode = 0.5 * raman / band_hz;
                let t = qkdnet_optics::fibre::db_to_transmittance(loss_db);
                h.excess_noise_snu += 2.0 * per_mode / t;
            }
            h.wavelength_nm = grid::wavelength_nm(channels[0]);
        }
        Protocol::Di(_) => {}
    }
    p
}

fn evaluate(p: &Protocol, loss_db: f64, security: &Security) -> Row {
    let free = vec![true; p.model().free_params().len()];
    let opts = SweepOptions {
        points: vec![(None, loss_db)],
        free,
        security: *security,
        optimiser: OptimiseOptions::default(),
    };
    sweep(p, &opts).remove(0)
}

fn security_of(link: &Link, opts: &PlanOptions) -> Security {
    if opts.asymptotic {
        Security::Asymptotic
    } else {
        Security::Finite(link.finite_key)
    }
}

fn noise_of(net: &Network, link: &Link, ch: [u32; 2], offset_db: f64) -> Vec<ArmNoise> {
    link.arms
        .iter()
        .enumerate()
        .map(|(k, arm)| arm_noise(net, arm, ch[k.min(1)], offset_db))
        .collect()
}

/// Channel candidates for a link, in preference order.
fn candidates(net: &Network, link: &Link) -> Vec<[u32; 2]> {
    let [lo, hi] = net
        .wdm
        .quantum_channels
        .unwrap_or([grid::FIRST, grid::LAST]);
    let inside = |c: u32| (lo..=hi).contains(&c);
    if link.geometry == Geometry::Source {
        grid::conjugate_pairs(net.wdm.pump_wavelength_nm)
            .into_iter()
            .filter(|&(a, b)| inside(a) && inside(b))
            .map(|(a, b)| [a, b])
            .collect()
    } else {
        let mut c: Vec<u32> = (lo..=hi).collect();
        // Nearest 1550 nm (ITU 34) first: the fibre's loss minimum.
        c.sort_by_key(|&n| (n as i64 - 34).abs());
        c.into_iter().map(|n| [n, n]).collect()
    }
}

/// Gives every `auto` link channels that are free on all its fibres and at its source or
/// relay, hardest links
/// (most loss) first, each the candidate with the least noise per unit of signal
/// (BBM92: per unit of pair brightness).
pub fn assign_channels(net: &Network) -> (Vec<Option<[u32; 2]>>, Vec<String>) {
    let filter = net.wdm.filter_bandwidth_nm;
    let mut used: Vec<Occupancy> = net
        .fibres
        .iter()
        .map(|f| {
            let mut o = Occupancy::default();
            for c in &f.classical {
                o.add(
                    grid::classical_band_thz(c.wavelength_nm),
                    c.itu_channel,
                    "classical".into(),
                );
            }
            o
        })
        .collect();
    let mut out: Vec<Option<[u32; 2]>> = vec![None; net.links.len()];
    // A source or relay node is a resource too: one SPDC source emits each conjugate pair
    // once, and a relay separates the pairs it serves by wavelength.
    let mut at_node: Vec<Occupancy> = vec![Occupancy::default(); net.nodes.len()];
    let take =
        |used: &mut Vec<Occupancy>, at_node: &mut Vec<Occupancy>, link: &Link, ch: [u32; 2]| {
            for (k, arm) in link.arms.iter().enumerate() {
                let c = ch[k.min(1)];
                for &f in &arm.fibres {
                    used[f].add(grid::band_thz(c, filter), Some(c), link.id.clone());
                }
            }
            if let Some(v) = link.via.filter(|_| link.geometry != Geometry::PointToPoint) {
                at_node[v].add(grid::band_thz(ch[0], filter), Some(ch[0]), link.id.clone());
            }
        };
    for (i, l) in net.links.iter().enumerate() {
        if let ChannelChoice::Fixed(ch) = l.channel {
            out[i] = Some(ch);
            take(&mut used, &mut at_node, l, ch);
        }
    }
    let mut auto: Vec<usize> = (0..net.links.len())
        .filter(|&i| net.links[i].channel == ChannelChoice::Auto)
        .collect();
    let loss = |i: usize| link_loss(net, &net.links[i], None).0;
    auto.sort_by(|&a, &b| loss(b).total_cmp(&loss(a)).then(a.cmp(&b)));
    let mut warnings = Vec::new();
    for i in auto {
        let l = &net.links[i];
        let mut best: Option<([u32; 2], f64)> = None;
        for ch in candidates(net, l) {
            let free = l.arms.iter().enumerate().all(|(k, arm)| {
                let band = grid::band_thz(ch[k.min(1)], filter);
                arm.fibres.iter().all(|&f| used[f].clash(band).is_none())
            }) && l
                .via
                .filter(|_| l.geometry != Geometry::PointToPoint)
                .is_none_or(|v| at_node[v].clash(grid::band_thz(ch[0], filter)).is_none());
            // Two arms of one link on one fibre need two channels.
            let shared = l.arms.len() == 2
                && ch[0] == ch[1]
                && l.arms[0]
                    .fibres
                    .iter()
                    .any(|f| l.arms[1].fibres.contains(f));
            if !free || shared {
                continue;
            }
            let noise: f64 = noise_of(net, l, ch, 0.0)
                .iter()
                .map(ArmNoise::total_hz)
                .sum();
            let score = if l.geometry == Geometry::Source {
                let b = pair_brightness(net, ch);
                if b <= 0.0 {
                    continue;
                }
                noise / b
            } else {
                noise
            };
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((ch, score));
            }
        }
        match best {
            Some((ch, _)) => {
                out[i] = Some(ch);
                take(&mut used, &mut at_node, l, ch);
            }
            None => warnings.push(format!(
                "link \"{}\": no channel is free on all of its fibres",
                l.id
            )),
        }
    }
    (out, warnings)
}

/// Plans a network.
pub fn plan(net: &Network, opts: &PlanOptions) -> Plan {
    let (assigned, mut warnings) = assign_channels(net);
    let mut links = Vec::with_capacity(net.links.len());
    for (i, l) in net.links.iter().enumerate() {
        let (loss_db, frac, balance_db) = link_loss(net, l, assigned[i]);
        let arm_km = l
            .arms
            .iter()
            .map(|a| a.fibres.iter().map(|&f| net.fibres[f].length_km).sum())
            .collect();
        let security = security_of(l, opts);
        let noise_modelled = !matches!(l.protocol, Protocol::Di(_));
        let (noise, row, quiet_row, survival, configured_p) = match assigned[i] {
            None => (Vec::new(), None, None, None, l.protocol.clone()),
            Some(ch) => {
                let noise = noise_of(net, l, ch, 0.0);
                let p = configured(net, l, ch, &noise, frac, loss_db);
                let row = evaluate(&p, loss_db, &security);
                let classical = l.arms.iter().any(|a| has_classical(net, a));
                let quiet = classical.then(|| {
                    let silent = vec![ArmNoise::default(); noise.len()];
                    let p = configured(net, l, ch, &silent, frac, loss_db);
                    evaluate(&p, loss_db, &security)
                });
                let survival = (classical && opts.survival && noise_modelled)
                    .then(|| survive(net, l, ch, frac, loss_db, &security));
                (noise, Some(row), quiet, survival, p)
            }
        };
        if let (Some(r), Protocol::TwinField(_)) = (&row, &l.protocol) {
            if r.key_rate_per_pulse > 0.0 && r.key_rate_per_pulse < r.plob_per_pulse {
                warnings.push(format!(
                    "link \"{}\": below the repeaterless bound ({:.3e} < PLOB {:.3e} per pulse)",
                    l.id, r.key_rate_per_pulse, r.plob_per_pulse
                ));
            }
        }
        links.push(LinkPlan {
            id: l.id.clone(),
            protocol: l.protocol_name.clone(),
            ends: l.ends.map(|e| net.nodes[e].id.clone()),
            via: l.via.map(|v| net.nodes[v].id.clone()),
            channels: assigned[i].map(|c| c[..l.arms.len()].to_vec()),
            assigned: l.channel == ChannelChoice::Auto,
            arm_km,
            loss_db,
            balance_db,
            noise,
            row,
            quiet_row,
            survival,
            noise_modelled,
            configured: configured_p,
        });
    }
    let pairs = net
        .sae_pairs
        .iter()
        .map(|p| pair_plan(net, &links, p))
        .collect();
    let fibres = net
        .fibres
        .iter()
        .enumerate()
        .map(|(fi, f)| {
            let mut channels: Vec<(u32, String)> = f
                .classical
                .iter()
                .filter_map(|c| c.itu_channel.map(|n| (n, "classical".to_string())))
                .collect();
            for (li, l) in net.links.iter().enumerate() {
                let Some(ch) = assigned[li] else { continue };
                for (k, arm) in l.arms.iter().enumerate() {
                    if arm.fibres.contains(&fi) {
                        channels.push((ch[k.min(1)], l.id.clone()));
                    }
                }
            }
            channels.sort();
            FibrePlan {
                id: f.id.clone(),
                channels,
            }
        })
        .collect();
    Plan {
        name: net.name.clone(),
        asymptotic: opts.asymptotic,
        links,
        pairs,
        fibres,
        warnings,
    }
}

/// The largest common shift of the route's classical launch powers at which the link
/// still makes key (bisection to 0.1 dB on [−60, +40] dB).
fn survive(
    net: &Network,
    link: &Link,
    ch: [u32; 2],
    frac: f64,
    loss_db: f64,
    security: &Security,
) -> Survival {
    let alive = |offset: f64| {
        let noise = noise_of(net, link, ch, offset);
        let p = configured(net, link, ch, &noise, frac, loss_db);
        evaluate(&p, loss_db, security).key_rate_bps > 0.0
    };
    let top = link
        .arms
        .iter()
        .flat_map(|a| a.fibres.iter())
        .flat_map(|&f| net.fibres[f].classical.iter())
        .map(|c| c.launch_power_dbm)
        .fold(f64::NEG_INFINITY, f64::max);
    let (mut lo, mut hi) = (-60.0, 40.0);
    if !alive(lo) {
        return Survival {
            max_offset_db: None,
            max_launch_dbm: None,
        };
    }
    if alive(hi) {
        return Survival {
            max_offset_db: Some(f64::INFINITY),
            max_launch_dbm: Some(f64::INFINITY),
        };
    }
    while hi - lo > 0.1 {
        let mid = 0.5 * (lo + hi);
        if alive(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Survival {
        max_offset_db: Some(lo),
        max_launch_dbm: Some(top + lo),
    }
}

/// The widest path between an SAE pair's nodes over links with their predicted rates.
fn pair_plan(net: &Network, links: &[LinkPlan], pair: &[(String, usize); 2]) -> PairPlan {
    let (from, to) = (pair[0].1, pair[1].1);
    let n = net.nodes.len();
    // (bottleneck, hops) per node; larger bottleneck better, then fewer hops.
    let mut best: Vec<Option<(f64, usize)>> = vec![None; n];
    let mut prev: Vec<Option<(usize, usize)>> = vec![None; n];
    let mut done = vec![false; n];
    best[from] = Some((f64::INFINITY, 0));
    loop {
        let mut u = None;
        for v in 0..n {
            if done[v] {
                continue;
            }
            if let Some((w, h)) = best[v] {
                let better = match u {
                    None => true,
                    Some(x) => {
                        let x: usize = x;
                        let (bw, bh) = best[x].unwrap_or((0.0, 0));
                        w > bw || (w == bw && h < bh)
                    }
                };
                if better {
                    u = Some(v);
                }
            }
        }
        let Some(u) = u else { break };
        done[u] = true;
        if u == to {
            break;
        }
        let (wu, hu) = best[u].unwrap_or((0.0, 0));
        for (li, l) in net.links.iter().enumerate() {
            let Some(v) = other_end(l.ends, u) else {
                continue;
            };
            if done[v] {
                continue;
            }
            let w = wu.min(links[li].key_rate_bps());
            let h = hu + 1;
            let better = match best[v] {
                None => true,
                Some((bw, bh)) => w > bw || (w == bw && h < bh),
            };
            if better {
                best[v] = Some((w, h));
                prev[v] = Some((li, u));
            }
        }
    }
    let mut path = vec![net.nodes[to].id.clone()];
    let mut via_links = Vec::new();
    let mut at = to;
    while let Some((li, p)) = prev[at] {
        via_links.push(li);
        path.push(net.nodes[p].id.clone());
        at = p;
    }
    path.reverse();
    via_links.reverse();
    let rate = if at == from {
        best[to].map_or(0.0, |(w, _)| if w.is_finite() { w } else { 0.0 })
    } else {
        0.0
    };
    let bottleneck = via_links
        .iter()
        .min_by(|&&a, &&b| links[a].key_rate_bps().total_cmp(&links[b].key_rate_bps()))
        .map(|&li| links[li].id.clone());
    PairPlan {
        saes: [pair[0].0.clone(), pair[1].0.clone()],
        nodes: [net.nodes[from].id.clone(), net.nodes[to].id.clone()],
        path,
        links: via_links.iter().map(|&li| links[li].id.clone()).collect(),
        key_rate_bps: rate,
        bottleneck,
    }
}
