//! An SAE's side of ETSI GS QKD 014: one kept-alive HTTPS connection with mutual TLS to
//! a KME, and the calls `status`, `enc_keys` and `dec_keys`. Used by `qkdnet bench kms`,
//! the crash tests and the demo; applications can use it as it is.

use crate::Key;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::Arc;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A failed call: the connection failed, or the KME answered with an error status (its
/// ETSI error body is in the message).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP, TLS or HTTP failed.
    #[error("{0}")]
    Connection(String),
    /// The KME answered with an error status.
    #[error("{path}: HTTP {status}: {body}")]
    Status {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The answer was not the JSON the specification describes.
    #[error("{path}: unexpected answer: {detail}")]
    Answer {
        /// Request path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

/// One connection from an SAE to its KME.
pub struct SaeClient {
    sender: Sender,
}

fn conn_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Connection(e.to_string())
}

impl SaeClient {
    /// Connects to the KME at `addr` with the SAE's TLS identity `tls`
    /// ([`crate::etsi::client_tls`]); the KME's certificate must name `server_name`.
    pub async fn connect(
        addr: std::net::SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, ClientError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(conn_err)?;
        tcp.set_nodelay(true).map_err(conn_err)?;
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(conn_err)?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(conn_err)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(conn_err)?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(conn_err)?;
        self.sender.ready().await.map_err(conn_err)?;
        let resp = self.sender.send_request(req).await.map_err(conn_err)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(conn_err)?
            .to_bytes();
        if status != 200 {
            return Err(ClientError::Status {
                path: path.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Answer {
            path: path.to_string(),
            detail: e.to_string(),
        })
    }

    /// `POST path` with a JSON body; the JSON answer.
    pub async fn post_json(
        &mut self,
        path: &str,
        body: String,
    ) -> Result<serde_json::Value, ClientError> {
        self.call("POST", path, Some(body)).await
    }

    /// `GET /api/v1/keys/{slave}/status`.
    pub async fn status(&mut self, slave: &str) -> Result<serde_json::Value, ClientError> {
        self.call("GET", &format!("/api/v1/keys/{slave}/status"), None)
            .await
    }

    /// `POST /api/v1/keys/{slave}/enc_keys` for `number` keys of `size_bits`.
    pub async fn enc_keys(
        &mut self,
        slave: &str,
        number: u32,
        size_bits: u32,
    ) -> Result<Vec<Key>, ClientError> {
        let path = format!("/api/v1/keys/{slave}/enc_keys");
        let body = format!(r#"{{"number":{number},"size":{size_bits}}}"#);
        let v = self.call("POST", &path, Some(body)).await?;
        keys_in(&path, &v)
    }

    /// `POST /api/v1/keys/{master}/dec_keys` for the keys `ids`.
    pub async fn dec_keys(&mut self, master: &str, ids: &[&str]) -> Result<Vec<Key>, ClientError> {
        let path = format!("/api/v1/keys/{master}/dec_keys");
        let list: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({ "key_ID": id }))
            .collect();
        let body = serde_json::json!({ "key_IDs": list }).to_string();
        let v = self.call("POST", &path, Some(body)).await?;
        keys_in(&path, &v)
    }
}

/// The keys of a key container (`{"keys": [{"key_ID", "key"}]}`).
fn keys_in(path: &str, v: &serde_json::Value) -> Result<Vec<Key>, ClientError> {
    let bad = |detail: &str| ClientError::Answer {
        path: path.to_string(),
        detail: detail.to_string(),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    v["keys"]
        .as_array()
        .ok_or_else(|| bad("no keys array"))?
        .iter()
        .map(|k| {
            let id = k["key_ID"]
                .as_str()
                .ok_or_else(|| bad("a key without key_ID"))?;
            let key = k["key"].as_str().ok_or_else(|| bad("a key without key"))?;
            let bytes = b64
                .decode(key)
                .map_err(|_| bad("a key that is not base64"))?;
            Ok(Key {
                id: id.to_string(),
                bytes,
            })
        })
        .collect()
}
