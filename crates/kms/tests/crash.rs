//! Crash safety of the key stores (SQLite, and PostgreSQL on a server the test starts): a
//! child process allocates keys as fast as it can and is killed with SIGKILL at random
//! moments; after each kill the store is reopened and must balance exactly, and no key
//! the child was given may ever be given again.
#![allow(clippy::unwrap_used, missing_docs)]

use qkdnet_core::Bits;
mod common;
use common::open;
use qkdnet_kms::{KeyRequest, KeyStore};
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

const CHILD: &str = "QKDNET_KMS_CRASH_CHILD";
const STORE: &str = "QKDNET_KMS_CRASH_STORE";

/// The child: runs only when the parent sets the environment variable.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let store = open(&std::env::var(STORE).unwrap());
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("given.log"))
        .unwrap();
    let slaves = vec!["s".to_string()];
    let threads: Vec<_> = (0..4).map(|_| ()).collect();
    let store = std::sync::Arc::new(store);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for _ in threads {
        let store = std::sync::Arc::clone(&store);
        let tx = tx.clone();
        let slaves = slaves.clone();
        std::thread::spawn(move || loop {
            let req = KeyRequest {
                lane: 0,
                master_sae: "m",
                slave_saes: &slaves,
                number: 2,
                size_bytes: 16,
            };
            match store.allocate("B", &req, 0) {
                Ok((keys, _)) => {
                    for k in keys {
                        let hex: String = k.bytes.iter().map(|b| format!("{b:02x}")).collect();
                        if tx.send(format!("{} {hex}\n", k.id)).is_err() {
                            return;
                        }
                    }
                }
                Err(_) => return,
            }
        });
    }
    drop(tx);
    // Log each key once the store has given it (the store's answer is durable first).
    for line in rx {
        log.write_all(line.as_bytes()).unwrap();
        log.sync_data().unwrap();
    }
}

#[test]
#[cfg(unix)]
fn sigkill_at_random_moments_loses_nothing_and_gives_nothing_twice() {
    let dir = std::env::temp_dir().join(format!("qkdnet-kms-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!("sqlite:{}", dir.join("store.sqlite").display());
    crash_rounds(&dir, &spec);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg(unix)]
fn sigkill_at_random_moments_loses_nothing_and_gives_nothing_twice_on_postgres() {
    let Some(server) = qkdnet_kms::pg::test_server() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("qkdnet-kms-crash-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!("postgres:{}", server.create_db("crash").unwrap());
    crash_rounds(&dir, &spec);
    let _ = std::fs::remove_dir_all(&dir);
}

fn crash_rounds(dir: &std::path::Path, spec: &str) {
    use rand::{Rng, SeedableRng};
    {
        let s = open(spec);
        let words: Vec<u64> = (0..125_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 5)
            .collect();
        s.add_block("B", 1, &Bits::from_words(words, 8_000_000), u64::MAX / 4)
            .unwrap();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for round in 0..8 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD, dir)
            .env(STORE, spec)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(150..600)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The store reopens and balances to the bit.
        let s = open(spec);
        let acc = s.accounting("B").unwrap();
        assert!(acc.balances(), "round {round}: {acc:?}");
        assert_eq!(
            acc.delivered_bits % 128,
            0,
            "round {round}: a key half-given"
        );
    }
    // Every key the child logged was given once, with distinct material, and the store
    // counts at least those (it may count keys given just before a kill, never fewer).
    let log = std::fs::read_to_string(dir.join("given.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| l.len() > 40).collect();
    assert!(!lines.is_empty(), "the child never got a key");
    eprintln!("{} keys given across 8 kills", lines.len());
    let ids: HashSet<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    let material: HashSet<&str> = lines.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(ids.len(), lines.len(), "a key ID was given twice");
    assert_eq!(material.len(), lines.len(), "key material was given twice");
    let s = open(spec);
    let acc = s.accounting("B").unwrap();
    assert!(acc.delivered_bits >= 128 * lines.len() as u64);
}
