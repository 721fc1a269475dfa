//! Multiplication of large binary polynomials (elements of GF(2)[z]) by an additive FFT
//! over GF(2⁶⁴): the exact, bit-packed kernel behind Toeplitz privacy amplification.
//!
//! # Method
//!
//! *Packing (Kronecker substitution).* A binary polynomial is cut into 32-bit pieces
//! `A(z) = Σ_I a_I(z) z^{32I}`, deg a_I < 32, and read as a polynomial `Σ a_I Y^I` whose
//! coefficients are elements of GF(2⁶⁴) = GF(2)[z]/(z⁶⁴ + z⁴ + z³ + z + 1). A product
//! `a_I b_J` has degree ≤ 62 and sums of such products are XORs, which never raise the
//! degree: every coefficient of the product polynomial over GF(2⁶⁴) is the exact
//! carry-less product, unreduced. Characteristic 2 is what makes this packing free; a
//! complex or NTT convolution needs ~27 bits of headroom per bit of input.
//!
//! *Additive FFT.* Products over GF(2⁶⁴) are computed by evaluating both operands at the
//! 2ᴷ points of the subspace V_K = span(β₀ … β_{K−1}), multiplying pointwise and
//! interpolating: the FFT of Lin, Chung and Han (FOCS 2014, "Novel polynomial basis and
//! its application to Reed–Solomon erasure codes", Algorithm 2 and its inverse) in the
//! basis `X_i = Π_{j ∈ bits(i)} ŝ_j`, where `s_j(x) = Π_{a ∈ V_j}(x − a)` is the subspace
//! vanishing polynomial. With a *Cantor basis* (β₀ = 1, β_i² + β_i = β_{i−1}; Cantor 1989,
//! J. Complexity 5, 271; Gao and Mateer 2010, IEEE Trans. Inf. Theory 56, 6265, §III)
//! `s_j(β_j) = 1`, so ŝ_j = s_j, and `s_j(x) = Σ_{i ⊆ j} x^{2^i}` (i ranging over the
//! binary submasks of j), a sparse polynomial: conversion between the monomial and the
//! novel basis is repeated division by s_j, a few XOR passes per level and no
//! multiplications. One transform of size 2ᴷ costs 2ᴷ⁻¹·K multiplications in GF(2⁶⁴).
//!
//! *Transposed product.* A Toeplitz hash wants only the middle of a product. Reading it as
//! `Mᵀ s`, with `M` the multiplication by the reversed key, and running the circuit of `M`
//! transposed (every basis-change XOR and butterfly transposed, in reverse order) needs a
//! transform as long as the seed alone, half the plain product's at some sizes
//! ([`toeplitz_words`]).
//!
//! *Multiplication in GF(2⁶⁴)* uses the CPU's carry-less multiply (x86-64 PCLMULQDQ)
//! when present, detected at run time, and otherwise the portable masked-integer
//! carry-less product of [`crate::gf128`]. Both are checked against a shift-and-add twin.

use std::sync::OnceLock;

/// Reduces a 128-bit carry-less product (hi, lo) modulo z⁶⁴ + z⁴ + z³ + z + 1.
#[inline(always)]
fn reduce(hi: u64, lo: u64) -> u64 {
    // z⁶⁴ ≡ z⁴ + z³ + z + 1; the first fold spills at most 4 bits above bit 63.
    let spill = (hi >> 63) ^ (hi >> 61) ^ (hi >> 60);
    let h = hi ^ spill;
    lo ^ h ^ (h << 1) ^ (h << 3) ^ (h << 4)
}

/// Product in GF(2⁶⁴), portable.
#[inline(always)]
pub fn mul_portable(a: u64, b: u64) -> u64 {
    let p = crate::gf128::clmul64(a, b);
    reduce((p >> 64) as u64, p as u64)
}

/// Product in GF(2⁶⁴) by shift and add: the slow, obvious twin for tests.
pub fn mul_naive(a: u64, b: u64) -> u64 {
    let mut r = 0u64;
    let mut a = a;
    for i in 0..64 {
        if (b >> i) & 1 == 1 {
            r ^= a;
        }
        let carry = a >> 63;
        a <<= 1;
        if carry == 1 {
            a ^= 0x1b;
        }
    }
    r
}

/// A way to multiply in GF(2⁶⁴), chosen once per call tree so the FFT loops are
/// monomorphised around it. The slice operations have scalar defaults; the hardware
/// multiplier overrides them with two-lane vector code.
trait FieldMul: Copy {
    fn mul(self, a: u64, b: u64) -> u64;

    /// a ← a + l·b; b ← b + a (forward butterfly).
    #[inline(always)]
    fn butterflies_fwd(self, lo: &mut [u64], hi: &mut [u64], l: u64) {
        for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
            *a ^= self.mul(l, *b);
            *b ^= *a;
        }
    }

    /// b ← b + a; a ← a + l·b (inverse butterfly).
    #[inline(always)]
    fn butterflies_inv(self, lo: &mut [u64], hi: &mut [u64], l: u64) {
        for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
            *b ^= *a;
            *a ^= self.mul(l, *b);
        }
    }

    /// a ← a·b elementwise.
    #[inline(always)]
    fn mul_pointwise(self, a: &mut [u64], b: &[u64]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x = self.mul(*x, *y);
        }
    }
}

#[derive(Clone, Copy)]
struct Portable;

