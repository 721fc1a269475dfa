//! Network files: the sites, the fibres between them with their classical traffic, the QKD
//! links over those fibres, and the applications (SAEs) at the sites. Format documented in
//! `docs/NETWORK.md`; [`load`] parses and checks a file, and every error names the file,
//! the item (`link[2] "nice-oca"`) and the offending value.
//!
//! Links run over fibre routes between sites. A link has two key-holding ends (trusted
//! nodes with a KME) and, depending on its protocol, a node in the middle:
//! - BBM92: the pair source (`via`, by default the first end); its photons travel to both
//!   ends, the long-wavelength channel to `ends[0]` (Alice), the short one to `ends[1]`;
//! - twin-field and MDI: the untrusted relay (`via`, required); both users send to it;
//! - decoy BB84 and CV-QKD: none; `ends[0]` sends to `ends[1]`;
//! - the trapped-ion memory link: optionally a middle station (`via`).

use crate::grid;
use crate::scenario::{self, build_protocol};
use crate::InputError;
use qkdnet_keyrate::{FiniteKey, Protocol};
use serde::Deserialize;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};

/// The network-wide WDM assumptions.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WdmPlan {
    /// Pass band of each quantum channel's filter, nm, over which Raman noise is collected
    /// (100 GHz thin-film or AWG channels pass 0.4–0.8 nm; 0.6 assumed).
    pub filter_bandwidth_nm: f64,
    /// Isolation of a quantum receiver's demultiplexer from a classical channel one grid
    /// slot away, dB (cascaded DWDM filters in coexistence experiments: 60–100 dB; 80
    /// assumed).
    pub adjacent_isolation_db: f64,
    /// Isolation from classical channels two or more slots away, dB (110 assumed).
    pub non_adjacent_isolation_db: f64,
    /// SPDC pump wavelength of the entanglement sources, nm (Nice: 780.1 nm, degenerate at
    /// 1560.2 nm, between ITU channels 21 and 22).
    pub pump_wavelength_nm: f64,
    /// SPDC spectrum FWHM, nm (Nice: 80 nm), for each channel pair's brightness.
    pub spdc_fwhm_nm: f64,
    /// ITU channels the planner may give quantum links marked `channel = "auto"`
    /// (default: the whole grid 1..=72).
    pub quantum_channels: Option<[u32; 2]>,
}

impl Default for WdmPlan {
    fn default() -> Self {
        Self {
            filter_bandwidth_nm: 0.6,
            adjacent_isolation_db: 80.0,
            non_adjacent_isolation_db: 110.0,
            pump_wavelength_nm: 780.1,
            spdc_fwhm_nm: 80.0,
            quantum_channels: None,
        }
    }
}

/// What a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    /// A trusted node: a KME that stores keys, serves SAEs and relays keys.
    #[default]
    Trusted,
    /// An untrusted measurement relay (twin-field, MDI): no keys, no relaying.
    Relay,
    /// An untrusted entangled-pair source site.
    Source,
    /// A fibre patch point (exchange, ROADM site): light passes through, nothing else.
    Patch,
}

impl NodeKind {
    fn name(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Relay => "relay",
            Self::Source => "source",
            Self::Patch => "patch",
        }
    }
}

/// A site as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique identifier.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// What the site is (default trusted).
    #[serde(default)]
    pub kind: NodeKind,
    /// Position for drawings, km east and north of an arbitrary origin.
    #[serde(default)]
    pub position_km: Option<[f64; 2]>,
    /// Applications (SAE IDs) attached to this node's KME.
    #[serde(default)]
    pub saes: Vec<String>,
}

/// Classical channels on a fibre, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassicalSpec {
    /// The end (node ID) whose transmitters launch them.
    pub from: String,
    /// First ITU channel (100 GHz grid).
    pub itu_channel: Option<u32>,
    /// Or a wavelength, nm (one channel; off-grid allowed).
    pub wavelength_nm: Option<f64>,
    /// Number of channels, on consecutive ITU channels upwards from `itu_channel`.
    #[serde(default = "one")]
    pub count: u32,
    /// Launch power of each channel, dBm.
    pub launch_power_dbm: f64,
}

fn one() -> u32 {
    1
}

/// A fibre as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FibreSpec {
    /// Unique identifier.
    pub id: String,
    /// The two sites it joins.
    pub ends: [String; 2],
    /// Length, km.
    pub length_km: f64,
    /// Attenuation at 1550 nm, dB/km (default 0.2, SMF-28; deployed cable with splices is
    /// higher, e.g. 0.35 in Nice); other wavelengths follow Rayleigh scattering's λ⁻⁴.
    #[serde(default = "default_att")]
    pub loss_db_per_km: f64,
    /// Wavelength at which `loss_db_per_km` holds, nm (default 1550); other wavelengths
    /// follow Rayleigh scattering's λ⁻⁴.
    #[serde(default = "default_ref_nm")]
    pub loss_reference_nm: f64,
    /// Connectors, splices and patch panels on top, dB.
    #[serde(default)]
    pub extra_loss_db: f64,
    /// Classical channels sharing it.
    #[serde(default)]
    pub classical: Vec<ClassicalSpec>,
}

fn default_att() -> f64 {
    0.2
}

fn default_ref_nm() -> f64 {
    1550.0
}

