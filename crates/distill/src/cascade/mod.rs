//! Cascade reconciliation (Brassard & Salvail, EUROCRYPT '93), with the schedules and
//! refinements reviewed by Martinez-Mateo, Pacher, Peev, Ciurana, Martin, QIC 15, 453 (2015)
//! ("Demystifying the information reconciliation protocol Cascade").
//!
//! Bob corrects his string towards Alice's. Each pass shuffles the frame with a permutation
//! from a public seed (pass 0: identity) and cuts it into blocks of `kᵢ` bits; Alice
//! discloses block parities, Bob binary-searches every block whose parity differs, and each
//! bit he flips changes the parity of the blocks containing it in all passes, so those are
//! searched again (the cascade). Every parity Alice discloses is one leaked bit.
//!
//! The implementation is a pair of sans-IO state machines. [`Bob`] produces rounds of
//! parity [`Query`]s and consumes the answers; [`Alice`] answers a round. A round is one
//! message each way, so the number of rounds is the number of round trips. All binary
//! searches that are active at once advance together in one round, and all top-level block
//! parities of a pass travel in one round.
//!
//! Speed: a pass's shuffled copy of a string (packed in 64-bit words; the permutations are
//! computed once per frame length and shared) is built only when that pass first needs a
//! range parity. A pass cut into two halves (Yan et al.'s later passes, BICONF) gets its two
//! block parities from a mask of the first half in original order, one AND-popcount over
//! the frame, so the many passes that find both halves even never shuffle anything; a flip
//! touches only the passes whose copy exists. Both ends' parities are word-parallel
//! XOR/popcount over the range of the pass's copy. Shuffled copies are built by vector gathers (`gather`),
//! answers are packed a word at a time, and a pass's disclosed block parities become the
//! roots of Bob's search trees whole, their differences found a word at a time.

mod gather;
mod schedule;

pub use schedule::{Schedule, Variant};

use crate::random::permutation;
use gather::Indices;
use qkdnet_core::Bits;
use std::sync::Arc;

/// One parity question about Alice's shuffled string of a pass: the wire type itself, so
/// queries travel without conversion.
pub use qkdnet_wire::ParityQuery as Query;

/// A peer's request that cannot be answered (malformed or hostile input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CascadeError {
    /// A query names a pass that does not exist.
    #[error("parity query names pass {pass}, but the schedule has {passes} passes")]
    NoSuchPass {
        /// Pass named.
        pass: u16,
        /// Passes in the schedule.
        passes: usize,
    },
    /// A range query is empty or leaves the frame.
    #[error("parity query range {start}..{end} is outside the frame of {len} bits")]
    BadRange {
        /// Start.
        start: u32,
        /// End.
        end: u32,
        /// Frame length.
        len: usize,
    },
    /// The answers do not match the questions.
    #[error("parity reply has {got} bits, the round asked for {expected}")]
    AnswerLength {
        /// Bits received.
        got: usize,
        /// Bits expected.
        expected: usize,
    },
    /// Bob's corrections do not converge: the answers contradict each other (a faulty or
    /// hostile peer).
    #[error("reconciliation diverged after {flips} corrections in a frame of {len} bits")]
    Diverged {
        /// Corrections made.
        flips: u64,
        /// Frame length.
        len: usize,
    },
    /// A round asked for more parities than the frame could ever need.
    #[error("parity round asks {asked} parities, more than the limit {limit}")]
    TooManyQueries {
        /// Parities asked.
        asked: usize,
        /// The limit.
        limit: usize,
    },
}

/// The shuffles of every pass for frames of one length: pass `p ≥ 1` uses
/// `permutation(seed ⊕ p)`. Computing them is the most expensive part of setting up a
/// frame, and they are public, so a session computes them once and shares them (`Arc`)
/// across all its frames of that length: Cascade's analysis only needs the shuffle to be
/// independent of the channel errors, which it is.
pub struct Shuffles {
    /// perm[p][pos] = original index at shuffled position `pos` (empty for pass 0).
    perm: Vec<Indices>,
    /// inv[p][orig] = shuffled position of original index `orig` (empty for pass 0).
    inv: Vec<Vec<u32>>,
    /// half[p] bit `orig` = original index `orig` lands in the first ⌈n/2⌉ shuffled
    /// positions of pass p (empty for pass 0).
    half: Vec<Bits>,
}

