//! The embedded key store: SQLite in WAL mode with `synchronous = FULL` (a transaction is
//! on disk when it commits) and `secure_delete = ON` (freed pages are overwritten, so
//! erased key material does not linger in the file).
//!
//! Group commit. One writer thread owns the connection. Callers hand it their
//! operation and wait; the writer takes every operation that is waiting (up to
//! [`MAX_BATCH`]), runs each inside its own savepoint of one `IMMEDIATE` transaction (a
//! failing operation rolls back to its savepoint and leaves the others alone), commits
//! once, and only then answers the callers. So every answer is durable, and concurrent
//! callers share one `fsync` instead of paying one each.

use crate::{Accounting, Assignment, Key, KeyRequest, KeyStore, StoreError};
use qkdnet_core::Bits;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::mpsc;
use zeroize::Zeroizing;

/// Bytes per stored chunk of lane material.
pub const CHUNK_BYTES: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blocks(
    peer TEXT NOT NULL, block_id INTEGER NOT NULL, nbits INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, PRIMARY KEY (peer, block_id));
CREATE TABLE IF NOT EXISTS chunks(
    peer TEXT NOT NULL, lane INTEGER NOT NULL, seq INTEGER NOT NULL,
    block_id INTEGER NOT NULL, expires_at INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (peer, lane, seq));
CREATE TABLE IF NOT EXISTS cursors(
    peer TEXT NOT NULL, lane INTEGER NOT NULL,
    seq INTEGER NOT NULL, offset INTEGER NOT NULL, next_seq INTEGER NOT NULL,
    avail INTEGER NOT NULL DEFAULT 0, serial INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, lane));
CREATE TABLE IF NOT EXISTS issued(
    key_id TEXT PRIMARY KEY, peer TEXT NOT NULL, master_sae TEXT NOT NULL,
    nbits INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held(
    key_id TEXT PRIMARY KEY, peer TEXT NOT NULL, master_sae TEXT NOT NULL,
    data BLOB NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held_slaves(
    key_id TEXT NOT NULL, sae TEXT NOT NULL, fetched INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, sae));
CREATE TABLE IF NOT EXISTS counters(
    peer TEXT PRIMARY KEY, produced INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0, discarded INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS chunks_expiry ON chunks(expires_at);
CREATE INDEX IF NOT EXISTS held_expiry ON held(expires_at);
";

/// Operations waiting in one batch at most (bounds the latency of the first one).
pub const MAX_BATCH: usize = 256;

/// An operation for the writer: runs in the open transaction and returns whether it
/// succeeded (to keep or roll back its savepoint) and the function that delivers its
/// result once the batch's fate (commit error or not) is known.
type Job = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// The SQLite key store.
pub struct SqliteStore {
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer after its last batch.
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A store in memory (tests, simulations that need no durability).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        // journal_mode returns a row; the others return nothing.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;",
        )?;
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("kms-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Invalid(format!("cannot start the store's writer: {e}")))?;
        Ok(Self {
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    fn with_tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel::<Result<T, StoreError>>(1);
        let job: Job = Box::new(move |tx| {
            let r = f(tx);
            let ok = r.is_ok();
            let reply: Reply = Box::new(move |commit_error: Option<&StoreError>| {
                let r = match (commit_error, r) {
                    (Some(e), _) => Err(StoreError::Invalid(format!("commit failed: {e}"))),
                    (None, r) => r,
                };
                let _ = reply_tx.send(r);
            });
            (ok, reply)
        });
        let gone = || StoreError::Invalid("the store's writer has stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), StoreError> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for job in batch.drain(..) {
                // Cached statements: parsing these per operation cost more than the
                // operations themselves.
                tx.prepare_cached("SAVEPOINT op")?.execute([])?;
                let (ok, reply) = job(&tx);
                if !ok {
                    tx.prepare_cached("ROLLBACK TO op")?.execute([])?;
                }
                tx.prepare_cached("RELEASE op")?.execute([])?;
                replies.push(reply);
            }
            tx.commit()?;
            Ok(())
        })();
        let err = outcome.err();
        // Jobs not yet run (a savepoint statement failed) are dropped: their callers see
        // the channel close and get an error.
        for reply in replies {
            reply(err.as_ref());
        }
    }
}

fn bump(
    tx: &rusqlite::Transaction<'_>,
    peer: &str,
    column: &str,
    delta: i64,
) -> Result<(), StoreError> {
    // One upsert. `column` is one of our own constant names, never outside input.
    tx.prepare_cached(&format!(
        "INSERT INTO counters(peer, {column}) VALUES (?1, ?2)
         ON CONFLICT(peer) DO UPDATE SET {column} = {column} + ?2"
    ))?
    .execute(params![peer, delta])?;
    Ok(())
}

/// A lane's state, one row of `cursors`: where the next unread byte is (chunk `seq`, byte
/// `offset`), the number the next stored chunk gets, the unread bytes, and the next cut
/// serial. Read once and written once per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lane {
    seq: u64,
    offset: u64,
    next: u64,
    avail: u64,
    serial: u64,
}