impl FieldMul for Portable {
    #[inline(always)]
    fn mul(self, a: u64, b: u64) -> u64 {
        mul_portable(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    //! The hardware carry-less multiply. One of the two `unsafe` modules in qkdnet
    //! (ARCHITECTURE.md, "unsafe"; the other is Cascade's vector gather): the intrinsics
    //! need the CPU feature, which the [`Hw`] token proves.
    #![allow(unsafe_code)]
    #![deny(clippy::undocumented_unsafe_blocks)]

    use core::arch::x86_64::{
        __m128i, _mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_cvtsi64_si128, _mm_loadu_si128,
        _mm_set_epi64x, _mm_slli_epi64, _mm_srli_epi64, _mm_storeu_si128, _mm_unpackhi_epi64,
        _mm_unpacklo_epi64, _mm_xor_si128,
    };

    /// Two reductions at once: lanes (lo, hi) of the products `p0` and `p1`.
    #[inline(always)]
    fn reduce2(p0: __m128i, p1: __m128i) -> __m128i {
        // SAFETY: SSE2 only (guaranteed by `Hw`), no pointers.
        unsafe {
            let lo = _mm_unpacklo_epi64(p0, p1);
            let hi = _mm_unpackhi_epi64(p0, p1);
            let spill = _mm_xor_si128(
                _mm_xor_si128(_mm_srli_epi64(hi, 63), _mm_srli_epi64(hi, 61)),
                _mm_srli_epi64(hi, 60),
            );
            let h = _mm_xor_si128(hi, spill);
            let t = _mm_xor_si128(
                _mm_xor_si128(h, _mm_slli_epi64(h, 1)),
                _mm_xor_si128(_mm_slli_epi64(h, 3), _mm_slli_epi64(h, 4)),
            );
            _mm_xor_si128(lo, t)
        }
    }

    /// (l·b₀, l·b₁) for `l` in the low lane of `lv`.
    #[inline(always)]
    fn mul_by(lv: __m128i, b: __m128i) -> __m128i {
        // SAFETY: PCLMULQDQ and SSE2 (guaranteed by `Hw`), no pointers.
        unsafe {
            reduce2(
                _mm_clmulepi64_si128(lv, b, 0x00),
                _mm_clmulepi64_si128(lv, b, 0x10),
            )
        }
    }

    #[inline(always)]
    fn load(p: &[u64]) -> __m128i {
        debug_assert!(p.len() >= 2);
        // SAFETY: `p` has at least two u64 (callers pass chunks of 2); unaligned load.
        unsafe { _mm_loadu_si128(p.as_ptr().cast()) }
    }

    #[inline(always)]
    fn store(p: &mut [u64], v: __m128i) {
        debug_assert!(p.len() >= 2);
        // SAFETY: as in `load`.
        unsafe { _mm_storeu_si128(p.as_mut_ptr().cast(), v) }
    }

    #[inline(always)]
    fn splat_low(l: u64) -> __m128i {
        // SAFETY: SSE2 only.
        unsafe { _mm_cvtsi64_si128(l as i64) }
    }

    #[inline(always)]
    fn xor(a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: SSE2 only.
        unsafe { _mm_xor_si128(a, b) }
    }

    /// Proof that this CPU has PCLMULQDQ and SSE2: only [`Hw::detect`] makes one.
    #[derive(Clone, Copy)]
    pub(super) struct Hw(());

    impl Hw {
        pub(super) fn detect() -> Option<Self> {
            if std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("sse2") {
                Some(Hw(()))
            } else {
                None
            }
        }
    }

    impl super::FieldMul for Hw {
        #[inline(always)]
        fn mul(self, a: u64, b: u64) -> u64 {
            // SAFETY: a `Hw` exists only after run-time detection of pclmulqdq and sse2,
            // the features these intrinsics require; they take no pointers.
            let (lo, hi) = unsafe {
                let p: __m128i = _mm_clmulepi64_si128(
                    _mm_cvtsi64_si128(a as i64),
                    _mm_cvtsi64_si128(b as i64),
                    0x00,
                );
                (
                    _mm_cvtsi128_si64(p) as u64,
                    _mm_cvtsi128_si64(_mm_unpackhi_epi64(p, p)) as u64,
                )
            };
            super::reduce(hi, lo)
        }

        #[inline(always)]
        fn butterflies_fwd(self, lo: &mut [u64], hi: &mut [u64], l: u64) {
            let lv = splat_low(l);
            let mut a2 = lo.chunks_exact_mut(2);
            let mut b2 = hi.chunks_exact_mut(2);
            for (a, b) in (&mut a2).zip(&mut b2) {
                let (va, vb) = (load(a), load(b));
                let na = xor(va, mul_by(lv, vb));
                store(a, na);
                store(b, xor(vb, na));
            }
            for (a, b) in a2.into_remainder().iter_mut().zip(b2.into_remainder()) {
                *a ^= self.mul(l, *b);
                *b ^= *a;
            }
        }

        #[inline(always)]
        fn butterflies_inv(self, lo: &mut [u64], hi: &mut [u64], l: u64) {
            let lv = splat_low(l);
            let mut a2 = lo.chunks_exact_mut(2);
            let mut b2 = hi.chunks_exact_mut(2);
            for (a, b) in (&mut a2).zip(&mut b2) {
                let (va, vb) = (load(a), load(b));
                let nb = xor(vb, va);
                store(b, nb);
                store(a, xor(va, mul_by(lv, nb)));
            }
            for (a, b) in a2.into_remainder().iter_mut().zip(b2.into_remainder()) {
                *b ^= *a;
                *a ^= self.mul(l, *b);
            }
        }

        #[inline(always)]
        fn mul_pointwise(self, a: &mut [u64], b: &[u64]) {
            let mut a2 = a.chunks_exact_mut(2);
            let mut b2 = b.chunks_exact(2);
            for (x, y) in (&mut a2).zip(&mut b2) {
                let (vx, vy) = (load(x), load(y));
                // SAFETY: PCLMULQDQ and SSE2 (guaranteed by `Hw`), no pointers.
                let p = unsafe {
                    reduce2(
                        _mm_clmulepi64_si128(vx, vy, 0x00),
                        _mm_clmulepi64_si128(vx, vy, 0x11),
                    )
                };
                store(x, p);
            }
            for (x, y) in a2.into_remainder().iter_mut().zip(b2.remainder()) {
                *x = self.mul(*x, *y);
            }
        }
    }

    /// Proof that this CPU has AVX2 and VPCLMULQDQ as well: four products per instruction.
    #[derive(Clone, Copy)]
    pub(super) struct Hw4(Hw);

    impl Hw4 {
        pub(super) fn detect() -> Option<Self> {
            let hw = Hw::detect()?;
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("vpclmulqdq")
            {
                Some(Hw4(hw))
            } else {
                None
            }
        }
    }

    mod wide {
        //! Four-lane versions of the two-lane helpers (AVX2 + VPCLMULQDQ).
        use core::arch::x86_64::{
            __m256i, _mm256_clmulepi64_epi128, _mm256_loadu_si256, _mm256_set1_epi64x,
            _mm256_slli_epi64, _mm256_srli_epi64, _mm256_storeu_si256, _mm256_unpackhi_epi64,
            _mm256_unpacklo_epi64, _mm256_xor_si256,
        };

        #[inline(always)]
        pub(super) fn reduce4(pe: __m256i, po: __m256i) -> __m256i {
            // SAFETY: AVX2 (guaranteed by `Hw4`), no pointers.
            unsafe {
                let lo = _mm256_unpacklo_epi64(pe, po);
                let hi = _mm256_unpackhi_epi64(pe, po);
                let spill = _mm256_xor_si256(
                    _mm256_xor_si256(_mm256_srli_epi64(hi, 63), _mm256_srli_epi64(hi, 61)),
                    _mm256_srli_epi64(hi, 60),
                );
                let h = _mm256_xor_si256(hi, spill);
                let t = _mm256_xor_si256(
                    _mm256_xor_si256(h, _mm256_slli_epi64(h, 1)),
                    _mm256_xor_si256(_mm256_slli_epi64(h, 3), _mm256_slli_epi64(h, 4)),
                );
                _mm256_xor_si256(lo, t)
            }
        }

        /// l·b for four b, `lv` holding l in every lane.
        #[inline(always)]
        pub(super) fn mul_by(lv: __m256i, b: __m256i) -> __m256i {
            // SAFETY: VPCLMULQDQ and AVX2 (guaranteed by `Hw4`), no pointers.
            unsafe {
                reduce4(
                    _mm256_clmulepi64_epi128(lv, b, 0x00),
                    _mm256_clmulepi64_epi128(lv, b, 0x10),
                )
            }
        }

        /// Elementwise a·b.
        #[inline(always)]
        pub(super) fn mul(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: as in `mul_by`.
            unsafe {
                reduce4(
                    _mm256_clmulepi64_epi128(a, b, 0x00),
                    _mm256_clmulepi64_epi128(a, b, 0x11),
                )
            }
        }

        #[inline(always)]
        pub(super) fn load(p: &[u64]) -> __m256i {
            debug_assert!(p.len() >= 4);
            // SAFETY: `p` has at least four u64 (callers pass chunks of 4); unaligned load.
            unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
        }

        #[inline(always)]
        pub(super) fn store(p: &mut [u64], v: __m256i) {
            debug_assert!(p.len() >= 4);
            // SAFETY: as in `load`.
            unsafe { _mm256_storeu_si256(p.as_mut_ptr().cast(), v) }
        }

        #[inline(always)]
        pub(super) fn splat(l: u64) -> __m256i {
            // SAFETY: AVX only.
            unsafe { _mm256_set1_epi64x(l as i64) }
        }

        #[inline(always)]
        pub(super) fn xor(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 only.
            unsafe { _mm256_xor_si256(a, b) }
        }
    }

    impl super::FieldMul for Hw4 {
        #[inline(always)]
        fn mul(self, a: u64, b: u64) -> u64 {
            self.0.mul(a, b)
        }

        #[inline(always)]
        fn butterflies_fwd(self, lo: &mut [u64], hi: &mut [u64], l: u64) {
            let lv = wide::splat(l);
            let mut a4 = lo.chunks_exact_mut(4);
            let mut b4 = hi.chunks_exact_mut(4);
            for (a, b) in (&mut a4).zip(&mut b4) {
                let (va, vb) = (wide::load(a), wide::load(b));
                let na = wide::xor(va, wide::mul_by(lv, vb));
                wide::store(a, na);
                wide::store(b, wide::xor(vb, na));
            }
            self.0
                .butterflies_fwd(a4.into_remainder(), b4.into_remainder(), l);
        }

        #[inline(always)]
        fn butterflies_inv(self, lo: &mut [u64], hi: &mut [u64], l: u64) {
            let lv = wide::splat(l);
            let mut a4 = lo.chunks_exact_mut(4);
            let mut b4 = hi.chunks_exact_mut(4);
            for (a, b) in (&mut a4).zip(&mut b4) {
                let (va, vb) = (wide::load(a), wide::load(b));
                let nb = wide::xor(vb, va);
                wide::store(b, nb);
                wide::store(a, wide::xor(va, wide::mul_by(lv, nb)));
            }
            self.0
                .butterflies_inv(a4.into_remainder(), b4.into_remainder(), l);
        }

        #[inline(always)]
        fn mul_pointwise(self, a: &mut [u64], b: &[u64]) {
            let mut a4 = a.chunks_exact_mut(4);
            let mut b4 = b.chunks_exact(4);
            for (x, y) in (&mut a4).zip(&mut b4) {
                let p = wide::mul(wide::load(x), wide::load(y));
                wide::store(x, p);
            }
            self.0.mul_pointwise(a4.into_remainder(), b4.remainder());
        }
    }

    /// The Karatsuba pieces (low, high, middle) of the 128×128 carry-less product `a·b`,
    /// unreduced. The pieces are linear in the product, so the pieces of several products
    /// can be XORed and reduced once ([`finish128`]).
    #[inline(always)]
    fn parts128(hw: Hw, a: u128, b: u128) -> [__m128i; 3] {
        let _ = hw;
        // SAFETY: PCLMULQDQ and SSE2 (guaranteed by `Hw`), no pointers.
        unsafe {
            let va = _mm_set_epi64x((a >> 64) as i64, a as i64);
            let vb = _mm_set_epi64x((b >> 64) as i64, b as i64);
            let l = _mm_clmulepi64_si128(va, vb, 0x00);
            let h = _mm_clmulepi64_si128(va, vb, 0x11);
            let ma = _mm_xor_si128(va, _mm_unpackhi_epi64(va, va));
            let mb = _mm_xor_si128(vb, _mm_unpackhi_epi64(vb, vb));
            let m = _mm_clmulepi64_si128(ma, mb, 0x00);
            [l, h, m]
        }
    }

    /// The reduced product in GF(2¹²⁸) from (sums of) [`parts128`].
    #[inline(always)]
    fn finish128([l, h, m]: [__m128i; 3]) -> u128 {
        let (l, h, m) = (to_u128(l), to_u128(h), to_u128(m));
        let m = m ^ l ^ h;
        crate::gf128::reduce(h ^ (m >> 64), l ^ (m << 64))
    }

    /// 128×128 carry-less product (Karatsuba, three PCLMULQDQ), reduced in GF(2¹²⁸).
    #[inline(always)]
    fn mul128(hw: Hw, a: u128, b: u128) -> u128 {
        finish128(parts128(hw, a, b))
    }

    #[inline(always)]
    fn to_u128(v: __m128i) -> u128 {
        // SAFETY: SSE2 only.
        let (lo, hi) = unsafe {
            (
                _mm_cvtsi128_si64(v) as u64,
                _mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)) as u64,
            )
        };
        (u128::from(hi) << 64) | u128::from(lo)
    }

