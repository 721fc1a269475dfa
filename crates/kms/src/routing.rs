//! Route discovery between KMEs: a distance-vector protocol whose metric is the key
//! material a path can carry.
//!
//! Every few seconds each KME tells each neighbour, for every KME it can reach, the
//! number of hops and the path's *bottleneck*: the least key material (bytes available to
//! cut) on any link of its best path (`POST /api/v1/kme/routes`, authenticated like the
//! assignments: a neighbour's client certificate). A KME combines what its neighbours
//! said with the stock of its own link to each of them: through neighbour N, destination
//! D is worth `min(stock(me → N), bottleneck(N → D))`. A relayed key then goes, at every
//! hop, to the neighbour with the largest such bottleneck (fewer hops break ties), so
//! keys flow along paths that can carry them and move off links that run dry.
//!
//! Loops: split horizon (a route learnt from N is not advertised back to N), the relay's
//! list of visited KMEs, and [`crate::hops::MAX_HOPS`]. Staleness: an advertisement older
//! than [`ROUTE_TTL_S`] is ignored, so a KME that goes down drops out of its neighbours'
//! tables. Configured routes (`[routes]`, [`crate::etsi::KmeConfig::routes`]) take
//! precedence for the destinations they name: an operator's choice stays in force.

use crate::etsi::{error, Kme, Response};
use crate::hops::MAX_HOPS;
use crate::lane_for;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;

/// The KME-to-KME endpoint that carries route advertisements.
pub const KME_ROUTES: &str = "/api/v1/kme/routes";

/// How often `qkdnet kme serve` advertises its routes, seconds.
pub const ADVERTISE_EVERY_S: u64 = 2;

/// Age after which a neighbour's advertisement is ignored, seconds.
pub const ROUTE_TTL_S: u64 = 10;

/// One destination in an advertisement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// The KME reachable.
    pub destination: String,
    /// Links on the advertiser's best path to it.
    pub hops: u32,
    /// Least key material (bytes) on any link of that path.
    pub bottleneck_bytes: u64,
}

/// What a KME tells a neighbour it can reach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAdvert {
    /// The destinations, at most one entry each.
    pub routes: Vec<RouteEntry>,
}

/// One neighbour's last advertisement: when it arrived (s) and, per destination, its
/// hops and bottleneck (bytes).
type Heard = (u64, HashMap<String, (u32, u64)>);

/// The advertisements received, per neighbour.
#[derive(Default)]
pub struct RoutingTable {
    learnt: Mutex<HashMap<String, Heard>>,
}

/// A way to a destination through one neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Via {
    hops: u32,
    bottleneck: u64,
}

impl Via {
    /// Larger bottleneck first, then fewer hops.
    fn better_than(&self, other: &Via) -> bool {
        (self.bottleneck, std::cmp::Reverse(self.hops))
            > (other.bottleneck, std::cmp::Reverse(other.hops))
    }
}

impl Kme {
    /// Key material this KME can cut towards its neighbour `n`, bytes (0 if unknown).
    fn stock_to(&self, n: &str) -> u64 {
        self.store()
            .available_bytes(n, lane_for(&self.config().kme_id, n))
            .unwrap_or(0)
    }

    /// Every destination reachable through neighbour `n` according to its fresh
    /// advertisement, each with this KME's view of the path (own link included).
    fn learnt_via(&self, n: &str) -> HashMap<String, Via> {
        let now = self.now();
        let table = self
            .routing()
            .learnt
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some((at, routes)) = table.get(n) else {
            return HashMap::new();
        };
        if now.saturating_sub(*at) > ROUTE_TTL_S {
            return HashMap::new();
        }
        let link = self.stock_to(n);
        routes
            .iter()
            .filter(|(d, _)| **d != self.config().kme_id)
            .map(|(d, &(hops, b))| {
                (
                    d.clone(),
                    Via {
                        hops: hops.saturating_add(1),
                        bottleneck: b.min(link),
                    },
                )
            })
            .collect()
    }

