//! `qkdnet node --config SITE.toml`: one process per site of a network. It runs the site's
//! KME (ETSI GS QKD 014 over mutual TLS, the links to the neighbouring KMEs, relays) as
//! `qkdnet kme serve` does, and the site's QKD links: each link's emulated hardware in
//! accelerated virtual time, its sifted key distilled with the neighbour over TCP (the
//! Wegman–Carter-authenticated session of `qkdnet-distill`), each final key stored under
//! the same block ID at both ends.
//!
//! The site file is a KME file (see `kme.rs`) with a `[node]` section:
//!
//! ```toml
//! [node]
//! network = "../networks/nice-4-node.toml"  # the network this site belongs to
//! id = "nice"                  # this site's node ID (default: kme_id)
//! distill_listen = "127.0.0.1:9101"   # where neighbours connect for distillation
//! time_scale = 120.0           # virtual seconds per wall second
//! block_s = 1800.0             # distillation block, virtual seconds (a link's own block_s
//!                              # in the network file first; without either, the link's
//!                              # scenario [run] block_s, else 1800)
//! seed = 1                     # the network run's seed (the same at every site)
//! epoch_unix_ms = 1764480000000  # the run's virtual time zero (the same at every site)
//! pump_objective = "key-rate"  # or "qber-z", "fixed"
//! dashboard = "127.0.0.1:9180" # optional: the live dashboard (plain HTTP, no key material)
//! [node.distill_peers]         # neighbours' distillation addresses, by node ID
//! inria = "127.0.0.1:9102"
//! ```
//!
//! Emulation: both ends of a link emulate the whole link from the shared seed, and each
//! end keeps its own half of the records (the photons cannot travel between processes);
//! everything from the sifted key on runs between the two processes as in a deployment.
//! The virtual clock is `(wall − epoch) × time_scale` at every site, so a restarted node
//! replays its links up to now (window level is cheap), skips the blocks it missed, and
//! meets its neighbours at the next block. Each link's authentication pads live on disk
//! ([`crate::pads`]): provisioned once from a pre-shared key (in the emulation derived from
//! the run's seed), then replenished from the link's own final keys, each block giving
//! back the pads its session used and 4096 bits. Before each session the two ends agree
//! on the pads to use from what both hold, so a restart or a lost chunk never leads to
//! reuse. Sampling and privacy-amplification seeds come from the operating system, so the
//! final keys differ from run to run even though the emulated photons do not.
//!
//! `[node] pads = "FILE"` names the pads' file (default: the SQLite store's path with
//! `.pads` appended).