impl Shuffles {
    /// The shuffles of `passes` passes over frames of `n` bits.
    pub fn new(seed: [u8; 32], n: usize, passes: usize) -> Self {
        let mut perm = vec![Indices::new(Vec::new(), 0)];
        let mut inv = vec![Vec::new()];
        let mut half = vec![Bits::zeros(0)];
        for p in 1..passes {
            let mut s = seed;
            s[0] ^= p as u8;
            s[1] ^= (p >> 8) as u8;
            let fwd = permutation(s, n);
            let mut back = vec![0u32; n];
            for (pos, &o) in fwd.iter().enumerate() {
                back[o as usize] = pos as u32;
            }
            let mut mask = Bits::zeros(n);
            for &o in &fwd[..n.div_ceil(2)] {
                mask.set(o as usize, true);
            }
            perm.push(Indices::new(fwd, n));
            inv.push(back);
            half.push(mask);
        }
        Self { perm, inv, half }
    }

    /// The first-half mask of `pass` when its blocks of `k` bits are exactly the two
    /// halves of the shuffled frame.
    #[inline]
    fn halves(&self, pass: usize, k: usize) -> Option<&Bits> {
        let m = self.half.get(pass)?;
        (pass > 0 && m.len() >= 2 && k == m.len().div_ceil(2)).then_some(m)
    }

    /// Frame length.
    pub fn frame_bits(&self) -> usize {
        self.inv.get(1).map_or(usize::MAX, Vec::len)
    }

    /// Number of passes covered.
    pub fn passes(&self) -> usize {
        self.perm.len()
    }

    fn shuffled(&self, bits: &Bits, pass: usize) -> Bits {
        if pass == 0 {
            bits.duplicate()
        } else {
            gather::gather(bits, &self.perm[pass])
        }
    }

    #[inline]
    fn position(&self, pass: usize, orig: usize) -> usize {
        if pass == 0 {
            orig
        } else {
            self.inv[pass][orig] as usize
        }
    }

    #[inline]
    fn original(&self, pass: usize, pos: usize) -> usize {
        if pass == 0 {
            pos
        } else {
            self.perm[pass].as_slice()[pos] as usize
        }
    }
}

/// Alice's side: answers parity queries about her (fixed) string.
pub struct Alice {
    schedule: Schedule,
    n: usize,
    sh: Arc<Shuffles>,
    bits: Bits,
    /// The running parities ([`Bits::prefix_parities`]) of pass p's shuffled copy of
    /// `bits` (p ≥ 1), built when the pass is first asked for a parity other than its two
    /// halves. Every range parity is then two bit look-ups instead of a scan of the
    /// range's words.
    prefix: Vec<Option<Bits>>,
    leaked: u64,
}

impl Alice {
    /// Prepares Alice's frame: her bits, the schedule and the shared shuffles (built for
    /// this frame length and at least as many passes).
    pub fn new(bits: Bits, schedule: Schedule, sh: Arc<Shuffles>) -> Self {
        let n = bits.len();
        assert!(
            sh.passes() >= schedule.passes() && (n == sh.frame_bits() || sh.passes() <= 1),
            "shuffles do not fit the frame"
        );
        let prefix = (0..schedule.passes()).map(|_| None).collect();
        Self {
            schedule,
            n,
            sh,
            bits,
            prefix,
            leaked: 0,
        }
    }

    /// Parity bits disclosed so far.
    pub fn leaked_bits(&self) -> u64 {
        self.leaked
    }

