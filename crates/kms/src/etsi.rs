//! ETSI GS QKD 014 V1.1.1 key delivery: the REST API an application (SAE) uses to get
//! keys from its KME, over HTTPS with mutual TLS.
//!
//! [`Kme::handle`] is the whole API as a function of (authenticated SAE ID, method, path,
//! query, content type, body) → (status, JSON body): it holds every rule and error of the
//! specification and is tested without sockets. [`serve`] is the network side: its own
//! accept loop (so each connection's client certificate is at hand), a handshake timeout,
//! a request-header timeout and a body-size limit per connection, each connection on its
//! own task so a stalled client delays no one.
//!
//! The SAE ID is the common name (CN) of the client certificate's subject, verified
//! against the KME's client CA.

use crate::{lane_for, Assignment, KeyRequest, KeyStore, StoreError};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Limits and identities of one KME (the values its `status` reports).
#[derive(Debug, Clone)]
pub struct KmeConfig {
    /// This KME's ID.
    pub kme_id: String,
    /// Which KME each known SAE is attached to (this KME's own SAEs included).
    pub sae_kme: HashMap<String, String>,
    /// Key size when a request names none, bits.
    pub default_key_size: u32,
    /// Smallest key size, bits (a multiple of 8).
    pub min_key_size: u32,
    /// Largest key size, bits.
    pub max_key_size: u32,
    /// Most keys per request.
    pub max_key_per_request: u32,
    /// Most keys the KME reports it can hold per peer.
    pub max_key_count: u64,
    /// Most SAE IDs (slave plus additional slaves) per request.
    pub max_sae_id_count: u32,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Deadline for a request's headers once a connection is open.
    pub header_timeout: Duration,
    /// Key lifetime after distillation when blocks are stored by this KME, seconds.
    pub key_ttl_s: u64,
    /// KMEs this one shares a QKD link (and key material) with. Empty: every KME named in
    /// `sae_kme` is taken as a neighbour. Otherwise slaves at other KMEs are served by
    /// relay ([`Kme::set_relayer`]).
    pub links: Vec<String>,
    /// For key relay between KME processes: for each KME that is not a neighbour, the
    /// neighbours a relayed key may go through next (the one with the most key material
    /// on its link is taken; see [`crate::hops`]).
    pub routes: HashMap<String, Vec<String>>,
}

impl KmeConfig {
    /// Defaults for a KME named `kme_id`.
    pub fn new(kme_id: &str) -> Self {
        Self {
            kme_id: kme_id.to_string(),
            sae_kme: HashMap::new(),
            default_key_size: 256,
            min_key_size: 64,
            max_key_size: 8192,
            max_key_per_request: 128,
            max_key_count: 1_000_000,
            max_sae_id_count: 8,
            max_body_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            key_ttl_s: 7 * 24 * 3600,
            links: Vec::new(),
            routes: HashMap::new(),
        }
    }
}

/// How a KME tells the KME at the other end of a link which keys it cut.
pub trait PeerLink: Send + Sync {
    /// Delivers a run of consecutive assignments (one lane, increasing serials) to
    /// `peer_kme`, returning once the peer has stored them all.
    fn send_assignments(&self, peer_kme: &str, run: &[Assignment]) -> Result<(), String>;

    /// [`PeerLink::send_assignments`] as a future, for the KME's async request path. The
    /// default runs the blocking call before returning a ready future: right for links
    /// that answer at once, wrong for one that waits on the network (override it).
    fn send_assignments_async<'a>(
        &'a self,
        peer_kme: &'a str,
        run: Vec<Assignment>,
    ) -> PeerFuture<'a> {
        Box::pin(std::future::ready(self.send_assignments(peer_kme, &run)))
    }

    /// Carries one hop of a relayed key to `peer_kme` ([`crate::hops`]), returning once
    /// the key is held at its destination.
    fn send_relay(&self, peer_kme: &str, hop: &crate::hops::RelayHop) -> Result<(), String> {
        let _ = hop;
        Err(format!("this link to {peer_kme} carries no relay"))
    }

    /// Sends this KME's route advertisement to `peer_kme` ([`crate::routing`]).
    fn send_routes(
        &self,
        peer_kme: &str,
        advert: &crate::routing::RouteAdvert,
    ) -> Result<(), String> {
        let _ = advert;
        Err(format!("this link to {peer_kme} carries no routes"))
    }
}

/// The answer of a [`PeerLink`] call, as a future.
pub type PeerFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// Why [`Kme::cut_and_deliver`] produced no keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CutError {
    /// The store refused (not enough material, …); nothing was cut.
    #[error(transparent)]
    Store(StoreError),
    /// The peer KME could not be told; the cut is accounted as discarded.
    #[error("peer KME: {0}")]
    Deliver(String),
}

/// The `{"keys": [...]}` container of ETSI 014 §6.3.
fn key_container(keys: &[crate::Key]) -> Response {
    let b64 = base64::engine::general_purpose::STANDARD;
    let list: Vec<Value> = keys
        .iter()
        .map(|k| json!({ "key_ID": k.id, "key": b64.encode(&k.bytes) }))
        .collect();
    Response {
        status: 200,
        body: Some(json!({ "keys": list })),
        text: None,
    }
}

/// Carries keys to slaves whose KME shares no link with this one (see [`crate::relay`]).
pub trait Relayer: Send + Sync {
    /// Relays `number` keys of `size_bytes` from `master_sae` at KME `from` to
    /// `slave_saes` at KME `to`, returning the master's keys.
    fn relay(
        &self,
        from: &str,
        to: &str,
        master_sae: &str,
        slave_saes: &[String],
        number: u32,
        size_bytes: u32,
    ) -> Result<Vec<crate::Key>, String>;
}

/// How a waiting cut learns whether its assignment reached the peer.
type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A run of consecutive assignments taken from a lane by its sender.
struct Run {
    lane: u8,
    items: Vec<(Assignment, Ack)>,
    /// Whether the unacknowledged assignments before it go first.
    resync: bool,
    /// The serial after the run.
    next: u64,
    /// Serials below this are recorded as acknowledged in the store.
    acked: u64,
}

impl Run {
    /// Whether, once the run has arrived, the store should record the acknowledgement.
    fn ack_due(&self) -> bool {
        self.next - self.acked >= ACK_EVERY
    }
}

/// Orders a lane's assignments: concurrent requests commit their cuts in some order
/// (their serials), and the peer must apply them in that order. Whoever holds the next
/// serial sends every consecutive assignment waiting, as one run (so the peer commits
/// them together); the others wait for their acknowledgement.
///
/// Resynchronisation. The store keeps every assignment until the peer acknowledges it
/// (`KeyStore::unacknowledged`). After a restart, or after a run that may not have
/// arrived, the next sender first re-sends all of them; the peer applies what it lacks
/// and ignores what it has, so the two ends are in step again and the lane serves keys.
/// Acknowledgements are written to the store every [`ACK_EVERY`] serials, not per run, to
/// spare a commit per request; at most that many assignments are re-sent needlessly.
#[derive(Default)]
struct LaneQueue {
    next: u64,
    pending: std::collections::BTreeMap<u64, (Assignment, Ack)>,
    sending: bool,
    /// Whether unacknowledged assignments must be re-sent before the next run.
    resync: bool,
    /// Serials below this are recorded as acknowledged in the store.
    acked: u64,
}

/// Serials between two acknowledgements written to the store.
pub const ACK_EVERY: u64 = 64;

/// An API response: status code and JSON body (none for 401).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Option<Value>,
    /// A plain-text body instead (the metrics exposition).
    pub text: Option<String>,
}