    /// Horner's rule four blocks at a time where there are at least eight:
    /// `acc ← (acc ⊕ b₀)·k⁴ ⊕ b₁·k³ ⊕ b₂·k² ⊕ b₃·k`, the same polynomial as four single
    /// steps. The four products are independent (the multiplier's latency overlaps instead
    /// of chaining) and share one reduction.
    #[target_feature(enable = "pclmulqdq,sse2")]
    unsafe fn horner_hw(hw: Hw, mut acc: u128, key: u128, blocks: &[u128]) -> u128 {
        let grouped = if blocks.len() >= 8 {
            blocks.len() / 4 * 4
        } else {
            0
        };
        let (head, tail) = blocks.split_at(grouped);
        if !head.is_empty() {
            let k2 = mul128(hw, key, key);
            let k3 = mul128(hw, k2, key);
            let k4 = mul128(hw, k3, key);
            for c in head.chunks_exact(4) {
                let mut sum = parts128(hw, acc ^ c[0], k4);
                for (&b, &k) in c[1..].iter().zip(&[k3, k2, key]) {
                    let p = parts128(hw, b, k);
                    for (s, q) in sum.iter_mut().zip(p) {
                        *s = xor(*s, q);
                    }
                }
                acc = finish128(sum);
            }
        }
        for &b in tail {
            acc = mul128(hw, acc ^ b, key);
        }
        acc
    }

    pub(super) fn horner(hw: Hw, acc: u128, key: u128, blocks: &[u128]) -> u128 {
        // SAFETY: `hw` proves the features are present.
        unsafe { horner_hw(hw, acc, key, blocks) }
    }

    /// The FFT product compiled with the features enabled, so the intrinsics inline into
    /// the loops (everything below is `#[inline(always)]`).
    #[target_feature(enable = "pclmulqdq,sse2")]
    unsafe fn product_hw(hw: Hw, ws: &mut super::Workspace, ops: super::Operands) {
        super::transform_product(hw, ws, ops)
    }

    #[target_feature(enable = "pclmulqdq,sse2,avx2,vpclmulqdq")]
    unsafe fn product_hw4(hw: Hw4, ws: &mut super::Workspace, ops: super::Operands) {
        super::transform_product(hw, ws, ops)
    }

    pub(super) fn product(hw: Hw, ws: &mut super::Workspace, ops: super::Operands) {
        // SAFETY: `hw` proves the features are present.
        unsafe { product_hw(hw, ws, ops) }
    }

    pub(super) fn product4(hw: Hw4, ws: &mut super::Workspace, ops: super::Operands) {
        // SAFETY: `hw` proves the features are present.
        unsafe { product_hw4(hw, ws, ops) }
    }
}

/// Which multiplier this machine uses: `"vpclmulqdq"` (four lanes), `"pclmulqdq"` (two)
/// or `"portable"`.
pub fn backend() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if clmul::Hw4::detect().is_some() {
            return "vpclmulqdq";
        }
        if clmul::Hw::detect().is_some() {
            return "pclmulqdq";
        }
    }
    "portable"
}

/// Horner's rule in GF(2¹²⁸) (see [`crate::gf128::horner`]).
pub(crate) fn horner128(acc: u128, key: u128, blocks: &[u128]) -> u128 {
    #[cfg(target_arch = "x86_64")]
    if let Some(hw) = clmul::Hw::detect() {
        return clmul::horner(hw, acc, key, blocks);
    }
    blocks
        .iter()
        .fold(acc, |a, &b| crate::gf128::mul(a ^ b, key))
}

/// Constants of the Cantor basis: `beta[i]` and `s[r][t] = s_r(β_t)`.
struct Tables {
    /// Read by the tests, which check the basis relations and evaluation points.
    #[allow(dead_code)]
    beta: [u64; 64],
    s: Vec<[u64; 64]>,
}

fn square(a: u64) -> u64 {
    mul_portable(a, a)
}

/// Solves x² + x = c in GF(2⁶⁴) (a GF(2)-linear system), if a solution exists.
fn solve_artin_schreier(c: u64) -> Option<u64> {
    // Column j of the matrix is L(z^j) = z^{2j} + z^j; row i holds bit i of every column.
    let cols: Vec<u64> = (0..64).map(|j| square(1u64 << j) ^ (1u64 << j)).collect();
    let mut rows: Vec<u128> = (0..64)
        .map(|i| {
            let mut r = 0u128;
            for (j, col) in cols.iter().enumerate() {
                r |= u128::from((col >> i) & 1) << j;
            }
            r | (u128::from((c >> i) & 1) << 64)
        })
        .collect();
    let mut pivots = Vec::new();
    let mut row = 0;
    for col in 0..64 {
        let Some(p) = (row..64).find(|&r| (rows[r] >> col) & 1 == 1) else {
            continue;
        };
        rows.swap(row, p);
        for r in 0..64 {
            if r != row && (rows[r] >> col) & 1 == 1 {
                rows[r] ^= rows[row];
            }
        }
        pivots.push(col);
        row += 1;
    }
    // Inconsistent: a zero row with right-hand side 1.
    if rows[row..].iter().any(|r| (r >> 64) & 1 == 1) {
        return None;
    }
    let mut x = 0u64;
    for (r, &col) in pivots.iter().enumerate() {
        x |= (((rows[r] >> 64) & 1) as u64) << col;
    }
    Some(x)
}

/// `s_r(x) = Σ_{i ⊆ r} x^{2^i}` (Cantor basis), by repeated squaring.
fn subspace_poly(r: usize, x: u64) -> u64 {
    let mut acc = 0u64;
    let mut pow = x; // x^{2^i}
    for i in 0..64 {
        if i & r == i {
            acc ^= pow;
        }
        if i >= r {
            break;
        }
        pow = square(pow);
    }
    acc
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut beta = [0u64; 64];
        beta[0] = 1;
        for i in 1..64 {
            // A Cantor basis exists in GF(2^(2^6)) for i < 64 (Cantor 1989); the tests
            // check every relation, so a failure here is a programming error.
            beta[i] = solve_artin_schreier(beta[i - 1]).unwrap_or(0);
        }
        let s = (0..64)
            .map(|r| {
                let mut row = [0u64; 64];
                for (t, v) in row.iter_mut().enumerate() {
                    *v = subspace_poly(r, beta[t]);
                }
                row
            })
            .collect();
        Tables { beta, s }
    })
}

/// Fills `lambda[b] = s_r(ω_{b·2^{r+1}})` for the blocks of layer `r`.
#[inline(always)]
fn layer_twiddles(r: usize, blocks: usize, lambda: &mut [u64]) {
    let s = &tables().s[r];
    lambda[0] = 0;
    for b in 1..blocks {
        let low = b.trailing_zeros() as usize;
        lambda[b] = lambda[b & (b - 1)] ^ s[r + 1 + low];
    }
}

/// Forward butterflies of one block with twiddle `l`.
#[inline(always)]
fn butterfly_fwd<M: FieldMul>(m: M, lo: &mut [u64], hi: &mut [u64], l: u64) {
    if l == 0 {
        for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
            *b ^= *a;
        }
    } else {
        m.butterflies_fwd(lo, hi, l);
    }
}

#[inline(always)]
fn butterfly_inv<M: FieldMul>(m: M, lo: &mut [u64], hi: &mut [u64], l: u64) {
    if l == 0 {
        for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
            *b ^= *a;
        }
    } else {
        m.butterflies_inv(lo, hi, l);
    }
}

/// s_r(ω_o) for an offset `o` that is a multiple of 2^{r+1}.
#[inline(always)]
fn twiddle_at(s: &[u64; 64], r: usize, o: usize) -> u64 {
    let mut acc = 0;
    let mut bits = o >> (r + 1);
    while bits != 0 {
        let t = bits.trailing_zeros() as usize;
        acc ^= s[r + 1 + t];
        bits &= bits - 1;
    }
    acc
}

/// The proper binary submasks of `k` (< 64), largest first, in a fixed array.
fn proper_submasks(k: usize) -> ([usize; 64], usize) {
    let mut v = [0usize; 64];
    let mut n = 0;
    let mut s = k;
    while s > 0 {
        s = (s - 1) & k;
        v[n] = s;
        n += 1;
    }
    (v, n)
}