/// A link's channel choice as written: `"auto"`, one ITU channel, or one per arm.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ChannelSpec {
    /// One channel for every arm.
    One(u32),
    /// One channel per arm (BBM92: Alice's, then Bob's).
    Pair([u32; 2]),
    /// `"auto"`: the planner assigns.
    Word(String),
}

/// A link as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Unique identifier.
    pub id: String,
    /// Protocol family (one of `qkdnet_keyrate::protocol::NAMES`); may come from `scenario`.
    pub protocol: Option<String>,
    /// A link scenario file (relative to the network file) giving the protocol, hardware
    /// and finite-key settings; its channel section gives the default `extra_loss_db`.
    pub scenario: Option<PathBuf>,
    /// Hardware fields overriding the scenario's (or the family's defaults).
    pub hardware: Option<toml::Table>,
    /// The two key-holding ends (trusted nodes); `ends[0]` is Alice.
    pub ends: [String; 2],
    /// The source (BBM92), relay (twin-field, MDI) or middle station (ion memories).
    pub via: Option<String>,
    /// Fibre routes of the arms, as fibre IDs from the arm's transmitter (BBM92: the
    /// source; twin-field, MDI: each user) to its receiver; default: least loss.
    pub routes: Option<Vec<Vec<String>>>,
    /// `"auto"` (default), one ITU channel, or `[alice, bob]`.
    pub channel: Option<ChannelSpec>,
    /// Loss of the link's own components on top of the fibres, dB (default: the
    /// scenario's `channel.extra_loss_db`, else 0), split evenly between two arms.
    pub extra_loss_db: Option<f64>,
    /// Pins the total loss (a measured figure) instead of summing fibres and components.
    pub loss_db: Option<f64>,
    /// Time a detector accepts light per slot, ps, for counting noise photons as dark
    /// counts in pulsed protocols (default: the slot, at most 1 ns).
    pub gate_ps: Option<f64>,
    /// Distillation block of this link in runs, virtual seconds (default: the run's);
    /// long, lossy links need longer blocks for the finite-key bound to leave key.
    pub block_s: Option<f64>,
    /// CV-QKD: symbols reconciled per block in runs (over the scenario's `[run]`).
    pub block_symbols: Option<f64>,
}

/// A fault on a fibre, as written: every link whose route uses the fibre sees it on the arm
/// that crosses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FibreFaultSpec {
    /// The fibre.
    pub fibre: String,
    /// `fibre-cut` or `loss-step` (faults of detectors, sources and clocks belong in a
    /// link's scenario).
    pub kind: qkdnet_emulator::faults::FaultKind,
    /// Start, seconds of virtual time.
    pub start_s: f64,
    /// Duration, seconds.
    pub duration_s: f64,
    /// Extra loss of a `loss-step`, dB.
    #[serde(default)]
    pub loss_db: f64,
}

/// A checked fibre fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FibreFault {
    /// Fibre index.
    pub fibre: usize,
    /// The fault (its `side` is set per link arm when applied).
    pub fault: qkdnet_emulator::Fault,
}

/// An SAE pair the plan reports on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaePairSpec {
    /// The two SAE IDs.
    pub saes: [String; 2],
}

/// A whole network file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// Short name.
    pub name: String,
    /// What it models and what was assumed.
    #[serde(default)]
    pub description: String,
    /// WDM assumptions.
    #[serde(default)]
    pub wdm: WdmPlan,
    /// Finite-key settings for links whose scenario gives none.
    pub finite_key: Option<FiniteKey>,
    /// Sites.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
    /// Fibres.
    #[serde(default, rename = "fibre")]
    pub fibres: Vec<FibreSpec>,
    /// QKD links.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
    /// SAE pairs to plan for (default: every pair of SAEs at different nodes that some
    /// path of links joins).
    #[serde(default, rename = "sae_pair")]
    pub sae_pairs: Vec<SaePairSpec>,
    /// Faults on fibres during runs.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FibreFaultSpec>,
}

/// A checked site.
#[derive(Debug, Clone)]
pub struct Node {
    /// Identifier.
    pub id: String,
    /// Name (the ID when none was given).
    pub name: String,
    /// Kind.
    pub kind: NodeKind,
    /// Drawing position, km.
    pub position_km: Option<[f64; 2]>,
    /// SAEs.
    pub saes: Vec<String>,
}

/// One classical channel on a fibre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classical {
    /// Index of the launching node.
    pub from: usize,
    /// Wavelength, nm.
    pub wavelength_nm: f64,
    /// Its ITU channel, if on the grid.
    pub itu_channel: Option<u32>,
    /// Launch power, dBm.
    pub launch_power_dbm: f64,
}

/// A checked fibre.
#[derive(Debug, Clone)]
pub struct Fibre {
    /// Identifier.
    pub id: String,
    /// Node indices of its ends.
    pub ends: [usize; 2],
    /// Length, km.
    pub length_km: f64,
    /// Attenuation at `loss_reference_nm`, dB/km.
    pub loss_db_per_km: f64,
    /// Wavelength of the attenuation figure, nm.
    pub loss_reference_nm: f64,
    /// Extra loss, dB.
    pub extra_loss_db: f64,
    /// Classical channels.
    pub classical: Vec<Classical>,
}

