//! Load test of the ETSI 014 API (`qkdnet bench kms`): two KMEs on loopback, each behind
//! mutual TLS, with durable SQLite stores; `clients` pairs of SAEs each keep one
//! connection to each KME and repeat: `enc_keys` (one key) at the master's KME, then
//! `dec_keys` of that key ID at the slave's KME. Every response is sent only after its
//! store transaction is on disk (group commit).

use crate::client::SaeClient;
use crate::etsi::{self, Kme, KmeConfig, PeerLink};
use crate::sql::SqlStore;
use crate::{Assignment, KeyStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Concurrent SAE pairs (each with one connection to each KME).
    pub clients: usize,
    /// Measurement time.
    pub seconds: f64,
    /// Key size, bits.
    pub key_bits: u32,
    /// Directory for the two store files (removed afterwards).
    pub dir: PathBuf,
    /// Which key store the two KMEs use.
    pub store: StoreChoice,
}

/// The key store of a benchmark run.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// SQLite files in [`BenchOptions::dir`].
    Sqlite,
    /// PostgreSQL databases (connection strings of KME A's and KME B's).
    Postgres {
        /// KME A's database.
        a: String,
        /// KME B's database.
        b: String,
    },
}

/// What was measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Completed enc_keys + dec_keys pairs per second (one key each).
    pub keys_per_second: f64,
    /// Median pair latency, ms.
    pub p50_ms: f64,
    /// 99th-percentile pair latency, ms.
    pub p99_ms: f64,
    /// Pairs completed.
    pub pairs: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Concurrent SAE pairs.
    pub clients: usize,
    /// Key size, bits.
    pub key_bits: u32,
    /// Whether responses waited for durable commits (always true here).
    pub durable: bool,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// CPU time of the whole process (KMEs, stores and load generator) per completed
    /// pair during the measurement, µs; `None` where the OS does not say.
    pub cpu_us_per_pair: Option<f64>,
}

/// CPU time (user + system) this process has used, seconds, from `/proc/self/stat`.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Some(ticks / 100.0)
}

struct ToStore(Arc<dyn KeyStore>, String);

impl PeerLink for ToStore {
    fn send_assignments(&self, _peer: &str, a: &[Assignment]) -> Result<(), String> {
        self.0.assign_many(&self.1, a, 0).map_err(|e| e.to_string())
    }

    fn send_assignments_async<'a>(
        &'a self,
        _peer: &'a str,
        run: Vec<Assignment>,
    ) -> etsi::PeerFuture<'a> {
        let stored = self.0.assign_many_async(&self.1, &run, 0);
        Box::pin(async move { stored.await.map_err(|e| e.to_string()) })
    }
}

