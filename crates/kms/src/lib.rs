//! `qkdnet-kms`: the key management entity (KME) of a qkdnet node.
//!
//! What it does: keeps the final keys that the node's links distil in a durable store,
//! hands them out as ETSI GS QKD 014 keys (a master SAE gets keys with fresh key IDs; the
//! KME at the other end of the link holds the same keys for the slaves the master named),
//! and accounts for every bit: `produced = available + held + delivered + expired +
//! discarded`.
//!
//! It never knows how keys were made: blocks arrive with their ids and bits, already
//! verified and privacy-amplified by `distill`.
//!
//! # Model
//!
//! Both KMEs of a link receive each distilled block under the same `(peer, block_id)`.
//! A block is split in two *lanes*: lane 0 (the first half, in whole bytes) serves keys
//! whose master SAE sits at the KME with the smaller KME ID, lane 1 the other direction.
//! Within a lane, keys are cut in order: the master's KME takes the next bytes of the
//! lane and tells the peer KME which key IDs it cut, of which sizes, starting where
//! ([`Assignment`]); the peer KME cuts the same bytes from its own copy of the lane and
//! keeps them for the named slaves. So the two ends never contend for the same bits and
//! need no locking across the link. Material is stored in chunks; a chunk is deleted (with
//! SQLite's `secure_delete`, which overwrites freed content) as soon as every byte of it
//! has been cut into keys, and a key's bytes are deleted once every party it was meant
//! for has fetched it.
//!
//! The store's logic is written once ([`sql`]) over two backends: SQLite
//! ([`sqlite::SqliteStore`], the embedded default) and PostgreSQL ([`pg`]).

pub mod bench;
pub mod client;
pub mod etsi;
pub mod hops;
pub mod metrics;
pub mod peer;
pub mod pg;
pub mod pki;
pub mod relay;
pub mod routing;
pub mod sql;
pub mod sqlite;
#[cfg(test)]
mod suite;

use zeroize::Zeroize;

/// Store failures. Messages name the peer, key or field concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The SQLite database failed.
    #[error("key store database (SQLite): {0}")]
    Db(#[from] rusqlite::Error),
    /// The PostgreSQL database failed.
    #[error("key store database (PostgreSQL): {}", pg::describe(.0))]
    Postgres(#[from] postgres::Error),
    /// The store itself failed (its writer stopped, a commit failed, stored data is not
    /// what this version wrote).
    #[error("key store: {0}")]
    Backend(String),
    /// The block was already stored.
    #[error("block {block_id} from peer '{peer}' is already stored")]
    DuplicateBlock {
        /// Peer KME.
        peer: String,
        /// Block id.
        block_id: u64,
    },
    /// Not enough key material for the request.
    #[error("peer '{peer}' lane {lane}: {want} bytes requested, {have} available")]
    Insufficient {
        /// Peer KME.
        peer: String,
        /// Lane.
        lane: u8,
        /// Bytes requested.
        want: u64,
        /// Bytes available.
        have: u64,
    },
    /// A request was malformed (size not a multiple of 8, zero keys, …).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The peer's assignment does not start where this end's lane cursor is: the two ends
    /// are out of step.
    #[error(
        "peer '{peer}' lane {lane}: assignment starts at chunk {got_seq} byte {got_offset}, this end is at chunk {seq} byte {offset}"
    )]
    OutOfStep {
        /// Peer KME.
        peer: String,
        /// Lane.
        lane: u8,
        /// Where the assignment starts (chunk sequence number).
        got_seq: u64,
        /// Where the assignment starts (byte within the chunk).
        got_offset: u64,
        /// This end's cursor.
        seq: u64,
        /// This end's cursor.
        offset: u64,
    },
    /// A key ID is unknown here, or already fetched by this requester.
    #[error("key {0} is not available")]
    NotFound(String),
    /// The requester is not the master or a slave that the master named for this key.
    #[error("SAE '{requester}' is not entitled to key {key_id}")]
    NotEntitled {
        /// Requesting SAE.
        requester: String,
        /// Key ID.
        key_id: String,
    },
}