    /// Answers one round, in query order (a `Blocks` query contributes one bit per block).
    pub fn answer(&mut self, queries: &[Query]) -> Result<Bits, CascadeError> {
        let mut out = Packer::default();
        let limit = 4 * self.n + 64 * self.schedule.passes();
        for q in queries {
            match *q {
                Query::Blocks { pass } => {
                    let p = self.pass(pass)?;
                    let k = self.schedule.block_size(p);
                    if let Some(mask) = self.sh.halves(p, k) {
                        let first = self.bits.masked_parity(mask);
                        out.push(first);
                        out.push(first ^ self.bits.range_parity(0, self.n));
                    } else if p == 0 {
                        let bits = &self.bits;
                        block_parities(self.n, k, |s, e| bits.range_parity(s, e), &mut out);
                    } else {
                        let n = self.n;
                        let prefix = self.prefix(p);
                        block_parities(n, k, |s, e| prefix.parity_from_prefix(s, e), &mut out);
                    }
                }
                Query::Range { pass, start, end } => {
                    let p = self.pass(pass)?;
                    let (s, e) = (start as usize, end as usize);
                    if s >= e || e > self.n {
                        return Err(CascadeError::BadRange {
                            start,
                            end,
                            len: self.n,
                        });
                    }
                    out.push(if p == 0 {
                        self.bits.range_parity(s, e)
                    } else {
                        self.prefix(p).parity_from_prefix(s, e)
                    });
                }
            }
            if out.len() > limit {
                return Err(CascadeError::TooManyQueries {
                    asked: out.len(),
                    limit,
                });
            }
        }
        let out = out.finish();
        self.leaked += out.len() as u64;
        Ok(out)
    }

    fn pass(&self, pass: u16) -> Result<usize, CascadeError> {
        let p = usize::from(pass);
        if p >= self.schedule.passes() {
            return Err(CascadeError::NoSuchPass {
                pass,
                passes: self.schedule.passes(),
            });
        }
        Ok(p)
    }

    /// Pass p's (p ≥ 1) running parities, built when first asked for.
    #[inline]
    fn prefix(&mut self, p: usize) -> &Bits {
        match &mut self.prefix[p] {
            Some(x) => x,
            slot => slot.insert(self.sh.shuffled(&self.bits, p).prefix_parities()),
        }
    }
}

/// Collects answer bits a word at a time (`Bits::push`, which updates the string per bit,
/// measured 104 against 115 Mbit/s for the Yan et al. 10⁵-bit kernel at 2 %).
#[derive(Default)]
struct Packer {
    words: Vec<u64>,
    cur: u64,
    len: usize,
}

