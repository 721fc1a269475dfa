//! The live dashboard: a web page (`GET /`), its data (`GET /api/state`) and the links'
//! Prometheus metrics (`GET /metrics`: each link's QBERs, key rate, sync offset and windows
//! in the text exposition format), served over
//! plain HTTP on a loopback address by `qkdnet node` (`[node] dashboard = "…"`) and by
//! `qkdnet run --serve ADDR`. The page polls the data once a second and redraws, as inline
//! SVG, the key rate, the QBERs, the sync offset and the key buffers of each link, and the
//! latest events. It holds statistics only: no key material ever reaches it.

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Points kept per series (older ones thinned by half when full).
const MAX_POINTS: usize = 1500;
/// Events kept.
const MAX_EVENTS: usize = 300;

/// One point of a link's series.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    /// Virtual time, s.
    pub t_s: f64,
    /// Secret key rate, bit/s (final key per second of the latest block; NaN before one).
    pub key_rate_bps: f64,
    /// QBER of the key basis over the point's windows (NaN without coincidences).
    pub qber_z: f64,
    /// QBER of the test basis.
    pub qber_x: f64,
    /// Offset the sync tracks, ns.
    pub sync_offset_ns: f64,
}

/// A key buffer's level at a time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Level {
    /// Virtual time, s.
    pub t_s: f64,
    /// Key bits available.
    pub bits: f64,
}