use crate::dashboard::Dashboard;
use crate::kme::{serve_with, Loaded};
use crate::pads::{agree, confirm_agreement, transcript, Holding, PadStore};
use crate::CliError;
use clap::Args;
use qkdnet_core::bits::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::auth::TAG_BITS;
use qkdnet_distill::random::OsRandom;
use qkdnet_distill::session::{ExternalBound, TestTally};
use qkdnet_kms::KeyStore;
use qkdnet_link::{drive_alice_with_bound, drive_bob, TcpTransport, Transport};
use qkdnet_network::cv::{cv_alice, cv_bob, CodeCache, CvAliceHalf, CvBobHalf, CvEnd, CvEnded};
use qkdnet_network::plan::{plan, PlanOptions};
use qkdnet_network::runner::{
    block_config, emulated_preshared_key, too_short, BlockBuffer, PumpObjective, Runner,
    RunnerConfig, WINDOW_S,
};
use qkdnet_network::sim::{build_runner, link_seed};
use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Flags of `qkdnet node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The site file: a KME configuration with a `[node]` section.
    #[arg(long)]
    pub config: PathBuf,
}

/// The `[node]` section.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    network: PathBuf,
    id: Option<String>,
    distill_listen: String,
    #[serde(default = "default_scale")]
    time_scale: f64,
    /// The site's distillation block (over each link's scenario `[run]`; a link's own
    /// `block_s` in the network file comes first).
    block_s: Option<f64>,
    #[serde(default = "default_seed")]
    seed: u64,
    epoch_unix_ms: Option<u64>,
    #[serde(default = "default_objective")]
    pump_objective: String,
    #[serde(default)]
    distill_peers: BTreeMap<String, String>,
    /// Serve the live dashboard (plain HTTP, statistics only) at this address.
    dashboard: Option<String>,
    /// The authentication pads' file (default: the SQLite store's path with `.pads`
    /// appended; required with a PostgreSQL store).
    pads: Option<PathBuf>,
}

fn default_scale() -> f64 {
    100.0
}
/// Distillation block when neither the network file, the site nor the scenario sets one.
const DEFAULT_BLOCK_S: f64 = 1800.0;
fn default_seed() -> u64 {
    1
}
fn default_objective() -> String {
    "key-rate".into()
}

/// Hello frame before each block's session: which link, which block, the pads Alice asks
/// for and the pads she holds ([`crate::pads`]). Version 3: the session's first two
/// messages authenticate the hello and the answer ([`confirm_agreement`]).
const HELLO: &str = "qkdnet-distill 3";
/// Bob's answer to a hello: the pads he holds.
const PADS: &str = "pads ";
/// Largest distillation frame accepted, bytes.
const MAX_FRAME: u32 = 64 << 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_s() -> u64 {
    now_ms() / 1000
}

/// One site's view of a link.
struct SiteLink {
    index: usize,
    id: String,
    peer: String,
    alice: bool,
    seed: u64,
}

/// A block for Alice's session: ID, her sifted bits, the test tally, and the protocol's
/// own secrecy bound if it has one (decoy BB84).
type SiftedHalf = (u64, Bits, TestTally, Option<ExternalBound>);

/// What a CV link's two ends share besides their halves: the hardware at the operating
/// point, the reconciliation settings, the code in use, the secrecy parameter.
struct CvCtx {
    hw: qkdnet_keyrate::cv::CvGg02,
    cfg: qkdnet_distill::cv::block::ReconcileConfig,
    codes: CodeCache,
    eps_sec: f64,
}

/// A block for Alice's session.
enum AliceBlock {
    /// Sifted bits (discrete-variable links).
    Sifted(SiftedHalf),
    /// Her quadratures (CV-QKD), by block ID.
    Cv(u64, CvAliceHalf),
}

impl AliceBlock {
    /// The block's ID.
    fn id(&self) -> u64 {
        match self {
            Self::Sifted((id, ..)) | Self::Cv(id, _) => *id,
        }
    }
}

/// Bob's half of a block, waiting for Alice's session.
enum BobHalf {
    /// Sifted bits and the test tally.
    Sifted(Bits),
    /// His outcomes (CV-QKD).
    Cv(CvBobHalf, Arc<CvCtx>),
}

/// Blocks waiting at Bob's end for Alice's session, by block ID.
type Pending = Arc<(Mutex<HashMap<u64, BobHalf>>, Condvar)>;

/// The timing every thread shares.
#[derive(Clone, Copy)]
struct Clock {
    epoch_ms: u64,
    scale: f64,
}

impl Clock {
    /// Virtual seconds since the epoch.
    fn virtual_s(&self) -> f64 {
        now_ms().saturating_sub(self.epoch_ms) as f64 * 1e-3 * self.scale
    }
}

fn log(site: &str, clock: &Clock, msg: &str) {
    println!("[{site} t={:.0}s] {msg}", clock.virtual_s());
}

/// Runs `qkdnet node`.
pub fn run(a: &NodeArgs) -> Result<(), CliError> {
    let cfg = Loaded::read(&a.config)?;
    let table = cfg
        .node_section()
        .ok_or_else(|| cfg.field("node", "missing: a site file has a [node] section"))?;
    let node: NodeSection = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| cfg.field("node", e.message().replace('\n', " ")))?;
    let me = node.id.clone().unwrap_or_else(|| cfg.kme_id().to_string());
    if !(node.time_scale.is_finite() && node.time_scale > 0.0 && node.time_scale <= 1e5) {
        return Err(cfg.field(
            "node.time_scale",
            format!("must be in (0, 1e5], got {}", node.time_scale),
        ));
    }
    if let Some(b) = node.block_s {
        if !(b.is_finite() && b >= 1.0) {
            return Err(cfg.field("node.block_s", format!("must be ≥ 1 s, got {b}")));
        }
    }
    let listen: std::net::SocketAddr = node.distill_listen.parse().map_err(|e| {
        cfg.field(
            "node.distill_listen",
            format!("'{}': {e}", node.distill_listen),
        )
    })?;
    let pump = match node.pump_objective.as_str() {
        "key-rate" => PumpObjective::KeyRate,
        "qber-z" => PumpObjective::QberZ(0.043),
        "fixed" => PumpObjective::Fixed,
        other => {
            return Err(cfg.field(
                "node.pump_objective",
                format!("'{other}' is not key-rate, qber-z or fixed"),
            ))
        }
    };
    let net_path = cfg.resolve(&node.network);
    let net = qkdnet_network::spec::load(&net_path)?;
    let Some(me_ix) = net.node(&me) else {
        return Err(cfg.field(
            "node.id",
            format!("'{me}' is not a node of {}", net_path.display()),
        ));
    };
    let p = plan(&net, &PlanOptions::PLACEMENT);
    let clock = Clock {
        epoch_ms: node.epoch_unix_ms.unwrap_or_else(now_ms),
        scale: node.time_scale,
    };
    let runner_cfg = RunnerConfig {
        pump,
        ..RunnerConfig::default()
    };
    // This site's links, and where each neighbour listens.
    let mut mine = Vec::new();
    for (i, l) in net.links.iter().enumerate() {
        let Some(k) = l.ends.iter().position(|&e| e == me_ix) else {
            continue;
        };
        let peer = net.nodes[l.ends[1 - k]].id.clone();
        if k == 0 && !node.distill_peers.contains_key(&peer) {
            return Err(cfg.field(
                "node.distill_peers",
                format!("no address for '{peer}', the other end of link '{}'", l.id),
            ));
        }
        mine.push(SiteLink {
            index: i,
            id: l.id.clone(),
            peer,
            alice: k == 0,
            seed: link_seed(node.seed, &l.id),
        });
    }
    // The links' authentication pads: provisioned once from the pre-shared key, then
    // replenished from each block's key.
    let pads_path = match (&node.pads, cfg.sqlite_path()) {
        (Some(p), _) => cfg.resolve(p),
        (None, Some(db)) => {
            let mut p = db.into_os_string();
            p.push(".pads");
            PathBuf::from(p)
        }
        (None, None) => {
            return Err(cfg.field(
                "node.pads",
                "give the pads' file: the store is not SQLite, so it has no default",
            ))
        }
    };
    let pads = Arc::new(PadStore::open(&pads_path).map_err(CliError::runtime)?);
    for l in &mine {
        // Emulation: both ends derive the link's pre-shared key from the run's seed (a
        // deployment provisions it out of band).
        if pads
            .provision(&l.id, &provisioned_key(l.seed))
            .map_err(CliError::runtime)?
        {
            log(
                &me,
                &clock,
                &format!("link {}: authentication pads provisioned", l.id),
            );
        }
    }
    let ttl = cfg.kme_config().key_ttl_s;
    let site = me.clone();
    let dash = match &node.dashboard {
        Some(addr) => {
            let d = Dashboard::new(&format!("qkdnet node {me} — {}", net.name));
            let bound = crate::dashboard::spawn(addr, Arc::clone(&d))
                .map_err(|e| cfg.field("node.dashboard", e))?;
            log(&me, &clock, &format!("dashboard on http://{bound}/"));
            Some(d)
        }
        None => None,
    };
    serve_with(&cfg, move |store| {
        if let Some(d) = &dash {
            // Key buffers: the material each link's lanes hold, every 2 s.
            let (d, store, peers) = (
                Arc::clone(d),
                Arc::clone(&store),
                mine.iter().map(|l| l.peer.clone()).collect::<Vec<_>>(),
            );
            let site = site.clone();
            std::thread::Builder::new()
                .name("dashboard buffers".into())
                .spawn(move || loop {
                    for p in &peers {
                        if let Ok(acc) = store.accounting(p) {
                            d.buffer(
                                &format!("{site} ↔ {p}"),
                                clock.virtual_s(),
                                acc.available_bits as f64,
                            );
                        }
                    }
                    std::thread::sleep(Duration::from_secs(2));
                })
                .map_err(|e| CliError::runtime(e.to_string()))?;
        }
        let listener = TcpListener::bind(listen)
            .map_err(|e| CliError::runtime(format!("node.distill_listen {listen}: {e}")))?;
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut counters: HashMap<String, Arc<AtomicU64>> = HashMap::new();
        for l in &mine {
            let link = &net.links[l.index];
            let block_s = link
                .block_s
                .or(node.block_s)
                .unwrap_or_else(|| link.block_seconds(DEFAULT_BLOCK_S));
            let runner = match build_runner(&net, &p, l.index, &runner_cfg, node.seed, block_s)? {
                Ok(r) => r,
                Err(why) => {
                    log(&site, &clock, &format!("link {} not run: {why}", l.id));
                    continue;
                }
            };
            let slot: Pending = Arc::new((Mutex::new(HashMap::new()), Condvar::new()));
            pending.insert(l.id.clone(), Arc::clone(&slot));
            let stored = Arc::new(AtomicU64::new(0));
            counters.insert(l.id.clone(), Arc::clone(&stored));
            let (tx, rx) = mpsc::channel::<AliceBlock>();
            let base = (l.index as u64) << 40;
            let alice = l.alice;
            let (site2, id2) = (site.clone(), l.id.clone());
            let d2 = dash.clone();
            let stored2 = Arc::clone(&stored);
            let fk = net.links[l.index].finite_key;
            let cv = match &runner {
                Runner::Cv(r) => Some(Arc::new(CvCtx {
                    hw: r.hardware().clone(),
                    cfg: qkdnet_distill::cv::block::ReconcileConfig {
                        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
                        ..Default::default()
                    },
                    codes: CodeCache::default(),
                    eps_sec: fk.eps_sec,
                })),
                _ => None,
            };
            let cv2 = cv.clone();
            std::thread::Builder::new()
                .name(format!("link {}", l.id))
                .spawn(move || {
                    let ctx = LinkCtx {
                        clock,
                        block_s,
                        base,
                        alice,
                        site: &site2,
                        id: &id2,
                        dash: d2,
                        stored: stored2,
                        finite_key: fk,
                        cv: cv2,
                    };
                    run_link(runner, &ctx, tx, slot)
                })
                .map_err(|e| CliError::runtime(e.to_string()))?;
            if l.alice {
                let addr = node.distill_peers[&l.peer].clone();
                let (store, site2, id2, peer, pads) = (
                    Arc::clone(&store),
                    site.clone(),
                    l.id.clone(),
                    l.peer.clone(),
                    Arc::clone(&pads),
                );
                let wait = Duration::from_secs_f64(block_s / clock.scale);
                std::thread::Builder::new()
                    .name(format!("distil {}", l.id))
                    .spawn(move || {
                        for half in rx {
                            let block = half.id();
                            let r = alice_session(&addr, &id2, block, &pads, wait, |t, auth| {
                                match half {
                                    AliceBlock::Sifted((block, bits, test, bound)) => {
                                        // Sampling positions and privacy-amplification
                                        // seeds are Alice's choice, sent to Bob: they
                                        // come from the operating system, as in a
                                        // deployment.
                                        let cfg = block_config(bits.len(), bound.is_some());
                                        drive_alice_with_bound(
                                            t,
                                            block,
                                            bits,
                                            cfg,
                                            Some(test),
                                            bound,
                                            auth,
                                            &mut OsRandom,
                                        )
                                        .map(|k| k.key)
                                        .map_err(|e| e.to_string())
                                    }
                                    AliceBlock::Cv(_, half) => {
                                        let cv = cv.as_deref().ok_or("not a CV-QKD link")?;
                                        let end = CvEnd {
                                            hw: &cv.hw,
                                            cfg: &cv.cfg,
                                            codes: &cv.codes,
                                            auth,
                                        };
                                        match cv_alice(t, end, half, &|| ())? {
                                            CvEnded::Key(k) => Ok(k),
                                            CvEnded::NoKey(why) => Err(why),
                                        }
                                    }
                                }
                            });
                            let at = Done {
                                store: &*store,
                                pads: &pads,
                                site: &site2,
                                clock: &clock,
                                link: &id2,
                                peer: &peer,
                                ttl,
                                stored: &stored,
                            };
                            at.finish(block, r);
                        }
                    })
                    .map_err(|e| CliError::runtime(e.to_string()))?;
            }
        }
        let links: HashMap<String, (String, Arc<AtomicU64>)> = mine
            .iter()
            .filter_map(|l| {
                let c = counters.get(&l.id)?;
                Some((l.id.clone(), (l.peer.clone(), Arc::clone(c))))
            })
            .collect();
        let (store, site2) = (Arc::clone(&store), site.clone());
        std::thread::Builder::new()
            .name("distill listener".into())
            .spawn(move || accept_loop(listener, links, pending, (store, pads), &site2, clock, ttl))
            .map_err(|e| CliError::runtime(e.to_string()))?;
        log(
            &site,
            &clock,
            &format!(
                "node {site} of {}: {} link(s), distillation on {listen}, ×{} virtual time",
                net.name,
                mine.len(),
                clock.scale
            ),
        );
        Ok(())
    })
}

/// What a link's runtime thread knows.
struct LinkCtx<'a> {
    clock: Clock,
    block_s: f64,
    base: u64,
    alice: bool,
    site: &'a str,
    id: &'a str,
    dash: Option<Arc<Dashboard>>,
    stored: Arc<AtomicU64>,
    finite_key: qkdnet_keyrate::FiniteKey,
    /// CV-QKD links: what both ends share.
    cv: Option<Arc<CvCtx>>,
}

/// Steps a link's runtime at the pace of the virtual clock and hands each block's sifted
/// half to distillation (Alice: to her session thread; Bob: to the pending map).
fn run_link(
    mut runner: qkdnet_network::runner::Runner,
    ctx: &LinkCtx<'_>,
    tx: mpsc::Sender<AliceBlock>,
    pending: Pending,
) {
    let LinkCtx {
        clock,
        block_s,
        base,
        alice,
        site,
        id,
        ..
    } = *ctx;
    let mut feed = crate::netrun::Feed::new(1, block_s);
    let mut buffer = BlockBuffer::default();
    let mut block_start = 0.0;
    let mut caught_up = false;
    loop {
        let target = clock.virtual_s();
        if runner_time(&runner) + WINDOW_S > target {
            if !caught_up {
                caught_up = true;
                log(site, &clock, &format!("link {id} running"));
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let out = runner.step();
        for (from, to, fault) in &out.transitions {
            if caught_up {
                let why = fault
                    .as_ref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                log(site, &clock, &format!("link {id}: {from} → {to}{why}"));
                if let Some(d) = &ctx.dash {
                    d.event(out.t_s, id, &format!("{from} → {to}{why}"));
                }
            }
        }
        if let Some(d) = &ctx.dash {
            feed.window(0, &out);
            if runner.time_s() % (crate::netrun::FEED_WINDOWS as f64 * WINDOW_S) < 1e-9 {
                feed.point(d, id, 0, ctx.stored.load(Ordering::Relaxed));
            }
        }
        buffer.push_window(&out);
        if out.t_s - block_start < block_s {
            continue;
        }
        block_start = out.t_s;
        if let (Runner::Cv(r), Some(cv)) = (&mut runner, &ctx.cv) {
            let (b, sym) = r.take_block();
            let block_id = base | b;
            if out.t_s + block_s < clock.virtual_s() || sym.symbols == 0 {
                continue;
            }
            let (a, bob) = sym.split();
            if alice {
                if tx.send(AliceBlock::Cv(block_id, a)).is_err() {
                    return;
                }
            } else {
                hand_to_bob(&pending, block_id, BobHalf::Cv(bob, Arc::clone(cv)));
            }
            continue;
        }
        let block = buffer.take();
        let block_id = base | block.id;
        // Blocks that ended before a restart's replay caught up are gone at the other end.
        if out.t_s + block_s < clock.virtual_s() || block.alice.is_empty() {
            continue;
        }
        if let Some(why) = too_short(&block) {
            log(site, &clock, &format!("link {id}: no key: {why}"));
            continue;
        }
        // A decoy-BB84 block is finished under its decoy bound or not at all (never under
        // the session's entanglement-based one); both ends compute it from the same counts.
        let bound = match runner.external_bound(&block, ctx.finite_key) {
            Ok(b) => b,
            Err(e) => {
                log(site, &clock, &format!("link {id}: {e}"));
                continue;
            }
        };
        if alice {
            let half = AliceBlock::Sifted((block_id, block.alice, block.test, bound));
            if tx.send(half).is_err() {
                return;
            }
        } else {
            hand_to_bob(&pending, block_id, BobHalf::Sifted(block.bob));
        }
    }
}

/// Leaves Bob's half of a block for Alice's session, keeping the last few blocks for a
/// late neighbour.
fn hand_to_bob(pending: &Pending, block_id: u64, half: BobHalf) {
    let (lock, cv) = &**pending;
    let mut map = lock.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|&b, _| b + 3 > block_id);
    map.insert(block_id, half);
    cv.notify_all();
}

fn runner_time(r: &qkdnet_network::runner::Runner) -> f64 {
    r.time_s()
}

/// A link's pre-shared authentication key in the emulation: 128 hash-key bits and 16 384
/// pads (1 Mbit), from the link's seed, the same at both ends.
fn provisioned_key(seed: u64) -> Bits {
    let mut k = Bits::zeros(0);
    for i in 0..4 {
        let part = emulated_preshared_key(seed ^ (0x7061_6473 + i));
        k.append_range(&part, 0, part.len());
    }
    k
}

/// Alice's end of one block: connect, say which block and which pads she has, agree on
/// the session's pads with Bob, and run `session` (the family's exchange) on the
/// connection with them. The final key and the pads the session used.
fn alice_session(
    addr: &str,
    link: &str,
    block: u64,
    pads: &PadStore,
    wait: Duration,
    session: impl FnOnce(&mut TcpTransport, &mut AuthKeys) -> Result<Bits, String>,
) -> Result<(Bits, u64), String> {
    let deadline = Instant::now() + wait.max(Duration::from_secs(5));
    let stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(format!("neighbour at {addr} unreachable: {e}")),
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut t = TcpTransport::new(stream, MAX_FRAME).map_err(|e| e.to_string())?;
    let (mine, want) = (pads.holding(link)?.named(), pads.want(link)?);
    let hello = format!("{HELLO} {link} {block} {want} {}", mine.to_wire());
    t.send(hello.as_bytes()).map_err(|e| e.to_string())?;
    let answer = t.recv().map_err(|e| e.to_string())?;
    let seen = transcript(hello.as_bytes(), &answer);
    let reply = String::from_utf8_lossy(&answer);
    let theirs = reply
        .strip_prefix(PADS)
        .and_then(Holding::from_wire)
        .ok_or_else(|| format!("neighbour's pads answer unreadable: {reply:.80}"))?;
    let ranges = agree(&mine, &theirs, want).ok_or_else(|| {
        format!("fewer than {want} authentication pads in common with the neighbour")
    })?;
    with_pads(pads, link, &ranges, |auth| {
        confirm_agreement(&mut t, auth, true, &seen)?;
        session(&mut t, auth)
    })
}

/// Runs a session on the agreed `ranges` of `link`'s pads: reserves them, runs
/// `session`, and settles at the pads it used whether it finished or failed. Settling a
/// failed session is safe: every pad an end tagged or checked with lies below its own
/// cursor, so below its `next` after settling, and the next agreement starts from the
/// larger of the two ends' `next`; keeping the whole reservation instead burnt at least
/// 1024 pads per failed block, and a link whose blocks gave no key for a while (a 120 km
/// CV link, a long outage) ran out of pads for good. The key and the pads used.
fn with_pads(
    pads: &PadStore,
    link: &str,
    ranges: &[(u64, u64)],
    session: impl FnOnce(&mut AuthKeys) -> Result<Bits, String>,
) -> Result<(Bits, u64), String> {
    let mut auth = pads.reserve(link, ranges)?;
    let r = session(&mut auth);
    let used = pads.settle(link, ranges, auth.cursor())?;
    Ok((r?, used))
}

/// Where a finished block's key goes.
struct Done<'a> {
    store: &'a dyn KeyStore,
    pads: &'a PadStore,
    site: &'a str,
    clock: &'a Clock,
    link: &'a str,
    peer: &'a str,
    ttl: u64,
    stored: &'a AtomicU64,
}

impl Done<'_> {
    /// Stores a block's key (or logs why there is none), after giving the pads back what
    /// the session used and 4096 bits: the same cut at both ends, since both used the same
    /// pads.
    fn finish(&self, block: u64, r: Result<(Bits, u64), String>) {
        let (site, clock, link, peer) = (self.site, self.clock, self.link, self.peer);
        let b = block & ((1 << 40) - 1);
        let (k, used) = match r {
            Ok(r) => r,
            Err(e) => return log(site, clock, &format!("link {link} block {b}: no key: {e}")),
        };
        let take = (used as usize * TAG_BITS as usize + 4096).min(k.len());
        if let Err(e) = self.pads.add_block(link, b, &k.slice(0, take)) {
            return log(
                site,
                clock,
                &format!("link {link} block {b}: not stored: {e}"),
            );
        }
        let key = k.slice(take, k.len());
        let expires = now_s().saturating_add(self.ttl);
        match self.store.add_block(peer, block, &key, expires) {
            Ok(()) => {
                self.stored.fetch_add(key.len() as u64, Ordering::Relaxed);
                log(
                    site,
                    clock,
                    &format!(
                        "link {link} block {b}: {} bits of key stored, shared with {peer} ({take} bits to the authentication pads)",
                        key.len()
                    ),
                )
            }
            Err(e) => log(
                site,
                clock,
                &format!("link {link} block {b}: not stored: {e}"),
            ),
        }
    }
}

/// Bob's side: each connection names a link and block; its session runs on its own thread.
fn accept_loop(
    listener: TcpListener,
    links: HashMap<String, (String, Arc<AtomicU64>)>,
    pending: HashMap<String, Pending>,
    (store, pads): (Arc<dyn KeyStore>, Arc<PadStore>),
    site: &str,
    clock: Clock,
    ttl: u64,
) {
    let links = Arc::new(links);
    let pending = Arc::new(pending);
    // Each session holds a thread and a block in memory: a flood of connections is cut
    // off at a few per link rather than exhausting the process.
    let active = Arc::new(AtomicU64::new(0));
    let limit = 4 * links.len().max(1) as u64;
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if active.load(Ordering::Relaxed) >= limit {
            log(
                site,
                &clock,
                "refused a distillation connection: too many sessions open",
            );
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (links, pending, store, pads, site, held) = (
            Arc::clone(&links),
            Arc::clone(&pending),
            Arc::clone(&store),
            Arc::clone(&pads),
            site.to_string(),
            Arc::clone(&active),
        );
        let spawned = std::thread::Builder::new()
            .name("distill session".into())
            .spawn(move || {
                // Released however the session ends.
                struct Release(Arc<AtomicU64>);
                impl Drop for Release {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                let _release = Release(held);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
                let Ok(mut t) = TcpTransport::new(stream, MAX_FRAME) else {
                    return;
                };
                let hello = match t.recv() {
                    Ok(h) => h,
                    Err(_) => return,
                };
                let raw_hello = hello;
                let hello = String::from_utf8_lossy(&raw_hello).into_owned();
                let Some((link, block, want, theirs)) = parse_hello(&hello) else {
                    log(
                        &site,
                        &clock,
                        &format!("refused a distillation hello: {hello:.80}"),
                    );
                    return;
                };
                let (Some((peer, stored)), Some(slot)) = (links.get(link), pending.get(link))
                else {
                    log(
                        &site,
                        &clock,
                        &format!("refused a session for unknown link '{link:.40}'"),
                    );
                    return;
                };
                // Our half of the block: wait for our runtime to finish it.
                let (lock, cv) = &**slot;
                let mine = {
                    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                    let (mut guard, _) = cv
                        .wait_timeout_while(guard, Duration::from_secs(30), |m| {
                            !m.contains_key(&block)
                        })
                        .unwrap_or_else(|e| e.into_inner());
                    guard.remove(&block)
                };
                let Some(mine) = mine else {
                    log(
                        &site,
                        &clock,
                        &format!("link {link}: block {} not here", block & ((1 << 40) - 1)),
                    );
                    return;
                };
                // The session's pads: what both hold, from the larger `next` on.
                let ranges = pads.holding(link).and_then(|mine| {
                    let mine = mine.named();
                    let answer = format!("{PADS}{}", mine.to_wire());
                    t.send(answer.as_bytes()).map_err(|e| e.to_string())?;
                    let seen = transcript(&raw_hello, answer.as_bytes());
                    let ranges = agree(&theirs, &mine, want).ok_or_else(|| {
                        format!(
                            "fewer than {want} authentication pads in common with the neighbour"
                        )
                    })?;
                    Ok((ranges, seen))
                });
                let r = ranges.and_then(|(ranges, seen)| {
                    with_pads(&pads, link, &ranges, |auth| {
                        confirm_agreement(&mut t, auth, false, &seen)?;
                        match mine {
                            BobHalf::Sifted(bits) => drive_bob(&mut t, block, bits, auth)
                                .map(|k| k.key)
                                .map_err(|e| e.to_string()),
                            BobHalf::Cv(half, cv) => {
                                let end = CvEnd {
                                    hw: &cv.hw,
                                    cfg: &cv.cfg,
                                    codes: &cv.codes,
                                    auth,
                                };
                                // Bob's bits, verification keys and privacy-amplification
                                // seed come from the operating system.
                                let b = block & ((1 << 40) - 1);
                                let (_, ended) = cv_bob(
                                    &mut t,
                                    end,
                                    b,
                                    half,
                                    cv.eps_sec,
                                    (&mut OsRandom, &mut OsRandom),
                                )?;
                                match ended {
                                    CvEnded::Key(k) => Ok(k),
                                    CvEnded::NoKey(why) => Err(why),
                                }
                            }
                        }
                    })
                });
                let at = Done {
                    store: &*store,
                    pads: &pads,
                    site: &site,
                    clock: &clock,
                    link,
                    peer,
                    ttl,
                    stored,
                };
                at.finish(block, r);
            });
        if spawned.is_err() {
            // The closure (and its release) never ran.
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A hello: `qkdnet-distill 3 LINK BLOCK WANT NEXT CHUNKS` (the link ID may hold spaces):
/// the link, the block, the pads Alice asks for (at most a chunk) and what she holds.
fn parse_hello(h: &str) -> Option<(&str, u64, u64, Holding)> {
    let rest = h.strip_prefix(HELLO)?.strip_prefix(' ')?;
    let mut it = rest.rsplitn(5, ' ');
    let (chunks, next, want, block, link) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if link.is_empty() || link.len() > 200 {
        return None;
    }
    let want: u64 = want.parse().ok()?;
    if want == 0 || want > crate::pads::CHUNK_PADS {
        return None;
    }
    let holding = Holding::from_wire(&format!("{next} {chunks}"))?;
    Some((link, block.parse().ok()?, want, holding))
}

#[cfg(test)]
mod tests {
    use super::{parse_hello, provisioned_key, with_pads};
    use crate::pads::{agree, Holding, PadStore};

    /// A session that fails after using a few pads settles at them at both ends, so the
    /// link keeps its pads (it used to burn the whole reservation, 1024 pads or more per
    /// failed block); the next session starts past every pad either end used.
    #[test]
    fn a_failed_session_spends_only_the_pads_it_used() {
        let dir = std::env::temp_dir().join(format!("qkdnet-node-pads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = PadStore::open(&dir.join("a.sqlite")).unwrap();
        let b = PadStore::open(&dir.join("b.sqlite")).unwrap();
        let k = provisioned_key(5);
        assert!(a.provision("l", &k).unwrap() && b.provision("l", &k).unwrap());
        let r = agree(&a.holding("l").unwrap(), &b.holding("l").unwrap(), 1024).unwrap();
        // Alice tags two messages; the second never reaches Bob, who fails after the first.
        let mut sent = Vec::new();
        let ra = with_pads(&a, "l", &r, |auth| {
            for m in [&b"one"[..], b"two"] {
                sent.push(auth.tag(auth.cursor(), m).map_err(|e| e.to_string())?);
            }
            Err("connection lost".into())
        });
        let rb = with_pads(&b, "l", &r, |auth| {
            auth.check(auth.cursor(), b"one", sent[0], 1)
                .map_err(|e| e.to_string())?;
            Err("connection lost".into())
        });
        assert_eq!(ra.err().as_deref(), Some("connection lost"));
        assert!(rb.is_err());
        let (ha, hb) = (a.holding("l").unwrap(), b.holding("l").unwrap());
        assert_eq!((ha.next, hb.next), (2, 1));
        // The next agreement starts past the second pad, which Alice used and Bob did not.
        let r2 = agree(&ha, &hb, 1024).unwrap();
        assert_eq!(r2.first().map(|r| r.0), Some(2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hellos_name_a_link_a_block_and_pads_or_are_refused() {
        let h = |next, chunks: &[(u64, u64)]| Holding {
            next,
            chunks: chunks.to_vec(),
        };
        assert_eq!(
            parse_hello("qkdnet-distill 3 nice-inria 5 1024 7 0:4096,1048576:1049000"),
            Some((
                "nice-inria",
                5,
                1024,
                h(7, &[(0, 4096), (1 << 20, 1_049_000)])
            ))
        );
        assert_eq!(
            parse_hello("qkdnet-distill 3 a link id 1099511627776 2048 0 -"),
            Some(("a link id", 1 << 40, 2048, h(0, &[])))
        );
        for bad in [
            "",
            "qkdnet-distill 2",
            "qkdnet-distill 3 ",
            "qkdnet-distill 3  7 1024 0 -",
            "qkdnet-distill 1 l 7",
            "qkdnet-distill 1 l 7 1024 0 -",
            "qkdnet-distill 2 l 7 1024 0 -",
            "qkdnet-distill 3 l -7 1024 0 -",
            "qkdnet-distill 3 l 7x 1024 0 -",
            "qkdnet-distill 3 l 7 0 0 -",
            "qkdnet-distill 3 l 7 99999999 0 -",
            "qkdnet-distill 3 l 7 1024 0 5:5",
            "qkdnet-distill 3 l 7 1024 x -",
            "GET / HTTP/1.1",
        ] {
            assert_eq!(parse_hello(bad), None, "{bad:?}");
        }
        let long = format!("qkdnet-distill 3 {} 1 1024 0 -", "x".repeat(201));
        assert_eq!(parse_hello(&long), None);
    }
}