/// One key: its ID and bytes. No `Debug`, no `Clone`; zeroized on drop.
pub struct Key {
    /// ETSI 014 key ID (a UUID).
    pub id: String,
    /// Key bytes.
    pub bytes: Vec<u8>,
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// Where the master's KME cut a batch of keys, for the peer KME to cut the same bytes.
/// (Key IDs and sizes only, never key bytes.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    /// Lane the keys came from.
    pub lane: u8,
    /// Position of this cut among the lane's cuts (0, 1, 2, …): the peer applies them in
    /// this order.
    pub serial: u64,
    /// Chunk sequence number where the first key starts.
    pub start_seq: u64,
    /// Byte within that chunk.
    pub start_offset: u64,
    /// Master SAE.
    pub master_sae: String,
    /// SAEs entitled to fetch the keys at the peer KME.
    pub slave_saes: Vec<String>,
    /// Key IDs and sizes in bytes, in cutting order.
    pub keys: Vec<(String, u32)>,
}

/// A master SAE's request for keys, as the store sees it.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    /// Lane to cut from ([`lane_for`] the master's and the peer's KME IDs).
    pub lane: u8,
    /// Master SAE.
    pub master_sae: &'a str,
    /// SAEs entitled to fetch the keys at the peer KME.
    pub slave_saes: &'a [String],
    /// Number of keys.
    pub number: u32,
    /// Size of each key, bytes.
    pub size_bytes: u32,
}

/// Exact accounting of one peer's key material, in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    /// Bits received from distillation.
    pub produced_bits: u64,
    /// Bits not yet cut into keys.
    pub available_bits: u64,
    /// Bits cut into keys and handed out: to a master at this end, or to every named
    /// slave at the peer end.
    pub delivered_bits: u64,
    /// Bits cut into keys that wait here for the slaves their master named.
    pub held_bits: u64,
    /// Bits that expired before use.
    pub expired_bits: u64,
    /// Bits dropped when a block was split into whole-byte lanes.
    pub discarded_bits: u64,
}

impl Accounting {
    /// Whether `produced = available + held + delivered + expired + discarded`.
    pub fn balances(&self) -> bool {
        self.produced_bits
            == self.available_bits
                + self.held_bits
                + self.delivered_bits
                + self.expired_bits
                + self.discarded_bits
    }
}

/// The lane that serves keys whose master sits at `master_kme`, on the link between
/// `master_kme` and `slave_kme`: 0 when the master's KME ID sorts first.
pub fn lane_for(master_kme: &str, slave_kme: &str) -> u8 {
    u8::from(master_kme > slave_kme)
}

/// A durable, transactional key store (one per KME). Every method is one transaction: it
/// happens entirely or not at all, and is on disk when it returns.
pub trait KeyStore: Send + Sync {
    /// Stores a distilled block shared with `peer`, expiring at `expires_at` (seconds, the
    /// store's clock). Refuses a block id already stored for that peer.
    fn add_block(
        &self,
        peer: &str,
        block_id: u64,
        key: &qkdnet_core::Bits,
        expires_at: u64,
    ) -> Result<(), StoreError>;

    /// Master side: cuts `req.number` keys of `req.size_bytes` from `req.lane` of
    /// `peer`'s material for `req.master_sae`, with fresh key IDs, entitling
    /// `req.slave_saes` at the peer. Returns the keys and the assignment to send to the
    /// peer KME.
    fn allocate(
        &self,
        peer: &str,
        req: &KeyRequest<'_>,
        now: u64,
    ) -> Result<(Vec<Key>, Assignment), StoreError>;

    /// Master side: takes back keys cut by [`KeyStore::allocate`] that were never handed
    /// out (the peer KME could not be told): their bits move from delivered to discarded,
    /// never back to available (the peer may have cut them too).
    fn void(&self, peer: &str, key_ids: &[String]) -> Result<(), StoreError>;

