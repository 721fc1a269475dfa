//! `qkdnet kme`: run a key management entity as a process.
//!
//! - `qkdnet kme import --config KME.toml --peer B --block-id 7 --key alice.key`: stores
//!   a final key shared with the KME `B` (a file `qkdnet distill --out` wrote; both KMEs
//!   of the link import the same key under the same block id).
//! - `qkdnet kme serve --config KME.toml`: the ETSI GS QKD 014 API over mutual TLS, the
//!   link to the peer KMEs (assignments over HTTPS), Prometheus metrics at `/metrics`,
//!   expiry once a second; runs until killed. Every answer is durable before it is sent,
//!   so the process may be killed at any moment.
//!
//! The configuration (TOML; unknown fields are refused, paths are relative to the file):
//!
//! ```toml
//! kme_id = "A"
//! listen = "127.0.0.1:8443"
//! key_ttl_s = 604800                # optional
//! [store]
//! sqlite = "kme-a.sqlite"           # or: postgres = "host=… dbname=…"
//! # postgres_ca = "pki/pg-ca.pem"   # with postgres: TLS required, server verified
//! [tls]
//! ca = "pki/ca.pem"
//! cert = "pki/kme-A.pem"            # server identity
//! key = "pki/kme-A.key"
//! client_cert = "pki/kme-A-client.pem"  # identity towards peer KMEs
//! client_key = "pki/kme-A-client.key"
//! [[peer]]
//! kme_id = "B"
//! address = "127.0.0.1:8444"
//! server_name = "localhost"         # optional, default "localhost"
//! [saes]                            # SAE ID = its KME's ID
//! a1 = "A"
//! b1 = "B"
//! c1 = "C"                          # a KME reached by relay …
//! [routes]                          # … optionally through these neighbours (trusted
//! C = ["B"]                         # nodes); otherwise by the routes KMEs advertise
//! ```

use crate::CliError;
use clap::{Args, Subcommand};
use qkdnet_kms::etsi::{Kme, KmeConfig};
use qkdnet_kms::peer::{HttpPeerLink, PeerAddr};
use qkdnet_kms::sql::SqlStore;
use qkdnet_kms::KeyStore;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `qkdnet kme` subcommands.
#[derive(Subcommand, Debug)]
pub enum KmeCommand {
    /// Serve ETSI GS QKD 014 over mutual TLS and the link to peer KMEs, until killed.
    Serve(ServeArgs),
    /// Store a final key shared with a peer KME (both ends import it under one block id).
    Import(ImportArgs),
}

/// Flags of `qkdnet kme serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The KME's configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
}

/// Flags of `qkdnet kme import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The KME's configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// The peer KME the key is shared with.
    #[arg(long)]
    pub peer: String,
    /// The block's id, the same at both ends.
    #[arg(long)]
    pub block_id: u64,
    /// The key file (bits MSB-first, as `qkdnet distill --out` writes them).
    #[arg(long)]
    pub key: PathBuf,
    /// The key's exact length in bits. Default: `final_bits` from the `provenance.json`
    /// that `qkdnet distill --out` writes beside the key. The file's last byte is padded
    /// with zeros, and those padding bits must never become key material.
    #[arg(long)]
    pub bits: Option<usize>,
}