impl Lane {
    fn load(tx: &rusqlite::Transaction<'_>, peer: &str, lane: u8) -> Result<Self, StoreError> {
        Ok(tx
            .prepare_cached(
                "SELECT seq, offset, next_seq, avail, serial FROM cursors WHERE peer = ?1 AND lane = ?2",
            )?
            .query_row(params![peer, lane], |r| {
                Ok(Self {
                    seq: r.get::<_, i64>(0)? as u64,
                    offset: r.get::<_, i64>(1)? as u64,
                    next: r.get::<_, i64>(2)? as u64,
                    avail: r.get::<_, i64>(3)? as u64,
                    serial: r.get::<_, i64>(4)? as u64,
                })
            })
            .optional()?
            .unwrap_or_default())
    }

    fn save(&self, tx: &rusqlite::Transaction<'_>, peer: &str, lane: u8) -> Result<(), StoreError> {
        tx.prepare_cached(
            "INSERT INTO cursors(peer, lane, seq, offset, next_seq, avail, serial)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(peer, lane) DO UPDATE
             SET seq = ?3, offset = ?4, next_seq = ?5, avail = ?6, serial = ?7",
        )?
        .execute(params![
            peer,
            lane,
            self.seq as i64,
            self.offset as i64,
            self.next as i64,
            self.avail as i64,
            self.serial as i64
        ])?;
        Ok(())
    }
}

/// Unread bytes of a lane.
fn available(tx: &rusqlite::Transaction<'_>, peer: &str, lane: u8) -> Result<u64, StoreError> {
    Ok(Lane::load(tx, peer, lane)?.avail)
}

/// Key bytes cut from a lane, with the expiry of the chunk they started in.
type Piece = (Zeroizing<Vec<u8>>, u64);

/// Cuts `sizes` bytes in order from the lane whose state is `st` (advanced here, saved
/// by the caller), deleting chunks as they are used up. Reads only the bytes it takes.
fn cut(
    tx: &rusqlite::Transaction<'_>,
    peer: &str,
    lane: u8,
    st: &mut Lane,
    sizes: &[u32],
) -> Result<Vec<Piece>, StoreError> {
    let want: u64 = sizes.iter().map(|&s| u64::from(s)).sum();
    if want > st.avail {
        return Err(StoreError::Insufficient {
            peer: peer.to_string(),
            lane,
            want,
            have: st.avail,
        });
    }
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut key = Zeroizing::new(Vec::with_capacity(size as usize));
        let mut expiry = u64::MAX;
        while key.len() < size as usize {
            let need = size as usize - key.len();
            // The bytes wanted from the chunk at or after the cursor (a gap means
            // expired chunks: continue at the next chunk's start).
            let row: Option<(i64, i64, Vec<u8>, i64)> = tx
                .prepare_cached(
                    "SELECT seq, LENGTH(data), SUBSTR(data, CASE WHEN seq = ?3 THEN ?4 ELSE 0 END + 1, ?5), expires_at
                     FROM chunks WHERE peer = ?1 AND lane = ?2 AND seq >= ?3 ORDER BY seq LIMIT 1",
                )?
                .query_row(
                    params![peer, lane, st.seq as i64, st.offset as i64, need as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((at, len, data, exp)) = row else {
                return Err(StoreError::Invalid(format!(
                    "peer '{peer}' lane {lane}: material ends at chunk {}",
                    st.seq
                )));
            };
            let data = Zeroizing::new(data);
            if at as u64 != st.seq {
                st.seq = at as u64;
                st.offset = 0;
            }
            expiry = expiry.min(exp as u64);
            key.extend_from_slice(&data);
            st.offset += data.len() as u64;
            if st.offset >= len as u64 {
                tx.prepare_cached("DELETE FROM chunks WHERE peer = ?1 AND lane = ?2 AND seq = ?3")?
                    .execute(params![peer, lane, st.seq as i64])?;
                st.seq += 1;
                st.offset = 0;
            } else if data.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "peer '{peer}' lane {lane}: chunk {} ends before byte {}",
                    st.seq, st.offset
                )));
            }
        }
        out.push((key, expiry));
    }
    st.avail -= want;
    Ok(out)
}