/// XORs `f[i]` into `f[i − shift]` for `i` in `lo..hi` (`shift ≥ hi − lo`, no overlap); with
/// `T` (the transposed pass) `f[i − shift]` into `f[i]` instead.
#[inline(always)]
fn xor_pass<const T: bool>(f: &mut [u64], lo: usize, hi: usize, shift: usize) {
    let (below, above) = f.split_at_mut(lo);
    let below = &mut below[lo - shift..hi - shift];
    let above = &mut above[..hi - lo];
    if T {
        for (d, s) in above.iter_mut().zip(below.iter()) {
            *d ^= *s;
        }
    } else {
        for (d, s) in below.iter_mut().zip(above.iter()) {
            *d ^= *s;
        }
    }
}

/// One division step of the basis conversion on a block of 2^{k+1} coefficients:
/// f = f_lo + s_k·f_hi, leaving f_lo in the low half and f_hi in the high half.
/// `undo` runs the same XORs in reverse order (f_lo + s_k·f_hi → f).
///
/// Dividing by s_k = x^{2^k} + Σ_{j ⊊ k} x^{2^j} from the top coefficient down, each
/// quotient coefficient f[i] is XORed into f[i − 2^k + 2^j]; the smallest such distance
/// is `stride` = 2^k − 2^{j_max}, so chunks of `stride` coefficients have no internal
/// dependencies and each (chunk, j) pair is one vectorisable XOR pass.
///
/// With `T` every pass is transposed ([`xor_pass`]) and the order is kept: the transpose
/// of the step is then `undo` = true with `T`, the transpose of its inverse `undo` = false
/// with `T` (a transpose runs the transposed operations in reverse order).
#[inline(always)]
fn divide_step<const T: bool>(f: &mut [u64], k: usize, undo: bool) {
    if k == 0 {
        return; // s_0 = x: f_lo = f_0, f_hi = f_1 already.
    }
    let h = 1usize << k;
    let (subs, ns) = proper_submasks(k);
    let subs = &subs[..ns];
    let stride = h - (1usize << subs[0]);
    if !undo {
        let mut top = 2 * h;
        while top > h {
            let lo = top.saturating_sub(stride).max(h);
            for &j in subs {
                xor_pass::<T>(f, lo, top, h - (1usize << j));
            }
            top = lo;
        }
    } else {
        // Chunks in ascending order, submasks in reverse: the exact reverse sequence.
        let nchunks = h.div_ceil(stride);
        for c in (0..nchunks).rev() {
            let top = 2 * h - c * stride;
            let lo = top.saturating_sub(stride).max(h);
            for &j in subs.iter().rev() {
                xor_pass::<T>(f, lo, top, h - (1usize << j));
            }
        }
    }
}

/// Levels 0 … 5 of a conversion on each 64-coefficient block, with the level a constant so
/// the tiny XOR passes unroll.
#[inline(always)]
fn small_levels<const T: bool>(d: &mut [u64], undo: bool) {
    #[inline(always)]
    fn level<const K: usize, const T: bool>(blk: &mut [u64], undo: bool) {
        for b in blk.chunks_exact_mut(2 << K) {
            divide_step::<T>(b, K, undo);
        }
    }
    let top = (d.len().trailing_zeros() as usize).min(6);
    for blk in d.chunks_mut(64) {
        let order: [usize; 6] = if undo {
            [0, 1, 2, 3, 4, 5]
        } else {
            [5, 4, 3, 2, 1, 0]
        };
        for k in order.into_iter().filter(|&k| k < top) {
            match k {
                0 => {}
                1 => level::<1, T>(blk, undo),
                2 => level::<2, T>(blk, undo),
                3 => level::<3, T>(blk, undo),
                4 => level::<4, T>(blk, undo),
                _ => level::<5, T>(blk, undo),
            }
        }
    }
}

/// log₂ of the block that runs its low levels and layers while it is in cache (256 KiB).
const CACHE_LOG: usize = 15;

/// Constants for transforms of one size: 2ᴷ points, cache blocks of 2ᶜ.
struct Plan {
    k: usize,
    c: usize,
    /// `local[r][j] = s_r(ω_{j·2^{r+1}})` for the layers r < c inside one cache block.
    local: Vec<Vec<u64>>,
}

impl Plan {
    fn new(k: usize, cache_log: usize) -> Self {
        let c = k.min(cache_log);
        let local = (0..c)
            .map(|r| {
                let n = 1usize << (c - r - 1);
                let mut v = vec![0u64; n];
                layer_twiddles(r, n, &mut v);
                v
            })
            .collect();
        Plan { k, c, local }
    }
}

/// Monomial → novel basis, levels k−1 … c (those whose blocks exceed a cache block),
/// breadth-first. Only the first `live` coefficients may be non-zero; returns the extent
/// that may be non-zero afterwards. With `T`, the transpose of the inverse conversion
/// (which keeps no zero tail: pass `live` = the whole length).
#[inline(always)]
fn conv_top<const T: bool>(d: &mut [u64], plan: &Plan, live: usize) -> usize {
    let mut extent = live.min(d.len());
    for level in (plan.c..plan.k).rev() {
        let span = 2usize << level;
        if extent <= span / 2 {
            // Only block 0 holds non-zeros and its upper half is zero: nothing to divide.
            continue;
        }
        let blocks = extent.div_ceil(span);
        for blk in d[..blocks * span].chunks_exact_mut(span) {
            divide_step::<T>(blk, level, false);
        }
        extent = blocks * span;
    }
    extent
}

/// Monomial → novel basis, levels c−1 … 0 inside one cache block whose first `live`
/// coefficients may be non-zero. Returns the non-zero extent afterwards. `T` as in
/// [`conv_top`].
#[inline(always)]
fn conv_low<const T: bool>(d: &mut [u64], live: usize) -> usize {
    let c = d.len().trailing_zeros() as usize;
    let mut extent = live.min(d.len());
    for level in (6..c).rev() {
        let span = 2usize << level;
        if extent <= span / 2 {
            continue;
        }
        let blocks = extent.div_ceil(span);
        for blk in d[..blocks * span].chunks_exact_mut(span) {
            divide_step::<T>(blk, level, false);
        }
        extent = blocks * span;
    }
    let small = extent.next_multiple_of(64).min(d.len());
    small_levels::<T>(&mut d[..small], false);
    small
}

/// Novel → monomial basis, levels 0 … c−1 inside one cache block. With `T`, the
/// transpose of the forward conversion.
#[inline(always)]
fn conv_low_undo<const T: bool>(d: &mut [u64]) {
    let c = d.len().trailing_zeros() as usize;
    small_levels::<T>(d, true);
    for level in 6..c {
        for blk in d.chunks_exact_mut(2usize << level) {
            divide_step::<T>(blk, level, true);
        }
    }
}

/// Novel → monomial basis, levels c … k−1, breadth-first. `T` as in [`conv_low_undo`].
#[inline(always)]
fn conv_top_undo<const T: bool>(d: &mut [u64], plan: &Plan) {
    for level in plan.c..plan.k {
        for blk in d.chunks_exact_mut(2usize << level) {
            divide_step::<T>(blk, level, true);
        }
    }
}

/// Forward FFT layers k−1 … c, breadth-first; `live` as in [`conv_top`]. Returns the
/// non-zero prefix length of every cache block afterwards.
#[inline(always)]
fn fft_top<M: FieldMul>(
    m: M,
    d: &mut [u64],
    plan: &Plan,
    lambda: &mut [u64],
    live: usize,
) -> usize {
    let mut live = live.max(1);
    for r in (plan.c..plan.k).rev() {
        let h = 1usize << r;
        let blocks = d.len() >> (r + 1);
        layer_twiddles(r, blocks, lambda);
        for (blk, l) in d.chunks_exact_mut(2 * h).zip(lambda.iter()) {
            let (lo, hi) = blk.split_at_mut(h);
            if live <= h {
                // Upper half is zero: a' = a, b' = a.
                hi.copy_from_slice(lo);
            } else {
                butterfly_fwd(m, lo, hi, *l);
            }
        }
        live = live.min(h);
    }
    live
}

/// Forward FFT layers c−1 … 0 of cache block `bi`, whose first `live` values may be
/// non-zero.
#[inline(always)]
fn fft_low<M: FieldMul>(m: M, d: &mut [u64], bi: usize, plan: &Plan, live: usize) {
    let mut live = live.max(1);
    let tables = &tables().s;
    for r in (0..plan.c).rev() {
        let h = 1usize << r;
        let base = twiddle_at(&tables[r], r, bi << plan.c);
        for (blk, l) in d.chunks_exact_mut(2 * h).zip(plan.local[r].iter()) {
            let (lo, hi) = blk.split_at_mut(h);
            if live <= h {
                hi.copy_from_slice(lo);
            } else {
                butterfly_fwd(m, lo, hi, *l ^ base);
            }
        }
        live = live.min(h);
    }
}

/// How a layer's butterflies act on each pair of halves (a, b) with twiddle l.
#[derive(Clone, Copy)]
enum Pass {
    /// The inverse FFT's: b ← b + a; a ← a + l·b.
    Inverse,
    /// The forward FFT's, transposed: a ← a + b; b ← b + l·a (the inverse butterfly with
    /// the halves swapped).
    ForwardT,
    /// The inverse FFT's, transposed: b ← b + l·a; a ← a + b (the forward butterfly with
    /// the halves swapped).
    InverseT,
}