impl Packer {
    #[inline]
    fn push(&mut self, v: bool) {
        self.cur |= u64::from(v) << (self.len % 64);
        self.len += 1;
        if self.len.is_multiple_of(64) {
            self.words.push(self.cur);
            self.cur = 0;
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    fn finish(mut self) -> Bits {
        if !self.len.is_multiple_of(64) {
            self.words.push(self.cur);
        }
        Bits::from_words(self.words, self.len)
    }
}

/// The parities of consecutive blocks of `k` of `n` bits (the last one shorter), each
/// from `parity(start, end)`.
#[inline(always)]
fn block_parities(n: usize, k: usize, parity: impl Fn(usize, usize) -> bool, out: &mut Packer) {
    let mut s = 0;
    while s < n {
        let e = (s + k).min(n);
        out.push(parity(s, e));
        s = e;
    }
}

/// A binary search in progress: the interval `start..end` of `pass` has odd parity
/// difference. `node` is the interval's index in its block's halving tree (1 = the whole
/// block; children of `i` are `2i` and `2i + 1`).
#[derive(Debug, Clone, Copy)]
struct Search {
    pass: u16,
    /// Top-level block of the pass.
    block: u32,
    start: u32,
    end: u32,
    node: u32,
    alive: bool,
}

/// What Bob wants next.
#[derive(Debug)]
pub enum Step {
    /// Send these queries to Alice; call [`Bob::receive`] with her answers.
    Ask(Vec<Query>),
    /// Reconciliation is over; Bob's string is [`Bob::bits`].
    Done,
}

/// Alice's parities known to Bob for one pass: per block, the left child of every node of
/// its halving tree that has been asked about (heap-indexed: node `i` has children `2i` and
/// `2i + 1`). A later search through the same block reuses them instead of asking again.
///
/// Only left children are kept. A search at node `i` needs Alice's parity of `2i` alone
/// (it compares it with Bob's and goes left or right), and that parity is only ever
/// learnt by asking; the right child's, derivable as parent ⊕ left, is never read. So a
/// tree is two bits per internal node (known, value), interleaved a word each, so that a
/// look-up touches one cache line.
///
/// Only the blocks that are searched get a tree, allocated from one arena when their first
/// node is learnt. Allocating every block's tree up front cost about 0.6 MB per 2¹⁶-bit
/// frame, which with a session's hundred frames in flight thrashed the caches; keeping
/// both children and the two bit planes apart doubled the trees (22 MB per 10⁷-bit block
/// at 2 %) and their cache misses. (Sparse tables for the trees of large blocks save memory
/// but measured 2–7 % slower: the dense trees' upper levels share words that stay in
/// cache.)
struct KnownParities {
    /// Words per tree for each of the two bit planes (internal nodes < k rounded up to a
    /// power of two).
    words: usize,
    /// Per block: 0 for no tree, else 1 + the tree's index in `arena`.
    tree: Vec<u32>,
    /// Trees of `2·words` words: word `2j` holds the known flags of nodes `64j..64j + 64`,
    /// word `2j + 1` their left children's parities.
    arena: Vec<u64>,
}

impl KnownParities {
    fn new(blocks: usize, k: usize) -> Self {
        Self {
            words: k.next_power_of_two().div_ceil(64),
            tree: vec![0; blocks],
            arena: Vec::new(),
        }
    }

    /// Alice's parity of node `2·node` of `block`'s tree, if known.
    #[inline(always)]
    fn left(&self, block: usize, node: u32) -> Option<bool> {
        let t = self.tree[block] as usize;
        if t == 0 {
            return None;
        }
        let at = (t - 1) * 2 * self.words + 2 * (node as usize / 64);
        let m = 1u64 << (node % 64);
        (self.arena[at] & m != 0).then(|| self.arena[at + 1] & m != 0)
    }

    /// Records Alice's parity `v` of node `2·node` of `block`'s tree.
    #[inline(always)]
    fn set_left(&mut self, block: usize, node: u32, v: bool) {
        if self.tree[block] == 0 {
            self.arena.resize(self.arena.len() + 2 * self.words, 0);
            self.tree[block] = (self.arena.len() / (2 * self.words)) as u32;
        }
        let at = (self.tree[block] as usize - 1) * 2 * self.words + 2 * (node as usize / 64);
        let m = 1u64 << (node % 64);
        self.arena[at] |= m;
        if v {
            self.arena[at + 1] |= m;
        } else {
            self.arena[at + 1] &= !m;
        }
    }
}

/// Bob's side: drives the passes and corrects his string.
pub struct Bob {
    schedule: Schedule,
    n: usize,
    sh: Arc<Shuffles>,
    bits: Bits,
    /// Pass p's shuffled copy of `bits`, built when the pass first needs a range parity
    /// and kept in step with every flip after that (pass 0, unshuffled, uses `bits`).
    shuffled: Vec<Option<Bits>>,
    /// Per pass: parity difference (Alice ⊕ Bob) of each top-level block, once disclosed.
    diff: Vec<Option<Bits>>,
    /// Per pass: Alice's parities known to Bob.
    known: Vec<Option<KnownParities>>,
    /// Per pass and block: 1 + index in `active` of the block's search, or 0 for none.
    slot: Vec<Vec<u32>>,
    /// The pass whose top-level parities were asked last.
    current_pass: usize,
    /// Searches asked about in the outstanding round, in query order.
    outstanding: Vec<Search>,
    /// Whether the outstanding round is a `Blocks` round.
    awaiting_blocks: bool,
    /// Active searches to advance in the next round.
    active: Vec<Search>,
    flips: u64,
    rounds: u64,
    parities: u64,
}

impl Bob {
    /// Prepares Bob's frame: his bits, the schedule and the shared shuffles (built for
    /// this frame length and at least as many passes).
    pub fn new(bits: Bits, schedule: Schedule, sh: Arc<Shuffles>) -> Self {
        let n = bits.len();
        assert!(
            sh.passes() >= schedule.passes() && (n == sh.frame_bits() || sh.passes() <= 1),
            "shuffles do not fit the frame"
        );
        let passes = schedule.passes();
        let shuffled = (0..passes).map(|_| None).collect();
        Self {
            schedule,
            n,
            sh,
            bits,
            shuffled,
            diff: (0..passes).map(|_| None).collect(),
            known: (0..passes).map(|_| None).collect(),
            slot: vec![Vec::new(); passes],
            current_pass: 0,
            outstanding: Vec::new(),
            awaiting_blocks: false,
            active: Vec::new(),
            flips: 0,
            rounds: 0,
            parities: 0,
        }
    }

    /// The first round (top-level parities of pass 0), or `Done` for an empty frame.
    pub fn start(&mut self) -> Step {
        if self.n == 0 || self.schedule.passes() == 0 {
            return Step::Done;
        }
        self.ask_blocks(0)
    }

    fn ask_blocks(&mut self, pass: usize) -> Step {
        self.current_pass = pass;
        self.awaiting_blocks = true;
        self.rounds += 1;
        Step::Ask(vec![Query::Blocks { pass: pass as u16 }])
    }

    fn blocks_in(&self, pass: usize) -> usize {
        self.n.div_ceil(self.schedule.block_size(pass))
    }

    /// Consumes Alice's answers to the outstanding round and returns the next step.
    pub fn receive(&mut self, answers: &Bits) -> Result<Step, CascadeError> {
        let mut pending = Vec::new();
        if self.awaiting_blocks {
            let p = self.current_pass;
            let nb = self.blocks_in(p);
            if answers.len() != nb {
                return Err(CascadeError::AnswerLength {
                    got: answers.len(),
                    expected: nb,
                });
            }
            self.parities += nb as u64;
            let k = self.schedule.block_size(p);
            let known = KnownParities::new(nb, k);
            self.slot[p] = vec![0; nb];
            let mine = match self.sh.halves(p, k) {
                Some(mask) => {
                    let first = self.bits.masked_parity(mask);
                    let mut m = Packer::default();
                    m.push(first);
                    m.push(first ^ self.bits.range_parity(0, self.n));
                    m.finish()
                }
                None => {
                    let mut m = Packer::default();
                    let bits = self.copy(p);
                    block_parities(bits.len(), k, |s, e| bits.range_parity(s, e), &mut m);
                    m.finish()
                }
            };
            // Alice's answers are the roots of the pass's trees; the differences are
            // where hers and Bob's disagree, a word at a time.
            let d = Bits::from_words(
                answers
                    .words()
                    .iter()
                    .zip(mine.words())
                    .map(|(a, m)| a ^ m)
                    .collect(),
                nb,
            );
            for (w, &word) in d.words().iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let b = 64 * w + x.trailing_zeros() as usize;
                    x &= x - 1;
                    pending.push(self.push_search(p, b));
                }
            }
            self.diff[p] = Some(d);
            self.known[p] = Some(known);
            self.awaiting_blocks = false;
        } else {
            if answers.len() != self.outstanding.len() {
                return Err(CascadeError::AnswerLength {
                    got: answers.len(),
                    expected: self.outstanding.len(),
                });
            }
            self.parities += answers.len() as u64;
            debug_assert!(self.active.is_empty());
            // The searches asked about become the active ones where they are (one buffer
            // goes back and forth between `outstanding` and `active`).
            self.active = std::mem::take(&mut self.outstanding);
            for (i, s) in self.active.iter().enumerate() {
                let p = usize::from(s.pass);
                let b = s.block as usize;
                let a = answers.get(i);
                if let Some(kn) = self.known[p].as_mut() {
                    kn.set_left(b, s.node, a);
                }
                self.slot[p][b] = i as u32 + 1;
                pending.push(i as u32);
            }
        }
        self.process(pending);
        if self.flips > self.flip_limit() {
            return Err(CascadeError::Diverged {
                flips: self.flips,
                len: self.n,
            });
        }
        Ok(self.next_round())
    }

