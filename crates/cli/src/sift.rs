//! `qkdnet sift alice|bob`: the two ends of a time–energy BBM92 link sift their own
//! recorded detections as two processes, over TCP, without either recording leaving its
//! node.
//!
//! Bob reads his recording in batches of `--batch-s` seconds of his clock and announces
//! each (`qkdnet_link::sift`: test-basis outputs in clear, key-basis times folded so no
//! key bit travels), authenticated with pads of the pre-shared key. Alice synchronises on
//! the announcements alone: until her clock model is found (`qkdnet_link::sync::acquire`,
//! ±1 s offset, ±1 ppm) she answers batches with no key; from then on she matches each
//! batch against her detections whose predicted partners fall in it, follows the drift
//! with the tracker, and replies. Bob ends the stream with an authenticated `Done` naming
//! the key bits he holds; Alice checks she holds as many. Each end writes its sifted key
//! bits (MSB-first, the `qkdnet distill` input format; the length rounded down to whole
//! bytes at both ends) through a temporary file, only when the whole stream has been
//! sifted and ended: a dropped connection or a refused message writes nothing.

use crate::distill::{read_bits, write_atomic};
use crate::CliError;
use clap::{Args, ValueEnum};
use qkdnet_core::frontend::Frontend;
use qkdnet_core::timetag::TimeTag;
use qkdnet_core::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_link::replay::FileFrontend;
use qkdnet_link::sift::{
    announced_tags, end_stream, match_announcement, receive_from_bob, sift_bob, FromBob, SiftConfig,
};
use qkdnet_link::sync::{acquire, SyncConfig, Tracker};
use qkdnet_link::{DriveError, TcpTransport, TransportError};
use qkdnet_wire::SiftReply;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which end runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Listens, holds the clock model, matches and replies.
    Alice,
    /// Connects and announces.
    Bob,
}

/// Flags of `qkdnet sift`.
#[derive(Args, Debug)]
pub struct SiftArgs {
    /// Which end runs here.
    pub role: Role,
    /// This end's recording (qkdnet `.qtt` or PicoQuant PTU T2): key arm on channel 0,
    /// the analyser's outputs on channels 1 and 2.
    #[arg(long)]
    pub records: PathBuf,
    /// Alice: address to listen on (host:port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Bob: Alice's address (host:port); retried for 30 s.
    #[arg(long)]
    pub connect: Option<String>,
    /// Pre-shared authentication key file (packed bits, the same at both ends): two 64-bit
    /// pads per batch after the 128-bit hash key.
    #[arg(long)]
    pub psk: PathBuf,
    /// Where to write this end's sifted key bits.
    #[arg(long)]
    pub out: PathBuf,
    /// Seconds of Bob's clock per announcement.
    #[arg(long, default_value_t = 2.0)]
    pub batch_s: f64,
    /// Sift only the first this many seconds of the recording (default: all).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Coincidence window (full width), ps.
    #[arg(long, default_value_t = 120.0)]
    pub window_ps: f64,
    /// Key-basis time bin, ps.
    #[arg(long, default_value_t = 10_000.0)]
    pub z_bin_ps: f64,
    /// Key detections this close to a bin edge are discarded, ps.
    #[arg(long, default_value_t = 0.0)]
    pub guard_ps: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What one end ends with.
struct Totals {
    batches: u64,
    key: Bits,
    test_coincidences: u64,
    test_errors: u64,
    mixed: u64,
    guarded: u64,
    key_off_peak: u64,
    /// Alice only: the batch at which the clock model was (last) found.
    locked_at: Option<u64>,
    /// Alice only: times the lock was lost and acquisition started again.
    relocks: u64,
    announced: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            batches: 0,
            key: Bits::zeros(0),
            test_coincidences: 0,
            test_errors: 0,
            mixed: 0,
            guarded: 0,
            key_off_peak: 0,
            locked_at: None,
            relocks: 0,
            announced: 0,
        }
    }
}

impl Totals {
    fn add(&mut self, key: &Bits, r: &SiftReply) {
        self.key.append_range(key, 0, key.len());
        self.test_coincidences += r.test_coincidences;
        self.test_errors += r.test_errors;
        self.mixed += r.mixed;
        self.guarded += r.guarded;
        self.key_off_peak += r.key_off_peak;
    }
}