#[inline(always)]
fn pass_pair<M: FieldMul>(m: M, lo: &mut [u64], hi: &mut [u64], l: u64, pass: Pass) {
    match pass {
        Pass::Inverse => butterfly_inv(m, lo, hi, l),
        Pass::ForwardT => butterfly_inv(m, hi, lo, l),
        Pass::InverseT => butterfly_fwd(m, hi, lo, l),
    }
}

/// Layer `r` (≥ c) over the whole array, breadth-first.
#[inline(always)]
fn layer_top<M: FieldMul>(m: M, d: &mut [u64], r: usize, lambda: &mut [u64], pass: Pass) {
    let h = 1usize << r;
    layer_twiddles(r, d.len() >> (r + 1), lambda);
    for (blk, l) in d.chunks_exact_mut(2 * h).zip(lambda.iter()) {
        let (lo, hi) = blk.split_at_mut(h);
        pass_pair(m, lo, hi, *l, pass);
    }
}

/// Layer `r` (< c) of cache block `bi`.
#[inline(always)]
fn layer_low<M: FieldMul>(m: M, d: &mut [u64], r: usize, bi: usize, plan: &Plan, pass: Pass) {
    let h = 1usize << r;
    let base = twiddle_at(&tables().s[r], r, bi << plan.c);
    for (blk, l) in d.chunks_exact_mut(2 * h).zip(plan.local[r].iter()) {
        let (lo, hi) = blk.split_at_mut(h);
        pass_pair(m, lo, hi, *l ^ base, pass);
    }
}

/// Inverse FFT layers 0 … c−1 of cache block `bi`.
#[inline(always)]
fn ifft_low<M: FieldMul>(m: M, d: &mut [u64], bi: usize, plan: &Plan) {
    for r in 0..plan.c {
        layer_low(m, d, r, bi, plan, Pass::Inverse);
    }
}

/// Inverse FFT layers c … k−1, breadth-first.
#[inline(always)]
fn ifft_top<M: FieldMul>(m: M, d: &mut [u64], plan: &Plan, lambda: &mut [u64]) {
    for r in plan.c..plan.k {
        layer_top(m, d, r, lambda, Pass::Inverse);
    }
}

/// Work buffers and constants for products of one size, kept across calls. The buffers
/// hold key-derived values after a product: the owner wipes them.
pub struct Workspace {
    a: Vec<u64>,
    b: Vec<u64>,
    lambda: Vec<u64>,
    plan: Option<Plan>,
    cache_log: usize,
    /// Widest multiplier allowed (4, 2 or 1 lanes); tests narrow it to cover every path.
    lanes: usize,
}

impl Default for Workspace {
    fn default() -> Self {
        Self {
            a: Vec::new(),
            b: Vec::new(),
            lambda: Vec::new(),
            plan: None,
            cache_log: CACHE_LOG,
            lanes: 4,
        }
    }
}

impl Workspace {
    /// Overwrites every buffer with zeros.
    pub fn wipe(&mut self) {
        use zeroize::Zeroize;
        self.a.as_mut_slice().zeroize();
        self.b.as_mut_slice().zeroize();
        self.lambda.as_mut_slice().zeroize();
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        8 * (self.a.capacity() + self.b.capacity() + self.lambda.capacity())
    }
}

/// Splits 64-bit words of a bit string into 32-bit pieces, zero-padded to `len`.
fn unpack32(words: &[u64], nbits: usize, out: &mut [u64]) {
    let pieces = nbits.div_ceil(32);
    for (i, o) in out.iter_mut().enumerate() {
        *o = if i < pieces {
            let w = words[i / 2];
            if i % 2 == 0 {
                w & 0xffff_ffff
            } else {
                w >> 32
            }
        } else {
            0
        };
    }
    // Clear bits beyond nbits in the last piece (Bits keeps them zero, but be exact).
    if !nbits.is_multiple_of(32) && pieces > 0 {
        out[pieces - 1] &= (1u64 << (nbits % 32)) - 1;
    }
}

/// The product of binary polynomials `a` (`na` bits, LSB-first words) and `b`, as words
/// of the full product (`na + nb − 1` bits). Buffers come from `ws`, which is left
/// holding key-derived values: the caller wipes it.
pub fn mul_words(ws: &mut Workspace, a: &[u64], na: usize, b: &[u64], nb: usize) -> Vec<u64> {
    if na == 0 || nb == 0 {
        return Vec::new();
    }
    let nbits = na + nb - 1;
    let mut out = middle_words(ws, a, na, b, nb, 0, nbits);
    if !nbits.is_multiple_of(64) {
        if let Some(last) = out.last_mut() {
            *last &= (1u64 << (nbits % 64)) - 1;
        }
    }
    out
}

/// Smallest transform size 2ᴷ whose product, reduced mod s_K(Y), still holds pieces
/// `w0..w1` exactly, for operands of `pa` and `pb` pieces.
///
/// Reducing modulo `s_K(Y) = Y^{2^K} + Σ_{j ⊊ K} Y^{2^j}` folds the coefficient of
/// `Y^{2^K + e}` onto `Y^{2^j + e}` for every proper submask j of K. When the product
/// exceeds 2ᴷ by E pieces, the folds land in `[2^j, 2^j + E)`; if none meets the wanted
/// range (and one fold suffices, E ≤ 2ᴷ − 2^{j_max}), a transform of half the size serves.
/// For a Toeplitz hash with m ≤ n this holds when K is a power of two (s_K = Y^{2^K} + Y).
fn transform_log(pa: usize, pb: usize, w0: usize, w1: usize) -> usize {
    let total = pa + pb - 1;
    let full = total.next_power_of_two().max(2).trailing_zeros() as usize;
    // Each operand must fit the transform unreduced.
    let lowest = w1
        .max(pa)
        .max(pb)
        .next_power_of_two()
        .max(2)
        .trailing_zeros() as usize;
    for k in lowest..full {
        let size = 1usize << k;
        let excess = total - size;
        let (subs, ns) = proper_submasks(k);
        let subs = &subs[..ns];
        let jmax = subs.first().copied().unwrap_or(0);
        if excess > size - (1usize << jmax) {
            continue;
        }
        let clear = subs.iter().all(|&j| {
            let (lo, hi) = (1usize << j, (1usize << j) + excess);
            hi <= w0 || lo >= w1
        });
        if clear {
            return k;
        }
    }
    full
}

/// Bits `start..end` of the product of binary polynomials `a` (`na` bits) and `b` (`nb`
/// bits), computed with the smallest transform that holds them exactly (see
/// [`transform_log`]). `end` ≤ `na + nb − 1`. Buffers come from `ws`, which is left holding
/// key-derived values: the caller wipes it.
pub fn middle_words(
    ws: &mut Workspace,
    a: &[u64],
    na: usize,
    b: &[u64],
    nb: usize,
    start: usize,
    end: usize,
) -> Vec<u64> {
    if na == 0 || nb == 0 || start >= end {
        return Vec::new();
    }
    let pa = na.div_ceil(32);
    let pb = nb.div_ceil(32);
    // Product words start/64 ..= (end−1)/64 read pieces 2w−1 … 2w+1.
    let (first_word, last_word) = (start / 64, (end - 1) / 64);
    let w0 = (2 * first_word).saturating_sub(1);
    let w1 = 2 * last_word + 2;
    ws.prepare(transform_log(pa, pb, w0, w1));
    unpack32(a, na, &mut ws.a);
    unpack32(b, nb, &mut ws.b);
    product(
        ws,
        Operands {
            pa,
            pb,
            kind: Kind::Product,
            want: usize::MAX,
        },
    );
    let c = &ws.a;
    product_bits(|i| c.get(i).copied().unwrap_or(0), start, end)
}

/// The Toeplitz hash `T x` (m × n, `T[i][j] = s[i − j + n − 1]`), which is bits
/// `n − 1 .. n − 1 + m` of the product `s·x`, by the *transposed* product.
///
/// In 32-bit pieces (module documentation) the wanted coefficients `C_K = Σ_j S_{K−j} X_j`
/// form a middle product. With `X'` the pieces of `x` in reverse order, `C_{pb−1+i} =
/// Σ_j X'_j S_{i+j}`, which is `Mᵀ S` for the map `M: Z ↦ Z·X'`; the transposition
/// principle (Bostan, Lecerf and Schost, ISSAC 2003; for the middle product Hanrot,
/// Quercia and Zimmermann, AAECC 14, 415 (2004)) turns the evaluate–multiply–interpolate
/// circuit of `M` into one for `Mᵀ` of the same cost: the conversions and butterflies run
/// transposed and in reverse order. `M` needs a transform only as long as `s` (no
/// reduction happens for the outputs read), where the plain product needs room for
/// `s` and `x` together: at n = 9·10⁶, m = 6.1·10⁶ that is 2¹⁹ points instead of 2²⁰.
///
/// `x` is shifted up to a multiple of 32 bits first, so that the first wanted bit lies in
/// the first coefficient the middle product yields. With `drawn` the seed's pieces are the
/// coefficients `Conv⁻ᵀ s` (see [`expand_transposed`]) and the first conversion is skipped.
pub fn toeplitz_words(
    ws: &mut Workspace,
    seed: &[u64],
    x: &[u64],
    n: usize,
    m: usize,
    drawn: bool,
) -> Vec<u64> {
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let ns = n + m - 1;
    let r = (32 - n % 32) % 32;
    let nx = n + r;
    let pb = nx / 32;
    // Bits nx − 1 .. nx − 1 + m of s·(z^r x); the top one lies in piece `top`.
    let (start, end) = (nx - 1, nx - 1 + m);
    let top = (end - 1) / 32;
    let len = (top + 1).max(pb).next_power_of_two().max(2);
    ws.prepare(len.trailing_zeros() as usize);
    unpack32(seed, ns, &mut ws.a);
    // x' = the pieces of z^r x, last first.
    ws.b.fill(0);
    let word = |w: usize| {
        let cur = x.get(w).copied().unwrap_or(0);
        if r == 0 {
            cur
        } else {
            let below = if w == 0 { 0 } else { x[w - 1] >> (64 - r) };
            (cur << r) | below
        }
    };
    for (t, slot) in ws.b[..pb].iter_mut().rev().enumerate() {
        let w = word(t / 2);
        *slot = if t % 2 == 0 { w & 0xffff_ffff } else { w >> 32 };
    }
    // Bits of x past n would sit past piece pb − 1 of z^r x: never read.
    product(
        ws,
        Operands {
            pa: ns.div_ceil(32),
            pb,
            kind: Kind::Transposed { drawn },
            // Outputs 0 ..= top − (pb − 1) are C_{pb−1} … C_top.
            want: top + 2 - pb,
        },
    );
    // C_K = output K − (pb − 1); coefficients below pb − 1 touch only bits below `start`,
    // those above `top` only bits at or past `end`.
    let c = &ws.a;
    product_bits(
        |k| {
            k.checked_sub(pb - 1)
                .and_then(|i| c.get(i).copied())
                .unwrap_or(0)
        },
        start,
        end,
    )
}

