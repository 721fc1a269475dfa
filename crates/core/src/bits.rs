//! Packed bit strings.
//!
//! [`Bits`] stores bits little-endian in 64-bit words: bit `i` is bit `i % 64` of word
//! `i / 64`. Bits past `len` in the last word are always zero (every mutator keeps that
//! invariant), so word-level operations (XOR, popcount, parity) never need masking except
//! for ranges. The buffer is zeroized when dropped, because sifted and reconciled keys live
//! in it; it has no `Debug`, and cloning is explicit ([`Bits::duplicate`]) so copies of key
//! material are visible in the code.
//!
//! ## File format (`qkdnet distill` inputs and outputs)
//!
//! A bit file is the bits packed MSB-first into bytes (bit `i` is bit `7 − i % 8` of byte
//! `i / 8`), the format of `numpy.packbits` and of most QKD recorders; the bit count is the
//! byte count times eight unless given separately. [`Bits::from_msb_bytes`] and
//! [`Bits::to_msb_bytes`] convert.

use zeroize::Zeroize;

/// A packed, zeroize-on-drop bit string.
pub struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Drop for Bits {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

impl PartialEq for Bits {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.words == other.words
    }
}

impl Eq for Bits {}

impl Bits {
    /// `len` zero bits.
    pub fn zeros(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// From packed words; bits of `words` past `len` are cleared.
    ///
    /// # Panics
    /// If `words` holds fewer than `len` bits (a caller bug, not outside data).
    pub fn from_words(mut words: Vec<u64>, len: usize) -> Self {
        assert!(words.len() * 64 >= len, "from_words: too few words");
        words.truncate(len.div_ceil(64));
        let mut b = Self { words, len };
        b.clear_tail();
        b
    }

    /// From bytes packed MSB-first (see the module's file format), taking the first `len`
    /// bits; `None` when the bytes hold fewer than `len` bits.
    pub fn from_msb_bytes(bytes: &[u8], len: usize) -> Option<Self> {
        if bytes.len() * 8 < len {
            return None;
        }
        let mut words = vec![0u64; len.div_ceil(64)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut v = 0u64;
            for (j, &byte) in chunk.iter().enumerate() {
                v |= u64::from(byte.reverse_bits()) << (8 * j);
            }
            *w = v;
        }
        Some(Self::from_words(words, len))
    }

    /// The bits packed MSB-first into bytes (the last byte zero-padded).
    pub fn to_msb_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len.div_ceil(8));
        for (i, w) in self.words.iter().enumerate() {
            for j in 0..8 {
                if (i * 8 + j) * 8 >= self.len {
                    break;
                }
                out.push(((w >> (8 * j)) as u8).reverse_bits());
            }
        }
        out
    }

    /// From a slice of booleans (tests and small inputs).
    pub fn from_bools(bits: &[bool]) -> Self {
        let mut b = Self::zeros(bits.len());
        for (i, &v) in bits.iter().enumerate() {
            if v {
                b.set(i, true);
            }
        }
        b
    }

    /// Number of bits.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed words (bits past `len` are zero).
    #[inline]
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// An explicit copy (key material: make copies visible).
    pub fn duplicate(&self) -> Self {
        Self {
            words: self.words.clone(),
            len: self.len,
        }
    }

    fn clear_tail(&mut self) {
        let r = self.len % 64;
        if r != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << r) - 1;
            }
        }
    }

    /// Bit `i`.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        assert!(i < self.len, "bit index {i} out of range {}", self.len);
        (self.words[i / 64] >> (i % 64)) & 1 == 1
    }

    /// Sets bit `i`.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    pub fn set(&mut self, i: usize, v: bool) {
        assert!(i < self.len, "bit index {i} out of range {}", self.len);
        let m = 1u64 << (i % 64);
        if v {
            self.words[i / 64] |= m;
        } else {
            self.words[i / 64] &= !m;
        }
    }

    /// Flips bit `i`.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    pub fn flip(&mut self, i: usize) {
        assert!(i < self.len, "bit index {i} out of range {}", self.len);
        self.words[i / 64] ^= 1u64 << (i % 64);
    }

    /// Appends one bit.
    #[inline]
    pub fn push(&mut self, v: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        self.len += 1;
        if v {
            let i = self.len - 1;
            self.words[i / 64] |= 1u64 << (i % 64);
        }
    }

    /// Appends the low `count` bits of `v` (`count` ≤ 64; higher bits of `v` ignored).
    #[inline]
    pub fn push_bits(&mut self, v: u64, count: usize) {
        debug_assert!(count <= 64);
        if count == 0 {
            return;
        }
        let v = if count == 64 {
            v
        } else {
            v & ((1u64 << count) - 1)
        };
        let off = self.len % 64;
        if off == 0 {
            self.words.push(v);
        } else {
            if let Some(last) = self.words.last_mut() {
                *last |= v << off;
            }
            if off + count > 64 {
                self.words.push(v >> (64 - off));
            }
        }
        self.len += count;
    }

    /// Reserves room for `additional` more bits.
    pub fn reserve(&mut self, additional: usize) {
        let need = (self.len + additional).div_ceil(64);
        self.words.reserve(need.saturating_sub(self.words.len()));
    }

    /// Number of ones.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The running parities: bit `i` of the result is the parity of bits `0..=i` of
    /// `self`. Then the parity of any range `s..e` is two look-ups
    /// ([`Bits::parity_from_prefix`]). Six shift–XOR steps per word and a carry.
    pub fn prefix_parities(&self) -> Bits {
        let mut carry = 0u64;
        let words = self
            .words
            .iter()
            .map(|&w| {
                let mut x = w;
                x ^= x << 1;
                x ^= x << 2;
                x ^= x << 4;
                x ^= x << 8;
                x ^= x << 16;
                x ^= x << 32;
                x ^= carry;
                carry = 0u64.wrapping_sub(x >> 63);
                x
            })
            .collect();
        Bits::from_words(words, self.len)
    }

    /// Parity of bits `start..end` of the string whose [`Bits::prefix_parities`] `self` is.
    ///
    /// # Panics
    /// If the range is not within `0..=len`.
    #[inline]
    pub fn parity_from_prefix(&self, start: usize, end: usize) -> bool {
        assert!(start <= end && end <= self.len, "range {start}..{end}");
        if start == end {
            return false;
        }
        let before = start > 0 && self.get(start - 1);
        self.get(end - 1) ^ before
    }

    /// Parity of bits `start..end`, a word at a time.
    ///
    /// # Panics
    /// If the range is not within `0..=len`.
    #[inline]
    pub fn range_parity(&self, start: usize, end: usize) -> bool {
        assert!(start <= end && end <= self.len, "range {start}..{end}");
        if start == end {
            return false;
        }
        let (ws, we) = (start / 64, (end - 1) / 64);
        let lo_mask = !0u64 << (start % 64);
        let hi_mask = !0u64 >> (63 - (end - 1) % 64);
        if ws == we {
            return (self.words[ws] & lo_mask & hi_mask).count_ones() & 1 == 1;
        }
        let mut acc = (self.words[ws] & lo_mask) ^ (self.words[we] & hi_mask);
        for w in &self.words[ws + 1..we] {
            acc ^= w;
        }
        acc.count_ones() & 1 == 1
    }

    /// Parity of the bits of `self` at the positions set in `mask` (one AND-popcount
    /// pass over the words).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn masked_parity(&self, mask: &Bits) -> bool {
        assert_eq!(self.len, mask.len, "masked_parity: lengths differ");
        let acc = self
            .words
            .iter()
            .zip(&mask.words)
            .fold(0u64, |acc, (w, m)| acc ^ (w & m));
        acc.count_ones() & 1 == 1
    }

    /// Number of positions where `self` and `other` differ.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn hamming_distance(&self, other: &Bits) -> usize {
        assert_eq!(self.len, other.len, "hamming_distance: lengths differ");
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a ^ b).count_ones() as usize)
            .sum()
    }

    /// The bits at `indices`, in that order (a gather; used to apply permutations).
    pub fn gather(&self, indices: &[u32]) -> Bits {
        let mut words = vec![0u64; indices.len().div_ceil(64)];
        for (w, chunk) in words.iter_mut().zip(indices.chunks(64)) {
            let mut v = 0u64;
            for (j, &i) in chunk.iter().enumerate() {
                let i = i as usize;
                v |= ((self.words[i / 64] >> (i % 64)) & 1) << j;
            }
            *w = v;
        }
        Bits {
            words,
            len: indices.len(),
        }
    }

    /// Bits `start..end` as a new string.
    ///
    /// # Panics
    /// If the range is not within `0..=len`.
    pub fn slice(&self, start: usize, end: usize) -> Bits {
        assert!(start <= end && end <= self.len, "range {start}..{end}");
        let n = end - start;
        let mut words = vec![0u64; n.div_ceil(64)];
        let (q, r) = (start / 64, start % 64);
        for (k, w) in words.iter_mut().enumerate() {
            let lo = self.words.get(q + k).copied().unwrap_or(0) >> r;
            let hi = if r == 0 {
                0
            } else {
                self.words.get(q + k + 1).copied().unwrap_or(0) << (64 - r)
            };
            *w = lo | hi;
        }
        Bits::from_words(words, n)
    }

    /// Removes the bits at the sorted, distinct `positions` (e.g. disclosed sample bits),
    /// copying the runs between them a word at a time.
    pub fn remove_sorted(&self, positions: &[usize]) -> Bits {
        let mut out = Bits::zeros(0);
        out.words.reserve(self.words.len());
        let mut start = 0;
        for &p in positions.iter().chain(std::iter::once(&self.len)) {
            let p = p.min(self.len);
            if p > start {
                out.append_range(self, start, p);
            }
            start = p + 1;
        }
        out
    }

    /// Appends bits `start..end` of `src`.
    pub fn append_range(&mut self, src: &Bits, start: usize, end: usize) {
        assert!(start <= end && end <= src.len, "range {start}..{end}");
        let mut i = start;
        // Each step fills the rest of this string's last word (or a new word) with up to
        // 64 bits read from `src` at any alignment.
        while i < end {
            let off = self.len % 64;
            let take = (64 - off).min(end - i);
            let (q, r) = (i / 64, i % 64);
            let mut v = src.words[q] >> r;
            if r != 0 && r + take > 64 {
                v |= src.words[q + 1] << (64 - r);
            }
            if take < 64 {
                v &= (1u64 << take) - 1;
            }
            if off == 0 {
                self.words.push(v);
            } else if let Some(last) = self.words.last_mut() {
                *last |= v << off;
            }
            self.len += take;
            i += take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn range_parity_matches_bit_by_bit(v in proptest::collection::vec(any::<bool>(), 0..300), a in 0usize..300, b in 0usize..300) {
            let bits = Bits::from_bools(&v);
            let (s, e) = (a.min(b).min(v.len()), a.max(b).min(v.len()));
            let naive = v[s..e].iter().fold(false, |p, &x| p ^ x);
            prop_assert_eq!(bits.range_parity(s, e), naive);
        }

        #[test]
        fn prefix_parities_give_every_range_parity(v in proptest::collection::vec(any::<bool>(), 0..300), a in 0usize..300, b in 0usize..300) {
            let bits = Bits::from_bools(&v);
            let prefix = bits.prefix_parities();
            prop_assert_eq!(prefix.len(), v.len());
            let (s, e) = (a.min(b).min(v.len()), a.max(b).min(v.len()));
            prop_assert_eq!(prefix.parity_from_prefix(s, e), bits.range_parity(s, e));
            for i in 0..v.len() {
                prop_assert_eq!(prefix.get(i), v[..=i].iter().fold(false, |p, &x| p ^ x));
            }
        }

        #[test]
        fn masked_parity_matches_bit_by_bit(v in proptest::collection::vec(any::<(bool, bool)>(), 0..300)) {
            let (x, m): (Vec<bool>, Vec<bool>) = v.iter().copied().unzip();
            let naive = v.iter().fold(false, |p, &(x, m)| p ^ (x & m));
            prop_assert_eq!(Bits::from_bools(&x).masked_parity(&Bits::from_bools(&m)), naive);
        }

        #[test]
        fn msb_bytes_round_trip(v in proptest::collection::vec(any::<bool>(), 0..300)) {
            let bits = Bits::from_bools(&v);
            let bytes = bits.to_msb_bytes();
            prop_assert_eq!(bytes.len(), v.len().div_ceil(8));
            for (i, &x) in v.iter().enumerate() {
                prop_assert_eq!((bytes[i / 8] >> (7 - i % 8)) & 1 == 1, x);
            }
            let back = Bits::from_msb_bytes(&bytes, v.len()).unwrap();
            prop_assert!(back == bits);
        }

        #[test]
        fn slice_and_gather_match_indexing(v in proptest::collection::vec(any::<bool>(), 1..300), a in 0usize..300, b in 0usize..300) {
            let bits = Bits::from_bools(&v);
            let (s, e) = (a.min(b).min(v.len()), a.max(b).min(v.len()));
            let sl = bits.slice(s, e);
            prop_assert_eq!(sl.len(), e - s);
            for (i, &x) in v.iter().enumerate().take(e).skip(s) { prop_assert_eq!(sl.get(i - s), x); }
            let idx: Vec<u32> = (0..v.len() as u32).rev().collect();
            let g = bits.gather(&idx);
            for i in 0..v.len() { prop_assert_eq!(g.get(i), v[v.len() - 1 - i]); }
        }
    }

    #[test]
    fn remove_sorted_and_tail_invariant() {
        let bits = Bits::from_bools(&[true, false, true, true, false]);
        let r = bits.remove_sorted(&[0, 3]);
        assert!(r == Bits::from_bools(&[false, true, false]));
        // Word-level runs against a bit-by-bit twin.
        let v: Vec<bool> = (0..1000).map(|i| (i * 7 + i / 13) % 3 == 0).collect();
        let big = Bits::from_bools(&v);
        let pos = [0usize, 5, 64, 65, 200, 511, 512, 999];
        let kept: Vec<bool> = v
            .iter()
            .enumerate()
            .filter(|(i, _)| !pos.contains(i))
            .map(|(_, &b)| b)
            .collect();
        assert!(big.remove_sorted(&pos) == Bits::from_bools(&kept));
        let mut acc = Bits::from_bools(&[true]);
        acc.append_range(&big, 3, 900);
        assert!(acc.slice(1, 898) == big.slice(3, 900));
        let mut pushed = Bits::zeros(0);
        let mut twin = Vec::new();
        for (i, c) in [3usize, 64, 0, 61, 7, 64, 1].into_iter().enumerate() {
            let v = 0x9e37_79b9_7f4a_7c15u64.rotate_left(i as u32 * 11);
            pushed.push_bits(v, c);
            twin.extend((0..c).map(|j| (v >> j) & 1 == 1));
        }
        assert!(pushed == Bits::from_bools(&twin));
        let w = Bits::from_words(vec![u64::MAX], 3);
        assert_eq!(w.count_ones(), 3);
        assert!(Bits::from_msb_bytes(&[0xff], 9).is_none());
    }
}