/// Runs `qkdnet sift`.
pub fn run(a: &SiftArgs) -> Result<(), CliError> {
    if !(a.batch_s.is_finite() && (0.01..=3600.0).contains(&a.batch_s)) {
        return Err(CliError::input(format!(
            "--batch-s: {} is outside 0.01..=3600",
            a.batch_s
        )));
    }
    if let Some(s) = a.seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(CliError::input(format!("--seconds: {s} is not positive")));
        }
    }
    for (flag, v, lo) in [
        ("--window-ps", a.window_ps, 1.0),
        ("--z-bin-ps", a.z_bin_ps, 1.0),
        ("--guard-ps", a.guard_ps, 0.0),
    ] {
        if !(v.is_finite() && v >= lo) {
            return Err(CliError::input(format!("{flag}: {v} is out of range")));
        }
    }
    if a.window_ps >= a.z_bin_ps {
        return Err(CliError::input(format!(
            "--window-ps {} must be shorter than --z-bin-ps {} (a folded time's two candidates would both fit one window)",
            a.window_ps, a.z_bin_ps
        )));
    }
    let cfg = SiftConfig {
        window_ps: a.window_ps,
        z_bin_ps: a.z_bin_ps,
        guard_ps: a.guard_ps,
        ..SiftConfig::default()
    };
    let addr = match a.role {
        Role::Bob => a
            .connect
            .as_deref()
            .ok_or_else(|| CliError::input("bob needs --connect HOST:PORT"))?,
        Role::Alice => a
            .listen
            .as_deref()
            .ok_or_else(|| CliError::input("alice needs --listen HOST:PORT"))?,
    };
    let psk = read_bits(&a.psk, None)?;
    let mut auth = AuthKeys::from_preshared(psk)
        .map_err(|e| CliError::input(format!("--psk {}: {e}", a.psk.display())))?;
    let mut records = FileFrontend::open_path(&a.records)
        .map_err(|e| CliError::input(format!("--records: {e}")))?;
    let batch_ps = (a.batch_s * 1e12).round() as i64;
    let end_ps = a.seconds.map(|s| (s * 1e12).round() as i64);
    let totals = match a.role {
        Role::Bob => bob(addr, &mut records, &mut auth, &cfg, batch_ps, end_ps)?,
        Role::Alice => alice(addr, &mut records, &mut auth, &cfg, batch_ps)?,
    };
    // Both ends keep whole bytes of the same key length.
    let n = totals.key.len() / 8 * 8;
    let bytes = totals.key.slice(0, n).to_msb_bytes();
    write_atomic(&a.out, &bytes)?;
    let qber_x = if totals.test_coincidences == 0 {
        None
    } else {
        Some(totals.test_errors as f64 / totals.test_coincidences as f64)
    };
    let role = match a.role {
        Role::Alice => "alice",
        Role::Bob => "bob",
    };
    if a.json {
        let v = serde_json::json!({
            "role": role,
            "batches": totals.batches,
            "announced_detections": totals.announced,
            "locked_at_batch": totals.locked_at,
            "lock_losses": totals.relocks,
            "key_bits": n,
            "test_coincidences": totals.test_coincidences,
            "test_errors": totals.test_errors,
            "qber_x": qber_x,
            "mixed": totals.mixed,
            "guarded": totals.guarded,
            "key_off_peak": totals.key_off_peak,
            "auth_bits_consumed": auth.consumed_bits(),
            "out": a.out.display().to_string(),
        });
        println!("{v:#}");
    } else {
        println!(
            "{role}: {} batches, {n} key bits -> {}; test basis {} coincidences, QBER_X {}; {} off-peak key coincidences",
            totals.batches,
            a.out.display(),
            totals.test_coincidences,
            qber_x.map_or("n/a".into(), |q| format!("{:.2} %", 100.0 * q)),
            totals.key_off_peak
        );
    }
    Ok(())
}

fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError::runtime(e.to_string())
}

fn bob(
    addr: &str,
    records: &mut dyn Frontend,
    auth: &mut AuthKeys,
    cfg: &SiftConfig,
    batch_ps: i64,
    end_ps: Option<i64>,
) -> Result<Totals, CliError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(runtime(format!("--connect {addr}: {e}"))),
        }
    };
    let mut t = TcpTransport::new(stream, 1 << 30).map_err(runtime)?;
    let mut totals = Totals::default();
    let bar = spinner();
    let mut k = 0i64;
    loop {
        let until = (k + 1) * batch_ps;
        let until = end_ps.map_or(until, |e| until.min(e));
        let Some(tags) = records.records_until(until).map_err(runtime)? else {
            break;
        };
        let x = sift_bob(&mut t, auth, k as u64, &tags, cfg).map_err(runtime)?;
        totals.batches += 1;
        totals.announced += tags.len() as u64;
        totals.add(&x.key, &x.reply);
        bar.set_message(format!("batch {k}: {} key bits", totals.key.len()));
        bar.tick();
        k += 1;
        if end_ps.is_some_and(|e| until >= e) {
            break;
        }
    }
    end_stream(&mut t, auth, k as u64, totals.key.len() as u64).map_err(runtime)?;
    bar.finish_and_clear();
    Ok(totals)
}