pub(crate) fn error(status: u16, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({ "message": message });
    if let Some(d) = details {
        body["details"] = d;
    }
    Response {
        status,
        body: Some(body),
        text: None,
    }
}

fn bad(message: &str, detail: String) -> Response {
    error(400, message, Some(json!([{ "parameter": detail }])))
}

fn unauthorized() -> Response {
    Response {
        status: 401,
        body: None,
        text: None,
    }
}

/// The OpenAPI 3 description of this API (committed as `docs/openapi/etsi014.json`),
/// served at `GET /api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi/etsi014.json");

const RULES: &str = "requested parameters do not adhere to KME rules";

/// The KME-to-KME endpoint that carries assignments between the two KMEs of a link
/// (not part of ETSI 014; callers authenticate with a certificate naming their KME ID).
pub const KME_ASSIGNMENTS: &str = "/api/v1/kme/assignments";
const NOT_FOUND: &str = "one or more keys specified are not found on KME";

/// The KME: configuration, store and peer link.
pub struct Kme {
    cfg: KmeConfig,
    store: Arc<dyn KeyStore>,
    peers: Arc<dyn PeerLink>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    lanes: std::sync::Mutex<HashMap<(String, u8), LaneQueue>>,
    metrics: crate::metrics::Metrics,
    relayer: std::sync::OnceLock<std::sync::Weak<dyn Relayer>>,
    routing: crate::routing::RoutingTable,
}

impl Kme {
    /// A KME over `store`, reaching its peers through `peers`, with `clock` giving the
    /// time in seconds used for expiry.
    pub fn new(
        cfg: KmeConfig,
        store: Arc<dyn KeyStore>,
        peers: Arc<dyn PeerLink>,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        // Each peer's master lane resumes at the store's next serial (nothing in flight
        // at start).
        let mut lanes = HashMap::new();
        for peer in cfg
            .sae_kme
            .values()
            .chain(&cfg.links)
            .filter(|k| **k != cfg.kme_id)
        {
            let lane = lane_for(&cfg.kme_id, peer);
            let next = store.lane_serial(peer, lane).unwrap_or(0);
            lanes.entry((peer.clone(), lane)).or_insert(LaneQueue {
                next,
                resync: true,
                ..LaneQueue::default()
            });
        }
        Self {
            cfg,
            store,
            peers,
            clock,
            lanes: std::sync::Mutex::new(lanes),
            metrics: crate::metrics::Metrics::new(),
            relayer: std::sync::OnceLock::new(),
            routing: crate::routing::RoutingTable::default(),
        }
    }

    /// Routes learnt from the neighbours.
    pub(crate) fn routing(&self) -> &crate::routing::RoutingTable {
        &self.routing
    }

    /// Cuts `number` keys of `size_bytes` for `master_sae` from the lane to the adjacent
    /// KME `peer`, entitling `slave_saes` there, and delivers the assignment in order.
    /// On a failed delivery the cut is accounted as discarded. (The building block of
    /// `enc_keys` and of each relay hop.)
    ///
    /// Blocks the calling thread, which must not be one of an async runtime's workers
    /// ([`Kme::cut_and_deliver_async`] there).
    pub fn cut_and_deliver(
        &self,
        peer: &str,
        master_sae: &str,
        slave_saes: &[String],
        number: u32,
        size_bytes: u32,
    ) -> Result<Vec<crate::Key>, CutError> {
        futures_executor::block_on(
            self.cut_and_deliver_async(peer, master_sae, slave_saes, number, size_bytes),
        )
    }

    /// [`Kme::cut_and_deliver`] as a future, what the request path runs: the store and the
    /// peer answer through futures, so the request holds no thread while it waits.
    ///
    /// Not cancel-safe: once the cut is committed, its assignment must reach the lane's
    /// queue, or the lane stalls at the missing serial. [`Kme::handle_async`] runs it in
    /// a task of its own, which a client that hangs up does not cancel.
    pub async fn cut_and_deliver_async(
        &self,
        peer: &str,
        master_sae: &str,
        slave_saes: &[String],
        number: u32,
        size_bytes: u32,
    ) -> Result<Vec<crate::Key>, CutError> {
        let req = KeyRequest {
            lane: lane_for(&self.cfg.kme_id, peer),
            master_sae,
            slave_saes,
            number,
            size_bytes,
        };
        let (keys, asg) = self
            .store
            .allocate_async(peer, &req, (self.clock)())
            .await
            .map_err(CutError::Store)?;
        let r = self.deliver_async(peer, asg).await;
        self.keep_or_void(peer, keys, r)
    }

    /// The keys of a cut whose delivery ended with `delivered`; after a failed delivery
    /// they are voided (accounted as discarded, never handed out). A failure is rare, so
    /// this blocking store call is made on the async path too.
    fn keep_or_void(
        &self,
        peer: &str,
        keys: Vec<crate::Key>,
        delivered: Result<(), String>,
    ) -> Result<Vec<crate::Key>, CutError> {
        match delivered {
            Ok(()) => Ok(keys),
            Err(e) => {
                let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
                let _ = self.store.void(peer, &ids);
                Err(CutError::Deliver(e))
            }
        }
    }

    /// Sets the relay used for slaves whose KME is not a neighbour (once; held weakly,
    /// since the relay usually owns this KME).
    pub fn set_relayer(&self, r: &Arc<dyn Relayer>) {
        let _ = self.relayer.set(Arc::downgrade(r));
    }

    /// The current time of this KME's clock, seconds.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Sends `asg` to the peer in serial order (see [`LaneQueue`]). Whoever finds the
    /// lane idle takes the sender's turn, in its own task.
    async fn deliver_async(&self, peer: &str, asg: Assignment) -> Result<(), String> {
        let lane = asg.lane;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.enqueue(peer, asg, tx)? {
            while let Some(run) = self.next_run(peer, lane) {
                let r = match self.run_with_backlog(peer, &run) {
                    Ok(asgs) => self.peers.send_assignments_async(peer, asgs).await,
                    Err(e) => Err(e),
                };
                let acked = match &r {
                    Ok(()) if run.ack_due() => {
                        match self.store.acknowledged_async(peer, lane, run.next).await {
                            Ok(()) => run.next,
                            Err(_) => run.acked,
                        }
                    }
                    _ => run.acked,
                };
                self.settle(peer, run, r, acked);
            }
        }
        rx.await
            .map_err(|_| "internal: delivery abandoned".to_string())?
    }