#[derive(Debug, Default, Serialize)]
struct State {
    title: String,
    t_s: f64,
    links: BTreeMap<String, Vec<Point>>,
    buffers: BTreeMap<String, Vec<Level>>,
    events: VecDeque<(f64, String, String)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabel {
    link: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BufferLabel {
    buffer: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The links' Prometheus metrics.
struct Metrics {
    registry: Registry,
    qber_z: Family<LinkLabel, FloatGauge>,
    qber_x: Family<LinkLabel, FloatGauge>,
    key_rate: Family<LinkLabel, FloatGauge>,
    sync_offset: Family<LinkLabel, FloatGauge>,
    points: Family<LinkLabel, Counter>,
    buffers: Family<BufferLabel, FloatGauge>,
    events: Family<LinkLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("qkdnet_link");
        let qber_z = Family::<LinkLabel, FloatGauge>::default();
        let qber_x = Family::<LinkLabel, FloatGauge>::default();
        let key_rate = Family::<LinkLabel, FloatGauge>::default();
        let sync_offset = Family::<LinkLabel, FloatGauge>::default();
        let points = Family::<LinkLabel, Counter>::default();
        let buffers = Family::<BufferLabel, FloatGauge>::default();
        let events = Family::<LinkLabel, Counter>::default();
        registry.register(
            "qber_z",
            "Key-basis QBER over the latest 10 s of virtual time",
            qber_z.clone(),
        );
        registry.register(
            "qber_x",
            "Test-basis QBER over the latest 10 s of virtual time",
            qber_x.clone(),
        );
        registry.register(
            "key_rate_bps",
            "Secret key rate of the latest distilled block, bit/s",
            key_rate.clone(),
        );
        registry.register(
            "sync_offset_ns",
            "Offset of Bob's tagger against Alice's that the sync tracks, ns",
            sync_offset.clone(),
        );
        registry.register(
            "points",
            "Statistics points recorded (one per 10 s of virtual time)",
            points.clone(),
        );
        registry.register(
            "key_buffer_bits",
            "Key bits available (node: per neighbour; run: stored per node)",
            buffers.clone(),
        );
        registry.register(
            "events",
            "Supervisor transitions and block outcomes",
            events.clone(),
        );
        Self {
            registry,
            qber_z,
            qber_x,
            key_rate,
            sync_offset,
            points,
            buffers,
            events,
        }
    }
}

/// The dashboard's shared state.
#[derive(Debug, Default)]
pub struct Dashboard {
    state: Mutex<State>,
    metrics: Metrics,
}

fn thin<T>(v: &mut Vec<T>) {
    if v.len() >= MAX_POINTS {
        let mut i = 0;
        v.retain(|_| {
            i += 1;
            i % 2 == 0
        });
    }
}

impl Dashboard {
    /// A dashboard titled `title`.
    pub fn new(title: &str) -> Arc<Self> {
        let d = Self::default();
        d.lock().title = title.to_string();
        Arc::new(d)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a point to `link`'s series.
    pub fn point(&self, link: &str, p: Point) {
        let l = LinkLabel {
            link: link.to_string(),
        };
        let m = &self.metrics;
        for (g, v) in [
            (&m.qber_z, p.qber_z),
            (&m.qber_x, p.qber_x),
            (&m.key_rate, p.key_rate_bps),
            (&m.sync_offset, p.sync_offset_ns),
        ] {
            if v.is_finite() {
                g.get_or_create(&l).set(v);
            }
        }
        m.points.get_or_create(&l).inc();
        let mut s = self.lock();
        s.t_s = s.t_s.max(p.t_s);
        let v = s.links.entry(link.to_string()).or_default();
        thin(v);
        v.push(p);
    }

    /// Records a key buffer's level (`name`: e.g. `nice ↔ inria`).
    pub fn buffer(&self, name: &str, t_s: f64, bits: f64) {
        self.metrics
            .buffers
            .get_or_create(&BufferLabel {
                buffer: name.to_string(),
            })
            .set(bits);
        let mut s = self.lock();
        let v = s.buffers.entry(name.to_string()).or_default();
        thin(v);
        v.push(Level { t_s, bits });
    }

    /// Records an event.
    pub fn event(&self, t_s: f64, link: &str, what: &str) {
        self.metrics
            .events
            .get_or_create(&LinkLabel {
                link: link.to_string(),
            })
            .inc();
        let mut s = self.lock();
        if s.events.len() >= MAX_EVENTS {
            s.events.pop_front();
        }
        s.events
            .push_back((t_s, link.to_string(), what.to_string()));
    }

    fn prometheus(&self) -> String {
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry) {
            Ok(()) => out,
            Err(_) => String::new(),
        }
    }

    fn json(&self) -> String {
        // NaN is not JSON: serde_json writes null for it.
        serde_json::to_string(&*self.lock()).unwrap_or_else(|_| "{}".into())
    }
}

/// Serves the dashboard on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, dash: Arc<Dashboard>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let dash = Arc::clone(&dash);
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let dash = Arc::clone(&dash);
                    async move {
                        let (status, kind, body) = match (req.method(), req.uri().path()) {
                            (&hyper::Method::GET, "/") => {
                                (200, "text/html; charset=utf-8", PAGE.to_string())
                            }
                            (&hyper::Method::GET, "/api/state") => {
                                (200, "application/json", dash.json())
                            }
                            (&hyper::Method::GET, "/metrics") => (
                                200,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                dash.prometheus(),
                            ),
                            _ => (404, "text/plain", "not found\n".to_string()),
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header(hyper::header::CONTENT_TYPE, kind)
                            .header(hyper::header::CACHE_CONTROL, "no-store")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Binds `addr` and serves the dashboard on a background thread with its own runtime;
/// returns the bound address.
pub fn spawn(addr: &str, dash: Arc<Dashboard>) -> Result<std::net::SocketAddr, String> {
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("dashboard on {addr}: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let local = std_listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(l) = tokio::net::TcpListener::from_std(std_listener) {
                    serve(l, dash).await;
                }
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(local)
}

/// The page: no external resources; charts drawn as SVG from `/api/state` every second.
const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qkdnet dashboard</title>
<link rel="icon" href="data:,">
<script>
"use strict";
// First on the page: record every console error and uncaught exception in the DOM
// (data-console-errors, #console-errors), where tests and people can see them.
(function(){
  const seen=[];
  const note=m=>{seen.push(String(m));const r=document.documentElement;r.dataset.consoleErrors=String(seen.length);
    const el=document.getElementById("console-errors");if(el)el.textContent=seen.join("\n");};
  const orig=console.error.bind(console);
  console.error=(...a)=>{note(a.join(" "));orig(...a);};
  window.addEventListener("error",e=>note(e.message||"error"));
  window.addEventListener("unhandledrejection",e=>note("unhandled rejection: "+e.reason));
  document.documentElement.dataset.consoleErrors="0";
})();
</script>
<style>
body{font-family:sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}
.sub{color:#666;margin-bottom:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.card h2{font-size:14px;margin:0 0 4px}
svg{width:100%;height:220px}
table{border-collapse:collapse;font-size:12px;width:100%}
td{border-bottom:1px solid #eee;padding:2px 6px}
.legend span{margin-right:12px;font-size:12px}
</style></head>
<body data-updates="0" data-changes="0">
<h1 id="title">qkdnet</h1><div class="sub" id="sub">connecting…</div>
<div class="grid">
<div class="card"><h2>Secret key rate (bit/s)</h2><svg id="rate" viewBox="0 0 560 220"></svg><div class="legend" id="rate-l"></div></div>
<div class="card"><h2>QBER (solid: key basis Z, dashed: test basis X)</h2><svg id="qber" viewBox="0 0 560 220"></svg><div class="legend" id="qber-l"></div></div>
<div class="card"><h2>Sync offset tracked: change since the first point (ps)</h2><svg id="sync" viewBox="0 0 560 220"></svg><div class="legend" id="sync-l"></div></div>
<div class="card"><h2>Key buffers (bits available)</h2><svg id="buf" viewBox="0 0 560 220"></svg><div class="legend" id="buf-l"></div></div>
</div>
<div class="card" style="margin-top:12px"><h2>Events</h2><table id="events"></table></div>
<pre id="console-errors" hidden></pre>
<script>
"use strict";
const COLOURS=["#1f6fc8","#d0502a","#2a9d4a","#8a3fb8","#c09a10","#178a8a","#b83f6b","#555"];
let last="";
function fmt(v){if(!isFinite(v))return"–";const a=Math.abs(v);if(a>=1e6)return(v/1e6).toFixed(2)+"M";if(a>=1e3)return(v/1e3).toFixed(1)+"k";if(a>=1)return v.toFixed(1);return v.toPrecision(2);}
function chart(id,series){
  const svg=document.getElementById(id);const W=560,H=220,L=56,R=8,T=8,B=24;
  let xs=[],ys=[];
  for(const s of series)for(const p of s.pts)if(p[1]!==null&&isFinite(p[1])){xs.push(p[0]);ys.push(p[1]);}
  let h="";
  if(xs.length===0){svg.innerHTML='<text x="280" y="110" text-anchor="middle" fill="#999">no data yet</text>';svg.dataset.points="0";return;}
  let x0=Math.min(...xs),x1=Math.max(...xs),y0=Math.min(0,...ys),y1=Math.max(0,...ys);
  if(x1<=x0)x1=x0+1;if(y1<=y0)y1=y0+1;
  const X=x=>L+(x-x0)/(x1-x0)*(W-L-R),Y=y=>H-B-(y-y0)/(y1-y0)*(H-T-B);
  for(let i=0;i<=4;i++){const y=y0+(y1-y0)*i/4;h+=`<line x1="${L}" x2="${W-R}" y1="${Y(y)}" y2="${Y(y)}" stroke="#eee"/><text x="${L-4}" y="${Y(y)+4}" font-size="10" text-anchor="end" fill="#666">${fmt(y)}</text>`;}
  h+=`<text x="${L}" y="${H-6}" font-size="10" fill="#666">${(x0/60).toFixed(1)} min</text><text x="${W-R}" y="${H-6}" font-size="10" text-anchor="end" fill="#666">${(x1/60).toFixed(1)} min (virtual)</text>`;
  let n=0;
  series.forEach((s,i)=>{let d="";let pen=false;for(const p of s.pts){if(p[1]===null||!isFinite(p[1])){pen=false;continue;}d+=(pen?"L":"M")+X(p[0]).toFixed(1)+","+Y(p[1]).toFixed(1);pen=true;n++;}
    h+=`<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="1.6" ${s.dash?'stroke-dasharray="4 3"':""}/>`;});
  svg.innerHTML=h;svg.dataset.points=String(n);
}
function esc(t){return String(t).replace(/[<>&"]/g,c=>({"<":"&lt;",">":"&gt;","&":"&amp;",'"':"&quot;"})[c]);}
function legend(id,names){document.getElementById(id).innerHTML=names.map((n,i)=>`<span style="color:${COLOURS[i%COLOURS.length]}">■ ${esc(n)}</span>`).join("");}
async function tick(){
  try{
    const r=await fetch("/api/state",{cache:"no-store"});
    const s=await r.json();
    const b=document.body;b.dataset.updates=String(+b.dataset.updates+1);
    const txt=JSON.stringify(s);if(txt!==last){if(last!=="")b.dataset.changes=String(+b.dataset.changes+1);last=txt;}
    document.getElementById("title").textContent=s.title;
    document.getElementById("sub").textContent=`virtual time ${(s.t_s/3600).toFixed(2)} h · ${Object.keys(s.links).length} link(s) · updated ${new Date().toLocaleTimeString()}`;
    const names=Object.keys(s.links);
    const col=i=>COLOURS[i%COLOURS.length];
    chart("rate",names.map((n,i)=>({colour:col(i),pts:s.links[n].map(p=>[p.t_s,p.key_rate_bps])})));
    chart("qber",names.flatMap((n,i)=>[{colour:col(i),pts:s.links[n].map(p=>[p.t_s,p.qber_z===null?null:100*p.qber_z])},{colour:col(i),dash:true,pts:s.links[n].map(p=>[p.t_s,p.qber_x===null?null:100*p.qber_x])}]));
    chart("sync",names.map((n,i)=>{const f=s.links[n].find(p=>p.sync_offset_ns!==null);const z=f?f.sync_offset_ns:0;
      return {colour:col(i),pts:s.links[n].map(p=>[p.t_s,p.sync_offset_ns===null?null:1000*(p.sync_offset_ns-z)])};}));
    const bufs=Object.keys(s.buffers);
    chart("buf",bufs.map((n,i)=>({colour:col(i),pts:s.buffers[n].map(p=>[p.t_s,p.bits])})));
    legend("rate-l",names);legend("qber-l",names.map(n=>n+" (%)"));legend("sync-l",names);legend("buf-l",bufs);
    document.getElementById("events").innerHTML=s.events.slice(-25).reverse().map(e=>`<tr><td>${(e[0]/60).toFixed(1)} min</td><td>${esc(e[1])}</td><td>${esc(e[2])}</td></tr>`).join("");
  }catch(e){document.getElementById("sub").textContent="waiting for the server…";}
}
tick();setInterval(tick,1000);
</script></body></html>
"##;