fn alice(
    addr: &str,
    records: &mut dyn Frontend,
    auth: &mut AuthKeys,
    cfg: &SiftConfig,
    batch_ps: i64,
) -> Result<Totals, CliError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| runtime(format!("--listen {addr}: {e}")))?;
    let (stream, _) = listener
        .accept()
        .map_err(|e| runtime(format!("--listen {addr}: {e}")))?;
    let mut t = TcpTransport::new(stream, 1 << 30).map_err(runtime)?;
    let sync = SyncConfig::default();
    // Her detections read so far and not yet sifted, and Bob's announced stream kept
    // until the model is found.
    let mut mine: Vec<TimeTag> = Vec::new();
    let mut read_to = 0i64;
    let mut exhausted = false;
    let mut seen: Vec<TimeTag> = Vec::new();
    let mut tracker: Option<Tracker> = None;
    let mut relock = false;
    let mut totals = Totals::default();
    let bar = spinner();
    for k in 0u64.. {
        let ann = match receive_from_bob(&mut t, auth, k) {
            Ok(FromBob::Batch(a)) => a,
            Ok(FromBob::End { key_bits }) => {
                if key_bits != totals.key.len() as u64 {
                    return Err(runtime(format!(
                        "Bob ended the stream holding {key_bits} key bits, Alice holds {}: nothing written",
                        totals.key.len()
                    )));
                }
                break;
            }
            Err(DriveError::Transport(TransportError::Closed)) => {
                return Err(runtime(format!(
                    "Bob closed the connection after {} batches without ending the stream: nothing written",
                    totals.batches
                )))
            }
            Err(e) => return Err(runtime(e)),
        };
        totals.batches += 1;
        totals.announced += ann.events.len() as u64;
        let (lo, hi) = (k as i64 * batch_ps, (k as i64 + 1) * batch_ps);
        let bob_tags = announced_tags(&ann.events, cfg);
        // Read her records past where this batch's partners can be: Bob's batch end plus
        // the largest offset searched.
        let horizon = match &tracker {
            Some(tr) => inverse(&tr.model(), hi) + sync.fine_window_ps,
            None => hi + sync.max_offset_ps,
        };
        while !exhausted && read_to < horizon {
            read_to = horizon;
            match records.records_until(read_to).map_err(runtime)? {
                Some(v) => mine.extend_from_slice(&v),
                None => exhausted = true,
            }
        }
        if tracker.is_none() {
            seen.extend_from_slice(&bob_tags);
            if let Ok(acq) = acquire(&mine, &seen, &sync) {
                tracker = Some(Tracker::new(&acq, sync));
                totals.locked_at = Some(k);
                seen = Vec::new();
            }
        }
        let reply = match &mut tracker {
            None => SiftReply::default(),
            Some(tr) => {
                // Her detections whose partners would fall in Bob's batch.
                let model = tr.model();
                let from = mine.partition_point(|a| model.predict(a.time_ps) < lo as f64);
                let to = mine.partition_point(|a| model.predict(a.time_ps) < hi as f64);
                let (key, reply) = match_announcement(&mine[from..to], &ann.events, &model, cfg);
                totals.add(&key, &reply);
                // The batch on Alice's clock; a batch without light counts as a miss.
                let (s, e) = (inverse(&model, lo), inverse(&model, hi));
                let lost = !tr.update(&mine[from..to], &bob_tags, s, e).locked;
                mine.drain(..to);
                if lost {
                    // The peak has been missing for the tracker's allowed misses (a
                    // detector outage, a fibre cut): acquire again from the next batch.
                    totals.relocks += 1;
                    relock = true;
                }
                reply
            }
        };
        ann.reply(&mut t, auth, &reply).map_err(runtime)?;
        if std::mem::take(&mut relock) {
            tracker = None;
        }
        bar.set_message(format!(
            "batch {k}: {}, {} key bits",
            if tracker.is_some() {
                "locked"
            } else {
                "acquiring"
            },
            totals.key.len()
        ));
        bar.tick();
    }
    bar.finish_and_clear();
    Ok(totals)
}

/// Progress on the terminal (hidden when stderr is not one).
fn spinner() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

/// Alice's time whose partner the model puts at Bob's `t_bob`.
fn inverse(m: &qkdnet_link::sync::ClockModel, t_bob: i64) -> i64 {
    // predict(t) = t + offset + rate (t − ref): solve for t.
    let t = (t_bob as f64 - m.offset_ps + m.rate * m.reference_ps as f64) / (1.0 + m.rate);
    t.round() as i64
}