fn expire_tx(tx: &rusqlite::Transaction<'_>, now: u64) -> Result<u64, StoreError> {
    let mut expired_bits = 0u64;
    // Lane material.
    let rows: Vec<(String, u8, i64, i64)> = {
        let mut st =
            tx.prepare_cached("SELECT peer, lane, seq, LENGTH(data) FROM chunks WHERE expires_at <= ?1")?;
        let v = st
            .query_map(params![now as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        v
    };
    // In lane order (the index on expires_at returns them unordered).
    let mut rows = rows;
    rows.sort_unstable();
    for (peer, lane, seq, len) in rows {
        let mut st = Lane::load(tx, &peer, lane)?;
        let unread = if seq as u64 == st.seq {
            len as u64 - st.offset
        } else {
            len as u64
        };
        tx.prepare_cached("DELETE FROM chunks WHERE peer = ?1 AND lane = ?2 AND seq = ?3")?
            .execute(params![peer, lane, seq])?;
        if seq as u64 >= st.seq {
            // The cursor moves past an expired chunk it stood in.
            if seq as u64 == st.seq {
                st.seq += 1;
                st.offset = 0;
            }
            st.avail -= unread;
            st.save(tx, &peer, lane)?;
            bump(tx, &peer, "expired", 8 * unread as i64)?;
            expired_bits += 8 * unread;
        }
    }
    // Keys waiting for slaves.
    let keys: Vec<(String, String, i64)> = {
        let mut st =
            tx.prepare_cached("SELECT key_id, peer, LENGTH(data) FROM held WHERE expires_at <= ?1")?;
        let v = st
            .query_map(params![now as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        v
    };
    for (id, peer, len) in keys {
        tx.prepare_cached("DELETE FROM held WHERE key_id = ?1")?
            .execute(params![id])?;
        tx.prepare_cached("DELETE FROM held_slaves WHERE key_id = ?1")?
            .execute(params![id])?;
        bump(tx, &peer, "held", -8 * len)?;
        bump(tx, &peer, "expired", 8 * len)?;
        expired_bits += 8 * len as u64;
    }
    Ok(expired_bits)
}

fn check_assignment(a: &Assignment) -> Result<(), StoreError> {
    if a.keys.is_empty() || a.keys.iter().any(|(_, s)| *s == 0) {
        return Err(StoreError::Invalid(
            "empty assignment or zero-size key".into(),
        ));
    }
    if a.slave_saes.is_empty() {
        return Err(StoreError::Invalid("assignment names no slave SAE".into()));
    }
    Ok(())
}

/// Cuts one announced assignment (peer side), inside an open transaction.
fn assign_tx(tx: &rusqlite::Transaction<'_>, peer: &str, a: &Assignment) -> Result<(), StoreError> {
    let mut st = Lane::load(tx, peer, a.lane)?;
    if (st.seq, st.offset) != (a.start_seq, a.start_offset) {
        return Err(StoreError::OutOfStep {
            peer: peer.to_string(),
            lane: a.lane,
            got_seq: a.start_seq,
            got_offset: a.start_offset,
            seq: st.seq,
            offset: st.offset,
        });
    }
    if a.serial != st.serial {
        return Err(StoreError::Invalid(format!(
            "peer '{peer}' lane {}: assignment {} arrived, this end expects {}",
            a.lane, a.serial, st.serial
        )));
    }
    let sizes: Vec<u32> = a.keys.iter().map(|(_, s)| *s).collect();
    let pieces = cut(tx, peer, a.lane, &mut st, &sizes)?;
    st.serial += 1;
    st.save(tx, peer, a.lane)?;
    let mut bits = 0i64;
    for ((id, _), (bytes, expiry)) in a.keys.iter().zip(pieces) {
        tx.prepare_cached(
            "INSERT INTO held(key_id, peer, master_sae, data, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, peer, a.master_sae, &bytes[..], expiry.min(i64::MAX as u64) as i64])?;
        for sae in &a.slave_saes {
            tx.prepare_cached("INSERT OR IGNORE INTO held_slaves(key_id, sae) VALUES (?1, ?2)")?
                .execute(params![id, sae])?;
        }
        bits += 8 * bytes.len() as i64;
    }
    bump(tx, peer, "held", bits)?;
    Ok(())
}

fn validate_sizes(number: u32, size_bytes: u32) -> Result<(), StoreError> {
    if number == 0 || size_bytes == 0 {
        return Err(StoreError::Invalid(format!(
            "number {number} and size {size_bytes} bytes must both be positive"
        )));
    }
    Ok(())
}

impl KeyStore for SqliteStore {
    fn add_block(
        &self,
        peer: &str,
        block_id: u64,
        key: &Bits,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let (peer, key) = (peer.to_string(), key.duplicate());
        self.with_tx(move |tx| {
            let (peer, key) = (peer.as_str(), &key);
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM blocks WHERE peer = ?1 AND block_id = ?2")?.query_row(
                    params![peer, block_id as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::DuplicateBlock {
                    peer: peer.to_string(),
                    block_id,
                });
            }
            tx.prepare_cached("INSERT INTO blocks(peer, block_id, nbits, expires_at) VALUES (?1, ?2, ?3, ?4)")?.execute(
                params![peer, block_id as i64, key.len() as i64, expires_at as i64],
            )?;
            // Zeroized on every path out, errors included.
            let bytes = Zeroizing::new(key.to_msb_bytes());
            // Whole bytes only: a trailing partial byte, and one byte when the count is
            // odd, cannot be split between the lanes.
            let whole = key.len() / 8;
            let half = whole / 2;
            let lanes = [&bytes[..half], &bytes[half..2 * half]];
            for (lane, data) in lanes.iter().enumerate() {
                let lane = lane as u8;
                let mut st = Lane::load(tx, peer, lane)?;
                for c in data.chunks(CHUNK_BYTES) {
                    tx.prepare_cached("INSERT INTO chunks(peer, lane, seq, block_id, expires_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
                        params![peer, lane, st.next as i64, block_id as i64, expires_at as i64, c],
                    )?;
                    st.next += 1;
                }
                st.avail += data.len() as u64;
                st.save(tx, peer, lane)?;
            }
            bump(tx, peer, "produced", key.len() as i64)?;
            bump(tx, peer, "discarded", (key.len() - 16 * half) as i64)?;
            Ok(())
        })
    }

    fn allocate(
        &self,
        peer: &str,
        req: &KeyRequest<'_>,
        now: u64,
    ) -> Result<(Vec<Key>, Assignment), StoreError> {
        let KeyRequest {
            lane,
            master_sae,
            slave_saes,
            number,
            size_bytes,
        } = *req;
        validate_sizes(number, size_bytes)?;
        let (peer, master_sae, slave_saes) = (
            peer.to_string(),
            master_sae.to_string(),
            slave_saes.to_vec(),
        );
        self.with_tx(move |tx| {
            let (peer, master_sae, slave_saes) =
                (peer.as_str(), master_sae.as_str(), slave_saes.as_slice());
            expire_tx(tx, now)?;
            let mut st = Lane::load(tx, peer, lane)?;
            let (start_seq, start_offset, serial) = (st.seq, st.offset, st.serial);
            let sizes = vec![size_bytes; number as usize];
            let pieces = cut(tx, peer, lane, &mut st, &sizes)?;
            st.serial += 1;
            st.save(tx, peer, lane)?;
            let mut keys = Vec::with_capacity(pieces.len());
            let mut ids = Vec::with_capacity(pieces.len());
            for (mut bytes, _) in pieces {
                let bytes = std::mem::take(&mut *bytes);
                let id = uuid::Uuid::now_v7().to_string();
                tx.prepare_cached("INSERT INTO issued(key_id, peer, master_sae, nbits, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(
                    params![id, peer, master_sae, 8 * i64::from(size_bytes), now as i64],
                )?;
                ids.push((id.clone(), size_bytes));
                keys.push(Key { id, bytes });
            }
            bump(tx, peer, "delivered", 8 * i64::from(size_bytes) * i64::from(number))?;
            Ok((
                keys,
                Assignment {
                    lane,
                    serial,
                    start_seq,
                    start_offset,
                    master_sae: master_sae.to_string(),
                    slave_saes: slave_saes.to_vec(),
                    keys: ids,
                },
            ))
        })
    }

    fn void(&self, peer: &str, key_ids: &[String]) -> Result<(), StoreError> {
        let (peer, key_ids) = (peer.to_string(), key_ids.to_vec());
        self.with_tx(move |tx| {
            let mut bits = 0i64;
            for id in &key_ids {
                let n: Option<i64> = tx
                    .prepare_cached("SELECT nbits FROM issued WHERE key_id = ?1 AND peer = ?2")?
                    .query_row(params![id, peer], |r| r.get(0))
                    .optional()?;
                let Some(n) = n else {
                    return Err(StoreError::NotFound(id.clone()));
                };
                tx.prepare_cached("DELETE FROM issued WHERE key_id = ?1")?
                    .execute(params![id])?;
                bits += n;
            }
            bump(tx, &peer, "delivered", -bits)?;
            bump(tx, &peer, "discarded", bits)?;
            Ok(())
        })
    }

    fn assign(&self, peer: &str, a: &Assignment, now: u64) -> Result<(), StoreError> {
        self.assign_many(peer, std::slice::from_ref(a), now)
    }

    fn assign_many(&self, peer: &str, run: &[Assignment], now: u64) -> Result<(), StoreError> {
        for a in run {
            check_assignment(a)?;
        }
        let (peer, run) = (peer.to_string(), run.to_vec());
        self.with_tx(move |tx| {
            expire_tx(tx, now)?;
            for a in &run {
                assign_tx(tx, &peer, a)?;
            }
            Ok(())
        })
    }

    fn fetch(
        &self,
        master_sae: &str,
        requester: &str,
        key_ids: &[String],
    ) -> Result<Vec<Key>, StoreError> {
        let (master_sae, requester, key_ids) = (
            master_sae.to_string(),
            requester.to_string(),
            key_ids.to_vec(),
        );
        self.with_tx(move |tx| {
            let (master_sae, requester, key_ids) =
                (master_sae.as_str(), requester.as_str(), key_ids.as_slice());
            let mut out = Vec::with_capacity(key_ids.len());
            for id in key_ids {
                let row: Option<(String, String, Vec<u8>)> = tx
                    .prepare_cached("SELECT peer, master_sae, data FROM held WHERE key_id = ?1")?
                    .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((peer, master, bytes)) = row else {
                    return Err(StoreError::NotFound(id.clone()));
                };
                let key = Key {
                    id: id.clone(),
                    bytes,
                };
                if master != master_sae {
                    return Err(StoreError::NotFound(id.clone()));
                }
                let fetched: Option<i64> = tx
                    .prepare_cached(
                        "SELECT fetched FROM held_slaves WHERE key_id = ?1 AND sae = ?2",
                    )?
                    .query_row(params![id, requester], |r| r.get(0))
                    .optional()?;
                match fetched {
                    None => {
                        return Err(StoreError::NotEntitled {
                            requester: requester.to_string(),
                            key_id: id.clone(),
                        })
                    }
                    Some(1) => return Err(StoreError::NotFound(id.clone())),
                    Some(_) => {}
                }
                tx.prepare_cached(
                    "UPDATE held_slaves SET fetched = 1 WHERE key_id = ?1 AND sae = ?2",
                )?
                .execute(params![id, requester])?;
                let waiting: i64 = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM held_slaves WHERE key_id = ?1 AND fetched = 0",
                    )?
                    .query_row(params![id], |r| r.get(0))?;
                if waiting == 0 {
                    let bits = 8 * key.bytes.len() as i64;
                    tx.prepare_cached("DELETE FROM held WHERE key_id = ?1")?
                        .execute(params![id])?;
                    tx.prepare_cached("DELETE FROM held_slaves WHERE key_id = ?1")?
                        .execute(params![id])?;
                    bump(tx, &peer, "held", -bits)?;
                    bump(tx, &peer, "delivered", bits)?;
                }
                out.push(key);
            }
            Ok(out)
        })
    }

    fn hold_relayed(
        &self,
        origin: &str,
        key: &Key,
        master_sae: &str,
        slave_saes: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        if key.bytes.is_empty() || slave_saes.is_empty() {
            return Err(StoreError::Invalid(
                "relayed key without bytes or slaves".into(),
            ));
        }
        let peer = format!("relay:{origin}");
        let (id, bytes) = (key.id.clone(), Zeroizing::new(key.bytes.clone()));
        let (master_sae, slave_saes) = (master_sae.to_string(), slave_saes.to_vec());
        self.with_tx(move |tx| {
            tx.prepare_cached(
                "INSERT INTO held(key_id, peer, master_sae, data, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, peer, master_sae, &bytes[..], expires_at.min(i64::MAX as u64) as i64])?;
            for sae in &slave_saes {
                tx.prepare_cached("INSERT OR IGNORE INTO held_slaves(key_id, sae) VALUES (?1, ?2)")?
                    .execute(params![id, sae])?;
            }
            let bits = 8 * bytes.len() as i64;
            bump(tx, &peer, "produced", bits)?;
            bump(tx, &peer, "held", bits)?;
            Ok(())
        })
    }

    fn expire(&self, now: u64) -> Result<u64, StoreError> {
        self.with_tx(move |tx| expire_tx(tx, now))
    }

    fn lane_serial(&self, peer: &str, lane: u8) -> Result<u64, StoreError> {
        let peer = peer.to_string();
        self.with_tx(move |tx| Ok(Lane::load(tx, &peer, lane)?.serial))
    }

    fn available_bytes(&self, peer: &str, lane: u8) -> Result<u64, StoreError> {
        let peer = peer.to_string();
        self.with_tx(move |tx| available(tx, &peer, lane))
    }

    fn accounting(&self, peer: &str) -> Result<Accounting, StoreError> {
        let peer = peer.to_string();
        self.with_tx(move |tx| {
            let peer = peer.as_str();
            let c: Option<(i64, i64, i64, i64, i64)> = tx
                .prepare_cached("SELECT produced, delivered, held, expired, discarded FROM counters WHERE peer = ?1")?.query_row(
                    params![peer],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let (produced, delivered, held, expired, discarded) = c.unwrap_or_default();
            let avail = 8 * (available(tx, peer, 0)? + available(tx, peer, 1)?);
            Ok(Accounting {
                produced_bits: produced as u64,
                available_bits: avail,
                delivered_bits: delivered as u64,
                held_bits: held as u64,
                expired_bits: expired as u64,
                discarded_bits: discarded as u64,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane_for;
    use rand::{Rng, SeedableRng};

    fn block(n: usize, seed: u64) -> Bits {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Bits::from_words((0..n.div_ceil(64)).map(|_| rng.gen()).collect(), n)
    }

    fn slaves(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn req<'a>(lane: u8, master: &'a str, sl: &'a [String], n: u32, size: u32) -> KeyRequest<'a> {
        KeyRequest {
            lane,
            master_sae: master,
            slave_saes: sl,
            number: n,
            size_bytes: size,
        }
    }

    #[test]
    fn keys_cut_at_the_master_end_are_fetched_once_by_named_slaves_at_the_other() {
        // KME "A" and KME "B" share blocks; SAE a1 at A asks for keys for b1, b2 at B.
        let a = SqliteStore::in_memory().unwrap();
        let b = SqliteStore::in_memory().unwrap();
        for (id, seed) in [(1u64, 10u64), (2, 11)] {
            let k = block(100_003, seed);
            a.add_block("B", id, &k, 1_000).unwrap();
            b.add_block("A", id, &k, 1_000).unwrap();
        }
        let lane = lane_for("A", "B");
        let (keys, asg) = a
            .allocate("B", &req(lane, "a1", &slaves(&["b1", "b2"]), 5, 32), 10)
            .unwrap();
        assert_eq!(keys.len(), 5);
        b.assign("A", &asg, 10).unwrap();
        let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
        let got = b.fetch("a1", "b1", &ids).unwrap();
        for (x, y) in keys.iter().zip(&got) {
            assert_eq!(x.id, y.id);
            assert_eq!(x.bytes, y.bytes);
        }
        // Keys are distinct material.
        assert_ne!(keys[0].bytes, keys[1].bytes);
        // At most once per slave; an SAE not named gets nothing; a wrong master neither.
        assert!(matches!(
            b.fetch("a1", "b1", &ids[..1]),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            b.fetch("a1", "b3", &ids[..1]),
            Err(StoreError::NotEntitled { .. })
        ));
        assert!(matches!(
            b.fetch("zz", "b2", &ids[..1]),
            Err(StoreError::NotFound(_))
        ));
        // A failed request changes nothing: b2 still gets all five.
        assert_eq!(b.fetch("a1", "b2", &ids).unwrap().len(), 5);
        for s in [&a, &b] {
            let acc = s
                .accounting(if std::ptr::eq(s, &a) { "B" } else { "A" })
                .unwrap();
            assert!(acc.balances(), "{acc:?}");
            assert_eq!(acc.held_bits, 0);
            assert_eq!(acc.delivered_bits, 5 * 256);
            // Two blocks of 100 003 bits: 12 500 bytes each, split 6 250 + 6 250; 3 bits
            // of each block are discarded.
            assert_eq!(acc.discarded_bits, 6);
        }
    }

    #[test]
    fn lanes_serve_the_two_directions_without_contention() {
        let a = SqliteStore::in_memory().unwrap();
        let b = SqliteStore::in_memory().unwrap();
        let k = block(80_000, 3);
        a.add_block("B", 7, &k, 1_000).unwrap();
        b.add_block("A", 7, &k, 1_000).unwrap();
        // Both masters allocate before either assignment arrives.
        let (ka, asg_a) = a
            .allocate(
                "B",
                &req(lane_for("A", "B"), "a1", &slaves(&["b1"]), 3, 64),
                0,
            )
            .unwrap();
        let (kb, asg_b) = b
            .allocate(
                "A",
                &req(lane_for("B", "A"), "b1", &slaves(&["a1"]), 3, 64),
                0,
            )
            .unwrap();
        b.assign("A", &asg_a, 0).unwrap();
        a.assign("B", &asg_b, 0).unwrap();
        let ids_a: Vec<String> = ka.iter().map(|k| k.id.clone()).collect();
        let ids_b: Vec<String> = kb.iter().map(|k| k.id.clone()).collect();
        let fb = b.fetch("a1", "b1", &ids_a).unwrap();
        let fa = a.fetch("b1", "a1", &ids_b).unwrap();
        assert!(ka.iter().zip(&fb).all(|(x, y)| x.bytes == y.bytes));
        assert!(kb.iter().zip(&fa).all(|(x, y)| x.bytes == y.bytes));
        assert!(ka.iter().all(|x| kb.iter().all(|y| x.bytes != y.bytes)));
    }

    #[test]
    fn refusals_leave_the_store_unchanged() {
        let a = SqliteStore::in_memory().unwrap();
        let b = SqliteStore::in_memory().unwrap();
        let k = block(8 * 2 * 1000, 4);
        a.add_block("B", 1, &k, 1_000).unwrap();
        b.add_block("A", 1, &k, 1_000).unwrap();
        assert!(matches!(
            a.add_block("B", 1, &k, 1_000),
            Err(StoreError::DuplicateBlock { block_id: 1, .. })
        ));
        let before = a.accounting("B").unwrap();
        assert!(matches!(
            a.allocate("B", &req(0, "a1", &slaves(&["b1"]), 3, 400), 0),
            Err(StoreError::Insufficient {
                want: 1200,
                have: 1000,
                ..
            })
        ));
        assert!(matches!(
            a.allocate("B", &req(0, "a1", &slaves(&["b1"]), 0, 32), 0),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(a.accounting("B").unwrap(), before);
        // An assignment that does not start at this end's cursor is refused.
        let (_, mut asg) = a
            .allocate("B", &req(0, "a1", &slaves(&["b1"]), 2, 100), 0)
            .unwrap();
        asg.start_offset += 1;
        assert!(matches!(
            b.assign("A", &asg, 0),
            Err(StoreError::OutOfStep { .. })
        ));
        assert_eq!(b.available_bytes("A", 0).unwrap(), 1000);
    }

    #[test]
    fn material_and_waiting_keys_expire_and_stay_accounted() {
        let a = SqliteStore::in_memory().unwrap();
        let b = SqliteStore::in_memory().unwrap();
        let k1 = block(2 * 8 * 3 * CHUNK_BYTES, 5);
        let k2 = block(2 * 8 * 1000, 6);
        for (s, peer) in [(&a, "B"), (&b, "A")] {
            s.add_block(peer, 1, &k1, 100).unwrap();
            s.add_block(peer, 2, &k2, 200).unwrap();
        }
        // Cut part of block 1 (across a chunk boundary), leave keys waiting at B.
        let (keys, asg) = a
            .allocate(
                "B",
                &req(0, "a1", &slaves(&["b1"]), 3, (CHUNK_BYTES / 2 + 7) as u32),
                50,
            )
            .unwrap();
        b.assign("A", &asg, 50).unwrap();
        assert!(b.accounting("A").unwrap().held_bits > 0);
        // At t = 150 the rest of block 1 and the waiting keys expire; block 2 remains.
        let gone_b = b.expire(150).unwrap();
        let gone_a = a.expire(150).unwrap();
        assert!(gone_b > gone_a);
        let acc = b.accounting("A").unwrap();
        assert!(acc.balances(), "{acc:?}");
        assert_eq!(acc.held_bits, 0);
        assert_eq!(acc.available_bits, 2 * 8 * 1000);
        let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
        assert!(matches!(
            b.fetch("a1", "b1", &ids),
            Err(StoreError::NotFound(_))
        ));
        // The two ends are still in step on block 2.
        let (k2a, asg2) = a
            .allocate("B", &req(0, "a1", &slaves(&["b1"]), 1, 16), 160)
            .unwrap();
        b.assign("A", &asg2, 160).unwrap();
        let got = b.fetch("a1", "b1", &[k2a[0].id.clone()]).unwrap();
        assert_eq!(got[0].bytes, k2a[0].bytes);
        assert!(a.accounting("B").unwrap().balances());
    }

    #[test]
    fn the_store_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("qkdnet-kms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.sqlite");
        let _ = std::fs::remove_file(&path);
        let k = block(8 * 2 * 500, 8);
        let first = {
            let s = SqliteStore::open(&path).unwrap();
            s.add_block("B", 9, &k, 1_000).unwrap();
            let (keys, _) = s
                .allocate("B", &req(0, "a1", &slaves(&["b1"]), 2, 10), 0)
                .unwrap();
            keys[0].bytes.clone()
        };
        let s = SqliteStore::open(&path).unwrap();
        let acc = s.accounting("B").unwrap();
        assert!(acc.balances());
        assert_eq!(acc.delivered_bits, 160);
        // The next key continues where the last one ended, never reusing material.
        let (keys, asg) = s
            .allocate("B", &req(0, "a1", &slaves(&["b1"]), 1, 10), 0)
            .unwrap();
        assert_eq!(asg.start_offset, 20);
        assert_ne!(keys[0].bytes, first);
        assert!(matches!(
            s.add_block("B", 9, &k, 1_000),
            Err(StoreError::DuplicateBlock { .. })
        ));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_callers_share_commits_and_never_share_material() {
        // Eight threads allocate at once through the group-committing writer; a failing
        // request in the same batch (too large) must not disturb the others.
        let a = std::sync::Arc::new(SqliteStore::in_memory().unwrap());
        a.add_block("B", 1, &block(8 * 2 * 40_000, 9), 1_000)
            .unwrap();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let a = std::sync::Arc::clone(&a);
                std::thread::spawn(move || {
                    let sl = slaves(&["s"]);
                    let mut got = Vec::new();
                    for i in 0..50 {
                        if i % 10 == t % 10 {
                            assert!(a.allocate("B", &req(0, "m", &sl, 1, 1_000_000), 0).is_err());
                        }
                        let (keys, _) = a.allocate("B", &req(0, "m", &sl, 2, 32), 0).unwrap();
                        got.extend(keys.into_iter().map(|k| (k.id.clone(), k.bytes.clone())));
                    }
                    got
                })
            })
            .collect();
        let all: Vec<(String, Vec<u8>)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(all.len(), 8 * 50 * 2);
        let ids: std::collections::HashSet<&String> = all.iter().map(|(i, _)| i).collect();
        let bytes: std::collections::HashSet<&Vec<u8>> = all.iter().map(|(_, b)| b).collect();
        assert_eq!(ids.len(), all.len());
        assert_eq!(bytes.len(), all.len());
        let acc = a.accounting("B").unwrap();
        assert!(acc.balances());
        assert_eq!(acc.delivered_bits, 8 * 50 * 2 * 256);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Block(usize, u64),
        Alloc(bool, u32, u32),
        Fetch,
        Expire(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1usize..60_000, 1u64..400).prop_map(|(n, ttl)| Op::Block(n, ttl)),
            (any::<bool>(), 1u32..6, 1u32..700).prop_map(|(d, n, s)| Op::Alloc(d, n, s)),
            Just(Op::Fetch),
            (1u64..50).prop_map(Op::Expire),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn random_operations_keep_both_ends_in_step_and_every_bit_accounted(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let a = SqliteStore::in_memory().unwrap();
            let b = SqliteStore::in_memory().unwrap();
            let (mut now, mut next_block) = (0u64, 0u64);
            let mut pending: Vec<(bool, Key)> = Vec::new();
            for o in ops {
                match o {
                    Op::Block(n, ttl) => {
                        let k = block(n, next_block);
                        a.add_block("B", next_block, &k, now + ttl).unwrap();
                        b.add_block("A", next_block, &k, now + ttl).unwrap();
                        next_block += 1;
                    }
                    Op::Alloc(from_a, n, size) => {
                        let (m, p, lane, mkme, skme) = if from_a {
                            (&a, &b, lane_for("A", "B"), "B", "A")
                        } else {
                            (&b, &a, lane_for("B", "A"), "A", "B")
                        };
                        match m.allocate(mkme, &req(lane, "m", &slaves(&["s"]), n, size), now) {
                            Ok((keys, asg)) => {
                                p.assign(skme, &asg, now).unwrap();
                                pending.extend(keys.into_iter().map(|k| (from_a, k)));
                            }
                            Err(StoreError::Insufficient { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    Op::Fetch => {
                        for (from_a, k) in pending.drain(..) {
                            let p = if from_a { &b } else { &a };
                            match p.fetch("m", "s", std::slice::from_ref(&k.id)) {
                                Ok(got) => proptest::prop_assert!(got[0].bytes == k.bytes),
                                // Expired while waiting.
                                Err(StoreError::NotFound(_)) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    Op::Expire(dt) => {
                        now += dt;
                        a.expire(now).unwrap();
                        b.expire(now).unwrap();
                    }
                }
                for (s, peer) in [(&a, "B"), (&b, "A")] {
                    let acc = s.accounting(peer).unwrap();
                    proptest::prop_assert!(acc.balances(), "{:?}", acc);
                }
                // Both ends hold the same unread material in each lane.
                for lane in [0u8, 1] {
                    proptest::prop_assert_eq!(
                        a.available_bytes("B", lane).unwrap(),
                        b.available_bytes("A", lane).unwrap()
                    );
                }
            }
        }
    }
}