    /// Queues `asg` on its lane; true when the caller takes the sender's turn (no one
    /// else is sending), and must then send runs until [`Kme::next_run`] has none.
    fn enqueue(&self, peer: &str, asg: Assignment, ack: Ack) -> Result<bool, String> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = lanes.get_mut(&(peer.to_string(), asg.lane)) else {
            return Err(format!("no lane to peer KME {peer}"));
        };
        q.pending.insert(asg.serial, (asg, ack));
        Ok(!std::mem::replace(&mut q.sending, true))
    }

    /// The sender's next run: every consecutive assignment waiting. None ends the turn.
    fn next_run(&self, peer: &str, lane: u8) -> Option<Run> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let q = lanes.get_mut(&(peer.to_string(), lane))?;
        let mut items = Vec::new();
        while let Some(e) = q.pending.remove(&q.next) {
            items.push(e);
            q.next += 1;
        }
        if items.is_empty() {
            q.sending = false;
            return None;
        }
        Some(Run {
            lane,
            items,
            resync: q.resync,
            next: q.next,
            acked: q.acked,
        })
    }

    /// Answers everyone waiting on `run` with its outcome `r`; `acked` is the lane's
    /// acknowledged serial afterwards.
    fn settle(&self, peer: &str, run: Run, r: Result<(), String>, acked: u64) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        for (_, ack) in run.items {
            let _ = ack.send(r.clone());
        }
        if let Some(q) = lanes.get_mut(&(peer.to_string(), run.lane)) {
            q.acked = acked;
            // After a failure the peer may or may not have the run: re-send everything
            // unacknowledged before the next one.
            q.resync = r.is_err();
        }
    }

    /// The assignments to send for `run`: when the two ends may be out of step, every
    /// unacknowledged assignment of the lane before it, then the run. (Reading the
    /// outbox blocks; it happens only after a failure or a restart.)
    fn run_with_backlog(&self, peer: &str, run: &Run) -> Result<Vec<Assignment>, String> {
        let mut asgs: Vec<Assignment> = Vec::new();
        if run.resync {
            let first = run.items.first().map_or(u64::MAX, |(a, _)| a.serial);
            asgs = self
                .store
                .unacknowledged(peer, run.lane)
                .map_err(|e| format!("cannot read the lane's outbox: {e}"))?
                .into_iter()
                .filter(|a| a.serial < first)
                .collect();
        }
        asgs.extend(run.items.iter().map(|(a, _)| a.clone()));
        Ok(asgs)
    }

    /// The configuration.
    pub fn config(&self) -> &KmeConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Serves one request from the SAE `sae` (already authenticated by its certificate),
    /// recording it in the metrics.
    pub fn handle(
        &self,
        sae: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        let t = std::time::Instant::now();
        let r = self.route(sae, method, path, query, content_type, body);
        self.observe(path, r.status, t);
        r
    }

    /// Records a request to `path` answered with `status`, begun at `t`.
    fn observe(&self, path: &str, status: u16, t: std::time::Instant) {
        const KNOWN: [&str; 7] = [
            "status",
            "enc_keys",
            "dec_keys",
            "openapi.json",
            "metrics",
            "assignments",
            "relay",
        ];
        let last = path.rsplit('/').next().unwrap_or("");
        let endpoint = if KNOWN.contains(&last) { last } else { "other" };
        self.metrics
            .observe(endpoint, status, t.elapsed().as_secs_f64());
    }

    /// The Prometheus exposition: request metrics and every peer's key accounting.
    pub fn metrics_text(&self) -> String {
        let mut peers: Vec<&String> = self
            .cfg
            .sae_kme
            .values()
            .filter(|k| **k != self.cfg.kme_id)
            .collect();
        peers.sort();
        peers.dedup();
        let acc: Vec<(String, crate::Accounting)> = peers
            .into_iter()
            .filter_map(|p| self.store.accounting(p).ok().map(|a| (p.clone(), a)))
            .collect();
        self.metrics.render(&acc)
    }

    /// What a request asks for: answered already (an error), one of the request path's
    /// store operations, or [`Op::Other`] for everything else.
    fn op(
        &self,
        sae: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Op {
        if path == KME_ASSIGNMENTS {
            return match self.neighbour_body(sae, method, content_type, body) {
                Ok(run) => Op::Assign {
                    from: sae.to_string(),
                    run,
                },
                Err(e) => Op::Done(e),
            };
        }
        let Some((id, op)) = path
            .strip_prefix("/api/v1/keys/")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(id, _)| !id.is_empty())
        else {
            return Op::Other;
        };
        let done = Op::Done;
        match (op, method) {
            ("enc_keys", "GET") => parse_query_enc(query)
                .and_then(|r| self.enc_plan(sae, id, r))
                .map_or_else(done, Op::Cut),
            ("enc_keys", "POST") => parse_json::<EncRequest>(content_type, body)
                .and_then(|r| self.enc_plan(sae, id, r))
                .map_or_else(done, Op::Cut),
            ("dec_keys", "GET") => parse_query_dec(query)
                .and_then(|ids| self.dec_plan(sae, id, ids))
                .unwrap_or_else(done),
            ("dec_keys", "POST") => parse_json::<DecRequest>(content_type, body)
                .and_then(|r| {
                    self.dec_plan(sae, id, r.key_ids.into_iter().map(|k| k.key_id).collect())
                })
                .unwrap_or_else(done),
            _ => Op::Other,
        }
    }

    fn route(
        &self,
        sae: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        match self.op(sae, method, path, query, content_type, body) {
            Op::Done(r) => r,
            Op::Cut(p) if p.relay => self.relay_enc(&p),
            Op::Cut(p) => cut_response(
                &p.peer,
                self.cut_and_deliver(&p.peer, &p.master, &p.slaves, p.number, p.size_bytes),
            ),
            Op::Fetch { master, slave, ids } => {
                fetch_response(self.store.fetch(&master, &slave, &ids))
            }
            Op::Assign { from, run } => {
                let n = run.len();
                assign_response(n, self.store.assign_many(&from, &run, self.now()))
            }
            Op::Other => self.route_other(sae, method, path, content_type, body),
        }
    }

    /// Serves one request like [`Kme::handle`], on the async workers: `enc_keys` over a
    /// link, `dec_keys` and assignments from the peer wait on the store (and the peer)
    /// through futures, holding no thread; the rest (relays, `status`, metrics) runs on
    /// tokio's blocking pool.
    pub async fn handle_async(
        self: Arc<Self>,
        sae: String,
        method: String,
        path: String,
        query: Option<String>,
        content_type: Option<String>,
        body: bytes::Bytes,
    ) -> Response {
        let t = std::time::Instant::now();
        let blocking = |kme: Arc<Self>, f: Box<dyn FnOnce(&Self) -> Response + Send>| async move {
            tokio::task::spawn_blocking(move || f(&kme))
                .await
                .unwrap_or_else(|_| error(503, "internal error", None))
        };
        let op = self.op(
            &sae,
            &method,
            &path,
            query.as_deref(),
            content_type.as_deref(),
            &body,
        );
        let r = match op {
            Op::Done(r) => r,
            Op::Cut(p) if p.relay => {
                blocking(Arc::clone(&self), Box::new(move |k| k.relay_enc(&p))).await
            }
            Op::Cut(p) => {
                // In a task of its own: a client that hangs up must not cancel a cut
                // between its commit and its delivery.
                let kme = Arc::clone(&self);
                tokio::spawn(async move {
                    let r = kme
                        .cut_and_deliver_async(
                            &p.peer,
                            &p.master,
                            &p.slaves,
                            p.number,
                            p.size_bytes,
                        )
                        .await;
                    cut_response(&p.peer, r)
                })
                .await
                .unwrap_or_else(|_| error(503, "internal error", None))
            }
            Op::Fetch { master, slave, ids } => {
                fetch_response(self.store.fetch_async(&master, &slave, &ids).await)
            }
            Op::Assign { from, run } => {
                let n = run.len();
                assign_response(
                    n,
                    self.store.assign_many_async(&from, &run, self.now()).await,
                )
            }
            Op::Other => {
                let p = path.clone();
                blocking(
                    Arc::clone(&self),
                    Box::new(move |k| {
                        k.route_other(&sae, &method, &p, content_type.as_deref(), &body)
                    }),
                )
                .await
            }
        };
        self.observe(&path, r.status, t);
        r
    }

    /// Everything but the request path's store operations: metrics, the OpenAPI
    /// document, relay hops, route adverts and `status`.
    fn route_other(
        &self,
        sae: &str,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        if path == "/metrics" {
            return match method {
                "GET" => Response {
                    status: 200,
                    body: None,
                    text: Some(self.metrics_text()),
                },
                m => error(405, "method not allowed", Some(json!([{ "method": m }]))),
            };
        }
        // KME-to-KME endpoints: a POST from a neighbour KME with a JSON body.
        let (ct, from) = (content_type, sae);
        if path == crate::hops::KME_RELAY {
            return self
                .neighbour_body(from, method, ct, body)
                .map_or_else(|e| e, |h| self.peer_relay(from, h));
        }
        if path == crate::routing::KME_ROUTES {
            return self
                .neighbour_body(from, method, ct, body)
                .map_or_else(|e| e, |a| self.peer_routes(from, a));
        }
        if path == "/api/v1/openapi.json" {
            return match (method, serde_json::from_str::<Value>(OPENAPI)) {
                ("GET", Ok(v)) => Response {
                    status: 200,
                    body: Some(v),
                    text: None,
                },
                ("GET", Err(e)) => error(
                    503,
                    "OpenAPI document unreadable",
                    Some(json!([e.to_string()])),
                ),
                (m, _) => error(405, "method not allowed", Some(json!([{ "method": m }]))),
            };
        }
        let Some(rest) = path.strip_prefix("/api/v1/keys/") else {
            return error(404, "no such endpoint", Some(json!([{ "path": path }])));
        };
        let Some((id, op)) = rest.split_once('/') else {
            return error(404, "no such endpoint", Some(json!([{ "path": path }])));
        };
        if id.is_empty() {
            return error(404, "no such endpoint", Some(json!([{ "path": path }])));
        }
        match (op, method) {
            ("status", "GET") => self.status(sae, id),
            ("status" | "enc_keys" | "dec_keys", m) => {
                error(405, "method not allowed", Some(json!([{ "method": m }])))
            }
            _ => error(404, "no such endpoint", Some(json!([{ "path": path }]))),
        }
    }

    /// The link to the peer KMEs.
    pub(crate) fn peers(&self) -> &Arc<dyn PeerLink> {
        &self.peers
    }

    /// Whether `kme` shares key material with this KME.
    pub fn is_neighbour(&self, kme: &str) -> bool {
        kme != self.cfg.kme_id
            && if self.cfg.links.is_empty() {
                self.cfg.sae_kme.values().any(|k| k == kme)
            } else {
                self.cfg.links.iter().any(|k| k == kme)
            }
    }

    /// Admits a KME-to-KME request, a POST from a neighbour KME (never an SAE), and reads
    /// its JSON body.
    fn neighbour_body<T: serde::de::DeserializeOwned>(
        &self,
        from: &str,
        method: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<T, Response> {
        if !self.is_neighbour(from) || self.cfg.sae_kme.contains_key(from) {
            return Err(unauthorized());
        }
        if method != "POST" {
            return Err(error(
                405,
                "method not allowed",
                Some(json!([{ "method": method }])),
            ));
        }
        parse_json(content_type, body)
    }

    fn peer_for(&self, master: &str, slave: &str) -> Result<String, Response> {
        if slave == master {
            return Err(bad(RULES, format!("slave_SAE_ID {slave} is the requester")));
        }
        match self.cfg.sae_kme.get(slave) {
            Some(k) if *k == self.cfg.kme_id => Err(bad(
                RULES,
                format!("slave_SAE_ID {slave} is attached to this KME: no link to itself"),
            )),
            Some(k) => Ok(k.clone()),
            None => Err(bad(RULES, format!("slave_SAE_ID {slave} is unknown"))),
        }
    }

    fn status(&self, master: &str, slave: &str) -> Response {
        let peer = match self.peer_for(master, slave) {
            Ok(p) => p,
            Err(e) => return e,
        };
        // A KME reached by relay: the stock is what the first hop's link holds (an upper
        // bound, since links further on may hold less).
        let via = if self.is_neighbour(&peer) {
            Some(peer.clone())
        } else {
            self.next_hop(&peer, std::slice::from_ref(&self.cfg.kme_id))
        };
        let bytes = match via {
            Some(v) => match self
                .store
                .available_bytes(&v, lane_for(&self.cfg.kme_id, &v))
            {
                Ok(b) => b,
                Err(e) => return error(503, "key store unavailable", Some(json!([e.to_string()]))),
            },
            None => 0,
        };
        let per_key = u64::from(self.cfg.default_key_size / 8).max(1);
        Response {
            status: 200,
            text: None,
            body: Some(json!({
                "source_KME_ID": self.cfg.kme_id,
                "target_KME_ID": peer,
                "master_SAE_ID": master,
                "slave_SAE_ID": slave,
                "key_size": self.cfg.default_key_size,
                "stored_key_count": (bytes / per_key).min(self.cfg.max_key_count),
                "max_key_count": self.cfg.max_key_count,
                "max_key_per_request": self.cfg.max_key_per_request,
                "max_key_size": self.cfg.max_key_size,
                "min_key_size": self.cfg.min_key_size,
                "max_SAE_ID_count": self.cfg.max_sae_id_count,
            })),
        }
    }

    /// Checks an `enc_keys` request of `master` for keys shared with `slave` against the
    /// specification and this KME's limits; the cut to make, or the error response.
    fn enc_plan(&self, master: &str, slave: &str, r: EncRequest) -> Result<EncPlan, Response> {
        let peer = self.peer_for(master, slave)?;
        let number = r.number.unwrap_or(1);
        let size = r.size.unwrap_or(self.cfg.default_key_size);
        if number == 0 || number > self.cfg.max_key_per_request {
            return Err(bad(
                RULES,
                format!(
                    "number {number} outside 1..={}",
                    self.cfg.max_key_per_request
                ),
            ));
        }
        if !size.is_multiple_of(8) || size < self.cfg.min_key_size || size > self.cfg.max_key_size {
            return Err(bad(
                RULES,
                format!(
                    "size {size} is not a multiple of 8 in {}..={}",
                    self.cfg.min_key_size, self.cfg.max_key_size
                ),
            ));
        }
        if let Some(m) = r.extension_mandatory.as_ref().filter(|m| !m.is_empty()) {
            return Err(error(
                400,
                "not all extension_mandatory parameters are supported",
                Some(json!(m
                    .iter()
                    .map(|e| json!({ "extension_mandatory_unsupported": e }))
                    .collect::<Vec<_>>())),
            ));
        }
        let mut slaves = vec![slave.to_string()];
        for s in r.additional_slave_sae_ids.unwrap_or_default() {
            match self.cfg.sae_kme.get(&s) {
                Some(k) if *k == peer && s != master => {
                    if !slaves.contains(&s) {
                        slaves.push(s)
                    }
                }
                _ => {
                    return Err(bad(
                        RULES,
                        format!("additional_slave_SAE_ID {s} is not attached to KME {peer}"),
                    ))
                }
            }
        }
        if slaves.len() as u32 > self.cfg.max_sae_id_count {
            return Err(bad(
                RULES,
                format!(
                    "{} SAE IDs exceed max_SAE_ID_count {}",
                    slaves.len(),
                    self.cfg.max_sae_id_count
                ),
            ));
        }
        let relay = !self.cfg.links.is_empty() && !self.cfg.links.contains(&peer);
        Ok(EncPlan {
            peer,
            master: master.to_string(),
            slaves,
            number,
            size_bytes: size / 8,
            relay,
        })
    }

    /// `enc_keys` for a slave whose KME shares no link with this one: relay through
    /// trusted nodes (blocking).
    fn relay_enc(&self, p: &EncPlan) -> Response {
        let (peer, master, slaves, number) = (&p.peer, p.master.as_str(), &p.slaves, p.number);
        let Some(relayer) = self.relayer.get().and_then(std::sync::Weak::upgrade) else {
            if self.has_route(peer) {
                // Between KME processes, hop by hop over the peer links.
                return match self.relay_originate(peer, master, slaves, number, p.size_bytes) {
                    Ok(keys) => key_container(&keys),
                    Err(e) => error(
                        503,
                        "key relay failed",
                        Some(json!([{ "target_KME_ID": peer, "error": e }])),
                    ),
                };
            }
            return error(
                503,
                "no link to the slave's KME and no relay",
                Some(json!([{ "target_KME_ID": peer }])),
            );
        };
        match relayer.relay(&self.cfg.kme_id, peer, master, slaves, number, p.size_bytes) {
            Ok(keys) => key_container(&keys),
            Err(e) => error(
                503,
                "key relay failed",
                Some(json!([{ "target_KME_ID": peer, "error": e }])),
            ),
        }
    }

    /// Checks a `dec_keys` request of `slave` for keys of `master`; the fetch to make, or
    /// the error response.
    fn dec_plan(&self, slave: &str, master: &str, ids: Vec<String>) -> Result<Op, Response> {
        if ids.is_empty() {
            return Err(bad(RULES, "no key_ID given".into()));
        }
        if ids.len() as u32 > self.cfg.max_key_per_request {
            return Err(bad(
                RULES,
                format!(
                    "{} key IDs exceed max_key_per_request {}",
                    ids.len(),
                    self.cfg.max_key_per_request
                ),
            ));
        }
        Ok(Op::Fetch {
            master: master.to_string(),
            slave: slave.to_string(),
            ids,
        })
    }
}