impl Fibre {
    /// Total loss at `loss_reference_nm` (where `loss_db_per_km` is given), dB.
    pub fn loss_db(&self) -> f64 {
        self.length_km * self.loss_db_per_km + self.extra_loss_db
    }

    /// Total loss at `nm`: the attenuation corrected for Rayleigh scattering's λ⁻⁴
    /// (`qkdnet_optics::fibre::Fibre::attenuation_at`), plus the extra loss, dB.
    pub fn loss_db_at(&self, nm: f64) -> f64 {
        let f = qkdnet_optics::fibre::Fibre {
            length_km: self.length_km,
            attenuation_db_per_km: self.loss_db_per_km,
            reference_wavelength_nm: self.loss_reference_nm,
            ..qkdnet_optics::fibre::Fibre::default()
        };
        f.loss_db_at(nm) + self.extra_loss_db
    }
}

/// One arm of a link: light from `from` to `to` over `fibres` (in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// Transmitting node (source or user).
    pub from: usize,
    /// Receiving node.
    pub to: usize,
    /// Fibre indices, transmitter first.
    pub fibres: Vec<usize>,
}

/// How a link's channels are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelChoice {
    /// The planner assigns.
    Auto,
    /// Fixed, one per arm.
    Fixed([u32; 2]),
}

/// Which arm layout a protocol has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geometry {
    /// A source sends to both ends (BBM92).
    Source,
    /// Both ends send to a relay (twin-field, MDI, ion memories with a middle station).
    Relay,
    /// One end sends to the other.
    PointToPoint,
}

/// A checked link.
#[derive(Debug, Clone)]
pub struct Link {
    /// Identifier.
    pub id: String,
    /// Protocol family name.
    pub protocol_name: String,
    /// The configured protocol (before the planner adds route noise and losses).
    pub protocol: Protocol,
    /// Ends (node indices); `ends[0]` is Alice.
    pub ends: [usize; 2],
    /// Source, relay or middle station.
    pub via: Option<usize>,
    /// Arm layout.
    pub geometry: Geometry,
    /// Arms: one for point-to-point links, two otherwise (Alice's first).
    pub arms: Vec<Arm>,
    /// Channel choice.
    pub channel: ChannelChoice,
    /// Component loss on top of the fibres, dB.
    pub extra_loss_db: f64,
    /// Pinned total loss, dB.
    pub loss_db: Option<f64>,
    /// Detector acceptance per slot for noise, s.
    pub gate_s: f64,
    /// Finite-key settings.
    pub finite_key: FiniteKey,
    /// The scenario's `[emulator]` table (runs of the network).
    pub emulator: Option<toml::Table>,
    /// The scenario's scheduled faults (runs of the network).
    pub faults: Vec<qkdnet_emulator::Fault>,
    /// Distillation block in runs, virtual seconds (`None`: the scenario's `[run]`, else
    /// the run's).
    pub block_s: Option<f64>,
    /// The scenario's `[run]` settings (checked).
    pub run: crate::scenario::RunSection,
}

impl Link {
    /// The distillation block: the link's own, else its scenario's `[run]`, else `default`.
    pub fn block_seconds(&self, default: f64) -> f64 {
        self.block_s.or(self.run.block_s).unwrap_or(default)
    }
}

/// A checked network.
#[derive(Debug, Clone)]
pub struct Network {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Where it was read from (for messages).
    pub origin: String,
    /// WDM assumptions.
    pub wdm: WdmPlan,
    /// Sites.
    pub nodes: Vec<Node>,
    /// Fibres.
    pub fibres: Vec<Fibre>,
    /// Links.
    pub links: Vec<Link>,
    /// SAE pairs to plan for: (SAE, node index) twice.
    pub sae_pairs: Vec<[(String, usize); 2]>,
    /// Faults on fibres during runs.
    pub fibre_faults: Vec<FibreFault>,
}

impl Network {
    /// Index of a node by ID.
    pub fn node(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The node an SAE is attached to.
    pub fn sae_node(&self, sae: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.saes.iter().any(|s| s == sae))
    }
}

/// Reads and checks a network file; link scenario paths are relative to its directory.
pub fn load(path: &Path) -> Result<Network, InputError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError::new(format!("{}: cannot read: {e}", path.display())))?;
    parse(&text, path)
}

/// Parses and checks a network file's text; `path` names it in messages and anchors
/// relative scenario paths.
pub fn parse(text: &str, path: &Path) -> Result<Network, InputError> {
    let origin = path.display().to_string();
    let file: NetworkFile = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        let at = e
            .span()
            .map(|sp| format!(" (line {})", text[..sp.start].matches('\n').count() + 1));
        InputError::new(format!("{origin}: {msg}{}", at.unwrap_or_default()))
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    check(file, &origin, &base)
}

fn finite_num(origin: &str, field: &str, v: f64, lo: f64, hi: f64) -> Result<(), InputError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(InputError::new(format!(
            "{origin}: {field}: must be a number in [{lo}, {hi}], got {v}"
        )))
    }
}