    /// Pass p's shuffled string: the frame itself for pass 0 (no shuffle), otherwise the
    /// copy, built now if it does not exist yet.
    fn copy(&mut self, p: usize) -> &Bits {
        if p == 0 {
            return &self.bits;
        }
        match &mut self.shuffled[p] {
            Some(x) => x,
            slot => slot.insert(self.sh.shuffled(&self.bits, p)),
        }
    }

    /// Pass p's shuffled string if it exists.
    #[inline]
    fn pass_bits(&self, p: usize) -> Option<&Bits> {
        if p == 0 {
            Some(&self.bits)
        } else {
            self.shuffled[p].as_ref()
        }
    }

    /// Starts a search over block `b` of pass `p`; returns its index.
    fn push_search(&mut self, p: usize, b: usize) -> u32 {
        self.copy(p);
        let k = self.schedule.block_size(p);
        let (s, e) = (b * k, ((b + 1) * k).min(self.n));
        self.active.push(Search {
            pass: p as u16,
            block: b as u32,
            start: s as u32,
            end: e as u32,
            node: 1,
            alive: true,
        });
        let idx = self.active.len() as u32;
        self.slot[p][b] = idx;
        idx - 1
    }

    /// Advances the searches in `pending` as far as known parities allow; a search narrowed
    /// to one bit flips it, which may start or kill other searches (added to the worklist).
    /// More corrections than this in one frame means the parities contradict each other.
    fn flip_limit(&self) -> u64 {
        self.n as u64 / 2 + 64
    }