/// What a request asks of the KME ([`Kme::op`]).
enum Op {
    /// Answered already (an error found while checking it).
    Done(Response),
    /// `enc_keys`: a cut on a link, or a relay.
    Cut(EncPlan),
    /// `dec_keys`.
    Fetch {
        master: String,
        slave: String,
        ids: Vec<String>,
    },
    /// A run of assignments from the neighbour KME `from`.
    Assign { from: String, run: Vec<Assignment> },
    /// Anything else ([`Kme::route_other`]).
    Other,
}

/// A checked `enc_keys` request.
struct EncPlan {
    /// The slaves' KME.
    peer: String,
    master: String,
    /// The slave and the additional slaves.
    slaves: Vec<String>,
    number: u32,
    size_bytes: u32,
    /// No link to `peer`: the keys go by relay.
    relay: bool,
}

/// The answer to `enc_keys` from the outcome of its cut on the link to `peer`.
fn cut_response(peer: &str, r: Result<Vec<crate::Key>, CutError>) -> Response {
    match r {
        Ok(keys) => key_container(&keys),
        Err(CutError::Store(StoreError::Insufficient { want, have, .. })) => error(
            503,
            "not enough key material",
            Some(json!([{ "requested_bytes": want, "available_bytes": have }])),
        ),
        Err(CutError::Store(e)) => {
            error(503, "key store unavailable", Some(json!([e.to_string()])))
        }
        // The cut bits are accounted as discarded, never handed out.
        Err(CutError::Deliver(e)) => error(
            503,
            "peer KME unreachable",
            Some(json!([{ "peer": peer, "error": e }])),
        ),
    }
}