fn check(file: NetworkFile, origin: &str, base: &Path) -> Result<Network, InputError> {
    let w = &file.wdm;
    finite_num(
        origin,
        "wdm.filter_bandwidth_nm",
        w.filter_bandwidth_nm,
        0.001,
        50.0,
    )?;
    finite_num(
        origin,
        "wdm.adjacent_isolation_db",
        w.adjacent_isolation_db,
        0.0,
        300.0,
    )?;
    finite_num(
        origin,
        "wdm.non_adjacent_isolation_db",
        w.non_adjacent_isolation_db,
        0.0,
        300.0,
    )?;
    finite_num(
        origin,
        "wdm.pump_wavelength_nm",
        w.pump_wavelength_nm,
        300.0,
        1200.0,
    )?;
    finite_num(origin, "wdm.spdc_fwhm_nm", w.spdc_fwhm_nm, 0.01, 1000.0)?;
    if let Some([lo, hi]) = w.quantum_channels {
        if !grid::is_dwdm(lo) || !grid::is_dwdm(hi) || lo > hi {
            return Err(InputError::new(format!(
                "{origin}: wdm.quantum_channels: [{lo}, {hi}] is not a range of ITU channels within 1..=72"
            )));
        }
    }
    if let Some(fk) = &file.finite_key {
        fk.validate()
            .map_err(|e| InputError::new(format!("{origin}: {}: {}", e.field, e.reason)))?;
    }
    if file.nodes.is_empty() {
        return Err(InputError::new(format!("{origin}: no [[node]] given")));
    }
    // Nodes.
    let mut nodes: Vec<Node> = Vec::with_capacity(file.nodes.len());
    let mut sae_home: BTreeMap<String, usize> = BTreeMap::new();
    for (i, n) in file.nodes.iter().enumerate() {
        let item = format!("{origin}: node[{i}] \"{}\"", n.id);
        if n.id.is_empty() {
            return Err(InputError::new(format!("{origin}: node[{i}]: empty id")));
        }
        if nodes.iter().any(|m| m.id == n.id) {
            return Err(InputError::new(format!("{item}: duplicate node id")));
        }
        if let Some([x, y]) = n.position_km {
            finite_num(&item, "position_km[0]", x, -1e5, 1e5)?;
            finite_num(&item, "position_km[1]", y, -1e5, 1e5)?;
        }
        if !n.saes.is_empty() && n.kind != NodeKind::Trusted {
            return Err(InputError::new(format!(
                "{item}: saes: only trusted nodes (with a KME) serve SAEs; this node is a {}",
                n.kind.name()
            )));
        }
        for s in &n.saes {
            if let Some(&j) = sae_home.get(s) {
                return Err(InputError::new(format!(
                    "{item}: saes: SAE \"{s}\" is already attached to node \"{}\"",
                    nodes[j].id
                )));
            }
            sae_home.insert(s.clone(), i);
        }
        nodes.push(Node {
            id: n.id.clone(),
            name: n.name.clone().unwrap_or_else(|| n.id.clone()),
            kind: n.kind,
            position_km: n.position_km,
            saes: n.saes.clone(),
        });
    }
    let node_ix = |item: &str, field: &str, id: &str| -> Result<usize, InputError> {
        nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| InputError::new(format!("{item}: {field}: unknown node \"{id}\"")))
    };
    // Fibres.
    let mut fibres: Vec<Fibre> = Vec::with_capacity(file.fibres.len());
    for (i, f) in file.fibres.iter().enumerate() {
        let item = format!("{origin}: fibre[{i}] \"{}\"", f.id);
        if fibres.iter().any(|g| g.id == f.id) {
            return Err(InputError::new(format!("{item}: duplicate fibre id")));
        }
        let a = node_ix(&item, "ends[0]", &f.ends[0])?;
        let b = node_ix(&item, "ends[1]", &f.ends[1])?;
        if a == b {
            return Err(InputError::new(format!(
                "{item}: ends: both ends are \"{}\"",
                f.ends[0]
            )));
        }
        finite_num(&item, "length_km", f.length_km, 0.0, 1e5)?;
        finite_num(&item, "loss_db_per_km", f.loss_db_per_km, 0.0, 10.0)?;
        finite_num(
            &item,
            "loss_reference_nm",
            f.loss_reference_nm,
            1200.0,
            1700.0,
        )?;
        finite_num(&item, "extra_loss_db", f.extra_loss_db, 0.0, 200.0)?;
        let mut classical = Vec::new();
        for (j, c) in f.classical.iter().enumerate() {
            let citem = format!("{item}: classical[{j}]");
            let from = node_ix(&citem, "from", &c.from)?;
            if from != a && from != b {
                return Err(InputError::new(format!(
                    "{citem}: from: \"{}\" is not an end of this fibre",
                    c.from
                )));
            }
            finite_num(&citem, "launch_power_dbm", c.launch_power_dbm, -60.0, 30.0)?;
            if c.count == 0 {
                return Err(InputError::new(format!(
                    "{citem}: count: must be at least 1"
                )));
            }
            match (c.itu_channel, c.wavelength_nm) {
                (Some(ch), None) => {
                    let last = ch.saturating_add(c.count - 1);
                    if !grid::is_dwdm(ch) || !grid::is_dwdm(last) {
                        return Err(InputError::new(format!(
                            "{citem}: itu_channel: channels {ch}..={last} leave the 100 GHz grid (1..=72)"
                        )));
                    }
                    for n in ch..=last {
                        classical.push(Classical {
                            from,
                            wavelength_nm: grid::wavelength_nm(n),
                            itu_channel: Some(n),
                            launch_power_dbm: c.launch_power_dbm,
                        });
                    }
                }
                (None, Some(nm)) => {
                    finite_num(&citem, "wavelength_nm", nm, 1200.0, 1700.0)?;
                    if c.count != 1 {
                        return Err(InputError::new(format!(
                            "{citem}: count: give itu_channel for several channels (wavelength_nm names one)"
                        )));
                    }
                    classical.push(Classical {
                        from,
                        wavelength_nm: nm,
                        itu_channel: grid::channel_of_nm(nm),
                        launch_power_dbm: c.launch_power_dbm,
                    });
                }
                _ => {
                    return Err(InputError::new(format!(
                        "{citem}: give exactly one of itu_channel and wavelength_nm"
                    )))
                }
            }
        }
        fibres.push(Fibre {
            id: f.id.clone(),
            ends: [a, b],
            length_km: f.length_km,
            loss_db_per_km: f.loss_db_per_km,
            loss_reference_nm: f.loss_reference_nm,
            extra_loss_db: f.extra_loss_db,
            classical,
        });
    }
    // Links.
    let mut links: Vec<Link> = Vec::with_capacity(file.links.len());
    for (i, l) in file.links.iter().enumerate() {
        let item = format!("{origin}: link[{i}] \"{}\"", l.id);
        if links.iter().any(|m| m.id == l.id) {
            return Err(InputError::new(format!("{item}: duplicate link id")));
        }
        links.push(check_link(l, &item, base, &nodes, &fibres, &file)?);
    }
    // Channels used twice on one fibre.
    check_channel_use(&links, &fibres, &file.wdm, origin)?;
    // SAE pairs.
    let mut sae_pairs = Vec::new();
    if file.sae_pairs.is_empty() {
        let all: Vec<(&String, &usize)> = sae_home.iter().collect();
        for x in 0..all.len() {
            for y in x + 1..all.len() {
                if all[x].1 != all[y].1
                    && trusted_path(&nodes, &links, *all[x].1, *all[y].1).is_some()
                {
                    sae_pairs.push([(all[x].0.clone(), *all[x].1), (all[y].0.clone(), *all[y].1)]);
                }
            }
        }
    } else {
        for (i, p) in file.sae_pairs.iter().enumerate() {
            let item = format!(
                "{origin}: sae_pair[{i}] (\"{}\" ↔ \"{}\")",
                p.saes[0], p.saes[1]
            );
            let mut ends = Vec::with_capacity(2);
            for (k, s) in p.saes.iter().enumerate() {
                let Some(&n) = sae_home.get(s) else {
                    return Err(InputError::new(format!(
                        "{item}: saes[{k}]: SAE \"{s}\" is not attached to any node"
                    )));
                };
                ends.push((s.clone(), n));
            }
            if ends[0].1 == ends[1].1 {
                return Err(InputError::new(format!(
                    "{item}: both SAEs are at node \"{}\" (one KME serves them; nothing to plan)",
                    nodes[ends[0].1].id
                )));
            }
            if trusted_path(&nodes, &links, ends[0].1, ends[1].1).is_none() {
                return Err(InputError::new(format!(
                    "{item}: no path of links through trusted nodes joins \"{}\" and \"{}\"",
                    nodes[ends[0].1].id, nodes[ends[1].1].id
                )));
            }
            sae_pairs.push([ends[0].clone(), ends[1].clone()]);
        }
    }
    // Fibre faults.
    let mut fibre_faults = Vec::with_capacity(file.faults.len());
    for (i, f) in file.faults.iter().enumerate() {
        use qkdnet_emulator::faults::{FaultKind, Side};
        let item = format!("{origin}: fault[{i}]");
        let Some(fi) = fibres.iter().position(|x| x.id == f.fibre) else {
            return Err(InputError::new(format!(
                "{item}: fibre: unknown fibre \"{}\"",
                f.fibre
            )));
        };
        if !matches!(f.kind, FaultKind::FibreCut | FaultKind::LossStep) {
            return Err(InputError::new(format!(
                "{item}: kind: a fibre takes fibre-cut or loss-step faults, not {:?} (detector, source and clock faults belong in a link's scenario)",
                f.kind
            )));
        }
        let mut fault = qkdnet_emulator::Fault::new(f.kind, Side::Both, f.start_s, f.duration_s);
        fault.loss_db = f.loss_db;
        qkdnet_emulator::faults::validate(std::slice::from_ref(&fault)).map_err(|e| {
            InputError::new(format!(
                "{item}: {}: {}",
                e.field.trim_start_matches("fault[0]."),
                e.reason
            ))
        })?;
        fibre_faults.push(FibreFault { fibre: fi, fault });
    }
    Ok(Network {
        fibre_faults,
        name: file.name,
        description: file.description,
        origin: origin.to_string(),
        wdm: file.wdm,
        nodes,
        fibres,
        links,
        sae_pairs,
    })
}