/// The configuration file.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    kme_id: String,
    listen: String,
    #[serde(default)]
    key_ttl_s: Option<u64>,
    store: StoreConfig,
    tls: TlsConfig,
    #[serde(default)]
    peer: Vec<PeerConfig>,
    #[serde(default)]
    saes: BTreeMap<String, String>,
    #[serde(default)]
    routes: BTreeMap<String, Vec<String>>,
    /// The `[node]` section of a `qkdnet node` site file (see `node.rs`).
    #[serde(default)]
    node: Option<toml::Table>,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct StoreConfig {
    sqlite: Option<PathBuf>,
    postgres: Option<String>,
    /// CA of the PostgreSQL server's certificate: the connection then requires TLS.
    postgres_ca: Option<PathBuf>,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PeerConfig {
    kme_id: String,
    address: String,
    #[serde(default = "localhost")]
    server_name: String,
}

fn localhost() -> String {
    "localhost".into()
}

/// A loaded configuration: paths resolved against the file's directory.
pub(crate) struct Loaded {
    path: PathBuf,
    file: FileConfig,
    base: PathBuf,
}

impl Loaded {
    pub(crate) fn read(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
        let file: FileConfig = toml::from_str(&text)
            .map_err(|e| CliError::input(format!("{}: {}", path.display(), e.message())))?;
        let me = Self {
            path: path.to_path_buf(),
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            file,
        };
        me.validate()?;
        Ok(me)
    }

    pub(crate) fn field(&self, field: &str, problem: impl std::fmt::Display) -> CliError {
        CliError::input(format!("{}: {field}: {problem}", self.path.display()))
    }

    fn validate(&self) -> Result<(), CliError> {
        let f = &self.file;
        if f.kme_id.is_empty() {
            return Err(self.field("kme_id", "empty"));
        }
        f.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| self.field("listen", format!("'{}': {e}", f.listen)))?;
        match (&f.store.sqlite, &f.store.postgres) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err(self.field("store", "give exactly one of sqlite or postgres")),
        }
        if f.store.postgres_ca.is_some() && f.store.postgres.is_none() {
            return Err(self.field("store.postgres_ca", "only with store.postgres"));
        }
        for (i, p) in f.peer.iter().enumerate() {
            p.address.parse::<std::net::SocketAddr>().map_err(|e| {
                self.field(
                    &format!("peer[{i}].address"),
                    format!("'{}': {e}", p.address),
                )
            })?;
            if p.kme_id == f.kme_id {
                return Err(self.field(&format!("peer[{i}].kme_id"), "is this KME itself"));
            }
        }
        let peers: Vec<&str> = f.peer.iter().map(|p| p.kme_id.as_str()).collect();
        for (dest, via) in &f.routes {
            if dest == &f.kme_id || peers.contains(&dest.as_str()) {
                return Err(self.field(
                    &format!("routes.{dest}"),
                    "is this KME or a neighbour: no relay needed",
                ));
            }
            if via.is_empty() {
                return Err(self.field(&format!("routes.{dest}"), "names no next hop"));
            }
            if let Some(v) = via.iter().find(|v| !peers.contains(&v.as_str())) {
                return Err(self.field(
                    &format!("routes.{dest}"),
                    format!("next hop '{v}' is not a peer"),
                ));
            }
        }
        let kmes: Vec<&str> = std::iter::once(f.kme_id.as_str())
            .chain(peers.iter().copied())
            .chain(f.routes.keys().map(String::as_str))
            .collect();
        for (sae, kme) in &f.saes {
            if kmes.contains(&sae.as_str()) {
                return Err(self.field(
                    &format!("saes.{sae}"),
                    "an SAE may not carry a KME's ID (the KME link authenticates by it)",
                ));
            }
            if !kmes.contains(&kme.as_str()) {
                return Err(self.field(
                    &format!("saes.{sae}"),
                    format!("KME '{kme}' is neither this KME, a peer, nor a route's destination"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        self.base.join(p)
    }

    fn read_file(&self, field: &str, p: &Path) -> Result<Vec<u8>, CliError> {
        let full = self.resolve(p);
        std::fs::read(&full).map_err(|e| self.field(field, format!("{}: {e}", full.display())))
    }

    /// The SQLite store's file, when the store is SQLite.
    pub(crate) fn sqlite_path(&self) -> Option<PathBuf> {
        self.file.store.sqlite.as_ref().map(|p| self.resolve(p))
    }

    fn open_store(&self) -> Result<SqlStore, CliError> {
        let s = &self.file.store;
        let r = match (&s.sqlite, &s.postgres) {
            (Some(p), _) => SqlStore::open(&self.resolve(p)),
            (_, Some(url)) => match &s.postgres_ca {
                Some(ca) => SqlStore::postgres_tls(url, &self.read_file("store.postgres_ca", ca)?),
                None => SqlStore::postgres(url),
            },
            _ => return Err(self.field("store", "give exactly one of sqlite or postgres")),
        };
        r.map_err(|e| CliError::runtime(format!("{}: store: {e}", self.path.display())))
    }

    /// The `[node]` section, if the file has one.
    pub(crate) fn node_section(&self) -> Option<&toml::Table> {
        self.file.node.as_ref()
    }

    /// This KME's ID.
    pub(crate) fn kme_id(&self) -> &str {
        &self.file.kme_id
    }

    pub(crate) fn kme_config(&self) -> KmeConfig {
        let f = &self.file;
        let mut c = KmeConfig::new(&f.kme_id);
        c.sae_kme = f.saes.iter().map(|(s, k)| (s.clone(), k.clone())).collect();
        c.links = f.peer.iter().map(|p| p.kme_id.clone()).collect();
        c.routes = f
            .routes
            .iter()
            .map(|(d, v)| (d.clone(), v.clone()))
            .collect();
        if let Some(t) = f.key_ttl_s {
            c.key_ttl_s = t;
        }
        c
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `qkdnet kme …`.
pub fn run(cmd: &KmeCommand) -> Result<(), CliError> {
    match cmd {
        KmeCommand::Import(a) => import(a),
        KmeCommand::Serve(a) => serve(a),
    }
}

fn import(a: &ImportArgs) -> Result<(), CliError> {
    let cfg = Loaded::read(&a.config)?;
    if !cfg.file.peer.iter().any(|p| p.kme_id == a.peer) {
        return Err(CliError::input(format!(
            "--peer: '{}' is not a peer in {}",
            a.peer,
            a.config.display()
        )));
    }
    let bytes =
        std::fs::read(&a.key).map_err(|e| CliError::input(format!("{}: {e}", a.key.display())))?;
    let n = match a.bits {
        Some(n) => n,
        None => provenance_bits(&a.key)?,
    };
    let key = qkdnet_core::Bits::from_msb_bytes(&bytes, n).ok_or_else(|| {
        CliError::input(format!(
            "--bits: {n} does not fit {} ({} bytes)",
            a.key.display(),
            bytes.len()
        ))
    })?;
    let store = cfg.open_store()?;
    let ttl = cfg.kme_config().key_ttl_s;
    store
        .add_block(&a.peer, a.block_id, &key, now_s().saturating_add(ttl))
        .map_err(|e| CliError::runtime(format!("import: {e}")))?;
    let acc = store
        .accounting(&a.peer)
        .map_err(|e| CliError::runtime(format!("import: {e}")))?;
    println!(
        "stored block {} ({n} bits) shared with {}; {} bits available for keys",
        a.block_id, a.peer, acc.available_bits
    );
    Ok(())
}

/// `final_bits` of the `provenance.json` beside `key`.
fn provenance_bits(key: &Path) -> Result<usize, CliError> {
    let prov = key
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("provenance.json");
    let text = std::fs::read_to_string(&prov).map_err(|e| {
        CliError::input(format!(
            "--bits: not given, and {} cannot be read ({e}); give the key's exact bit count",
            prov.display()
        ))
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::input(format!("{}: {e}", prov.display())))?;
    v["final_bits"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| CliError::input(format!("{}: no final_bits", prov.display())))
}

fn serve(a: &ServeArgs) -> Result<(), CliError> {
    let cfg = Loaded::read(&a.config)?;
    if cfg.node_section().is_some() {
        return Err(cfg.field(
            "node",
            "this file configures a node (links and KME): run it with qkdnet node --config",
        ));
    }
    serve_with(&cfg, |_| Ok(()))
}

/// Serves the KME of `cfg` until killed; `before` runs once the store is open (a node
/// starts its links there).
pub(crate) fn serve_with(
    cfg: &Loaded,
    before: impl FnOnce(Arc<dyn KeyStore>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let t = &cfg.file.tls;
    let ca = cfg.read_file("tls.ca", &t.ca)?;
    let runtime_err = |e: std::io::Error| CliError::runtime(format!("runtime: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(runtime_err)?;
    let server_tls = qkdnet_kms::etsi::server_tls(
        &ca,
        &cfg.read_file("tls.cert", &t.cert)?,
        &cfg.read_file("tls.key", &t.key)?,
    )
    .map_err(|e| cfg.field("tls", e))?;
    let client_tls = qkdnet_kms::etsi::client_tls(
        &ca,
        &cfg.read_file("tls.client_cert", &t.client_cert)?,
        &cfg.read_file("tls.client_key", &t.client_key)?,
    )
    .map_err(|e| cfg.field("tls", e))?;
    let mut peers = HashMap::new();
    for p in &cfg.file.peer {
        let addr = p
            .address
            .parse()
            .map_err(|e| cfg.field("peer.address", format!("'{}': {e}", p.address)))?;
        peers.insert(
            p.kme_id.clone(),
            PeerAddr {
                addr,
                server_name: p.server_name.clone(),
            },
        );
    }
    let store: Arc<dyn KeyStore> = Arc::new(cfg.open_store()?);
    before(Arc::clone(&store))?;
    let link = HttpPeerLink::new(rt.handle().clone(), client_tls, peers);
    let kme = Arc::new(Kme::new(
        cfg.kme_config(),
        Arc::clone(&store),
        Arc::new(link),
        Box::new(now_s),
    ));
    let listen = cfg.file.listen.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| CliError::runtime(format!("listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::runtime(e.to_string()))?;
        // Expiry once a second, off the async workers.
        let expiring = Arc::clone(&store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let s = Arc::clone(&expiring);
                let _ = tokio::task::spawn_blocking(move || s.expire(now_s())).await;
            }
        });
        // Route advertisements to the neighbours (qkdnet_kms::routing), best effort: a
        // neighbour that is down simply ages out of the others' tables.
        let advertising = Arc::clone(&kme);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(
                qkdnet_kms::routing::ADVERTISE_EVERY_S,
            ));
            loop {
                tick.tick().await;
                let k = Arc::clone(&advertising);
                let _ = tokio::task::spawn_blocking(move || k.advertise_routes()).await;
            }
        });
        println!(
            "KME {} serving ETSI GS QKD 014 on https://{addr}",
            kme.config().kme_id
        );
        qkdnet_kms::etsi::serve(listener, server_tls, kme)
            .await
            .map_err(|e| CliError::runtime(format!("server: {e}")))
    })
}