/// The answer to `dec_keys` from the outcome of its fetch.
fn fetch_response(r: Result<Vec<crate::Key>, StoreError>) -> Response {
    match r {
        Ok(keys) => key_container(&keys),
        Err(StoreError::NotEntitled { .. }) => unauthorized(),
        Err(StoreError::NotFound(id)) => error(400, NOT_FOUND, Some(json!([{ "key_ID": id }]))),
        Err(e) => error(503, "key store unavailable", Some(json!([e.to_string()]))),
    }
}

/// The answer to `POST /api/v1/kme/assignments` (a run of `n` assignments from a
/// neighbour KME, applied to this end's copy of the lane with
/// [`KeyStore::assign_many`]): 409 when the run does not follow what this end has (the
/// sender then re-sends its unacknowledged cuts first).
fn assign_response(n: usize, r: Result<(), StoreError>) -> Response {
    match r {
        Ok(()) => Response {
            status: 200,
            body: Some(json!({ "applied": n })),
            text: None,
        },
        Err(e @ (StoreError::OutOfStep { .. } | StoreError::Invalid(_))) => {
            error(409, "assignments out of step", Some(json!([e.to_string()])))
        }
        Err(e) => error(503, "key store unavailable", Some(json!([e.to_string()]))),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EncRequest {
    number: Option<u32>,
    size: Option<u32>,
    #[serde(rename = "additional_slave_SAE_IDs")]
    additional_slave_sae_ids: Option<Vec<String>>,
    extension_mandatory: Option<Vec<Value>>,
    // Optional extensions may be ignored (ETSI GS QKD 014 §6.2).
    #[allow(dead_code)]
    extension_optional: Option<Vec<Value>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyIdRef {
    #[serde(rename = "key_ID")]
    key_id: String,
    #[allow(dead_code)]
    #[serde(rename = "key_ID_extension")]
    key_id_extension: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecRequest {
    #[serde(rename = "key_IDs")]
    key_ids: Vec<KeyIdRef>,
    #[allow(dead_code)]
    #[serde(rename = "key_IDs_extension")]
    key_ids_extension: Option<Value>,
}

fn parse_json<T: serde::de::DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, Response> {
    let ct = content_type.unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(bad(
            "bad request format",
            format!("content type '{ct}' is not application/json"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| bad("bad request format", format!("JSON body: {e}")))
}

fn query_pairs(query: Option<&str>) -> Vec<(&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

fn parse_query_enc(query: Option<&str>) -> Result<EncRequest, Response> {
    let mut r = EncRequest::default();
    for (k, v) in query_pairs(query) {
        let n = v.parse::<u32>().map_err(|_| {
            bad(
                "bad request format",
                format!("query {k}={v} is not a number"),
            )
        })?;
        match k {
            "number" => r.number = Some(n),
            "size" => r.size = Some(n),
            _ => {
                return Err(bad(
                    "bad request format",
                    format!("unknown query parameter {k}"),
                ))
            }
        }
    }
    Ok(r)
}

fn parse_query_dec(query: Option<&str>) -> Result<Vec<String>, Response> {
    let mut ids = Vec::new();
    for (k, v) in query_pairs(query) {
        match k {
            "key_ID" => ids.push(v.to_string()),
            _ => {
                return Err(bad(
                    "bad request format",
                    format!("unknown query parameter {k}"),
                ))
            }
        }
    }
    Ok(ids)
}

/// Why the server could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A PEM file or its contents.
    #[error("{what}: {detail}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// Socket.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

fn pem_err(what: &'static str) -> impl Fn(rustls::pki_types::pem::Error) -> ServerError {
    move |e| ServerError::Pem {
        what,
        detail: e.to_string(),
    }
}

/// Trust anchors from PEM certificates (at least one).
fn load_roots(pem: &[u8], what: &'static str) -> Result<rustls::RootCertStore, ServerError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
        roots
            .add(c.map_err(pem_err(what))?)
            .map_err(|e| ServerError::Pem {
                what,
                detail: e.to_string(),
            })?;
    }
    if roots.is_empty() {
        return Err(ServerError::Pem {
            what,
            detail: "no certificate found".into(),
        });
    }
    Ok(roots)
}

type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// A certificate chain and its private key from PEM.
fn load_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
    who: &'static str,
) -> Result<Identity, ServerError> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(who))?;
    if chain.is_empty() {
        return Err(ServerError::Pem {
            what: who,
            detail: "no certificate found".into(),
        });
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem).map_err(pem_err(who))?;
    Ok((chain, key))
}

/// A TLS server configuration that requires client certificates issued by the CA in
/// `client_ca_pem`, presenting `cert_pem` (chain) with `key_pem`.
pub fn server_tls(
    client_ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let roots = load_roots(client_ca_pem, "client CA")?;
    let (chain, key) = load_identity(cert_pem, key_pem, "server certificate or key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| ServerError::Verifier(e.to_string()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// A TLS client configuration for an SAE: trusts the KMEs' CA in `ca_pem` and presents
/// `cert_pem` with `key_pem`.
pub fn client_tls(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, ServerError> {
    let roots = load_roots(ca_pem, "CA")?;
    let (chain, key) = load_identity(cert_pem, key_pem, "client certificate or key")?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// A TLS client configuration that verifies the server against the CA in `ca_pem` and
/// presents no certificate (the KME's connection to a PostgreSQL server).
pub fn verify_only_tls(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, ServerError> {
    let roots = load_roots(ca_pem, "CA")?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The SAE ID of a verified client certificate: its subject's common name.
pub fn sae_id_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Serves the ETSI 014 API on `listener` until the task is dropped. Each connection runs
/// on its own task with a handshake deadline and a header deadline, so clients that stall
/// delay no one else.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    kme: Arc<Kme>,
) -> Result<(), ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let kme = Arc::clone(&kme);
        tokio::spawn(async move {
            let cfg = kme.config().clone();
            let Ok(Ok(stream)) =
                tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(tcp)).await
            else {
                return; // Handshake failed or stalled: drop the connection.
            };
            let sae = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| sae_id_of(c));
            let Some(sae) = sae else {
                return; // The verifier requires a certificate; one without a CN names no SAE.
            };
            let svc = hyper::service::service_fn(move |req| {
                let kme = Arc::clone(&kme);
                let sae = sae.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(kme, sae, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(cfg.header_timeout);
            let _ = http.serve_connection(io, svc).await;
        });
    }
}

async fn respond(
    kme: Arc<Kme>,
    sae: String,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let limit = kme.config().max_body_bytes;
    let out = match http_body_util::Limited::new(body, limit).collect().await {
        Err(_) => error(
            400,
            "bad request format",
            Some(json!([{ "body": format!("larger than {limit} bytes or unreadable") }])),
        ),
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let ct = parts
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let method = parts.method.as_str().to_string();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().map(str::to_string);
            kme.handle_async(sae, method, path, query, ct, bytes).await
        }
    };
    let mut builder = hyper::Response::builder().status(out.status);
    let body = match (out.body, out.text) {
        (Some(v), _) => {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(&v).unwrap_or_default()
        }
        (None, Some(t)) => {
            builder = builder.header(
                hyper::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            );
            t.into_bytes()
        }
        (None, None) => Vec::new(),
    };
    builder
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .unwrap_or_else(|_| {
            hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::new()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use qkdnet_core::Bits;

    /// KME "A" (SAE a1) and KME "B" (SAEs b1, b2); the peer link delivers A's
    /// assignments straight into B's store.
    struct Pair {
        a: Kme,
        b: Kme,
    }

    struct Direct(Arc<dyn KeyStore>, std::sync::atomic::AtomicBool);

    impl PeerLink for Direct {
        fn send_assignments(&self, _peer: &str, run: &[Assignment]) -> Result<(), String> {
            if !self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("link down".into());
            }
            self.0.assign_many("A", run, 0).map_err(|e| e.to_string())
        }
    }

    fn cfg(id: &str) -> KmeConfig {
        let mut c = KmeConfig::new(id);
        for (s, k) in [("a1", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C")] {
            c.sae_kme.insert(s.into(), k.into());
        }
        c
    }

    fn pair(link_up: bool) -> Pair {
        let sa: Arc<dyn KeyStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let sb: Arc<dyn KeyStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let words: Vec<u64> = (0..2000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let k = Bits::from_words(words, 128_000);
        sa.add_block("B", 1, &k, 1_000).unwrap();
        sb.add_block("A", 1, &k, 1_000).unwrap();
        let none = Arc::new(Direct(Arc::clone(&sa), false.into()));
        Pair {
            a: Kme::new(
                cfg("A"),
                Arc::clone(&sa),
                Arc::new(Direct(Arc::clone(&sb), link_up.into())),
                Box::new(|| 0),
            ),
            b: Kme::new(cfg("B"), sb, none, Box::new(|| 0)),
        }
    }

    const JSON: Option<&str> = Some("application/json");

    /// A 256-bit key from a1 at A for `slaves` at B.
    fn one_key_for(slaves: &[String]) -> KeyRequest<'_> {
        KeyRequest {
            lane: lane_for("A", "B"),
            master_sae: "a1",
            slave_saes: slaves,
            number: 1,
            size_bytes: 32,
        }
    }

    fn keys_of(r: &Response) -> Vec<(String, String)> {
        r.body.as_ref().unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["key_ID"].as_str().unwrap().to_string(),
                    k["key"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn status_reports_the_limits_and_the_stock() {
        let p = pair(true);
        let r =
            p.a.handle("a1", "GET", "/api/v1/keys/b1/status", None, None, b"");
        assert_eq!(r.status, 200);
        let b = r.body.unwrap();
        assert_eq!(b["source_KME_ID"], "A");
        assert_eq!(b["target_KME_ID"], "B");
        assert_eq!(b["master_SAE_ID"], "a1");
        assert_eq!(b["slave_SAE_ID"], "b1");
        // 128 000 bits: 8 000 bytes per lane, 250 keys of 256 bits.
        assert_eq!(b["stored_key_count"], 250);
        assert_eq!(b["min_key_size"], 64);
        assert_eq!(b["max_SAE_ID_count"], 8);
    }

    #[test]
    fn keys_from_enc_keys_come_back_from_dec_keys_once_for_each_named_slave() {
        let p = pair(true);
        let r = p.a.handle(
            "a1",
            "POST",
            "/api/v1/keys/b1/enc_keys",
            None,
            JSON,
            br#"{"number": 3, "size": 512, "additional_slave_SAE_IDs": ["b2"], "extension_optional": [{"x": 1}]}"#,
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        let keys = keys_of(&r);
        assert_eq!(keys.len(), 3);
        let body = json!({ "key_IDs": keys.iter().map(|(id, _)| json!({ "key_ID": id })).collect::<Vec<_>>() });
        let got = p.b.handle(
            "b1",
            "POST",
            "/api/v1/keys/a1/dec_keys",
            None,
            JSON,
            body.to_string().as_bytes(),
        );
        assert_eq!(got.status, 200);
        assert_eq!(keys_of(&got), keys);
        // b2, also named, gets them by GET one at a time; b1 cannot fetch twice.
        let q = format!("key_ID={}", keys[0].0);
        let g =
            p.b.handle("b2", "GET", "/api/v1/keys/a1/dec_keys", Some(&q), None, b"");
        assert_eq!(keys_of(&g), keys[..1].to_vec());
        let again =
            p.b.handle("b1", "GET", "/api/v1/keys/a1/dec_keys", Some(&q), None, b"");
        assert_eq!(again.status, 400);
        assert_eq!(again.body.unwrap()["message"], NOT_FOUND);
        // GET enc_keys with query parameters.
        let r = p.a.handle(
            "a1",
            "GET",
            "/api/v1/keys/b1/enc_keys",
            Some("number=2&size=64"),
            None,
            b"",
        );
        assert_eq!(r.status, 200);
        assert!(keys_of(&r).iter().all(|(_, k)| k.len() == 12)); // 8 bytes in base64
    }

    #[test]
    fn errors_follow_the_specification_and_consume_nothing() {
        let p = pair(true);
        let before = p.a.store().accounting("B").unwrap();
        let post = |sae: &str, path: &str, ct: Option<&str>, body: &str| {
            p.a.handle(sae, "POST", path, None, ct, body.as_bytes())
        };
        let enc = "/api/v1/keys/b1/enc_keys";
        for (body, ct) in [
            (r#"{"number": 0}"#, JSON),
            (r#"{"number": 100000}"#, JSON),
            (r#"{"size": 12}"#, JSON),
            (r#"{"size": 8}"#, JSON),
            (r#"{"size": 1000000}"#, JSON),
            (r#"{"additional_slave_SAE_IDs": ["c1"]}"#, JSON),
            (r#"{"additional_slave_SAE_IDs": ["nobody"]}"#, JSON),
            (r#"{"number": 1,"#, JSON),
            (r#"{"numbr": 1}"#, JSON),
            (r#"{"number": -1}"#, JSON),
            (r#"{"number": 1}"#, Some("text/plain")),
            (r#"{"number": 1}"#, None),
        ] {
            let r = post("a1", enc, ct, body);
            assert_eq!(r.status, 400, "{body} {ct:?}");
            assert!(r.body.unwrap()["message"].is_string());
        }
        let r = post("a1", enc, JSON, r#"{"extension_mandatory": [{"abc": 1}]}"#);
        assert_eq!(r.status, 400);
        assert_eq!(
            r.body.unwrap()["message"],
            "not all extension_mandatory parameters are supported"
        );
        // Unknown slave, slave at this KME, the requester itself.
        for path in ["/api/v1/keys/zz/enc_keys", "/api/v1/keys/a1/enc_keys"] {
            assert_eq!(post("a1", path, JSON, "{}").status, 400);
        }
        // More than there is: 503, nothing taken.
        assert_eq!(
            post("a1", enc, JSON, r#"{"number": 128, "size": 8192}"#).status,
            503
        );
        // Wrong method, unknown endpoint.
        assert_eq!(p.a.handle("a1", "DELETE", enc, None, None, b"").status, 405);
        assert_eq!(
            p.a.handle("a1", "GET", "/api/v1/keys/b1/other", None, None, b"")
                .status,
            404
        );
        assert_eq!(
            p.a.handle("a1", "GET", "/nothing", None, None, b"").status,
            404
        );
        assert_eq!(p.a.store().accounting("B").unwrap(), before);
    }

    #[test]
    fn dec_keys_by_an_sae_that_was_not_named_is_unauthorized() {
        let p = pair(true);
        let r =
            p.a.handle("a1", "POST", "/api/v1/keys/b1/enc_keys", None, JSON, b"{}");
        let (id, _) = keys_of(&r).remove(0);
        let q = format!("key_ID={id}");
        let r =
            p.b.handle("b2", "GET", "/api/v1/keys/a1/dec_keys", Some(&q), None, b"");
        assert_eq!(
            r,
            Response {
                status: 401,
                body: None,
                text: None
            }
        );
        // Unknown ID, a wrong master, malformed bodies: 400.
        let r = p.b.handle(
            "b1",
            "GET",
            "/api/v1/keys/a1/dec_keys",
            Some("key_ID=nope"),
            None,
            b"",
        );
        assert_eq!(r.status, 400);
        assert_eq!(
            p.b.handle("b1", "GET", "/api/v1/keys/zz/dec_keys", Some(&q), None, b"")
                .status,
            400
        );
        assert_eq!(
            p.b.handle(
                "b1",
                "POST",
                "/api/v1/keys/a1/dec_keys",
                None,
                JSON,
                b"{\"key_IDs\": 3}"
            )
            .status,
            400
        );
        assert_eq!(
            p.b.handle("b1", "GET", "/api/v1/keys/a1/dec_keys", None, None, b"")
                .status,
            400
        );
        // The named slave still gets it.
        assert_eq!(
            p.b.handle("b1", "GET", "/api/v1/keys/a1/dec_keys", Some(&q), None, b"")
                .status,
            200
        );
    }

    #[test]
    fn concurrent_requests_reach_the_peer_in_cut_order() {
        // Sixteen threads ask at once; cuts commit in some order and the peer must apply
        // them in that order, whatever order the threads reach the link in.
        let p = Arc::new(pair(true));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    (0..5)
                        .map(|_| {
                            let r = p.a.handle(
                                "a1",
                                "POST",
                                "/api/v1/keys/b1/enc_keys",
                                None,
                                JSON,
                                b"{}",
                            );
                            assert_eq!(r.status, 200, "{:?}", r.body);
                            keys_of(&r).remove(0)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (id, key) in h.join().unwrap() {
                let q = format!("key_ID={id}");
                let got =
                    p.b.handle("b1", "GET", "/api/v1/keys/a1/dec_keys", Some(&q), None, b"");
                assert_eq!(keys_of(&got), vec![(id, key)]);
            }
        }
    }

    fn body_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (
                proptest::option::of(-5i64..300),
                proptest::option::of(-8i64..20_000),
                proptest::collection::vec("[a-z0-9]{0,3}", 0..4),
                any::<bool>(),
            )
                .prop_map(|(n, size, extra, mandatory)| {
                    let mut v = json!({});
                    if let Some(n) = n {
                        v["number"] = json!(n);
                    }
                    if let Some(s) = size {
                        v["size"] = json!(s);
                    }
                    if !extra.is_empty() {
                        v["additional_slave_SAE_IDs"] = json!(extra);
                    }
                    if mandatory {
                        v["extension_mandatory"] = json!([{ "x": 1 }]);
                    }
                    v.to_string().into_bytes()
                }),
            proptest::collection::vec("[a-z0-9-]{0,40}", 0..5).prop_map(|ids| {
                json!({ "key_IDs": ids.iter().map(|i| json!({ "key_ID": i })).collect::<Vec<_>>() })
                    .to_string()
                    .into_bytes()
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn random_request_bodies_get_a_spec_status_and_never_break_the_books(
            body in body_strategy(),
            endpoint in 0usize..2,
        ) {
            let p = pair(true);
            let path = ["/api/v1/keys/b1/enc_keys", "/api/v1/keys/a1/dec_keys"][endpoint];
            let kme = if endpoint == 0 { &p.a } else { &p.b };
            let sae = if endpoint == 0 { "a1" } else { "b1" };
            let before = kme.store().accounting(if endpoint == 0 { "B" } else { "A" }).unwrap();
            let r = kme.handle(sae, "POST", path, None, JSON, &body);
            proptest::prop_assert!([200, 400, 401, 503].contains(&r.status), "{}", r.status);
            if r.status != 401 {
                proptest::prop_assert!(r.body.as_ref().is_some_and(|b| b.is_object()));
            }
            let after = kme.store().accounting(if endpoint == 0 { "B" } else { "A" }).unwrap();
            proptest::prop_assert!(after.balances());
            if r.status != 200 {
                proptest::prop_assert_eq!(after, before);
            }
        }
    }

    #[test]
    fn metrics_count_requests_and_report_the_books() {
        let p = pair(true);
        p.a.handle("a1", "POST", "/api/v1/keys/b1/enc_keys", None, JSON, b"{}");
        p.a.handle(
            "a1",
            "POST",
            "/api/v1/keys/b1/enc_keys",
            None,
            JSON,
            b"{\"size\": 3}",
        );
        let m = p.a.handle("a1", "GET", "/metrics", None, None, b"");
        assert_eq!(m.status, 200);
        let t = m.text.unwrap();
        assert!(
            t.contains(r#"qkdnet_kme_requests_total{endpoint="enc_keys",status="200"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"qkdnet_kme_requests_total{endpoint="enc_keys",status="400"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"qkdnet_kme_delivered_bits{peer="B"} 256"#),
            "{t}"
        );
        assert!(t.contains("qkdnet_kme_request_seconds_bucket"), "{t}");
        assert!(t.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn the_openapi_document_is_served_and_describes_every_endpoint() {
        let p = pair(true);
        let r =
            p.a.handle("a1", "GET", "/api/v1/openapi.json", None, None, b"");
        assert_eq!(r.status, 200);
        let doc = r.body.unwrap();
        for path in [
            "/api/v1/keys/{slave_SAE_ID}/status",
            "/api/v1/keys/{slave_SAE_ID}/enc_keys",
            "/api/v1/keys/{master_SAE_ID}/dec_keys",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        assert!(doc["paths"]["/api/v1/keys/{slave_SAE_ID}/enc_keys"]["post"].is_object());
        assert!(doc["paths"]["/api/v1/keys/{master_SAE_ID}/dec_keys"]["get"].is_object());
    }

    /// The async request path: a request dropped at any point (a client that hangs up)
    /// neither stalls its lane nor breaks the books, and every key it cut reached the
    /// peer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_abandoned_midway_neither_stall_the_lane_nor_break_the_books() {
        let p = pair(true);
        let (a, b) = (Arc::new(p.a), Arc::new(p.b));
        let enc = |a: &Arc<Kme>| {
            Arc::clone(a).handle_async(
                "a1".into(),
                "GET".into(),
                "/api/v1/keys/b1/enc_keys".into(),
                None,
                None,
                bytes::Bytes::new(),
            )
        };
        let mut abandoned = 0;
        for i in 0..120u64 {
            // Zero: dropped after its first poll; otherwise after up to 2 ms.
            let wait = Duration::from_micros((i % 3) * 1000);
            if tokio::time::timeout(wait, enc(&a)).await.is_err() {
                abandoned += 1;
            }
        }
        assert!(
            abandoned > 0,
            "no request was abandoned: the test tests nothing"
        );
        let r = tokio::time::timeout(Duration::from_secs(10), enc(&a))
            .await
            .expect("the lane stalled after abandoned requests");
        assert_eq!(r.status, 200, "{:?}", r.body);
        let (id, key) = keys_of(&r).remove(0);
        let got = b.handle(
            "b1",
            "GET",
            "/api/v1/keys/a1/dec_keys",
            Some(&format!("key_ID={id}")),
            None,
            b"",
        );
        assert_eq!(keys_of(&got), vec![(id, key)]);
        // Every cut was delivered: the two ends have cut the same bits.
        let (at_a, at_b) = (
            a.store().accounting("B").unwrap(),
            b.store().accounting("A").unwrap(),
        );
        assert!(at_a.balances() && at_b.balances());
        assert_eq!(at_a.discarded_bits, at_b.discarded_bits);
        assert_eq!(at_a.available_bits, at_b.available_bits);
        assert_eq!(
            a.store().lane_serial("B", lane_for("A", "B")).unwrap(),
            b.store().lane_serial("A", lane_for("A", "B")).unwrap()
        );
    }

    #[test]
    fn a_lane_resynchronises_after_a_failed_delivery_and_after_a_restart() {
        let sa: Arc<dyn KeyStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let sb: Arc<dyn KeyStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let k = Bits::from_words((0..2000u64).map(|i| i ^ 0x5555).collect(), 128_000);
        sa.add_block("B", 1, &k, 1_000).unwrap();
        sb.add_block("A", 1, &k, 1_000).unwrap();
        let link = Arc::new(Direct(Arc::clone(&sb), true.into()));
        let a = Kme::new(cfg("A"), Arc::clone(&sa), link.clone(), Box::new(|| 0));
        let b = Kme::new(cfg("B"), Arc::clone(&sb), link.clone(), Box::new(|| 0));
        let enc = |a: &Kme| a.handle("a1", "POST", "/api/v1/keys/b1/enc_keys", None, JSON, b"{}");
        // b1 fetches the key an enc_keys answer `r` gave a1, and gets the same bytes.
        let fetched_at_b = |r: &Response| {
            let (id, key) = keys_of(r).remove(0);
            let body = format!(r#"{{"key_IDs":[{{"key_ID":"{id}"}}]}}"#);
            let got = b.handle(
                "b1",
                "POST",
                "/api/v1/keys/a1/dec_keys",
                None,
                JSON,
                body.as_bytes(),
            );
            assert_eq!(keys_of(&got)[0].1, key);
        };
        assert_eq!(enc(&a).status, 200);
        // The link fails: the request fails and A's lane is one cut ahead of B's.
        link.1.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(enc(&a).status, 503);
        link.1.store(true, std::sync::atomic::Ordering::SeqCst);
        // The next request re-sends the lost cut first: the lane is in step again.
        let r = enc(&a);
        assert_eq!(r.status, 200, "{:?}", r.body);
        fetched_at_b(&r);
        // A cut whose delivery never happened (A stopped in between) goes out on restart.
        let b1 = ["b1".to_string()];
        let req = one_key_for(&b1);
        sa.allocate("B", &req, 0).unwrap();
        drop(a);
        let a = Kme::new(cfg("A"), Arc::clone(&sa), link, Box::new(|| 0));
        let r = enc(&a);
        assert_eq!(r.status, 200, "{:?}", r.body);
        fetched_at_b(&r);
        for (s, peer) in [(&sa, "B"), (&sb, "A")] {
            assert!(s.accounting(peer).unwrap().balances());
        }
    }

    #[test]
    fn the_kme_endpoint_takes_assignments_only_from_neighbour_kmes() {
        let p = pair(true);
        let post = |from: &str, ct: Option<&str>, body: &[u8]| {
            p.b.handle(from, "POST", KME_ASSIGNMENTS, None, ct, body)
        };
        // SAEs and unknown KMEs are not neighbours.
        assert_eq!(post("b1", JSON, b"[]").status, 401);
        assert_eq!(post("Z", JSON, b"[]").status, 401);
        // Malformed bodies and wrong content types are 400; a wrong method 405.
        assert_eq!(post("A", JSON, b"{").status, 400);
        assert_eq!(post("A", Some("text/plain"), b"[]").status, 400);
        assert_eq!(
            p.b.handle("A", "GET", KME_ASSIGNMENTS, None, None, b"")
                .status,
            405
        );
        // A cut made at A, applied at B through the endpoint; a run that skips ahead is
        // out of step (409) and changes nothing.
        let b1 = ["b1".to_string()];
        let req = one_key_for(&b1);
        let (_, first) = p.a.store().allocate("B", &req, 0).unwrap();
        let (_, second) = p.a.store().allocate("B", &req, 0).unwrap();
        let body = |run: &[Assignment]| serde_json::to_vec(run).unwrap();
        let before = p.b.store().accounting("A").unwrap();
        assert_eq!(
            post("A", JSON, &body(std::slice::from_ref(&second))).status,
            409
        );
        assert_eq!(p.b.store().accounting("A").unwrap(), before);
        let r = post("A", JSON, &body(&[first, second]));
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body.unwrap()["applied"], 2);
        assert!(p.b.store().accounting("A").unwrap().balances());
    }

    #[test]
    fn an_unreachable_peer_is_a_server_error() {
        let p = pair(false);
        let r =
            p.a.handle("a1", "POST", "/api/v1/keys/b1/enc_keys", None, JSON, b"{}");
        assert_eq!(r.status, 503);
        assert_eq!(r.body.unwrap()["message"], "peer KME unreachable");
        // The cut bits are accounted as discarded, not delivered.
        let acc = p.a.store().accounting("B").unwrap();
        assert!(acc.balances());
        assert_eq!(acc.delivered_bits, 0);
        assert_eq!(acc.discarded_bits, 256);
    }
}