/// The Toeplitz seed a shared random `draw` (`nbits` bits) stands for in
/// [`toeplitz_words`] with `drawn`: `s = Convᵀ(draw)` in 32-bit pieces, `Conv` the
/// monomial-to-novel basis conversion of the additive FFT (Lin, Chung and Han 2014).
///
/// `Conv` is triangular with a unit diagonal (`X_i` has degree `i`), so `Convᵀ` is too,
/// with the other orientation: piece `i` of `s` depends on pieces `0..=i` of the draw, the
/// map does not depend on how far the input is padded, and it acts on every bit position
/// of the pieces alike (it only adds coefficients). It is therefore a bijection of the bit
/// strings of each length, and a uniformly random draw gives a uniformly random seed.
pub fn expand_transposed(draw: &[u64], nbits: usize) -> Vec<u64> {
    let pieces = nbits.div_ceil(32);
    if pieces == 0 {
        return Vec::new();
    }
    let mut d = vec![0u64; pieces.next_power_of_two().max(2)];
    unpack32(draw, nbits, &mut d);
    conv_low_undo::<true>(&mut d);
    let out = product_bits(|i| d.get(i).copied().unwrap_or(0) & 0xffff_ffff, 0, nbits);
    {
        use zeroize::Zeroize;
        d.zeroize();
    }
    out
}

/// Bits `start..end` of the binary polynomial `Σ_i piece(i)·z^{32i}` (pieces of up to 64
/// bits overlap their neighbours: XOR), as LSB-first words.
fn product_bits(piece: impl Fn(usize) -> u64, start: usize, end: usize) -> Vec<u64> {
    let word = |w: usize| {
        let lo = if w == 0 { 0 } else { piece(2 * w - 1) >> 32 };
        piece(2 * w) ^ (piece(2 * w + 1) << 32) ^ lo
    };
    let (first_word, last_word) = (start / 64, (end - 1) / 64);
    // Shift the product words down by start % 64 bits.
    let nbits = end - start;
    let shift = start % 64;
    let mut out = Vec::with_capacity(nbits.div_ceil(64));
    for i in 0..nbits.div_ceil(64) {
        let w = first_word + i;
        let lo = word(w) >> shift;
        let hi = if shift == 0 || w + 1 > last_word {
            0
        } else {
            word(w + 1) << (64 - shift)
        };
        out.push(lo | hi);
    }
    if !nbits.is_multiple_of(64) {
        if let Some(last) = out.last_mut() {
            *last &= (1u64 << (nbits % 64)) - 1;
        }
    }
    out
}

impl Workspace {
    /// Buffers and constants for transforms of 2ᴷ points (kept when they already fit).
    fn prepare(&mut self, k: usize) {
        let len = 1usize << k;
        if self.a.len() != len || self.plan.as_ref().map(|p| p.c) != Some(k.min(self.cache_log)) {
            self.wipe();
            self.a = vec![0; len];
            self.b = vec![0; len];
            self.lambda = vec![0; (len / 2).max(1)];
            self.plan = Some(Plan::new(k, self.cache_log));
        }
    }
}

/// What one run of the transform circuit computes.
#[derive(Clone, Copy)]
enum Kind {
    /// `a·b` (both operands in `ws.a`, `ws.b`; the product left in `ws.a`).
    Product,
    /// `Mᵀ a` for `M: z ↦ z·b` ([`toeplitz_words`]); `drawn`: `a` already holds `Conv⁻ᵀ a`.
    Transposed { drawn: bool },
}

/// The operands of one product: their lengths in 32-bit pieces, what to compute, and how
/// many of the result's first coefficients are read (the transposed product skips work
/// on the others).
#[derive(Clone, Copy)]
struct Operands {
    pa: usize,
    pb: usize,
    kind: Kind,
    want: usize,
}

fn product(ws: &mut Workspace, ops: Operands) {
    #[cfg(target_arch = "x86_64")]
    {
        if ws.lanes >= 4 {
            if let Some(hw) = clmul::Hw4::detect() {
                return clmul::product4(hw, ws, ops);
            }
        }
        if ws.lanes >= 2 {
            if let Some(hw) = clmul::Hw::detect() {
                return clmul::product(hw, ws, ops);
            }
        }
    }
    transform_product(Portable, ws, ops)
}

/// Both operands to the novel basis and through the forward FFT, pointwise product,
/// inverse FFT and back to the monomial basis. Linear maps acting on disjoint index bits
/// commute, so the levels and layers below the cache block run block by block, each
/// block carried from monomial coefficients to its product's coefficients while it is in
/// cache; only the top levels and layers sweep the whole arrays.
///
/// One operand that fits a single cache block (all top layers then copy block 0 outwards)
/// is converted once, before the copies, instead of once per block.
///
/// For [`Kind::Transposed`], `ws.a` goes through the transpose of that circuit for
/// multiplication by `b`: `Conv⁻ᵀ`, the inverse FFT transposed (layers top-down), the
/// pointwise product, the forward FFT transposed (layers bottom-up), `Convᵀ`. A transposed
/// butterfly is the other kind of butterfly with its halves swapped: (a ← a + l·b;
/// b ← b + a)ᵀ is (a ← a + b; b ← b + l·a).
#[inline(always)]
fn transform_product<M: FieldMul>(m: M, ws: &mut Workspace, ops: Operands) {
    let Some(plan) = ws.plan.as_ref() else {
        return;
    };
    let span = 1usize << plan.c;
    let (la, conv_a) = match ops.kind {
        Kind::Product => operand_top(m, &mut ws.a, plan, &mut ws.lambda, ops.pa),
        Kind::Transposed { drawn } => {
            if !drawn {
                let len = ws.a.len();
                conv_top::<true>(&mut ws.a, plan, len);
            }
            transposed_layers_top(m, &mut ws.a, plan, &mut ws.lambda, false, usize::MAX);
            (span, !drawn)
        }
    };
    let transposed = matches!(ops.kind, Kind::Transposed { .. });
    let (lb, conv_b) = operand_top(m, &mut ws.b, plan, &mut ws.lambda, ops.pb);
    for (bi, (ba, bb)) in
        ws.a.chunks_exact_mut(span)
            .zip(ws.b.chunks_exact_mut(span))
            .enumerate()
    {
        if transposed {
            if conv_a {
                conv_low::<true>(ba, span);
            }
            transposed_layers_low(m, ba, bi, plan, false);
        } else {
            let la = if conv_a {
                conv_low::<false>(ba, la)
            } else {
                la
            };
            fft_low(m, ba, bi, plan, la);
        }
        let lb = if conv_b {
            conv_low::<false>(bb, lb)
        } else {
            lb
        };
        fft_low(m, bb, bi, plan, lb);
        m.mul_pointwise(ba, bb);
        if transposed {
            transposed_layers_low(m, ba, bi, plan, true);
        } else {
            ifft_low(m, ba, bi, plan);
            conv_low_undo::<false>(ba);
        }
    }
    if transposed {
        // Only outputs below `want` are read. `Convᵀ` moves values upwards only (each
        // transposed pass adds lower entries into higher ones), so it runs on the blocks
        // that reach below `want`; its low levels commute with the top FFT layers and run
        // after them, on those blocks alone.
        let want = ops.want.min(ws.a.len());
        transposed_layers_top(m, &mut ws.a, plan, &mut ws.lambda, true, want);
        for ba in ws.a.chunks_exact_mut(span).take(want.div_ceil(span)) {
            conv_low_undo::<true>(ba);
        }
        for level in plan.c..plan.k {
            let size = 2usize << level;
            // A block's passes write its upper half only.
            let blocks = (want + size / 2 - 1) / size;
            for blk in ws.a.chunks_exact_mut(size).take(blocks) {
                divide_step::<true>(blk, level, true);
            }
        }
    } else {
        ifft_top(m, &mut ws.a, plan, &mut ws.lambda);
        conv_top_undo::<false>(&mut ws.a, plan);
    }
}