fn check_link(
    l: &LinkSpec,
    item: &str,
    base: &Path,
    nodes: &[Node],
    fibres: &[Fibre],
    file: &NetworkFile,
) -> Result<Link, InputError> {
    let node_ix = |field: &str, id: &str| -> Result<usize, InputError> {
        nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| InputError::new(format!("{item}: {field}: unknown node \"{id}\"")))
    };
    let a = node_ix("ends[0]", &l.ends[0])?;
    let b = node_ix("ends[1]", &l.ends[1])?;
    if a == b {
        return Err(InputError::new(format!(
            "{item}: ends: both ends are \"{}\"",
            l.ends[0]
        )));
    }
    for (k, &e) in [a, b].iter().enumerate() {
        if nodes[e].kind != NodeKind::Trusted {
            return Err(InputError::new(format!(
                "{item}: ends[{k}]: \"{}\" is a {} node; a link's ends hold keys and must be trusted",
                nodes[e].id,
                nodes[e].kind.name()
            )));
        }
    }
    // Protocol and hardware: the scenario's, then the link's overrides.
    let (scenario_name, mut hardware, scenario_extra, scenario_fk, emulator, faults, run) = match &l
        .scenario
    {
        Some(p) => {
            let full = base.join(p);
            let s = scenario::load(&full).map_err(|e| InputError::new(format!("{item}: {e}")))?;
            s.run
                .check()
                .map_err(|e| InputError::new(format!("{item}: {}: {e}", full.display())))?;
            (
                Some(s.protocol),
                s.hardware.unwrap_or_default(),
                s.channel.extra_loss_db,
                s.finite_key,
                s.emulator,
                s.faults,
                s.run,
            )
        }
        None => (
            None,
            toml::Table::new(),
            0.0,
            None,
            None,
            Vec::new(),
            Default::default(),
        ),
    };
    let name = match (&l.protocol, &scenario_name) {
        (Some(p), Some(s)) if p != s => {
            return Err(InputError::new(format!(
                "{item}: protocol: \"{p}\" differs from its scenario's \"{s}\""
            )))
        }
        (Some(p), _) => p.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(InputError::new(format!(
                "{item}: give protocol or scenario (protocols: {})",
                qkdnet_keyrate::protocol::NAMES.join(", ")
            )))
        }
    };
    if let Some(over) = &l.hardware {
        for (k, v) in over {
            hardware.insert(k.clone(), v.clone());
        }
    }
    let protocol = build_protocol(&name, &hardware, item)?;
    let geometry = match &protocol {
        Protocol::Bbm92Cw(_) | Protocol::Bbm92Pulsed(_) => Geometry::Source,
        Protocol::TwinField(_) | Protocol::Mdi(_) => Geometry::Relay,
        Protocol::Di(_) if l.via.is_some() => Geometry::Relay,
        Protocol::DecoyBb84(_) | Protocol::Cv(_) | Protocol::Di(_) => Geometry::PointToPoint,
    };
    let via = match (&l.via, geometry) {
        (Some(v), Geometry::PointToPoint) => {
            return Err(InputError::new(format!(
                "{item}: via: \"{v}\": a {name} link runs from ends[0] to ends[1] and has no middle node"
            )))
        }
        (Some(v), _) => Some(node_ix("via", v)?),
        (None, Geometry::Relay) => {
            return Err(InputError::new(format!(
                "{item}: via: a {name} link needs its relay node"
            )))
        }
        (None, Geometry::Source) => Some(a),
        (None, Geometry::PointToPoint) => None,
    };
    if let (Some(v), Geometry::Relay) = (via, geometry) {
        if v == a || v == b {
            return Err(InputError::new(format!(
                "{item}: via: the relay \"{}\" is one of the ends",
                nodes[v].id
            )));
        }
        if nodes[v].kind == NodeKind::Patch {
            return Err(InputError::new(format!(
                "{item}: via: \"{}\" is a patch point, not a relay",
                nodes[v].id
            )));
        }
    }
    let arm_ends: Vec<(usize, usize)> = match (geometry, via) {
        (Geometry::Source, Some(s)) => vec![(s, a), (s, b)],
        (Geometry::Relay, Some(r)) => vec![(a, r), (b, r)],
        _ => vec![(a, b)],
    };
    let mut arms = Vec::with_capacity(arm_ends.len());
    for (k, &(from, to)) in arm_ends.iter().enumerate() {
        let route = match l.routes.as_ref().map(|r| r.get(k)) {
            Some(Some(ids)) => explicit_route(item, k, ids, from, to, nodes, fibres)?,
            Some(None) => {
                return Err(InputError::new(format!(
                    "{item}: routes: {} route(s) given for {} arm(s)",
                    l.routes.as_ref().map_or(0, Vec::len),
                    arm_ends.len()
                )))
            }
            None if from == to => Vec::new(),
            None => least_loss_route(fibres, from, to).ok_or_else(|| {
                InputError::new(format!(
                    "{item}: no fibre route from \"{}\" to \"{}\"",
                    nodes[from].id, nodes[to].id
                ))
            })?,
        };
        arms.push(Arm {
            from,
            to,
            fibres: route,
        });
    }
    if let Some(r) = &l.routes {
        if r.len() != arms.len() {
            return Err(InputError::new(format!(
                "{item}: routes: {} route(s) given for {} arm(s)",
                r.len(),
                arms.len()
            )));
        }
    }
    let channel = match &l.channel {
        None => ChannelChoice::Auto,
        Some(ChannelSpec::Word(w)) if w == "auto" => ChannelChoice::Auto,
        Some(ChannelSpec::Word(w)) => {
            return Err(InputError::new(format!(
                "{item}: channel: \"{w}\" (give \"auto\", an ITU channel, or [alice, bob])"
            )))
        }
        Some(ChannelSpec::One(c)) => {
            if geometry == Geometry::Source {
                return Err(InputError::new(format!(
                    "{item}: channel: a {name} link needs an energy-conjugate pair [alice, bob], got {c}"
                )));
            }
            ChannelChoice::Fixed([*c, *c])
        }
        Some(ChannelSpec::Pair(p)) => {
            if geometry == Geometry::PointToPoint {
                return Err(InputError::new(format!(
                    "{item}: channel: a {name} link has one arm; give one channel, got {p:?}"
                )));
            }
            ChannelChoice::Fixed(*p)
        }
    };
    if let ChannelChoice::Fixed(p) = channel {
        for (k, &c) in p.iter().enumerate() {
            if !grid::on_grid(c) {
                return Err(InputError::new(format!(
                    "{item}: channel[{k}]: {c} is on neither ITU grid (DWDM 100 GHz: 1..=72; CWDM: 1271, 1291, …, 1611 nm)"
                )));
            }
        }
        let cwdm = grid::is_cwdm(p[0]);
        if geometry == Geometry::Source && p.len() == 2 && cwdm != grid::is_cwdm(p[1]) {
            return Err(InputError::new(format!(
                "{item}: channel: [{}, {}] mixes a DWDM channel and a CWDM band; an entangled pair takes two of one grid",
                p[0], p[1]
            )));
        }
        let pairs = if cwdm {
            grid::cwdm_conjugate_pairs(file.wdm.pump_wavelength_nm)
        } else {
            grid::conjugate_pairs(file.wdm.pump_wavelength_nm)
        };
        if geometry == Geometry::Source && !pairs.contains(&(p[0], p[1])) {
            return Err(InputError::new(format!(
                "{item}: channel: [{}, {}] is not an energy-conjugate pair for the {} nm pump (Alice takes the longer wavelength)",
                p[0], p[1], file.wdm.pump_wavelength_nm
            )));
        }
    }
    let extra_loss_db = l.extra_loss_db.unwrap_or(scenario_extra);
    finite_num(item, "extra_loss_db", extra_loss_db, 0.0, 200.0)?;
    if let Some(x) = l.loss_db {
        finite_num(item, "loss_db", x, 0.0, 300.0)?;
    }
    let slot_s = match &protocol {
        Protocol::DecoyBb84(p) => Some(1.0 / p.clock_hz),
        Protocol::Bbm92Pulsed(p) => Some(1.0 / p.clock_hz),
        Protocol::Mdi(p) => Some(1.0 / p.clock_hz),
        Protocol::TwinField(m) => Some(1.0 / m.hw.clock_hz),
        _ => None,
    };
    let gate_s = match l.gate_ps {
        Some(g) => {
            finite_num(item, "gate_ps", g, 1.0, 1e9)?;
            g * 1e-12
        }
        None => slot_s.map_or(1e-9, |s| s.min(1e-9)),
    };
    let finite_key = scenario_fk.or(file.finite_key).unwrap_or_default();
    if let Some(b) = l.block_s {
        finite_num(item, "block_s", b, 1.0, 1e7)?;
    }
    let mut run = run;
    if let Some(n) = l.block_symbols {
        if !matches!(protocol, Protocol::Cv(_)) {
            return Err(InputError::new(format!(
                "{item}: block_symbols: only CV-QKD links reconcile symbols (this link is {name})"
            )));
        }
        crate::cv::check_block_symbols(n)
            .map_err(|e| InputError::new(format!("{item}: block_symbols: {e}")))?;
        run.block_symbols = Some(n);
    }
    Ok(Link {
        id: l.id.clone(),
        protocol_name: name,
        protocol,
        ends: [a, b],
        via,
        geometry,
        arms,
        channel,
        extra_loss_db,
        loss_db: l.loss_db,
        gate_s,
        finite_key,
        emulator,
        faults,
        block_s: l.block_s,
        run,
    })
}

