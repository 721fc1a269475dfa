//! The ETSI 014 server over real mutual TLS on loopback: certificates from a test CA,
//! rejection of clients without a valid certificate, and clients that stall.
#![allow(clippy::unwrap_used, missing_docs)]

use qkdnet_core::Bits;
use qkdnet_kms::etsi::{self, Kme, KmeConfig, PeerLink};
use qkdnet_kms::sqlite::SqliteStore;
use qkdnet_kms::{Assignment, KeyStore};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// (certificate PEM, key PEM) for `cn`, signed by `ca`.
fn leaf(ca: &Ca, cn: &str, server: bool) -> (String, String) {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct ToStore(Arc<dyn KeyStore>);

impl PeerLink for ToStore {
    fn send_assignments(&self, _peer: &str, a: &[Assignment]) -> Result<(), String> {
        self.0.assign_many("A", a, 0).map_err(|e| e.to_string())
    }
}

struct Setup {
    addr: std::net::SocketAddr,
    ca: Ca,
    b: Kme,
    _rt: tokio::runtime::Runtime,
}

fn start(handshake_timeout: Duration) -> Setup {
    let ca = ca("qkdnet test CA");
    let (scert, skey) = leaf(&ca, "kme-A", true);
    let tls =
        etsi::server_tls(ca.cert.pem().as_bytes(), scert.as_bytes(), skey.as_bytes()).unwrap();
    let sa: Arc<dyn KeyStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let sb: Arc<dyn KeyStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let words: Vec<u64> = (0..1000u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let k = Bits::from_words(words, 64_000);
    sa.add_block("B", 1, &k, u64::MAX / 4).unwrap();
    sb.add_block("A", 1, &k, u64::MAX / 4).unwrap();
    let mut cfg = KmeConfig::new("A");
    cfg.sae_kme.insert("a1".into(), "A".into());
    cfg.sae_kme.insert("b1".into(), "B".into());
    cfg.handshake_timeout = handshake_timeout;
    let mut cfg_b = cfg.clone();
    cfg_b.kme_id = "B".into();
    let a = Arc::new(Kme::new(
        cfg,
        sa,
        Arc::new(ToStore(Arc::clone(&sb))),
        Box::new(|| 0),
    ));
    let b = Kme::new(
        cfg_b,
        sb,
        Arc::new(ToStore(Arc::new(SqliteStore::in_memory().unwrap()))),
        Box::new(|| 0),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(etsi::serve(listener, tls, a));
    Setup {
        addr,
        ca,
        b,
        _rt: rt,
    }
}

fn client_config(ca: &Ca, cert: Option<(String, String)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert.pem().as_bytes()).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match cert {
        Some((c, k)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

/// Sends one request; returns (status, body) or None when the server refused the client.
async fn request(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

#[test]
fn enc_keys_over_mutual_tls_and_dec_keys_at_the_peer() {
    let s = start(Duration::from_secs(5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = client_config(&s.ca, Some(leaf(&s.ca, "a1", false)));
    let (st, body) = rt
        .block_on(request(
            s.addr,
            client.clone(),
            "GET",
            "/api/v1/keys/b1/status",
            "",
        ))
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["master_SAE_ID"], "a1"); // from the certificate
    let (st, body) = rt
        .block_on(request(
            s.addr,
            client,
            "POST",
            "/api/v1/keys/b1/enc_keys",
            r#"{"number": 2}"#,
        ))
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["keys"][0]["key_ID"].as_str().unwrap().to_string();
    let got = s.b.handle(
        "b1",
        "GET",
        "/api/v1/keys/a1/dec_keys",
        Some(&format!("key_ID={id}")),
        None,
        b"",
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body.unwrap()["keys"][0]["key"], v["keys"][0]["key"]);
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let s = start(Duration::from_secs(5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // No certificate at all.
    let none = client_config(&s.ca, None);
    assert!(rt
        .block_on(request(s.addr, none, "GET", "/api/v1/keys/b1/status", ""))
        .is_none());
    // A certificate from another CA, with the right name.
    let evil = ca("someone else");
    let forged = client_config(&s.ca, Some(leaf(&evil, "a1", false)));
    assert!(rt
        .block_on(request(s.addr, forged, "GET", "/api/v1/keys/b1/status", ""))
        .is_none());
    // The server still serves good clients.
    let good = client_config(&s.ca, Some(leaf(&s.ca, "a1", false)));
    assert!(rt
        .block_on(request(s.addr, good, "GET", "/api/v1/keys/b1/status", ""))
        .is_some());
}

#[test]
fn stalled_clients_do_not_block_others_and_are_cut_off() {
    let s = start(Duration::from_millis(500));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Ten clients open TCP and never start the handshake.
        let mut stalled = Vec::new();
        for _ in 0..10 {
            stalled.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
        }
        // A good client is served while they hang.
        let good = client_config(&s.ca, Some(leaf(&s.ca, "a1", false)));
        let r = request(s.addr, good, "GET", "/api/v1/keys/b1/status", "").await;
        assert_eq!(r.map(|r| r.0), Some(200));
        // After the handshake deadline the server has closed every stalled connection:
        // reading gives end-of-file (not a hang, which the outer timeout would catch).
        for mut c in stalled {
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("server never closed a stalled connection");
            assert!(matches!(n, Ok(0) | Err(_)));
        }
    });
}
