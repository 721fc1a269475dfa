//! The authentication pads of a site's links, on disk: each link's Wegman–Carter hash key
//! and its one-time pads ([`qkdnet_distill::auth`]), provisioned once from a pre-shared
//! key and replenished from the link's own final keys, so that a node authenticates its
//! sessions with key it made and survives restarts without reusing a pad.
//!
//! Pad indices. The pre-shared pads are indices `0..P`; the pads cut from the final key of
//! the link's block `b` are indices `(b + 1)·2²⁰ ..` (a chunk: at most 2²⁰ pads, 64 Mbit).
//! Both ends give a block's chunk the same indices whatever else they hold, so a chunk one
//! end lost (a crash between storing the key and the pads) shifts nothing at the other.
//! Every index below the link's `next` is dead at this end: never used again.
//!
//! Agreement before each session ([`agree`]). The two ends exchange `next` and the chunks
//! they hold at or above it (`origin..end` each). Both take the pads from
//! `max(next_A, next_B)` on, in the chunks both hold with the same extent, until they have
//! the `want` pads Alice asked for: the same ranges at both ends, whatever the order of the
//! lists. The session then sees those pads as one pool with consecutive indices from the
//! first range's start ([`PadStore::reserve`]).
//!
//! Durability. Before a session, `next` moves durably past every reserved pad (so a crash
//! mid-session never leads to reuse); after a session that finished at this end, it moves
//! back to just past the pads the session used ([`PadStore::settle`]), unless another
//! session has reserved pads since. Both ends of a finished session used exactly the same
//! pads. A session that failed settles too, at the pads its end used: the other end may
//! have used more (a message sent that never arrived), but it settles at its own, and the
//! next agreement starts from the larger `next`, past both. An end that crashed
//! mid-session keeps its whole reservation.
//!
//! Authentication of the agreement ([`confirm_agreement`]). The hello and the pads answer
//! travel in clear, since the pads to tag them with are what they settle. The session's
//! first two messages authenticate them after the fact: Alice's tag, then Bob's, each with
//! the next agreed pad, over the whole transcript (hello and answer, length-prefixed, and
//! the sender's role). An end whose view of the transcript differs (a link, block, wish or
//! holding altered in transit) refuses the session before any key-related message. A
//! forger who alters a holding makes the ends agree on different pads, so the first check
//! fails all the same; what they could reach before is burning pads, since `next` only
//! moves forward.
//!
//! Stored with SQLite (WAL, `synchronous = FULL`, `secure_delete`, so dead pads are
//! overwritten on disk when their chunk is trimmed or dropped).

use qkdnet_core::Bits;
use qkdnet_distill::auth::{AuthKeys, TAG_BITS};
use qkdnet_link::Transport;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

/// Pads per block chunk at most (indices reserved for each block's chunk).
pub const CHUNK_PADS: u64 = 1 << 20;

/// One end's pads at or above its `next`: (next, chunks as `(origin, end)`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holding {
    /// Lowest index this end may still use.
    pub next: u64,
    /// Chunks holding pads at or above `next`, as `(origin, end)`, ascending.
    pub chunks: Vec<(u64, u64)>,
}

/// Chunks a hello or its answer names at most: the lowest ones, which hold far more than a
/// session asks for (a node's surplus of 64 pads per block adds a chunk every ten blocks or
/// so, and a long run must not outgrow the hello).
pub const WIRE_CHUNKS: usize = 64;

impl Holding {
    /// What the wire form names: `next` and the lowest [`WIRE_CHUNKS`] chunks. Both ends
    /// agree on what each named ([`agree`] of the two named holdings), never on what one
    /// end holds beyond.
    pub fn named(&self) -> Holding {
        Holding {
            next: self.next,
            chunks: self.chunks.iter().take(WIRE_CHUNKS).copied().collect(),
        }
    }

    /// The wire form: `next origin:end,origin:end,…` (`-` for no chunk), naming the lowest
    /// [`WIRE_CHUNKS`] chunks.
    pub fn to_wire(&self) -> String {
        let list: Vec<String> = self
            .chunks
            .iter()
            .take(WIRE_CHUNKS)
            .map(|(o, e)| format!("{o}:{e}"))
            .collect();
        let list = if list.is_empty() {
            "-".to_string()
        } else {
            list.join(",")
        };
        format!("{} {list}", self.next)
    }