fn explicit_route(
    item: &str,
    arm: usize,
    ids: &[String],
    from: usize,
    to: usize,
    nodes: &[Node],
    fibres: &[Fibre],
) -> Result<Vec<usize>, InputError> {
    let mut at = from;
    let mut route = Vec::with_capacity(ids.len());
    for (j, id) in ids.iter().enumerate() {
        let Some(f) = fibres.iter().position(|f| &f.id == id) else {
            return Err(InputError::new(format!(
                "{item}: routes[{arm}][{j}]: unknown fibre \"{id}\""
            )));
        };
        at = match other_end(fibres[f].ends, at) {
            Some(v) => v,
            None => {
                return Err(InputError::new(format!(
                    "{item}: routes[{arm}][{j}]: fibre \"{id}\" does not start at \"{}\"",
                    nodes[at].id
                )))
            }
        };
        route.push(f);
    }
    if at != to {
        return Err(InputError::new(format!(
            "{item}: routes[{arm}]: ends at \"{}\", not at \"{}\"",
            nodes[at].id, nodes[to].id
        )));
    }
    Ok(route)
}

/// The far end of a fibre or link `ends` seen from node `u`, if `u` is one of them.
pub fn other_end(ends: [usize; 2], u: usize) -> Option<usize> {
    if ends[0] == u {
        Some(ends[1])
    } else if ends[1] == u {
        Some(ends[0])
    } else {
        None
    }
}