    /// Peer side: cuts the keys the master's KME announced, from the same place of this
    /// end's copy of the lane, and keeps them for the named slaves. Assignments must come
    /// in `serial` order.
    fn assign(&self, peer: &str, assignment: &Assignment, now: u64) -> Result<(), StoreError>;

    /// [`KeyStore::assign`] for a run of assignments in one transaction: all or none.
    fn assign_many(&self, peer: &str, run: &[Assignment], now: u64) -> Result<(), StoreError> {
        for a in run {
            self.assign(peer, a, now)?;
        }
        Ok(())
    }

    /// Master side: the assignments cut for `peer` on `lane` whose delivery was not yet
    /// acknowledged, in serial order. After a restart the KME re-sends them: the peer
    /// applies what it lacks and ignores what it already has.
    fn unacknowledged(&self, peer: &str, lane: u8) -> Result<Vec<Assignment>, StoreError>;

    /// Master side: the peer has every assignment of `lane` below serial `below`.
    fn acknowledged(&self, peer: &str, lane: u8, below: u64) -> Result<(), StoreError>;

    /// Slave side: the keys `key_ids` for `requester`, who must be one of the slaves the
    /// master named (and the keys' master must be `master_sae`). Each slave gets a key at
    /// most once; a key's bytes are erased when every named slave has it. All-or-nothing.
    fn fetch(
        &self,
        master_sae: &str,
        requester: &str,
        key_ids: &[String],
    ) -> Result<Vec<Key>, StoreError>;

    /// Final node of a relay: keeps `key` (which arrived hop by hop from the master's KME
    /// `origin`) for `slave_saes` under its original ID. Accounted under the pseudo-peer
    /// `relay:<origin>`: produced and held on arrival, delivered when every slave has it.
    fn hold_relayed(
        &self,
        origin: &str,
        key: &Key,
        master_sae: &str,
        slave_saes: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError>;

    /// Expires material and unfetched keys whose time has come; returns bits expired.
    fn expire(&self, now: u64) -> Result<u64, StoreError>;

    /// The lane's next cut serial: on the master side, the serial the next allocation will
    /// take; on the peer side, the serial the next assignment must carry.
    fn lane_serial(&self, peer: &str, lane: u8) -> Result<u64, StoreError>;

    /// Bytes available in `lane` of `peer`'s material.
    fn available_bytes(&self, peer: &str, lane: u8) -> Result<u64, StoreError>;

    /// The accounting of `peer`'s material.
    fn accounting(&self, peer: &str) -> Result<Accounting, StoreError>;

    // The request path's operations, answered through a future so that a request waiting
    // for its durable commit holds no thread (the KME serves them on its async workers).
    // A store whose calls return at once may keep these defaults, which run the call
    // before returning a ready future; a store that waits on a writer must override them.

    /// [`KeyStore::allocate`], answered through a future.
    fn allocate_async(
        &self,
        peer: &str,
        req: &KeyRequest<'_>,
        now: u64,
    ) -> StoreFuture<(Vec<Key>, Assignment)> {
        Box::pin(std::future::ready(self.allocate(peer, req, now)))
    }

    /// [`KeyStore::assign_many`], answered through a future.
    fn assign_many_async(&self, peer: &str, run: &[Assignment], now: u64) -> StoreFuture<()> {
        Box::pin(std::future::ready(self.assign_many(peer, run, now)))
    }

    /// [`KeyStore::acknowledged`], answered through a future.
    fn acknowledged_async(&self, peer: &str, lane: u8, below: u64) -> StoreFuture<()> {
        Box::pin(std::future::ready(self.acknowledged(peer, lane, below)))
    }

    /// [`KeyStore::fetch`], answered through a future.
    fn fetch_async(
        &self,
        master_sae: &str,
        requester: &str,
        key_ids: &[String],
    ) -> StoreFuture<Vec<Key>> {
        Box::pin(std::future::ready(
            self.fetch(master_sae, requester, key_ids),
        ))
    }
}

/// The answer of a store operation, as a future that borrows nothing.
pub type StoreFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send>>;