    /// Parses [`Holding::to_wire`]; at most 256 chunks, each non-empty.
    pub fn from_wire(s: &str) -> Option<Self> {
        let (next, list) = s.split_once(' ')?;
        let next = next.parse().ok()?;
        let mut chunks = Vec::new();
        if list != "-" {
            for c in list.split(',') {
                let (o, e) = c.split_once(':')?;
                let (o, e): (u64, u64) = (o.parse().ok()?, e.parse().ok()?);
                if e <= o || chunks.len() >= 256 {
                    return None;
                }
                chunks.push((o, e));
            }
        }
        Some(Self { next, chunks })
    }
}

/// The pad ranges both ends take for a session of `want` pads, from what each holds: from
/// `max(next)` on, in the chunks both hold with the same extent, ascending. `None` when
/// fewer than `want` pads are common. Symmetric in its two holdings.
pub fn agree(a: &Holding, b: &Holding, want: u64) -> Option<Vec<(u64, u64)>> {
    if want == 0 {
        return None;
    }
    let from = a.next.max(b.next);
    let mut common: Vec<(u64, u64)> = a
        .chunks
        .iter()
        .filter(|c| b.chunks.contains(c))
        .copied()
        .collect();
    common.sort_unstable();
    common.dedup();
    let (mut ranges, mut got) = (Vec::new(), 0u64);
    for (o, e) in common {
        let start = o.max(from);
        if start >= e {
            continue;
        }
        let n = (e - start).min(want - got);
        ranges.push((start, start + n));
        got += n;
        if got == want {
            return Some(ranges);
        }
    }
    None
}

/// The pads of one site's links.
pub struct PadStore {
    conn: Mutex<Connection>,
    what: String,
}

fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> String + '_ {
    move |e| format!("{what}: authentication pads: {e}")
}

/// Pads to bytes: each 64-bit pad little-endian.
fn pad_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn pad_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