/// The least-loss fibre route from `from` to `to` (Dijkstra on fibre loss).
pub fn least_loss_route(fibres: &[Fibre], from: usize, to: usize) -> Option<Vec<usize>> {
    #[derive(PartialEq)]
    struct Item(f64, usize);
    impl Eq for Item {}
    impl PartialOrd for Item {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Item {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
        }
    }
    let n = fibres
        .iter()
        .flat_map(|f| f.ends)
        .max()
        .map_or(0, |m| m + 1)
        .max(from + 1)
        .max(to + 1);
    let mut dist = vec![f64::INFINITY; n];
    let mut prev: Vec<Option<usize>> = vec![None; n];
    let mut heap = BinaryHeap::new();
    dist[from] = 0.0;
    heap.push(Item(0.0, from));
    while let Some(Item(d, u)) = heap.pop() {
        if d > dist[u] {
            continue;
        }
        if u == to {
            break;
        }
        for (fi, f) in fibres.iter().enumerate() {
            let Some(v) = other_end(f.ends, u) else {
                continue;
            };
            let nd = d + f.loss_db();
            if nd < dist[v] {
                dist[v] = nd;
                prev[v] = Some(fi);
                heap.push(Item(nd, v));
            }
        }
    }
    if !dist[to].is_finite() {
        return None;
    }
    let mut route = Vec::new();
    let mut at = to;
    while at != from {
        let fi = prev[at]?;
        route.push(fi);
        let [x, y] = fibres[fi].ends;
        at = if x == at { y } else { x };
    }
    route.reverse();
    Some(route)
}