    fn process(&mut self, mut pending: Vec<u32>) {
        while let Some(i) = pending.pop() {
            if self.flips > self.flip_limit() {
                return;
            }
            let i = i as usize;
            let mut s = self.active[i];
            if !s.alive {
                continue;
            }
            let p = usize::from(s.pass);
            let b = s.block as usize;
            while s.end - s.start > 1 {
                let m = mid(s.start, s.end);
                let Some(a) = self.known[p].as_ref().and_then(|kn| kn.left(b, s.node)) else {
                    break;
                };
                let bob_left = self
                    .pass_bits(p)
                    .is_some_and(|x| x.range_parity(s.start as usize, m as usize));
                if a != bob_left {
                    s.end = m;
                    s.node *= 2;
                } else {
                    s.start = m;
                    s.node = 2 * s.node + 1;
                }
            }
            if s.end - s.start == 1 {
                s.alive = false;
                self.active[i] = s;
                self.slot[p][b] = 0;
                let orig = self.sh.original(p, s.start as usize);
                self.flip(orig, &mut pending);
            } else {
                self.active[i] = s;
            }
        }
    }

    /// Flips original bit `orig` everywhere and updates the block differences: a search
    /// whose interval contained the bit is killed (its difference became even), and a block
    /// left odd without a search gets one.
    fn flip(&mut self, orig: usize, pending: &mut Vec<u32>) {
        self.flips += 1;
        self.bits.flip(orig);
        for p in 0..self.schedule.passes() {
            let Some(d) = self.diff[p].as_mut() else {
                // Passes not started yet: their copies are built from `bits` when needed.
                continue;
            };
            let k = self.schedule.block_size(p);
            let copy = if p == 0 {
                None
            } else {
                self.shuffled[p].as_mut()
            };
            let (pos, b) = match copy {
                // Pass 0 is the frame itself, already flipped.
                None if p == 0 => (orig, orig / k),
                Some(x) => {
                    let pos = self.sh.position(p, orig);
                    x.flip(pos);
                    (pos, pos / k)
                }
                // No search has run in this pass: it is cut in halves and has no searches.
                None => match self.sh.halves(p, k) {
                    Some(mask) => (usize::MAX, usize::from(!mask.get(orig))),
                    None => unreachable!("a pass cut in more than two blocks has its copy"),
                },
            };
            d.flip(b);
            let odd = d.get(b);
            let slot = self.slot[p][b];
            if slot != 0 {
                let s = &mut self.active[slot as usize - 1];
                if (pos as u32) >= s.start && (pos as u32) < s.end {
                    s.alive = false;
                    self.slot[p][b] = 0;
                }
            }
            if odd && self.slot[p][b] == 0 {
                pending.push(self.push_search(p, b));
            }
        }
    }

    fn next_round(&mut self) -> Step {
        self.active.retain(|s| s.alive);
        if self.active.is_empty() {
            let next = self.current_pass + 1;
            if next >= self.schedule.passes() {
                return Step::Done;
            }
            return self.ask_blocks(next);
        }
        self.outstanding = std::mem::take(&mut self.active);
        // The order of `active` is deterministic (it follows the answers), so the queries
        // go out unsorted.
        self.rounds += 1;
        Step::Ask(
            self.outstanding
                .iter()
                .map(|s| Query::Range {
                    pass: s.pass,
                    start: s.start,
                    end: mid(s.start, s.end),
                })
                .collect(),
        )
    }

