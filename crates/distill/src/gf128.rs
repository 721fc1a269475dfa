//! Arithmetic in GF(2¹²⁸) = GF(2)[x] / (x¹²⁸ + x⁷ + x² + x + 1), the field of the
//! verification and authentication hashes.
//!
//! Elements are `u128` with bit `i` the coefficient of xⁱ (no bit reflection). The
//! carry-less 64×64 multiply is done with ordinary integer multiplications on operands
//! split into four interleaved classes of bits ("holes" one bit apart in every four), so
//! carries can only land in bit positions that are masked off afterwards; the high half
//! comes from the same routine on bit-reversed operands. It is portable, constant-time
//! (no table lookups indexed by secrets) and needs no `unsafe`. [`mul_naive`] is its
//! shift-and-add twin for tests.

const M0: u64 = 0x1111_1111_1111_1111;
const M1: u64 = 0x2222_2222_2222_2222;
const M2: u64 = 0x4444_4444_4444_4444;
const M3: u64 = 0x8888_8888_8888_8888;

/// Low 64 bits of the carry-less product of `x` and `y`.
///
/// Each integer product of two masked operands has at most 16 terms per column. A column
/// of 16 terms (only possible at bit 60 and above) carries into bit k+4, which is ≥ 64 and
/// therefore discarded; columns of ≤ 15 terms carry at most 3 places, into bits of other
/// classes that the final masks remove.
#[inline]
fn clmul_lo(x: u64, y: u64) -> u64 {
    let (x0, x1, x2, x3) = (x & M0, x & M1, x & M2, x & M3);
    let (y0, y1, y2, y3) = (y & M0, y & M1, y & M2, y & M3);
    let m = u64::wrapping_mul;
    let z0 = m(x0, y0) ^ m(x1, y3) ^ m(x2, y2) ^ m(x3, y1);
    let z1 = m(x0, y1) ^ m(x1, y0) ^ m(x2, y3) ^ m(x3, y2);
    let z2 = m(x0, y2) ^ m(x1, y1) ^ m(x2, y0) ^ m(x3, y3);
    let z3 = m(x0, y3) ^ m(x1, y2) ^ m(x2, y1) ^ m(x3, y0);
    (z0 & M0) | (z1 & M1) | (z2 & M2) | (z3 & M3)
}

/// Full 128-bit carry-less product of two 64-bit polynomials.
#[inline]
pub fn clmul64(x: u64, y: u64) -> u128 {
    let lo = clmul_lo(x, y);
    // rev(x)·rev(y) = rev₁₂₇(x·y): its low 64 bits, reversed, are bits 63..126 of x·y.
    let hi = clmul_lo(x.reverse_bits(), y.reverse_bits()).reverse_bits() >> 1;
    (u128::from(hi) << 64) | u128::from(lo)
}

/// Reduces a 256-bit product (hi, lo) modulo x¹²⁸ + x⁷ + x² + x + 1.
#[inline]
pub(crate) fn reduce(hi: u128, lo: u128) -> u128 {
    // x¹²⁸ ≡ x⁷ + x² + x + 1. Fold hi twice: the first fold leaves at most 7 bits above 127.
    let fold = |h: u128| h ^ (h << 1) ^ (h << 2) ^ (h << 7);
    let spill = (hi >> 127) ^ (hi >> 126) ^ (hi >> 121);
    lo ^ fold(hi) ^ fold(spill)
}

/// Product in GF(2¹²⁸) (Karatsuba over three 64×64 carry-less products).
#[inline]
pub fn mul(a: u128, b: u128) -> u128 {
    let (a0, a1) = (a as u64, (a >> 64) as u64);
    let (b0, b1) = (b as u64, (b >> 64) as u64);
    let l = clmul64(a0, b0);
    let h = clmul64(a1, b1);
    let m = clmul64(a0 ^ a1, b0 ^ b1) ^ l ^ h;
    let lo = l ^ (m << 64);
    let hi = h ^ (m >> 64);
    reduce(hi, lo)
}

/// Horner's rule over whole blocks: `acc ← (acc ⊕ b)·key` for each block, with the CPU's
/// carry-less multiply where present ([`crate::gf2x::backend`]), else [`mul`].
pub fn horner(acc: u128, key: u128, blocks: &[u128]) -> u128 {
    crate::gf2x::horner128(acc, key, blocks)
}

/// Shift-and-add product in GF(2¹²⁸): the slow, obvious twin of [`mul`].
pub fn mul_naive(a: u128, b: u128) -> u128 {
    let (mut acc, mut a) = (0u128, a);
    for i in 0..128 {
        if (b >> i) & 1 == 1 {
            acc ^= a;
        }
        let carry = a >> 127;
        a <<= 1;
        if carry == 1 {
            a ^= 0x87;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clmul_naive(x: u64, y: u64) -> u128 {
        (0..64)
            .filter(|i| (y >> i) & 1 == 1)
            .fold(0u128, |acc, i| acc ^ (u128::from(x) << i))
    }

    proptest! {
        #[test]
        fn clmul_matches_naive(x in any::<u64>(), y in any::<u64>()) {
            prop_assert_eq!(clmul64(x, y), clmul_naive(x, y));
        }

        #[test]
        fn field_mul_matches_naive(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(mul(a, b), mul_naive(a, b));
        }
    }

    proptest! {
        #[test]
        fn horner_matches_repeated_mul(acc in any::<u128>(), key in any::<u128>(), blocks in proptest::collection::vec(any::<u128>(), 0..80)) {
            let want = blocks.iter().fold(acc, |a, &b| mul_naive(a ^ b, key));
            prop_assert_eq!(horner(acc, key, &blocks), want);
        }
    }

    #[test]
    fn edge_operands() {
        for x in [0, 1, u64::MAX, 1 << 63, M0, M3] {
            for y in [0, 1, u64::MAX, 1 << 63, M1, M2] {
                assert_eq!(clmul64(x, y), clmul_naive(x, y), "{x:x} {y:x}");
            }
        }
        // x¹²⁷ · x = x¹²⁸ ≡ x⁷ + x² + x + 1.
        assert_eq!(mul(1 << 127, 2), 0x87);
        assert_eq!(mul(u128::MAX, u128::MAX), mul_naive(u128::MAX, u128::MAX));
        assert_eq!(mul(12345, 1), 12345);
    }
}
