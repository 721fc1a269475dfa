//! Nothing delivered twice, nothing lost, with the KME process killed under load.
//!
//! Each KME of a link (A and B) runs in its own child process, with its durable store, its
//! ETSI 014 server over mutual TLS and its HTTPS link to the other KME (assignments from
//! A to B travel as `/api/v1/kme/assignments` requests). The parent runs SAE pairs against
//! them: `enc_keys` at A for a slave at B, then `dec_keys` at B. At random moments A, B or
//! both are killed with SIGKILL and restarted. Afterwards:
//! every key ID went to one master only, with material no other key had; every key a
//! master received was fetched by its slave with the same bytes (keys whose `dec_keys`
//! answer was cut off by a kill excepted: the store gave them, the client never heard);
//! no slave got a key twice; both stores balance to the bit; and the lanes are in step
//! (requests after the last restart succeed). Run on SQLite, and on PostgreSQL against a
//! server the test starts.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{material, open, temp_dir};
use qkdnet_kms::client::{ClientError, SaeClient};
use qkdnet_kms::etsi::{self, Kme, KmeConfig};
use qkdnet_kms::peer::{HttpPeerLink, PeerAddr};
use qkdnet_kms::KeyStore;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD: &str = "QKDNET_KME_CRASH_CHILD";
const PAIRS: usize = 12;

fn config(id: &str) -> KmeConfig {
    let mut cfg = KmeConfig::new(id);
    for i in 0..PAIRS {
        cfg.sae_kme.insert(format!("a{i}"), "A".into());
        cfg.sae_kme.insert(format!("b{i}"), "B".into());
    }
    cfg
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// The child: one KME (`QKDNET_KME_ROLE` is `A` or `B`), serving until killed.
#[test]
fn kme_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let dir = Path::new(&dir);
    let env = |k: &str| std::env::var(k).unwrap();
    let me = env("QKDNET_KME_ROLE");
    let (peer, lower) = if me == "A" { ("B", "a") } else { ("A", "b") };
    let store: Arc<dyn KeyStore> = Arc::new(open(&env(&format!("QKDNET_KME_STORE_{me}"))));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = read(dir, "ca.pem");
    let link = HttpPeerLink::new(
        rt.handle().clone(),
        etsi::client_tls(
            &ca,
            &read(dir, &format!("kme-{lower}-client.pem")),
            &read(dir, &format!("kme-{lower}-client.key")),
        )
        .unwrap(),
        HashMap::from([(
            peer.to_string(),
            PeerAddr {
                addr: env(&format!("QKDNET_KME_ADDR_{peer}")).parse().unwrap(),
                server_name: "localhost".into(),
            },
        )]),
    );
    let kme = Arc::new(Kme::new(config(&me), store, Arc::new(link), Box::new(|| 0)));
    let tls = etsi::server_tls(
        &ca,
        &read(dir, &format!("kme-{lower}.pem")),
        &read(dir, &format!("kme-{lower}.key")),
    )
    .unwrap();
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(env(&format!("QKDNET_KME_ADDR_{me}")))
            .await
            .unwrap();
        tokio::spawn(etsi::serve(l, tls, kme));
        std::future::pending::<()>().await;
    });
}

/// A child process killed with SIGKILL and reaped when dropped, also when a check fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the parent's SAEs saw.
#[derive(Default)]
struct Seen {
    /// Key ID → (master, bytes) from enc_keys.
    given: HashMap<String, (String, Vec<u8>)>,
    /// Key IDs given twice by enc_keys, or material seen twice.
    doubles: Vec<String>,
    /// Key ID → bytes from dec_keys.
    fetched: HashMap<String, Vec<u8>>,
    /// Keys whose dec_keys answer may have been lost to a kill.
    cut_off: HashSet<String>,
    /// Keys refused by dec_keys although no earlier attempt was cut off.
    lost: Vec<String>,
    /// Material seen (to find reuse).
    material: HashSet<Vec<u8>>,
}