    /// Bob's (corrected) string.
    pub fn bits(&self) -> &Bits {
        &self.bits
    }

    /// Takes Bob's string out.
    pub fn into_bits(self) -> Bits {
        self.bits
    }

    /// Statistics so far.
    pub fn stats(&self) -> CascadeStats {
        CascadeStats {
            frame_bits: self.n as u64,
            leaked_bits: self.parities,
            round_trips: self.rounds,
            corrected_bits: self.flips,
        }
    }
}

#[inline]
fn mid(start: u32, end: u32) -> u32 {
    start + (end - start) / 2
}

/// What one frame's reconciliation cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CascadeStats {
    /// Bits in the frame.
    pub frame_bits: u64,
    /// Parity bits Alice disclosed.
    pub leaked_bits: u64,
    /// Message round trips.
    pub round_trips: u64,
    /// Bits Bob flipped.
    pub corrected_bits: u64,
}

/// Runs both sides in-process (tests, benchmarks, emulation) and returns Bob's corrected
/// string with the statistics.
pub fn reconcile_local(
    alice: &Bits,
    bob: Bits,
    schedule: Schedule,
    shuffles: &Arc<Shuffles>,
) -> Result<(Bits, CascadeStats), CascadeError> {
    let mut a = Alice::new(alice.duplicate(), schedule.clone(), Arc::clone(shuffles));
    let mut b = Bob::new(bob, schedule, Arc::clone(shuffles));
    let mut step = b.start();
    while let Step::Ask(q) = step {
        let ans = a.answer(&q)?;
        step = b.receive(&ans)?;
    }
    debug_assert_eq!(a.leaked_bits(), b.stats().leaked_bits);
    let stats = b.stats();
    Ok((b.into_bits(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn pair(n: usize, q: f64, seed: u64) -> (Bits, Bits) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
        let b: Vec<bool> = a.iter().map(|&x| x ^ rng.gen_bool(q)).collect();
        (Bits::from_bools(&a), Bits::from_bools(&b))
    }

    #[test]
    fn corrects_all_errors_at_qber_range() {
        for &q in &[0.005, 0.01, 0.02, 0.05, 0.08, 0.11] {
            for variant in [Variant::Original, Variant::YanEtAl] {
                let n = 20_000;
                let (a, b) = pair(n, q, 42);
                let sched = Schedule::new(variant, q, n);
                let sh = Arc::new(Shuffles::new([9; 32], n, sched.passes()));
                let (fixed, st) = reconcile_local(&a, b, sched, &sh).unwrap();
                let residual = fixed.hamming_distance(&a);
                // Original Cascade leaves a residual error in a small fraction of frames;
                // Yan et al.'s ten passes essentially never do at these sizes.
                if variant == Variant::YanEtAl {
                    assert_eq!(residual, 0, "q={q}");
                }
                let f = st.leaked_bits as f64 / (n as f64 * qkdnet_keyrate::math::h2(q));
                assert!(f > 1.0 && f < 1.6, "q={q} {variant:?} f={f}");
            }
        }
    }

    #[test]
    fn hostile_queries_are_typed_errors() {
        let (a, _) = pair(100, 0.0, 3);
        let sh = Arc::new(Shuffles::new([0; 32], 100, 4));
        let mut alice = Alice::new(
            a,
            Schedule::new(Variant::Original, 0.02, 100),
            Arc::clone(&sh),
        );
        assert!(matches!(
            alice.answer(&[Query::Blocks { pass: 9 }]),
            Err(CascadeError::NoSuchPass { .. })
        ));
        assert!(matches!(
            alice.answer(&[Query::Range {
                pass: 0,
                start: 5,
                end: 5
            }]),
            Err(CascadeError::BadRange { .. })
        ));
        assert!(matches!(
            alice.answer(&[Query::Range {
                pass: 0,
                start: 5,
                end: 101
            }]),
            Err(CascadeError::BadRange { .. })
        ));
        let (_, b) = pair(100, 0.0, 3);
        let mut bob = Bob::new(b, Schedule::new(Variant::Original, 0.02, 100), sh);
        let _ = bob.start();
        assert!(matches!(
            bob.receive(&Bits::zeros(1)),
            Err(CascadeError::AnswerLength { .. })
        ));
    }
}
