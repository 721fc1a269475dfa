//! `qkdnet kme`: two KME processes built from configuration files and a test PKI, keys
//! imported from files at both ends, a key requested with enc_keys at one and fetched
//! with dec_keys at the other over mutual TLS; bad configurations get one clear line.
#![allow(clippy::unwrap_used, missing_docs)]

use qkdnet_kms::client::SaeClient;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

fn qkdnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qkdnet"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(me: &str, peer: &str, port: u16, peer_port: u16, store: &str) -> String {
    let (m, p) = (me, peer);
    format!(
        r#"kme_id = "{m}"
listen = "127.0.0.1:{port}"
[store]
sqlite = "{store}"
[tls]
ca = "pki/ca.pem"
cert = "pki/kme-{m}.pem"
key = "pki/kme-{m}.key"
client_cert = "pki/kme-{m}-client.pem"
client_key = "pki/kme-{m}-client.key"
[[peer]]
kme_id = "{p}"
address = "127.0.0.1:{peer_port}"
[saes]
a1 = "A"
b1 = "B"
"#
    )
}

/// Runs `cmd`, which must succeed; returns its standard output.
fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `qkdnet kme serve` and waits for its "serving" line.
fn serve(cfg: &Path) -> Killed {
    let mut child = qkdnet()
        .args(["kme", "serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("serving ETSI GS QKD 014"), "{line}");
    Killed(child)
}

#[test]
fn two_kme_processes_deliver_an_imported_key_over_mutual_tls() {
    let dir = std::env::temp_dir().join(format!("qkdnet-kme-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    succeed(
        qkdnet()
            .args(["certs", "--out"])
            .arg(dir.join("pki"))
            .args(["--kme", "A,B", "--sae", "a1,b1"]),
    );
    let key: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("final.key"), &key).unwrap();
    let (pa, pb) = (free_port(), free_port());
    std::fs::write(dir.join("a.toml"), config("A", "B", pa, pb, "a.sqlite")).unwrap();
    std::fs::write(dir.join("b.toml"), config("B", "A", pb, pa, "b.sqlite")).unwrap();
    // Without --bits and without provenance.json the exact length is unknown: refused
    // (the file's padding bits must not become key material).
    let out = qkdnet()
        .args(["kme", "import", "--config"])
        .arg(dir.join("a.toml"))
        .args(["--peer", "B", "--block-id", "9", "--key"])
        .arg(dir.join("final.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bits"));
    for (cfg, peer) in [("a.toml", "B"), ("b.toml", "A")] {
        let said = succeed(
            qkdnet()
                .args(["kme", "import", "--config"])
                .arg(dir.join(cfg))
                .args([
                    "--peer",
                    peer,
                    "--block-id",
                    "1",
                    "--bits",
                    "524288",
                    "--key",
                ])
                .arg(dir.join("final.key")),
        );
        assert!(said.contains("524288 bits available"), "{said}");
    }
    let _a = serve(&dir.join("a.toml"));
    let _b = serve(&dir.join("b.toml"));
    let read = |f: &str| std::fs::read(dir.join("pki").join(f)).unwrap();
    let tls = |who: &str| {
        qkdnet_kms::etsi::client_tls(
            &read("ca.pem"),
            &read(&format!("sae-{who}.pem")),
            &read(&format!("sae-{who}.key")),
        )
        .unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a_addr = format!("127.0.0.1:{pa}").parse().unwrap();
        let b_addr = format!("127.0.0.1:{pb}").parse().unwrap();
        let mut a1 = SaeClient::connect(a_addr, tls("a1"), "localhost")
            .await
            .unwrap();
        let mut b1 = SaeClient::connect(b_addr, tls("b1"), "localhost")
            .await
            .unwrap();
        let status = a1.status("b1").await.unwrap();
        assert_eq!(status["source_KME_ID"], "A");
        let keys = a1.enc_keys("b1", 3, 256).await.unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let got = b1.dec_keys("a1", &ids).await.unwrap();
        assert!(keys.iter().zip(&got).all(|(x, y)| x.bytes == y.bytes));
        // The keys came from the imported material: lane 0 is its first half.
        assert_eq!(keys[0].bytes, key[..32]);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_kme_configurations_name_the_field() {
    let dir = std::env::temp_dir().join(format!("qkdnet-kme-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = config("A", "B", 1, 2, "a.sqlite");
    let cases = [
        (
            good.replace("kme_id = \"A\"", "kme_id = \"A\"\ncolour = 3"),
            "colour",
        ),
        (good.replace("127.0.0.1:1", "nowhere"), "listen"),
        (good.replace("a1 = \"A\"", "a1 = \"Z\""), "saes.a1"),
        (good.replace("a1 = \"A\"", "B = \"A\""), "saes.B"),
        (good.replace("sqlite = \"a.sqlite\"", ""), "store"),
        (format!("{good}[routes]\nC = [\"Z\"]\n"), "routes.C"),
        (
            good.replace(
                "sqlite = \"a.sqlite\"",
                "sqlite = \"a.sqlite\"\npostgres_ca = \"ca.pem\"",
            ),
            "store.postgres_ca",
        ),
    ];
    for (text, field) in cases {
        std::fs::write(dir.join("k.toml"), text).unwrap();
        let out = qkdnet()
            .args(["kme", "serve", "--config"])
            .arg(dir.join("k.toml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {err}");
        assert!(
            err.contains(field) && err.contains("k.toml"),
            "{field}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
