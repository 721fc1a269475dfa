//! Helpers shared by the crash tests.
#![allow(dead_code, clippy::unwrap_used)]

use qkdnet_kms::sql::SqlStore;

/// Opens the store named by `spec`: `sqlite:PATH` or `postgres:CONNECTION-STRING`.
pub fn open(spec: &str) -> SqlStore {
    match spec.split_once(':') {
        Some(("sqlite", path)) => SqlStore::open(std::path::Path::new(path)).unwrap(),
        Some(("postgres", url)) => SqlStore::postgres(url).unwrap(),
        _ => panic!("bad store spec {spec}"),
    }
}

/// 8 Mbit of deterministic test material numbered `b`.
pub fn material(b: u64) -> qkdnet_core::Bits {
    let words: Vec<u64> = (0..125_000u64)
        .map(|i| (i ^ (b << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 5)
        .collect();
    qkdnet_core::Bits::from_words(words, 8_000_000)
}

/// A fresh temporary directory for this test.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qkdnet-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The TLS client identity `who` (an SAE or a KME ID), issued by `ca`.
pub fn client(ca: &qkdnet_kms::pki::Ca, who: &str) -> std::sync::Arc<rustls::ClientConfig> {
    let c = ca.client(who).unwrap();
    qkdnet_kms::etsi::client_tls(
        ca.cert_pem().as_bytes(),
        c.cert_pem.as_bytes(),
        c.key_pem.as_bytes(),
    )
    .unwrap()
}