impl PadStore {
    /// Opens (or creates) the pad store at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let what = path.display().to_string();
        let e = db_err(&what);
        let conn = Connection::open(path).map_err(&e)?;
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(&e)?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;
             CREATE TABLE IF NOT EXISTS links(
                 link TEXT PRIMARY KEY, hash_key BLOB NOT NULL, next INTEGER NOT NULL,
                 last_used INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS chunks(
                 link TEXT NOT NULL, origin INTEGER NOT NULL, first INTEGER NOT NULL,
                 end INTEGER NOT NULL, pads BLOB NOT NULL, PRIMARY KEY (link, origin));",
        )
        .map_err(&e)?;
        Ok(Self {
            conn: Mutex::new(conn),
            what: what.clone(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Provisions `link` from its pre-shared key (128 hash-key bits, then pads at indices
    /// `0..`), unless it is provisioned already. True when it provisioned.
    pub fn provision(&self, link: &str, psk: &Bits) -> Result<bool, String> {
        let e = db_err(&self.what);
        if psk.len() < 128 + TAG_BITS as usize {
            return Err(format!(
                "{}: link {link}: a pre-shared key of {} bits is too short",
                self.what,
                psk.len()
            ));
        }
        let mut c = self.conn();
        let tx = c.transaction().map_err(&e)?;
        let known: Option<i64> = tx
            .query_row("SELECT 1 FROM links WHERE link = ?1", [link], |r| r.get(0))
            .optional()
            .map_err(&e)?;
        if known.is_some() {
            return Ok(false);
        }
        let hash_key = zeroize::Zeroizing::new(pad_bytes(&psk.words()[..2]));
        let pads = psk.slice(128, psk.len());
        let n = (pads.len() / TAG_BITS as usize) as u64;
        let bytes = zeroize::Zeroizing::new(pad_bytes(&pads.words()[..n as usize]));
        tx.execute(
            "INSERT INTO links(link, hash_key, next) VALUES (?1, ?2, 0)",
            params![link, &*hash_key],
        )
        .map_err(&e)?;
        tx.execute(
            "INSERT INTO chunks(link, origin, first, end, pads) VALUES (?1, 0, 0, ?2, ?3)",
            params![link, n as i64, &*bytes],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(true)
    }

    /// What `link` holds at or above its `next`.
    pub fn holding(&self, link: &str) -> Result<Holding, String> {
        let e = db_err(&self.what);
        let c = self.conn();
        let next: i64 = c
            .query_row("SELECT next FROM links WHERE link = ?1", [link], |r| {
                r.get(0)
            })
            .optional()
            .map_err(&e)?
            .ok_or_else(|| format!("{}: link {link} has no pads provisioned", self.what))?;
        let mut st = c
            .prepare("SELECT origin, end FROM chunks WHERE link = ?1 AND end > ?2 ORDER BY origin")
            .map_err(&e)?;
        let chunks = st
            .query_map(params![link, next], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .map_err(&e)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&e)?;
        Ok(Holding {
            next: next as u64,
            chunks,
        })
    }

    /// Pads to ask for a session: four times what the link's last session used, at least
    /// 1024 (64 kbit), at most a chunk.
    pub fn want(&self, link: &str) -> Result<u64, String> {
        let last: i64 = self
            .conn()
            .query_row("SELECT last_used FROM links WHERE link = ?1", [link], |r| {
                r.get(0)
            })
            .map_err(db_err(&self.what))?;
        Ok((4 * last.max(0) as u64).clamp(1024, CHUNK_PADS))
    }

    /// Reserves `ranges` (from [`agree`]) for a session: `next` moves durably past them,
    /// and the session gets them as one pool whose indices run on from the first range's
    /// start.
    pub fn reserve(&self, link: &str, ranges: &[(u64, u64)]) -> Result<AuthKeys, String> {
        let e = db_err(&self.what);
        let (Some(&(first, _)), Some(&(_, end))) = (ranges.first(), ranges.last()) else {
            return Err(format!("{}: link {link}: no pads to reserve", self.what));
        };
        let mut c = self.conn();
        let tx = c.transaction().map_err(&e)?;
        let (key, next): (Vec<u8>, i64) = tx
            .query_row(
                "SELECT hash_key, next FROM links WHERE link = ?1",
                [link],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(&e)?;
        let key = zeroize::Zeroizing::new(key);
        if first < next as u64 {
            return Err(format!(
                "{}: link {link}: pads from {first} asked, but everything below {next} is used",
                self.what
            ));
        }
        let mut words: zeroize::Zeroizing<Vec<u64>> = zeroize::Zeroizing::new(Vec::new());
        for &(s, t) in ranges {
            let (cfirst, bytes): (i64, Vec<u8>) = tx
                .query_row(
                    "SELECT first, pads FROM chunks WHERE link = ?1 AND origin <= ?2 AND end >= ?3",
                    params![link, s as i64, t as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(&e)?
                .ok_or_else(|| {
                    format!(
                        "{}: link {link}: pads {s}..{t} are not held here",
                        self.what
                    )
                })?;
            let bytes = zeroize::Zeroizing::new(bytes);
            let all = zeroize::Zeroizing::new(pad_words(&bytes));
            let lo = (s - cfirst as u64) as usize;
            let hi = (t - cfirst as u64) as usize;
            if (cfirst as u64) > s || hi > all.len() {
                return Err(format!(
                    "{}: link {link}: pads {s}..{t} are not held here",
                    self.what
                ));
            }
            words.extend_from_slice(&all[lo..hi]);
        }
        tx.execute(
            "UPDATE links SET next = ?2 WHERE link = ?1",
            params![link, end as i64],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)?;
        let hash = Bits::from_words(pad_words(&key), 128);
        let n = words.len() * TAG_BITS as usize;
        let pads = Bits::from_words(words.to_vec(), n);
        AuthKeys::from_parts(&hash, first, &pads).map_err(|err| format!("{}: {err}", self.what))
    }

    /// After a session on `ranges` that finished at this end having used pads up to the
    /// pool index `cursor` (exclusive): `next` moves back to just past the last pad used
    /// (unless another session reserved pads since), dead pads are wiped from disk, and the
    /// use is remembered for the next [`want`]. Returns the pads used.
    ///
    /// [`want`]: PadStore::want
    pub fn settle(&self, link: &str, ranges: &[(u64, u64)], cursor: u64) -> Result<u64, String> {
        let e = db_err(&self.what);
        let first = ranges.first().map_or(0, |r| r.0);
        let used = cursor.saturating_sub(first);
        // The pool index `first + used` in the real index space.
        let (mut left, mut real) = (used, ranges.last().map_or(0, |r| r.1));
        for &(s, t) in ranges {
            if left <= t - s {
                real = s + left;
                break;
            }
            left -= t - s;
        }
        let reserved_end = ranges.last().map_or(0, |r| r.1);
        let mut c = self.conn();
        let tx = c.transaction().map_err(&e)?;
        // Back to just past the pads used only if nothing was reserved after this session
        // (a concurrent session's pads stay reserved).
        tx.execute(
            "UPDATE links SET next = ?2 WHERE link = ?1 AND next = ?3",
            params![link, real as i64, reserved_end as i64],
        )
        .map_err(&e)?;
        tx.execute(
            "UPDATE links SET last_used = ?2 WHERE link = ?1",
            params![link, used as i64],
        )
        .map_err(&e)?;
        let next: i64 = tx
            .query_row("SELECT next FROM links WHERE link = ?1", [link], |r| {
                r.get(0)
            })
            .map_err(&e)?;
        trim(&tx, link, next as u64).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(used)
    }

    /// Adds the pads cut from the final key of the link's block `block` (its local number)
    /// as that block's chunk; a chunk already there is kept.
    pub fn add_block(&self, link: &str, block: u64, pads: &Bits) -> Result<(), String> {
        let e = db_err(&self.what);
        let n = ((pads.len() / TAG_BITS as usize) as u64).min(CHUNK_PADS);
        if n == 0 {
            return Ok(());
        }
        let origin = (block + 1).checked_mul(CHUNK_PADS).ok_or_else(|| {
            format!(
                "{}: link {link}: block {block} is past the pad index space",
                self.what
            )
        })?;
        let bytes = zeroize::Zeroizing::new(pad_bytes(&pads.words()[..n as usize]));
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO chunks(link, origin, first, end, pads) VALUES (?1, ?2, ?2, ?3, ?4)",
                params![link, origin as i64, (origin + n) as i64, &*bytes],
            )
            .map_err(&e)?;
        Ok(())
    }
}

/// Drops `link`'s chunks wholly below `next` and cuts the used head off the one it falls
/// in (`secure_delete` overwrites the freed pages).
fn trim(tx: &rusqlite::Transaction<'_>, link: &str, next: u64) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM chunks WHERE link = ?1 AND end <= ?2",
        params![link, next as i64],
    )?;
    let row: Option<(i64, i64, Vec<u8>)> = tx
        .query_row(
            "SELECT origin, first, pads FROM chunks WHERE link = ?1 AND first < ?2 AND end > ?2",
            params![link, next as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((origin, first, bytes)) = row {
        let bytes = zeroize::Zeroizing::new(bytes);
        let skip = 8 * (next - first as u64) as usize;
        tx.execute(
            "UPDATE chunks SET first = ?3, pads = ?4 WHERE link = ?1 AND origin = ?2",
            params![link, origin, next as i64, &bytes[skip..]],
        )?;
    }
    Ok(())
}

/// The transcript of a pad agreement as both ends tag it: the hello and the pads answer,
/// each length-prefixed.
pub fn transcript(hello: &[u8], answer: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(hello.len() + answer.len() + 40);
    t.extend_from_slice(b"qkdnet-distill agreement");
    for part in [hello, answer] {
        t.extend_from_slice(&(part.len() as u64).to_le_bytes());
        t.extend_from_slice(part);
    }
    t
}

/// The first two messages of a session on agreed pads: Alice sends her tag of the
/// agreement's `transcript` (see [`transcript`]) with the next pad and checks Bob's with
/// the one after; Bob checks hers and sends his. Each end tags its own view, so a hello or
/// an answer altered in transit fails the check at the end that sees the difference,
/// naming it. Two pads per session.
pub fn confirm_agreement(
    t: &mut dyn Transport,
    auth: &mut AuthKeys,
    alice: bool,
    transcript: &[u8],
) -> Result<(), String> {
    let role = |r: u8| {
        let mut m = Vec::with_capacity(transcript.len() + 1);
        m.push(r);
        m.extend_from_slice(transcript);
        m
    };
    let fail = |e: &dyn std::fmt::Display| format!("pad agreement not confirmed: {e}");
    let send = |t: &mut dyn Transport, auth: &mut AuthKeys, r: u8| {
        let tag = auth.tag(auth.cursor(), &role(r)).map_err(|e| fail(&e))?;
        let mut m = vec![r];
        m.extend_from_slice(&tag.to_le_bytes());
        t.send(&m).map_err(|e| fail(&e))
    };
    let recv = |t: &mut dyn Transport, auth: &mut AuthKeys, r: u8| {
        let m = t.recv().map_err(|e| fail(&e))?;
        let tag = match m.as_slice() {
            [x, tag @ ..] if *x == r && tag.len() == 8 => {
                u64::from_le_bytes(tag.try_into().unwrap_or([0; 8]))
            }
            _ => {
                return Err(fail(&format!(
                    "expected the {} confirmation (9 bytes), got {} bytes",
                    if r == b'A' {
                        "initiator's"
                    } else {
                        "responder's"
                    },
                    m.len()
                )))
            }
        };
        auth.check(auth.cursor(), &role(r), tag, 0).map_err(|_| {
            fail(&"the neighbour's tag does not match this end's view of the hello and pads answer (altered in transit, or different pads)")
        })
    };
    if alice {
        send(t, auth, b'A')?;
        recv(t, auth, b'B')
    } else {
        recv(t, auth, b'A')?;
        send(t, auth, b'B')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(bits: usize, seed: u64) -> Bits {
        let words = (0..bits.div_ceil(64) as u64)
            .map(|i| (i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        Bits::from_words(words, bits)
    }

    fn holding(next: u64, chunks: &[(u64, u64)]) -> Holding {
        Holding {
            next,
            chunks: chunks.to_vec(),
        }
    }

    #[test]
    fn agreement_takes_common_pads_from_the_larger_next_and_is_symmetric() {
        let a = holding(
            10,
            &[
                (0, 100),
                (1 << 20, (1 << 20) + 50),
                (2 << 20, (2 << 20) + 80),
            ],
        );
        // Bob lost block 0's chunk and is further on.
        let b = holding(40, &[(0, 100), (2 << 20, (2 << 20) + 80)]);
        let r = agree(&a, &b, 100).unwrap();
        assert_eq!(r, vec![(40, 100), (2 << 20, (2 << 20) + 40)]);
        assert_eq!(agree(&b, &a, 100), Some(r));
        assert_eq!(agree(&a, &b, 141), None);
        // A chunk both name with different extents is not common.
        let c = holding(0, &[(0, 90)]);
        assert_eq!(agree(&a, &c, 1), None);
        // The wire form round-trips and refuses nonsense; it names the lowest chunks only.
        assert_eq!(Holding::from_wire(&a.to_wire()), Some(a));
        let many = holding(
            0,
            &(0..300u64)
                .map(|k| (k << 20, (k << 20) + 600))
                .collect::<Vec<_>>(),
        );
        let sent = Holding::from_wire(&many.to_wire()).unwrap();
        assert_eq!(sent, many.named());
        assert_eq!(sent.chunks, many.chunks[..WIRE_CHUNKS]);
        assert!(agree(&sent, &many.named(), 2000).is_some());
        assert_eq!(Holding::from_wire("5 -"), Some(holding(5, &[])));
        for bad in ["", "5", "x -", "5 3:3", "5 4:3", "5 1:2,", "5 a:b"] {
            assert_eq!(Holding::from_wire(bad), None, "{bad:?}");
        }
    }

    /// Two ends provision the same key, agree, reserve, authenticate a message with the
    /// session pools, settle; a crash after a reservation never leads to reuse; a block's
    /// pads replenish both; everything survives reopening the stores.
    #[test]
    fn sessions_use_each_pad_once_across_crashes_and_replenishment() {
        let dir = std::env::temp_dir().join(format!("qkdnet-pads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (pa, pb) = (dir.join("a.sqlite"), dir.join("b.sqlite"));
        let k = psk(128 + 64 * 3000, 7);
        {
            let (a, b) = (PadStore::open(&pa).unwrap(), PadStore::open(&pb).unwrap());
            assert!(a.provision("l", &k).unwrap());
            assert!(b.provision("l", &k).unwrap());
            assert!(!a.provision("l", &psk(1000, 9)).unwrap());
            // Session 1: both agree, reserve, one message authenticated, settled.
            let want = a.want("l").unwrap();
            assert_eq!(want, 1024);
            let r = agree(&a.holding("l").unwrap(), &b.holding("l").unwrap(), want).unwrap();
            assert_eq!(r, vec![(0, 1024)]);
            let (mut ka, mut kb) = (a.reserve("l", &r).unwrap(), b.reserve("l", &r).unwrap());
            let tag = ka.tag(0, b"hello").unwrap();
            kb.check(0, b"hello", tag, 0).unwrap();
            let tag = kb.tag(1, b"reply").unwrap();
            ka.check(1, b"reply", tag, 1).unwrap();
            assert_eq!(a.settle("l", &r, ka.cursor()).unwrap(), 2);
            assert_eq!(b.settle("l", &r, kb.cursor()).unwrap(), 2);
            assert_eq!(a.holding("l").unwrap().next, 2);
            // Session 2 reserves, then Alice "crashes" (never settles); Bob settles.
            let r2 = agree(&a.holding("l").unwrap(), &b.holding("l").unwrap(), 1024).unwrap();
            assert_eq!(r2, vec![(2, 1026)]);
            let _ka = a.reserve("l", &r2).unwrap();
            let kb = b.reserve("l", &r2).unwrap();
            b.settle("l", &r2, kb.cursor()).unwrap();
            // Block 0's final key replenishes both.
            let fresh = psk(64 * 2000, 11);
            a.add_block("l", 0, &fresh).unwrap();
            b.add_block("l", 0, &fresh).unwrap();
            a.add_block("l", 0, &psk(64 * 10, 12)).unwrap();
        }
        let (a, b) = (PadStore::open(&pa).unwrap(), PadStore::open(&pb).unwrap());
        let (ha, hb) = (a.holding("l").unwrap(), b.holding("l").unwrap());
        assert_eq!(ha.next, 1026, "Alice's reservation stands after the crash");
        assert_eq!(hb.next, 2);
        // The next session starts past Alice's reservation and spills into block 0's chunk.
        let r3 = agree(&ha, &hb, 2000).unwrap();
        assert_eq!(r3, vec![(1026, 3000), (1 << 20, (1 << 20) + 26)]);
        let (mut ka, mut kb) = (a.reserve("l", &r3).unwrap(), b.reserve("l", &r3).unwrap());
        for i in 0..1990u64 {
            let t = ka.tag(1026 + i, &i.to_le_bytes()).unwrap();
            kb.check(1026 + i, &i.to_le_bytes(), t, i as u32).unwrap();
        }
        a.settle("l", &r3, ka.cursor()).unwrap();
        b.settle("l", &r3, kb.cursor()).unwrap();
        let h = a.holding("l").unwrap();
        assert_eq!(h.next, (1 << 20) + 16);
        assert_eq!(h.chunks, vec![(1 << 20, (1 << 20) + 2000)]);
        assert_eq!(b.holding("l").unwrap(), h);
        // A reservation below next is refused.
        assert!(a.reserve("l", &[(5, 10)]).is_err());
        // Two sessions at once: the first to finish does not hand back pads the second
        // reserved after it.
        let n0 = h.next;
        let x = vec![(n0, n0 + 100)];
        let y = vec![(n0 + 100, n0 + 200)];
        let kx = a.reserve("l", &x).unwrap();
        let _ky = a.reserve("l", &y).unwrap();
        a.settle("l", &x, kx.cursor() + 3).unwrap();
        assert_eq!(a.holding("l").unwrap().next, n0 + 200);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn agreement_confirmation_passes_on_equal_views_and_names_an_altered_one() {
        use qkdnet_link::MemTransport;
        let run = |alice_view: Vec<u8>, bob_view: Vec<u8>| {
            let (mut ta, mut tb) = MemTransport::pair();
            let mut ka = AuthKeys::from_preshared(psk(128 + 64 * 8, 3)).unwrap();
            let mut kb = AuthKeys::from_preshared(psk(128 + 64 * 8, 3)).unwrap();
            let bob = std::thread::spawn(move || {
                let r = confirm_agreement(&mut tb, &mut kb, false, &bob_view);
                (r, kb.cursor())
            });
            let a = confirm_agreement(&mut ta, &mut ka, true, &alice_view);
            let (b, bob_cursor) = bob.join().unwrap();
            (a, ka.cursor(), b, bob_cursor)
        };
        let hello = b"qkdnet-distill 3 l 5 1024 0 0:16384".to_vec();
        let answer = b"pads 0 0:16384".to_vec();
        let same = transcript(&hello, &answer);
        let (a, ca, b, cb) = run(same.clone(), same.clone());
        assert_eq!((a, b), (Ok(()), Ok(())));
        assert_eq!((ca, cb), (2, 2), "two pads a session");
        // A forger changed the block in the hello: Bob's view differs, and he says so
        // before sending anything of his own; Alice sees no answer.
        let altered = transcript(b"qkdnet-distill 3 l 6 1024 0 0:16384", &answer);
        let (a, _, b, _) = run(same.clone(), altered);
        let e = b.unwrap_err();
        assert!(e.contains("pad agreement not confirmed"), "{e}");
        assert!(e.contains("hello and pads answer"), "{e}");
        assert!(a.is_err());
    }
}
