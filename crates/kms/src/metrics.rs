//! Prometheus metrics of a KME (text exposition format, served at `GET /metrics`).
//!
//! Request counts by endpoint and status, request latency, and the key accounting of
//! every peer read from the store at scrape time (so the numbers are the store's own,
//! durable ones).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

/// A per-peer gauge: name, help text, and how to read it from the accounting.
type Gauge = (&'static str, &'static str, fn(&crate::Accounting) -> u64);

/// The KME's request metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("qkdnet_kme");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "ETSI 014 requests by endpoint and HTTP status",
            requests.clone(),
        );
        // 0.1 ms … ~3 s.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            1e-4, 2.0, 16,
        ));
        registry.register(
            "request_seconds",
            "ETSI 014 request handling time, seconds",
            latency.clone(),
        );
        Self {
            registry,
            requests,
            latency,
        }
    }

    /// Records one request.
    pub fn observe(&self, endpoint: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// The text exposition, followed by the per-peer key accounting `peers` gives
    /// (peer, accounting) as gauges.
    pub fn render(&self, peers: &[(String, crate::Accounting)]) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The registry's text ends with "# EOF", which must stay last: add the gauges first.
        if let Some(i) = out.rfind("# EOF") {
            out.truncate(i);
        }
        let fields: [Gauge; 6] = [
            (
                "produced_bits",
                "Key bits received from distillation",
                |a| a.produced_bits,
            ),
            ("available_bits", "Key bits not yet cut into keys", |a| {
                a.available_bits
            }),
            ("held_bits", "Key bits waiting for named slaves", |a| {
                a.held_bits
            }),
            ("delivered_bits", "Key bits handed out", |a| {
                a.delivered_bits
            }),
            ("expired_bits", "Key bits expired unused", |a| {
                a.expired_bits
            }),
            ("discarded_bits", "Key bits discarded", |a| a.discarded_bits),
        ];
        for (name, help, get) in fields {
            out.push_str(&format!(
                "# HELP qkdnet_kme_{name} {help}.\n# TYPE qkdnet_kme_{name} gauge\n"
            ));
            for (peer, acc) in peers {
                let peer = peer.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!(
                    "qkdnet_kme_{name}{{peer=\"{peer}\"}} {}\n",
                    get(acc)
                ));
            }
        }
        out.push_str("# EOF\n");
        out
    }
}
