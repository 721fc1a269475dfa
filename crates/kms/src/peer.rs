//! The link between the two KMEs of a QKD link across processes: a [`PeerLink`] that
//! posts assignments to the peer's [`KME_ASSIGNMENTS`] endpoint over HTTPS with mutual
//! TLS, the KME authenticating with a client certificate that names its KME ID.
//!
//! The blocking calls run on the runtime the link was built with (the KME makes them from
//! blocking threads); `send_assignments_async` runs in the caller's task, on the KME's
//! request path. Connections are kept alive and reused, one per concurrent sender; a
//! failed call drops its connection. Every call has a deadline.

use crate::client::{ClientError, SaeClient};
use crate::etsi::{PeerLink, KME_ASSIGNMENTS};
use crate::hops::{RelayHop, KME_RELAY, MAX_HOPS};
use crate::Assignment;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a peer KME listens.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    /// Its address.
    pub addr: SocketAddr,
    /// The DNS name its server certificate carries.
    pub server_name: String,
}

/// Assignments over HTTPS to the peer KMEs.
pub struct HttpPeerLink {
    runtime: tokio::runtime::Handle,
    conns: Arc<Conns>,
    timeout: Duration,
}

/// The peers and the kept-alive connections to them.
struct Conns {
    tls: Arc<rustls::ClientConfig>,
    peers: HashMap<String, PeerAddr>,
    idle: Mutex<HashMap<String, Vec<SaeClient>>>,
}

impl HttpPeerLink {
    /// A link to `peers` (KME ID → address), authenticating with `tls` (this KME's client
    /// identity, [`crate::etsi::client_tls`]), running its I/O on `runtime`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        tls: Arc<rustls::ClientConfig>,
        peers: HashMap<String, PeerAddr>,
    ) -> Self {
        Self {
            runtime,
            conns: Arc::new(Conns {
                tls,
                peers,
                idle: Mutex::new(HashMap::new()),
            }),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the deadline of one delivery (connection included); 5 s by default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl PeerLink for HttpPeerLink {
    fn send_assignments(&self, peer_kme: &str, run: &[Assignment]) -> Result<(), String> {
        let body =
            serde_json::to_string(run).map_err(|e| format!("assignments to {peer_kme}: {e}"))?;
        self.post(peer_kme, KME_ASSIGNMENTS, body, self.timeout)
    }

    fn send_assignments_async<'a>(
        &'a self,
        peer_kme: &'a str,
        run: Vec<Assignment>,
    ) -> crate::etsi::PeerFuture<'a> {
        // On the link's runtime, whatever executor polls the answer (the KME's blocking
        // callers poll it from plain threads).
        let (conns, peer, timeout) = (Arc::clone(&self.conns), peer_kme.to_string(), self.timeout);
        let sent = self.runtime.spawn(async move {
            let body =
                serde_json::to_string(&run).map_err(|e| format!("assignments to {peer}: {e}"))?;
            conns.post(&peer, KME_ASSIGNMENTS, body, timeout).await
        });
        Box::pin(async move {
            sent.await
                .map_err(|e| format!("assignments to {peer_kme}: {e}"))?
        })
    }

    fn send_routes(
        &self,
        peer_kme: &str,
        advert: &crate::routing::RouteAdvert,
    ) -> Result<(), String> {
        let body =
            serde_json::to_string(advert).map_err(|e| format!("routes to {peer_kme}: {e}"))?;
        self.post(peer_kme, crate::routing::KME_ROUTES, body, self.timeout)
    }

    fn send_relay(&self, peer_kme: &str, hop: &RelayHop) -> Result<(), String> {
        let body = serde_json::to_string(hop).map_err(|e| format!("relay to {peer_kme}: {e}"))?;
        // The answer waits for every hop downstream.
        let deadline = self.timeout * (MAX_HOPS as u32).min(4);
        self.post(peer_kme, KME_RELAY, body, deadline)
    }
}

impl HttpPeerLink {
    /// Posts `body` to `path` at `peer_kme` and waits for a 200 (blocking the thread).
    fn post(
        &self,
        peer_kme: &str,
        path: &'static str,
        body: String,
        timeout: Duration,
    ) -> Result<(), String> {
        self.runtime
            .block_on(self.conns.post(peer_kme, path, body, timeout))
    }
}

impl Conns {
    /// Posts `body` to `path` at `peer_kme` and waits for a 200, on a kept-alive
    /// connection when one is idle.
    async fn post(
        &self,
        peer_kme: &str,
        path: &'static str,
        body: String,
        timeout: Duration,
    ) -> Result<(), String> {
        let Some(to) = self.peers.get(peer_kme) else {
            return Err(format!("no address for peer KME {peer_kme}"));
        };
        let reuse = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(peer_kme)
            .and_then(Vec::pop);
        let tls = Arc::clone(&self.tls);
        let result = tokio::time::timeout(timeout, async move {
            // A kept-alive connection may have died with a restarted peer: one retry on a
            // fresh connection (the peer ignores what it has already applied).
            if let Some(mut conn) = reuse {
                match conn.post_json(path, body.clone()).await {
                    Ok(_) => return Ok(conn),
                    Err(ClientError::Connection(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let mut conn = SaeClient::connect(to.addr, tls, &to.server_name).await?;
            conn.post_json(path, body).await?;
            Ok::<_, ClientError>(conn)
        })
        .await;
        match result {
            Ok(Ok(conn)) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(peer_kme.to_string())
                    .or_default()
                    .push(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("peer KME {peer_kme} at {}: {e}", to.addr)),
            Err(_) => Err(format!(
                "peer KME {peer_kme} at {}: no answer within {:?}",
                to.addr, timeout
            )),
        }
    }
}
