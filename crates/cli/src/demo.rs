//! `qkdnet demo`: the Nice network (or `--network FILE`) end to end on this machine —
//! photons to an encrypted file. It writes the network (embedded in the binary) and a test PKI to a directory,
//! starts one `qkdnet node` process per trusted site on loopback (each with its KME and its
//! links in accelerated virtual time, distilling with its neighbours over TCP), waits for
//! keys, then, as applications would over ETSI GS QKD 014 with mutual TLS:
//! 1. a linked pair: an SAE at Nice gets a key with `enc_keys`, an SAE at INRIA the same key
//!    with `dec_keys`; a file is encrypted with AES-256-GCM at one end and decrypted at
//!    the other;
//! 2. a relayed pair: INRIA and the Observatory share no link; the key travels through the
//!    trusted node at Nice as a one-time pad under link keys, and the file again.

use crate::CliError;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use clap::Args;
use qkdnet_kms::client::SaeClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags of `qkdnet demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Working directory for the network, PKI, stores and logs (default: a new temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Another network file (default: the embedded Nice network). Every trusted node that
    /// ends a link becomes a node process; the linked pair is the first link's ends, the
    /// relayed pair the first two sites two or more links apart.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// Virtual seconds per wall second.
    #[arg(long, default_value_t = 120.0)]
    pub time_scale: f64,
    /// Distillation block, virtual seconds.
    #[arg(long, default_value_t = 1800.0)]
    pub block_s: f64,
    /// The file to send (default: a generated message).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Give up waiting for keys after this many wall seconds.
    #[arg(long, default_value_t = 150.0)]
    pub timeout_s: f64,
    /// Only write the network, PKI and site files (one `qkdnet node --config DIR/<site>.toml`
    /// per site), print the sites' addresses as JSON, and exit; the virtual clock starts
    /// when this command does.
    #[arg(long)]
    pub setup_only: bool,
}

const NETWORK: &str = include_str!("../../../networks/nice-4-node.toml");
const NICE_50: &str = include_str!("../../../scenarios/nice-50km.toml");
const NICE_100: &str = include_str!("../../../scenarios/nice-100km.toml");

/// Child processes, killed when dropped.
struct Nodes(Vec<(String, Child)>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn step(n: u32, t0: Instant, msg: &str) {
    println!("[{:>5.1} s] {n}. {msg}", t0.elapsed().as_secs_f64());
}

/// `n` distinct free ports on loopback: each is held open until all are picked, so the OS
/// cannot hand the same one out twice (it did: a node's ETSI port once equalled another's
/// dashboard port).
fn free_ports(n: usize) -> Result<Vec<u16>, CliError> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::runtime(format!("finding a free port: {e}")))?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::runtime(format!("finding a free port: {e}")))
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)
            .map_err(|e| CliError::runtime(format!("{}: {e}", p.display())))?;
    }
    std::fs::write(path, text).map_err(|e| CliError::runtime(format!("{}: {e}", path.display())))
}

/// Runs `qkdnet demo`.
pub fn run(a: &DemoArgs) -> Result<(), CliError> {
    if !(a.time_scale.is_finite() && a.time_scale > 0.0 && a.time_scale <= 1e4) {
        return Err(CliError::input(format!(
            "--time-scale: must be in (0, 1e4], got {}",
            a.time_scale
        )));
    }
    if !(a.block_s.is_finite() && a.block_s >= 60.0) {
        return Err(CliError::input(format!(
            "--block-s: must be ≥ 60, got {}",
            a.block_s
        )));
    }
    let t0 = Instant::now();
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("qkdnet-demo-{}", std::process::id())),
    };
    if dir.join("pki").exists() {
        return Err(CliError::input(format!(
            "--dir: {} already holds a demo; give a new directory",
            dir.display()
        )));
    }
    let message = match &a.file {
        Some(f) => std::fs::read(f)
            .map_err(|e| CliError::input(format!("--file: {}: {e}", f.display())))?,
        None => b"Photons in fibre to keys in applications: this file was encrypted with a key \
distilled from emulated entangled photons of the Nice network, delivered over ETSI GS QKD 014.\n"
            .to_vec(),
    };
    // 1. The network and its plan.
    let net_path = match &a.network {
        Some(p) => std::fs::canonicalize(p)
            .map_err(|e| CliError::input(format!("--network: {}: {e}", p.display())))?,
        None => {
            write(&dir.join("networks/nice-4-node.toml"), NETWORK)?;
            write(&dir.join("scenarios/nice-50km.toml"), NICE_50)?;
            write(&dir.join("scenarios/nice-100km.toml"), NICE_100)?;
            let p = dir.join("networks/nice-4-node.toml");
            std::fs::canonicalize(&p)
                .map_err(|e| CliError::runtime(format!("{}: {e}", p.display())))?
        }
    };
    let net = qkdnet_network::spec::load(&net_path)?;
    // The sites: trusted nodes that end a link, each with one SAE for the demo's client.
    let sites: Vec<(String, String)> = net
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| net.links.iter().any(|l| l.ends.contains(i)))
        .map(|(_, n)| {
            let sae = n
                .saes
                .first()
                .cloned()
                .unwrap_or_else(|| format!("sae-{}", n.id));
            (n.id.clone(), sae)
        })
        .collect();
    let Some(first) = net.links.first() else {
        return Err(CliError::input(format!(
            "{}: the demo needs at least one link",
            net_path.display()
        )));
    };
    let site_ix = |id: &str| sites.iter().position(|s| s.0 == id);
    // The linked pair: the first link's ends. The relayed pair: the first two sites that a
    // path of two or more links through trusted nodes joins, and that no link does.
    let linked = (
        net.nodes[first.ends[0]].id.clone(),
        net.nodes[first.ends[1]].id.clone(),
    );
    let mut relayed = None;
    'find: for x in 0..sites.len() {
        for y in 0..sites.len() {
            if x == y {
                continue;
            }
            let (Some(a_ix), Some(b_ix)) = (net.node(&sites[x].0), net.node(&sites[y].0)) else {
                continue;
            };
            if let Some(path) =
                qkdnet_network::spec::trusted_path(&net.nodes, &net.links, a_ix, b_ix)
            {
                if path.len() >= 2 {
                    let l = &net.links[path[0]];
                    let hop = if l.ends[0] == a_ix {
                        l.ends[1]
                    } else {
                        l.ends[0]
                    };
                    relayed = Some((
                        sites[x].0.clone(),
                        sites[y].0.clone(),
                        net.nodes[hop].id.clone(),
                    ));
                    break 'find;
                }
            }
        }
    }
    let p = qkdnet_network::plan::plan(&net, &qkdnet_network::plan::PlanOptions::PLACEMENT);
    step(1, t0, &format!("network {} in {}", net.name, dir.display()));
    for l in &p.links {
        println!(
            "         link {:<11} {}–{} via {}, {:.1} km, {:.1} dB, ITU {:?}: planned {:.0} bit/s",
            l.id,
            l.ends[0],
            l.ends[1],
            l.via.as_deref().unwrap_or("-"),
            l.arm_km.iter().sum::<f64>(),
            l.loss_db,
            l.channels.clone().unwrap_or_default(),
            l.key_rate_bps()
        );
    }
    // 2. A test PKI.
    let pki = dir.join("pki");
    let quiet = crate::certs::CertsArgs {
        out: pki.clone(),
        kme: sites.iter().map(|s| s.0.clone()).collect(),
        sae: sites.iter().map(|s| s.1.clone()).collect(),
        host: vec!["localhost".into(), "127.0.0.1".into()],
    };
    crate::certs::generate(&quiet, false)?;
    step(
        2,
        t0,
        "test PKI: a CA, a server and a client certificate per KME, one per SAE",
    );
    // 3. Site files and node processes.
    let ports = free_ports(3 * sites.len())?;
    let (etsi, rest) = ports.split_at(sites.len());
    let (distill, dash) = rest.split_at(sites.len());
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        + 1500;
    let port_of = |id: &str, ports: &[u16]| site_ix(id).map_or(0, |i| ports[i]);
    let saes: String = sites
        .iter()
        .map(|(k, s)| format!("\"{s}\" = \"{k}\"\n"))
        .collect();
    let mut nodes = Nodes(Vec::new());
    std::fs::create_dir_all(dir.join("logs"))
        .map_err(|e| CliError::runtime(format!("{}: {e}", dir.display())))?;
    for (i, (id, _)) in sites.iter().enumerate() {
        let id = id.as_str();
        // Neighbours: the other ends of this site's links; the rest by the first hop of a
        // path of links through trusted nodes.
        let neighbours: Vec<&str> = net
            .links
            .iter()
            .filter_map(|l| {
                let e = [
                    net.nodes[l.ends[0]].id.as_str(),
                    net.nodes[l.ends[1]].id.as_str(),
                ];
                if e[0] == id {
                    Some(e[1])
                } else if e[1] == id {
                    Some(e[0])
                } else {
                    None
                }
            })
            .collect();
        let peers: String = neighbours
            .iter()
            .map(|n| {
                format!(
                    "[[peer]]\nkme_id = \"{n}\"\naddress = \"127.0.0.1:{}\"\n",
                    port_of(n, etsi)
                )
            })
            .collect();
        let me = net.node(id).unwrap_or(0);
        let routes: String = sites
            .iter()
            .filter(|(k, _)| k != id && !neighbours.contains(&k.as_str()))
            .filter_map(|(k, _)| {
                let to = net.node(k)?;
                let path = qkdnet_network::spec::trusted_path(&net.nodes, &net.links, me, to)?;
                let l = &net.links[*path.first()?];
                let hop = if l.ends[0] == me {
                    l.ends[1]
                } else {
                    l.ends[0]
                };
                Some(format!("{k} = [\"{}\"]\n", net.nodes[hop].id))
            })
            .collect();
        let distill_peers: String = neighbours
            .iter()
            .map(|n| format!("{n} = \"127.0.0.1:{}\"\n", port_of(n, distill)))
            .collect();
        let text = format!(
            "kme_id = \"{id}\"\nlisten = \"127.0.0.1:{}\"\n{peers}\n[store]\nsqlite = \"{id}.sqlite\"\n\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/kme-{id}.pem\"\nkey = \"pki/kme-{id}.key\"\nclient_cert = \"pki/kme-{id}-client.pem\"\nclient_key = \"pki/kme-{id}-client.key\"\n\n[saes]\n{saes}\n[routes]\n{routes}\n[node]\nnetwork = \"{}\"\ndistill_listen = \"127.0.0.1:{}\"\ntime_scale = {}\nblock_s = {}\nseed = 1\nepoch_unix_ms = {epoch}\ndashboard = \"127.0.0.1:{}\"\n\n[node.distill_peers]\n{distill_peers}",
            etsi[i],
            net_path.display().to_string().replace('\\', "/"),
            distill[i],
            a.time_scale,
            a.block_s,
            dash[i]
        );
        let site = dir.join(format!("{id}.toml"));
        write(&site, &text)?;
        if a.setup_only {
            continue;
        }
        let log = std::fs::File::create(dir.join(format!("logs/{id}.log")))
            .map_err(|e| CliError::runtime(format!("{}: {e}", dir.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| CliError::runtime(e.to_string()))?;
        let exe = std::env::current_exe().map_err(|e| CliError::runtime(e.to_string()))?;
        let child = Command::new(exe)
            .args(["node", "--config"])
            .arg(&site)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| CliError::runtime(format!("starting node {id}: {e}")))?;
        nodes.0.push((id.to_string(), child));
    }
    if a.setup_only {
        let sites: Vec<serde_json::Value> = sites
            .iter()
            .enumerate()
            .map(|(i, (id, sae))| {
                serde_json::json!({
                    "node": id, "sae": sae, "config": dir.join(format!("{id}.toml")),
                    "etsi": format!("127.0.0.1:{}", etsi[i]),
                    "distill": format!("127.0.0.1:{}", distill[i]),
                    "dashboard": format!("http://127.0.0.1:{}/", dash[i]),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "dir": dir, "pki": pki, "sites": sites })
        );
        return Ok(());
    }
    step(
        3,
        t0,
        &format!(
            "started {} node processes ({}) on loopback, ×{} virtual time, {} s blocks; logs in {}",
            sites.len(),
            sites
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            a.time_scale,
            a.block_s,
            dir.join("logs").display()
        ),
    );
    println!(
        "         live dashboards: {}",
        sites
            .iter()
            .enumerate()
            .map(|(i, (id, _))| format!("{id} http://127.0.0.1:{}/", dash[i]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(e.to_string()))?;
    let tls = |sae: &str| -> Result<Arc<rustls::ClientConfig>, CliError> {
        let rd = |f: String| {
            std::fs::read(pki.join(&f)).map_err(|e| CliError::runtime(format!("{f}: {e}")))
        };
        qkdnet_kms::etsi::client_tls(
            &rd("ca.pem".into())?,
            &rd(format!("sae-{sae}.pem"))?,
            &rd(format!("sae-{sae}.key"))?,
        )
        .map_err(|e| CliError::runtime(e.to_string()))
    };
    let deadline = t0 + Duration::from_secs_f64(a.timeout_s);
    let sae_of = |id: &str| site_ix(id).map(|i| sites[i].1.clone()).unwrap_or_default();
    let mut pairs = vec![(
        linked.0.clone(),
        sae_of(&linked.0),
        linked.1.clone(),
        sae_of(&linked.1),
        "linked pair".to_string(),
    )];
    match &relayed {
        Some((x, y, via)) => pairs.push((
            x.clone(),
            sae_of(x),
            y.clone(),
            sae_of(y),
            format!("relayed through {via}"),
        )),
        None => {
            println!("         (no two sites here are two or more links apart: no relayed pair)")
        }
    }
    let mut n = 4;
    for (master_kme, master, slave_kme, slave, what) in &pairs {
        let (master_kme, master, slave_kme, slave) = (
            master_kme.as_str(),
            master.as_str(),
            slave_kme.as_str(),
            slave.as_str(),
        );
        step(
            n,
            t0,
            &format!("waiting for key between {master_kme} and {slave_kme} ({what})…"),
        );
        let (k_enc, k_dec) = rt.block_on(async {
            let addr = |kme: &str| std::net::SocketAddr::from(([127, 0, 0, 1], port_of(kme, etsi)));
            loop {
                if Instant::now() > deadline {
                    return Err(CliError::runtime(format!(
                        "no key between {master_kme} and {slave_kme} within {} s (see {})",
                        a.timeout_s,
                        dir.join("logs").display()
                    )));
                }
                if let Some(dead) = nodes_exited(&mut nodes) {
                    return Err(CliError::runtime(format!(
                        "node {dead} stopped (see {})",
                        dir.join(format!("logs/{dead}.log")).display()
                    )));
                }
                let attempt = async {
                    let mut m = SaeClient::connect(addr(master_kme), tls(master)?, "localhost")
                        .await
                        .map_err(|e| CliError::runtime(e.to_string()))?;
                    let enc = m
                        .enc_keys(slave, 1, 256)
                        .await
                        .map_err(|e| CliError::runtime(e.to_string()))?;
                    let key = enc
                        .into_iter()
                        .next()
                        .ok_or_else(|| CliError::runtime("enc_keys returned no key"))?;
                    let mut s = SaeClient::connect(addr(slave_kme), tls(slave)?, "localhost")
                        .await
                        .map_err(|e| CliError::runtime(e.to_string()))?;
                    let dec = s
                        .dec_keys(master, &[key.id.as_str()])
                        .await
                        .map_err(|e| CliError::runtime(e.to_string()))?;
                    let back = dec
                        .into_iter()
                        .next()
                        .ok_or_else(|| CliError::runtime("dec_keys returned no key"))?;
                    Ok::<_, CliError>((key, back))
                };
                match attempt.await {
                    Ok(k) => return Ok(k),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        })?;
        step(
            n + 1,
            t0,
            &format!(
                "{master} got key {} from KME {master_kme} (enc_keys, 256 bits); {slave} got key {} from KME {slave_kme} (dec_keys): {}",
                k_enc.id,
                k_dec.id,
                if k_enc.bytes == k_dec.bytes { "identical" } else { "DIFFERENT" }
            ),
        );
        if k_enc.bytes != k_dec.bytes || k_enc.id != k_dec.id {
            return Err(CliError::runtime("the two ends got different keys"));
        }
        // AES-256-GCM with the QKD key: encrypt at the master, decrypt at the slave.
        let nonce_bytes: [u8; 12] = {
            let mut b = [0u8; 12];
            getrandom::getrandom(&mut b).map_err(|e| CliError::runtime(e.to_string()))?;
            b
        };
        let enc = Aes256Gcm::new_from_slice(&k_enc.bytes)
            .map_err(|e| CliError::runtime(e.to_string()))?
            .encrypt(Nonce::from_slice(&nonce_bytes), message.as_slice())
            .map_err(|e| CliError::runtime(e.to_string()))?;
        let sealed = dir.join(format!("message-{master_kme}-to-{slave_kme}.enc"));
        let mut file = nonce_bytes.to_vec();
        file.extend_from_slice(&enc);
        std::fs::write(&sealed, &file)
            .map_err(|e| CliError::runtime(format!("{}: {e}", sealed.display())))?;
        let read = std::fs::read(&sealed)
            .map_err(|e| CliError::runtime(format!("{}: {e}", sealed.display())))?;
        let (nonce, body) = read.split_at(12);
        let plain = Aes256Gcm::new_from_slice(&k_dec.bytes)
            .map_err(|e| CliError::runtime(e.to_string()))?
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| CliError::runtime("AES-256-GCM: the tag did not verify"))?;
        step(
            n + 2,
            t0,
            &format!(
                "{master} encrypted {} bytes with AES-256-GCM into {}; {slave} decrypted it: {}",
                message.len(),
                sealed.display(),
                if plain == message {
                    "the file matches"
                } else {
                    "MISMATCH"
                }
            ),
        );
        if plain != message {
            return Err(CliError::runtime("decrypted file differs"));
        }
        n += 3;
    }
    drop(nodes);
    step(
        n,
        t0,
        &format!(
            "stopped the nodes; stores, site files and logs stay in {}",
            dir.display()
        ),
    );
    Ok(())
}

/// The first node process that has exited, if any.
fn nodes_exited(nodes: &mut Nodes) -> Option<String> {
    for (id, c) in nodes.0.iter_mut() {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return Some(id.clone());
        }
    }
    None
}