/// Transposed FFT layers above the cache block: the inverse FFT's (`forward` false: layers
/// k−1 … c, [`Pass::InverseT`]) or the forward FFT's (`forward` true: layers c … k−1,
/// [`Pass::ForwardT`]; where only coefficients below `want` ≤ 2ᵏ⁻¹ are read, the last layer
/// updates the lower half alone). (No closures here or in the helpers: a closure would not
/// inherit the caller's target features, and the intrinsics would not inline.)
#[inline(always)]
fn transposed_layers_top<M: FieldMul>(
    m: M,
    d: &mut [u64],
    plan: &Plan,
    lambda: &mut [u64],
    forward: bool,
    want: usize,
) {
    if !forward {
        for r in (plan.c..plan.k).rev() {
            layer_top(m, d, r, lambda, Pass::InverseT);
        }
        return;
    }
    for r in plan.c..plan.k {
        let h = 1usize << r;
        if r + 1 == plan.k && want <= h {
            // a ← a + b alone: b is not read again.
            let (lo, hi) = d.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter()) {
                *a ^= *b;
            }
        } else {
            layer_top(m, d, r, lambda, Pass::ForwardT);
        }
    }
}

/// Transposed FFT layers c−1 … 0 (`forward` false) or 0 … c−1 (`forward` true) of cache
/// block `bi`, as in [`transposed_layers_top`].
#[inline(always)]
fn transposed_layers_low<M: FieldMul>(m: M, d: &mut [u64], bi: usize, plan: &Plan, forward: bool) {
    if forward {
        for r in 0..plan.c {
            layer_low(m, d, r, bi, plan, Pass::ForwardT);
        }
    } else {
        for r in (0..plan.c).rev() {
            layer_low(m, d, r, bi, plan, Pass::InverseT);
        }
    }
}

/// One operand through the levels and layers above the cache block. Returns the live
/// prefix of every cache block afterwards, and whether its low conversion levels are still
/// to run block by block. (A function, not a closure: it must inline into the caller's
/// target features.)
#[inline(always)]
fn operand_top<M: FieldMul>(
    m: M,
    d: &mut [u64],
    plan: &Plan,
    lambda: &mut [u64],
    live: usize,
) -> (usize, bool) {
    let span = 1usize << plan.c;
    if live <= span {
        let e = conv_low::<false>(&mut d[..span], live);
        (fft_top(m, d, plan, lambda, e), false)
    } else {
        let e = conv_top::<false>(d, plan, live);
        (fft_top(m, d, plan, lambda, e), true)
    }
}