/// Fibres and the channel each arm of each link puts on them, for fixed channels: no two
/// users' spectra may overlap on one fibre.
fn check_channel_use(
    links: &[Link],
    fibres: &[Fibre],
    wdm: &WdmPlan,
    origin: &str,
) -> Result<(), InputError> {
    for (fi, f) in fibres.iter().enumerate() {
        let mut used = grid::Occupancy::default();
        for c in &f.classical {
            let band = grid::classical_band_thz(c.wavelength_nm);
            let who = "a classical channel".to_string();
            if let Some((pc, prev)) = used.clash(band) {
                return Err(InputError::new(format!(
                    "{origin}: fibre \"{}\": {}",
                    f.id,
                    grid::Occupancy::describe(c.itu_channel, pc, prev, &who)
                )));
            }
            used.add(band, c.itu_channel, who);
        }
        for l in links {
            let ChannelChoice::Fixed(p) = l.channel else {
                continue;
            };
            for (k, arm) in l.arms.iter().enumerate() {
                if !arm.fibres.contains(&fi) {
                    continue;
                }
                let ch = p[k];
                let band = grid::band_thz(ch, wdm.filter_bandwidth_nm);
                let who = format!("link \"{}\"", l.id);
                if let Some((pc, prev)) = used.clash(band) {
                    return Err(InputError::new(format!(
                        "{origin}: fibre \"{}\": {}",
                        f.id,
                        grid::Occupancy::describe(Some(ch), pc, prev, &who)
                    )));
                }
                used.add(band, Some(ch), who);
            }
        }
    }
    // One source emits each conjugate pair once; a relay separates its pairs by wavelength.
    let mut at_node: BTreeMap<(usize, u32), &str> = BTreeMap::new();
    for l in links {
        let (ChannelChoice::Fixed(p), Some(v)) = (l.channel, l.via) else {
            continue;
        };
        if l.geometry == Geometry::PointToPoint {
            continue;
        }
        if let Some(prev) = at_node.insert((v, p[0]), &l.id) {
            return Err(InputError::new(format!(
                "{origin}: link \"{}\": channel {} is already taken at its {} by link \"{prev}\"",
                l.id,
                p[0],
                if l.geometry == Geometry::Source {
                    "source"
                } else {
                    "relay"
                }
            )));
        }
    }
    Ok(())
}

/// Some path of links between two nodes whose intermediate nodes are all trusted (every
/// link end is), as link indices; `None` if there is none.
pub fn trusted_path(nodes: &[Node], links: &[Link], from: usize, to: usize) -> Option<Vec<usize>> {
    let mut prev: Vec<Option<(usize, usize)>> = vec![None; nodes.len()];
    let mut seen = vec![false; nodes.len()];
    let mut queue = std::collections::VecDeque::from([from]);
    seen[from] = true;
    while let Some(u) = queue.pop_front() {
        if u == to {
            let mut path = Vec::new();
            let mut at = to;
            while let Some((l, p)) = prev[at] {
                path.push(l);
                at = p;
            }
            path.reverse();
            return Some(path);
        }
        for (li, l) in links.iter().enumerate() {
            let Some(v) = other_end(l.ends, u) else {
                continue;
            };
            if !seen[v] {
                seen[v] = true;
                prev[v] = Some((li, u));
                queue.push_back(v);
            }
        }
    }
    None
}