/// Runs the load test.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, String> {
    let ca = crate::pki::Ca::new("qkdnet bench CA").map_err(|e| e.to_string())?;
    let ca_pem = ca.cert_pem();
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let (sa, sb): (Arc<dyn KeyStore>, Arc<dyn KeyStore>) = match &opts.store {
        StoreChoice::Sqlite => (
            Arc::new(SqlStore::open(&opts.dir.join("kme-a.sqlite")).map_err(|e| e.to_string())?),
            Arc::new(SqlStore::open(&opts.dir.join("kme-b.sqlite")).map_err(|e| e.to_string())?),
        ),
        StoreChoice::Postgres { a, b } => (
            Arc::new(SqlStore::postgres(a).map_err(|e| e.to_string())?),
            Arc::new(SqlStore::postgres(b).map_err(|e| e.to_string())?),
        ),
    };
    // Material for ~40 000 keys/s over the run, in 8-Mbit blocks (both lanes filled).
    let need_bits = (opts.seconds.max(1.0) * 40_000.0 * f64::from(opts.key_bits) * 2.0) as usize;
    let blocks = need_bits.div_ceil(8_000_000).max(1);
    for b in 0..blocks as u64 {
        let words: Vec<u64> = (0..125_000u64)
            .map(|i| (i ^ (b << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let k = qkdnet_core::Bits::from_words(words, 8_000_000);
        sa.add_block("B", b, &k, u64::MAX / 4)
            .map_err(|e| e.to_string())?;
        sb.add_block("A", b, &k, u64::MAX / 4)
            .map_err(|e| e.to_string())?;
    }
    let mut cfg = KmeConfig::new("A");
    for i in 0..opts.clients {
        cfg.sae_kme.insert(format!("a{i}"), "A".into());
        cfg.sae_kme.insert(format!("b{i}"), "B".into());
    }
    let mut cfg_b = cfg.clone();
    cfg_b.kme_id = "B".into();
    let kme_a = Arc::new(Kme::new(
        cfg,
        Arc::clone(&sa),
        Arc::new(ToStore(Arc::clone(&sb), "A".into())),
        Box::new(|| 0),
    ));
    let kme_b = Arc::new(Kme::new(
        cfg_b,
        Arc::clone(&sb),
        Arc::new(ToStore(Arc::clone(&sa), "B".into())),
        Box::new(|| 0),
    ));
    let sa_tls = ca.server("A", &["localhost"]).map_err(|e| e.to_string())?;
    let sb_tls = ca.server("B", &["localhost"]).map_err(|e| e.to_string())?;
    let tls_a = etsi::server_tls(
        ca_pem.as_bytes(),
        sa_tls.cert_pem.as_bytes(),
        sa_tls.key_pem.as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let tls_b = etsi::server_tls(
        ca_pem.as_bytes(),
        sb_tls.cert_pem.as_bytes(),
        sb_tls.key_pem.as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let clients: Vec<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>)> = (0..opts.clients)
        .map(|i| {
            let a = ca.client(&format!("a{i}")).map_err(|e| e.to_string())?;
            let b = ca.client(&format!("b{i}")).map_err(|e| e.to_string())?;
            Ok((
                etsi::client_tls(
                    ca_pem.as_bytes(),
                    a.cert_pem.as_bytes(),
                    a.key_pem.as_bytes(),
                )
                .map_err(|e| e.to_string())?,
                etsi::client_tls(
                    ca_pem.as_bytes(),
                    b.cert_pem.as_bytes(),
                    b.key_pem.as_bytes(),
                )
                .map_err(|e| e.to_string())?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let key_bits = opts.key_bits;
    let seconds = opts.seconds;
    let result = rt.block_on(async move {
        let la = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let (addr_a, addr_b) = (
            la.local_addr().map_err(|e| e.to_string())?,
            lb.local_addr().map_err(|e| e.to_string())?,
        );
        tokio::spawn(etsi::serve(la, tls_a, kme_a));
        tokio::spawn(etsi::serve(lb, tls_b, kme_b));
        let cpu0 = process_cpu_s();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, (ca_cfg, cb_cfg)) in clients.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut first: Option<String> = None;
                let (mut a, mut b) = match (
                    SaeClient::connect(addr_a, ca_cfg, "localhost").await,
                    SaeClient::connect(addr_b, cb_cfg, "localhost").await,
                ) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return (lat, 1, Some(e.to_string())),
                };
                let (slave, master) = (format!("b{i}"), format!("a{i}"));
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let id = match a.enc_keys(&slave, 1, key_bits).await {
                        Ok(mut keys) if !keys.is_empty() => std::mem::take(&mut keys[0].id),
                        Ok(_) => {
                            errors += 1;
                            first.get_or_insert_with(|| "enc_keys answer without a key".into());
                            continue;
                        }
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e.to_string());
                            continue;
                        }
                    };
                    match b.dec_keys(&master, &[&id]).await {
                        Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e.to_string());
                        }
                    }
                }
                (lat, errors, first)
            }));
        }
        let mut lat = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        for t in tasks {
            let (l, e, f) = t.await.map_err(|e| e.to_string())?;
            lat.extend(l);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
        let cpu = cpu0.zip(process_cpu_s()).map(|(a, b)| b - a);
        Ok::<_, String>((lat, errors, first_error, start.elapsed().as_secs_f64(), cpu))
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let (mut lat, errors, first_error, wall, cpu) = result?;
    drop((sa, sb));
    let _ = std::fs::remove_dir_all(&opts.dir);
    if lat.is_empty() {
        return Err(format!(
            "no request completed ({errors} errors; first: {})",
            first_error.unwrap_or_default()
        ));
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok(BenchReport {
        keys_per_second: lat.len() as f64 / wall,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        pairs: lat.len() as u64,
        errors,
        clients: opts.clients,
        key_bits: opts.key_bits,
        durable: true,
        first_error,
        cpu_us_per_pair: cpu.map(|c| c * 1e6 / lat.len() as f64),
    })
}