/// Product of binary polynomials by shift and add (one shifted copy of `a` per set bit of
/// `b`): the twin of [`mul_words`] for tests.
pub fn mul_words_naive(a: &[u64], na: usize, b: &[u64], nb: usize) -> Vec<u64> {
    if na == 0 || nb == 0 {
        return Vec::new();
    }
    let nbits = na + nb - 1;
    let mut out = vec![0u64; nbits.div_ceil(64) + 1];
    let wa = na.div_ceil(64);
    for j in (0..nb).filter(|&j| (b[j / 64] >> (j % 64)) & 1 == 1) {
        let (ws, bs) = (j / 64, j % 64);
        for (i, &w) in a[..wa].iter().enumerate() {
            out[i + ws] ^= w << bs;
            if bs != 0 {
                out[i + ws + 1] ^= w >> (64 - bs);
            }
        }
    }
    out.truncate(nbits.div_ceil(64));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkdnet_core::Bits;
    use rand::{Rng, SeedableRng};

    fn fft(d: &mut [u64], live: usize, cache_log: usize) {
        let plan = Plan::new(d.len().trailing_zeros() as usize, cache_log);
        let mut lambda = vec![0; d.len() / 2];
        let l = fft_top(Portable, d, &plan, &mut lambda, live);
        for (bi, blk) in d.chunks_exact_mut(1 << plan.c).enumerate() {
            fft_low(Portable, blk, bi, &plan, l);
        }
    }

    fn ifft(d: &mut [u64], cache_log: usize) {
        let plan = Plan::new(d.len().trailing_zeros() as usize, cache_log);
        let mut lambda = vec![0; d.len() / 2];
        for (bi, blk) in d.chunks_exact_mut(1 << plan.c).enumerate() {
            ifft_low(Portable, blk, bi, &plan);
        }
        ifft_top(Portable, d, &plan, &mut lambda);
    }

    fn to_novel(d: &mut [u64], live: usize, cache_log: usize) -> usize {
        let plan = Plan::new(d.len().trailing_zeros() as usize, cache_log);
        let e = conv_top::<false>(d, &plan, live);
        let span = 1usize << plan.c;
        let mut extent = 0;
        for (bi, blk) in d.chunks_exact_mut(span).enumerate() {
            let l = e.saturating_sub(bi * span).min(span);
            if l > 0 {
                extent = bi * span + conv_low::<false>(blk, l);
            }
        }
        extent
    }

    fn from_novel(d: &mut [u64], cache_log: usize) {
        let plan = Plan::new(d.len().trailing_zeros() as usize, cache_log);
        for blk in d.chunks_exact_mut(1 << plan.c) {
            conv_low_undo::<false>(blk);
        }
        conv_top_undo::<false>(d, &plan);
    }

    #[test]
    fn field_multiplication_matches_shift_and_add() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..2000 {
            let (a, b) = (rng.gen::<u64>(), rng.gen::<u64>());
            assert_eq!(mul_portable(a, b), mul_naive(a, b));
            #[cfg(target_arch = "x86_64")]
            if let Some(hw) = clmul::Hw::detect() {
                assert_eq!(hw.mul(a, b), mul_naive(a, b));
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(hw) = clmul::Hw4::detect() {
                assert_eq!(hw.mul(a, b), mul_naive(a, b));
            }
        }
        assert_eq!(mul_naive(1 << 63, 2), 0x1b);
    }

    #[test]
    fn cantor_basis_relations_hold() {
        let t = tables();
        assert_eq!(t.beta[0], 1);
        for i in 1..64 {
            let b = t.beta[i];
            assert_eq!(square(b) ^ b, t.beta[i - 1], "beta_{i}");
        }
        for r in 0..64 {
            assert_eq!(t.s[r][r], 1, "s_{r}(beta_{r}) = 1");
            for j in 0..r {
                assert_eq!(t.s[r][j], 0, "s_{r} vanishes on beta_{j}");
            }
        }
        // The basis is linearly independent: no XOR of a subset of the first 20 is zero
        // (checked via the vanishing polynomial: s_20 is non-zero on each β_t, t ≥ 20).
        assert!(t.s[20][20..].iter().all(|&v| v != 0));
    }

    #[test]
    fn fft_evaluates_the_novel_basis_polynomial() {
        // Direct evaluation of Σ d_i X_i(ω_j) against the FFT, K = 5.
        let t = tables();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let k = 5;
        let n = 1usize << k;
        let d: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
        let omega = |i: usize| {
            (0..k)
                .filter(|j| (i >> j) & 1 == 1)
                .fold(0, |a, j| a ^ t.beta[j])
        };
        let x_basis = |i: usize, x: u64| {
            (0..k)
                .filter(|j| (i >> j) & 1 == 1)
                .fold(1u64, |acc, j| mul_naive(acc, subspace_poly(j, x)))
        };
        for cache_log in [2, 5] {
            for live in [n, n / 2, 3] {
                let mut d = d.clone();
                d[live..].iter_mut().for_each(|v| *v = 0);
                let mut f = d.clone();
                fft(&mut f, live, cache_log);
                for (j, fj) in f.iter().enumerate() {
                    let direct =
                        (0..n).fold(0, |acc, i| acc ^ mul_naive(d[i], x_basis(i, omega(j))));
                    assert_eq!(*fj, direct, "point {j} cache_log {cache_log} live {live}");
                }
                ifft(&mut f, cache_log);
                assert_eq!(f, d);
            }
        }
    }

    #[test]
    fn basis_conversion_round_trips() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (k, cache_log) in [
            (1usize, 15),
            (4, 15),
            (7, 15),
            (9, 15),
            (13, 15),
            (9, 3),
            (13, 8),
        ] {
            let n = 1usize << k;
            let d: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
            let mut f = d.clone();
            to_novel(&mut f, n, cache_log);
            from_novel(&mut f, cache_log);
            assert_eq!(f, d, "k={k}");
            // A short polynomial (zero tail) converts the same with `live` set.
            let live = n / 3 + 1;
            let mut g = d.clone();
            g[live..].iter_mut().for_each(|v| *v = 0);
            let short = g.clone();
            let mut full = g.clone();
            to_novel(&mut full, n, cache_log);
            let e = to_novel(&mut g, live, cache_log);
            assert_eq!(g, full, "k={k}");
            assert!(g[e..].iter().all(|&v| v == 0));
            from_novel(&mut g, cache_log);
            assert_eq!(g, short, "k={k}");
        }
    }

    #[test]
    fn product_matches_schoolbook_on_random_inputs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut ws = Workspace::default();
        let mut small_blocks = Workspace {
            cache_log: 3,
            ..Workspace::default()
        };
        for &(na, nb) in &[
            (1usize, 1usize),
            (1, 70),
            (31, 33),
            (64, 64),
            (100, 3000),
            (2049, 1500),
            (40_000, 20_000),
        ] {
            let a: Vec<u64> = (0..na.div_ceil(64)).map(|_| rng.gen()).collect();
            let b: Vec<u64> = (0..nb.div_ceil(64)).map(|_| rng.gen()).collect();
            let mask = |mut v: Vec<u64>, n: usize| {
                if !n.is_multiple_of(64) {
                    let last = v.len() - 1;
                    v[last] &= (1u64 << (n % 64)) - 1;
                }
                v
            };
            let (a, b) = (mask(a, na), mask(b, nb));
            let naive = mul_words_naive(&a, na, &b, nb);
            assert_eq!(mul_words(&mut ws, &a, na, &b, nb), naive, "na={na} nb={nb}");
            let fast = mul_words(&mut small_blocks, &a, na, &b, nb);
            assert_eq!(fast, naive, "na={na} nb={nb} cache_log 3");
            for lanes in [1, 2] {
                let mut narrow = Workspace {
                    lanes,
                    ..Workspace::default()
                };
                let fast = mul_words(&mut narrow, &a, na, &b, nb);
                assert_eq!(fast, naive, "na={na} nb={nb} lanes {lanes}");
            }
        }
    }

    #[test]
    fn middle_products_with_folding_match_the_full_product() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let mut ws = Workspace::default();
        // Toeplitz shapes: seed n + m − 1 bits times x of n bits, bits n−1 .. n+m−1.
        for &(n, m) in &[
            (1000usize, 500usize),
            (1_000_000, 500_000),
            (70_000, 3_000),
            (64, 64),
        ] {
            let na = n + m - 1;
            let a: Vec<u64> = (0..na.div_ceil(64)).map(|_| rng.gen()).collect();
            let mut b = vec![0u64; n.div_ceil(64)];
            for _ in 0..30 {
                let j = rng.gen_range(0..n);
                b[j / 64] |= 1 << (j % 64);
            }
            let mut a = a;
            if na % 64 != 0 {
                let last = a.len() - 1;
                a[last] &= (1u64 << (na % 64)) - 1;
            }
            let full = Bits::from_words(mul_words_naive(&a, na, &b, n), na + n - 1);
            let want = full.slice(n - 1, n - 1 + m);
            let got = Bits::from_words(middle_words(&mut ws, &a, na, &b, n, n - 1, n - 1 + m), m);
            assert!(got == want, "n={n} m={m}");
        }
        // 10^6 × (n/2) folds into 2^16 pieces instead of 2^17.
        let (pa, pb) = (1_499_999usize.div_ceil(32), 1_000_000usize.div_ceil(32));
        assert_eq!(transform_log(pa, pb, 31_249, 46_876), 16);
        assert_eq!(transform_log(pa, pb, 0, pa + pb - 1), 17);
    }

    #[test]
    fn large_products_cross_the_cache_blocking() {
        // Transforms of 2^17 and 2^18 points run breadth-first above CACHE_BLOCK; a
        // sparse second operand keeps the shift-and-add twin fast.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut ws = Workspace::default();
        for &(na, nb) in &[(3_000_000usize, 2_500_000usize), (5_000_001, 64)] {
            let mut a: Vec<u64> = (0..na.div_ceil(64)).map(|_| rng.gen()).collect();
            if na % 64 != 0 {
                let last = a.len() - 1;
                a[last] &= (1u64 << (na % 64)) - 1;
            }
            let mut b = vec![0u64; nb.div_ceil(64)];
            for _ in 0..40 {
                let j = rng.gen_range(0..nb);
                b[j / 64] |= 1 << (j % 64);
            }
            b[(nb - 1) / 64] |= 1 << ((nb - 1) % 64);
            let fast = mul_words(&mut ws, &a, na, &b, nb);
            assert!(fast == mul_words_naive(&a, na, &b, nb), "na={na} nb={nb}");
        }
    }

    /// Bits n−1 .. n−1+m of s·x, by the schoolbook product.
    fn toeplitz_naive(s: &[u64], x: &[u64], n: usize, m: usize) -> Bits {
        let na = n + m - 1;
        let full = Bits::from_words(mul_words_naive(s, na, x, n), na + n - 1);
        full.slice(n - 1, n - 1 + m)
    }

    fn random_words(rng: &mut impl Rng, nbits: usize) -> Vec<u64> {
        let mut v: Vec<u64> = (0..nbits.div_ceil(64)).map(|_| rng.gen()).collect();
        if !nbits.is_multiple_of(64) {
            let last = v.len() - 1;
            v[last] &= (1u64 << (nbits % 64)) - 1;
        }
        v
    }

    #[test]
    fn transposed_toeplitz_product_matches_the_schoolbook_product() {
        // Every n mod 32 shift, one and several cache blocks, m above and below n (the
        // outputs read within the transform's lower half or beyond it), every multiplier
        // width, with a literal seed and with a drawn one.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let shapes = [
            (1usize, 1usize),
            (2, 1),
            (31, 33),
            (64, 64),
            (65, 200),
            (1000, 500),
            (1001, 999),
            (4097, 3),
            (3000, 9000),
            (70_000, 3_000),
            (300_017, 200_003),
        ];
        for &(n, m) in &shapes {
            let ns = n + m - 1;
            let s = random_words(&mut rng, ns);
            let x = random_words(&mut rng, n);
            let want = toeplitz_naive(&s, &x, n, m);
            let draw = random_words(&mut rng, ns);
            let seed = expand_transposed(&draw, ns);
            let want_drawn = toeplitz_naive(&seed, &x, n, m);
            for (lanes, cache_log) in [(4, CACHE_LOG), (2, CACHE_LOG), (1, CACHE_LOG), (4, 3)] {
                let mut ws = Workspace {
                    lanes,
                    cache_log,
                    ..Workspace::default()
                };
                let got = Bits::from_words(toeplitz_words(&mut ws, &s, &x, n, m, false), m);
                assert!(
                    got == want,
                    "n={n} m={m} lanes {lanes} cache_log {cache_log}"
                );
                let got = Bits::from_words(toeplitz_words(&mut ws, &draw, &x, n, m, true), m);
                assert!(
                    got == want_drawn,
                    "drawn: n={n} m={m} lanes {lanes} cache_log {cache_log}"
                );
            }
        }
    }

    #[test]
    fn transposed_toeplitz_transform_holds_only_the_seed() {
        // n = 9·10⁶, m = 6.13·10⁶: the plain product needs 2²⁰ points, the transposed 2¹⁹.
        let (n, m) = (9_000_000usize, 6_130_000usize);
        let (pa, pb) = ((n + m - 1).div_ceil(32), n.div_ceil(32));
        assert_eq!(transform_log(pa, pb, pb - 2, pa + 1), 20);
        let mut ws = Workspace::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
        let s = random_words(&mut rng, n + m - 1);
        // A sparse x keeps the schoolbook twin fast.
        let mut x = vec![0u64; n.div_ceil(64)];
        for _ in 0..20 {
            let j = rng.gen_range(0..n);
            x[j / 64] |= 1 << (j % 64);
        }
        let got = Bits::from_words(toeplitz_words(&mut ws, &s, &x, n, m, false), m);
        assert_eq!(ws.a.len(), 1 << 19);
        assert!(got == toeplitz_naive(&s, &x, n, m));
    }

    #[test]
    fn expand_transposed_is_a_bijection_of_each_length() {
        // The images of the unit vectors have full rank, and the map does not depend on
        // how far the input is padded.
        for nbits in [1usize, 31, 32, 33, 100, 257] {
            let mut rows: Vec<Vec<u64>> = (0..nbits)
                .map(|i| {
                    let mut e = vec![0u64; nbits.div_ceil(64)];
                    e[i / 64] = 1 << (i % 64);
                    expand_transposed(&e, nbits)
                })
                .collect();
            let mut rank = 0;
            for bit in 0..nbits {
                let Some(p) = (rank..nbits).find(|&r| (rows[r][bit / 64] >> (bit % 64)) & 1 == 1)
                else {
                    continue;
                };
                rows.swap(rank, p);
                let pivot = rows[rank].clone();
                for (r, row) in rows.iter_mut().enumerate() {
                    if r != rank && (row[bit / 64] >> (bit % 64)) & 1 == 1 {
                        row.iter_mut().zip(&pivot).for_each(|(x, y)| *x ^= y);
                    }
                }
                rank += 1;
            }
            assert_eq!(rank, nbits, "nbits {nbits}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let v: Vec<u64> = (0..4).map(|_| rng.gen()).collect();
        let short = expand_transposed(&v[..2], 128);
        let mut padded = v[..2].to_vec();
        padded.extend([0, 0]);
        assert_eq!(expand_transposed(&padded, 256)[..2], short[..]);
        // Prefixes: the first bits of the expansion depend only on the first bits drawn.
        let long = expand_transposed(&v, 200);
        assert_eq!(long[..2], short[..]);
    }
}