    /// The neighbours of this KME (configured links, or the KMEs of its SAEs).
    fn neighbours(&self) -> Vec<String> {
        let c = self.config();
        let mut v: Vec<String> = if c.links.is_empty() {
            c.sae_kme.values().cloned().collect()
        } else {
            c.links.clone()
        };
        v.retain(|k| *k != c.kme_id);
        v.sort();
        v.dedup();
        v
    }

    /// The learnt next hop for `destination`: among neighbours not in `visited`, the one
    /// whose path has the largest bottleneck (> 0), fewer hops breaking ties.
    pub fn learnt_next_hop(&self, destination: &str, visited: &[String]) -> Option<String> {
        let mut best: Option<(Via, String)> = None;
        for n in self.neighbours() {
            if visited.contains(&n) {
                continue;
            }
            if let Some(v) = self.learnt_via(&n).get(destination) {
                if v.bottleneck > 0
                    && (v.hops as usize) < MAX_HOPS
                    && best.as_ref().is_none_or(|(b, _)| v.better_than(b))
                {
                    best = Some((*v, n));
                }
            }
        }
        best.map(|(_, n)| n)
    }

    /// Whether this KME knows a way (configured or learnt) to the non-adjacent
    /// `destination`.
    pub fn has_route(&self, destination: &str) -> bool {
        self.config().routes.contains_key(destination)
            || self
                .learnt_next_hop(destination, std::slice::from_ref(&self.config().kme_id))
                .is_some()
    }

    /// The advertisement for neighbour `to`: each neighbour as one hop with this KME's
    /// stock towards it, and the best learnt path to every other KME, leaving out the
    /// routes learnt from `to` itself (split horizon).
    pub fn route_advert(&self, to: &str) -> RouteAdvert {
        let me = &self.config().kme_id;
        let mut best: HashMap<String, Via> = HashMap::new();
        let mut offer = |d: String, v: Via| {
            if d == *to || d == *me || v.hops as usize >= MAX_HOPS {
                return;
            }
            match best.get(&d) {
                Some(b) if !v.better_than(b) => {}
                _ => {
                    best.insert(d, v);
                }
            }
        };
        for n in self.neighbours() {
            offer(
                n.clone(),
                Via {
                    hops: 1,
                    bottleneck: self.stock_to(&n),
                },
            );
            if n != to {
                for (d, v) in self.learnt_via(&n) {
                    offer(d, v);
                }
            }
        }
        let mut routes: Vec<RouteEntry> = best
            .into_iter()
            .map(|(destination, v)| RouteEntry {
                destination,
                hops: v.hops,
                bottleneck_bytes: v.bottleneck,
            })
            .collect();
        routes.sort_by(|a, b| a.destination.cmp(&b.destination));
        RouteAdvert { routes }
    }

    /// Sends this KME's advertisement to every neighbour; returns the neighbours that
    /// could not be reached (their errors).
    pub fn advertise_routes(&self) -> Vec<String> {
        self.neighbours()
            .into_iter()
            .filter_map(|n| self.peers().send_routes(&n, &self.route_advert(&n)).err())
            .collect()
    }

    /// `POST /api/v1/kme/routes` from a neighbour KME: replaces what it last said.
    pub(crate) fn peer_routes(&self, from: &str, advert: RouteAdvert) -> Response {
        let mut routes = HashMap::with_capacity(advert.routes.len());
        for r in advert.routes {
            if r.destination.is_empty() || r.hops == 0 || r.hops as usize > MAX_HOPS {
                return error(
                    400,
                    "bad route advertisement",
                    Some(json!([{ "destination": r.destination, "hops": r.hops }])),
                );
            }
            if routes
                .insert(r.destination.clone(), (r.hops, r.bottleneck_bytes))
                .is_some()
            {
                return error(
                    400,
                    "bad route advertisement",
                    Some(json!([{ "duplicate destination": r.destination }])),
                );
            }
        }
        let n = routes.len();
        self.routing()
            .learnt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(from.to_string(), (self.now(), routes));
        Response {
            status: 200,
            body: Some(json!({ "routes": n })),
            text: None,
        }
    }
}