/// One SAE pair's loop for one round: fetch what is pending, then get a new key. After
/// `stop`, it gets no new keys and ends, at once or (with `drain`) once nothing is pending.
async fn pair_loop(
    i: usize,
    addrs: (std::net::SocketAddr, std::net::SocketAddr),
    tls: (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>),
    pending: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    drain: bool,
) {
    let (master, slave) = (format!("a{i}"), format!("b{i}"));
    let mut conns: Option<(SaeClient, SaeClient)> = None;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && (!drain || pending.lock().unwrap().is_empty()) {
            break;
        }
        let (a, b) = match conns.as_mut() {
            Some(c) => (&mut c.0, &mut c.1),
            None => {
                match (
                    SaeClient::connect(addrs.0, Arc::clone(&tls.0), "localhost").await,
                    SaeClient::connect(addrs.1, Arc::clone(&tls.1), "localhost").await,
                ) {
                    (Ok(a), Ok(b)) => {
                        let c = conns.insert((a, b));
                        (&mut c.0, &mut c.1)
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
        };
        let next = pending.lock().unwrap().first().cloned();
        if let Some(id) = next {
            match b.dec_keys(&master, &[&id]).await {
                Ok(keys) => {
                    let mut s = seen.lock().unwrap();
                    for k in keys {
                        if s.fetched.insert(k.id.clone(), k.bytes.clone()).is_some() {
                            s.doubles.push(k.id.clone());
                        }
                    }
                    pending.lock().unwrap().remove(0);
                }
                Err(ClientError::Status { status, .. }) if status != 503 => {
                    let mut s = seen.lock().unwrap();
                    if !s.cut_off.contains(&id) {
                        s.lost.push(format!("{id}: HTTP {status}"));
                    }
                    pending.lock().unwrap().remove(0);
                }
                Err(_) => {
                    seen.lock().unwrap().cut_off.insert(id);
                    conns = None;
                }
            }
            continue;
        }
        if stopping {
            continue;
        }
        match a.enc_keys(&slave, 1, 256).await {
            Ok(keys) => {
                let mut s = seen.lock().unwrap();
                for k in keys {
                    if !s.material.insert(k.bytes.clone()) {
                        s.doubles.push(format!("material of {}", k.id));
                    }
                    if s.given
                        .insert(k.id.clone(), (master.clone(), k.bytes.clone()))
                        .is_some()
                    {
                        s.doubles.push(k.id.clone());
                    }
                    pending.lock().unwrap().push(k.id.clone());
                }
            }
            Err(ClientError::Status { .. }) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => conns = None,
        }
    }
}

fn kme_rounds(dir: &Path, spec_a: &str, spec_b: &str) {
    use rand::{Rng, SeedableRng};
    {
        let (sa, sb) = (open(spec_a), open(spec_b));
        for b in 0..2 {
            sa.add_block("B", b, &material(b), u64::MAX / 4).unwrap();
            sb.add_block("A", b, &material(b), u64::MAX / 4).unwrap();
        }
    }
    let ca = qkdnet_kms::pki::Ca::new("crash CA").unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    for who in ["kme-a", "kme-b"] {
        let id = if who == "kme-a" { "A" } else { "B" };
        let s = ca.server(id, &["localhost"]).unwrap();
        std::fs::write(dir.join(format!("{who}.pem")), &s.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{who}.key")), &s.key_pem).unwrap();
        // The KME's identity towards its peer.
        let c = ca.client(id).unwrap();
        std::fs::write(dir.join(format!("{who}-client.pem")), &c.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{who}-client.key")), &c.key_pem).unwrap();
    }
    let ca_pem = ca.cert_pem();
    let client = |sae: &str| {
        let c = ca.client(sae).unwrap();
        etsi::client_tls(
            ca_pem.as_bytes(),
            c.cert_pem.as_bytes(),
            c.key_pem.as_bytes(),
        )
        .unwrap()
    };
    let tls: Vec<_> = (0..PAIRS)
        .map(|i| (client(&format!("a{i}")), client(&format!("b{i}"))))
        .collect();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let addrs = (port(), port());
    let pending: Vec<Arc<Mutex<Vec<String>>>> = (0..PAIRS).map(|_| Arc::default()).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let rounds = 7;
    let spawn = |role: &str| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kme_child", "--nocapture", "--test-threads", "1"])
            .env(CHILD, dir)
            .env("QKDNET_KME_ROLE", role)
            .env("QKDNET_KME_STORE_A", spec_a)
            .env("QKDNET_KME_STORE_B", spec_b)
            .env("QKDNET_KME_ADDR_A", addrs.0.to_string())
            .env("QKDNET_KME_ADDR_B", addrs.1.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut children: [Option<Killed>; 2] = [None, None];
    let mut kills = [0u32; 2];
    for round in 0..rounds {
        for (i, role) in ["A", "B"].iter().enumerate() {
            if children[i].is_none() {
                children[i] = Some(Killed(spawn(role)));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let last = round == rounds - 1;
        let given_at_start = seen.lock().unwrap().given.len();
        let tasks: Vec<_> = (0..PAIRS)
            .map(|i| {
                rt.spawn(pair_loop(
                    i,
                    addrs,
                    tls[i].clone(),
                    Arc::clone(&pending[i]),
                    Arc::clone(&seen),
                    Arc::clone(&stop),
                    last,
                ))
            })
            .collect();
        if last {
            // No kill: the lanes must be in step again, so keys flow for every pair;
            // then everything pending is fetched.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30)
                && seen.lock().unwrap().given.len() < given_at_start + 4 * PAIRS
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::SeqCst);
            for t in tasks {
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), t).await })
                    .expect("pending keys were not fetched within 30 s")
                    .unwrap();
            }
            assert!(
                seen.lock().unwrap().given.len() >= given_at_start + 4 * PAIRS,
                "after the last restart keys no longer flow"
            );
            for c in children.iter_mut() {
                c.take(); // killed and reaped on drop
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(300..900)));
            // Kill A, B or both (SIGKILL).
            let which = rng.gen_range(0..3usize);
            for (i, slot) in children.iter_mut().enumerate() {
                if (which == 2 || which == i) && slot.take().is_some() {
                    kills[i] += 1; // killed and reaped on drop
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::SeqCst);
            for t in tasks {
                rt.block_on(t).unwrap();
            }
        }
    }
    let seen = seen.lock().unwrap();
    let given_before_last = seen.given.len();
    eprintln!(
        "{} keys given, {} fetched, {} answers cut off by kills; A killed {} times, B {} times",
        given_before_last,
        seen.fetched.len(),
        seen.cut_off.len(),
        kills[0],
        kills[1]
    );
    assert!(seen.given.len() > 100, "too few keys to mean anything");
    assert!(seen.doubles.is_empty(), "given twice: {:?}", seen.doubles);
    assert!(seen.lost.is_empty(), "lost: {:?}", seen.lost);
    for (id, bytes) in &seen.fetched {
        let (_, given) = seen.given.get(id).expect("fetched a key never given");
        assert_eq!(given, bytes, "key {id} differs between master and slave");
    }
    // Every key a master received was fetched by its slave, unless that answer was cut off.
    for id in seen.given.keys() {
        assert!(
            seen.fetched.contains_key(id) || seen.cut_off.contains(id),
            "key {id} given to its master never reached its slave"
        );
    }
    for p in &pending {
        assert!(
            p.lock().unwrap().is_empty(),
            "keys still pending after the last start"
        );
    }
    let (sa, sb) = (open(spec_a), open(spec_b));
    for (s, peer) in [(&sa, "B"), (&sb, "A")] {
        let acc = s.accounting(peer).unwrap();
        assert!(acc.balances(), "{acc:?}");
        assert!(acc.delivered_bits >= 256 * seen.fetched.len() as u64);
    }
}

#[test]
#[cfg(unix)]
fn kme_killed_under_load_loses_nothing_and_gives_nothing_twice() {
    let dir = temp_dir("kme-crash");
    let a = format!("sqlite:{}", dir.join("a.sqlite").display());
    let b = format!("sqlite:{}", dir.join("b.sqlite").display());
    kme_rounds(&dir, &a, &b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg(unix)]
fn kme_killed_under_load_loses_nothing_and_gives_nothing_twice_on_postgres() {
    let Some(server) = qkdnet_kms::pg::test_server() else {
        return;
    };
    let dir = temp_dir("kme-crash-pg");
    let a = format!("postgres:{}", server.create_db("kme_a").unwrap());
    let b = format!("postgres:{}", server.create_db("kme_b").unwrap());
    kme_rounds(&dir, &a, &b);
    let _ = std::fs::remove_dir_all(&dir);
}
