//! One CV-QKD block from quadratures to final key, reverse reconciled: Bob's random bits
//! are the key; he announces, per frame, the MDR rotation and the code's syndrome; Alice
//! decodes; both compare a hash of each decoded frame; the frames that agree go through
//! privacy amplification to the length the observed-statistics bound allows
//! (`keyrate::cv::CvGg02::block_bound`).
//!
//! The two ends are separate functions ([`bob_reconcile`], [`alice_reconcile`],
//! [`verify`]) whose messages are plain values ([`BobMessage`], the decoded-frame list and
//! tags), so a link runtime can carry them over its authenticated channel. Everything Bob
//! announces is counted as leaked: the syndromes, and the verification tags.

use super::code::{CodeError, MetCode};
use super::design::{self, DesignTarget, Ensemble};
use super::mdr::{self, Announcement};
use crate::polyhash;
use crate::random::{RandomError, SecureRandom};
use qkdnet_core::Bits;
use zeroize::Zeroize;

/// Reconciliation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconcileConfig {
    /// MDR dimension (1, 2, 4 or 8).
    pub dim: usize,
    /// Code length, bits (a multiple of `dim`).
    pub frame_bits: usize,
    /// Most decoder iterations per frame.
    pub max_iter: usize,
    /// The code is designed for the estimated SNR divided by `design_gap + gap_slope ·
    /// SNR`: the margin a 2²⁰-bit frame needs over the ensemble's threshold (the
    /// mean-based analysis is less exact where core degrees are small, hence the slope).
    /// Measured with `qkdnet bench cv`, 8 frames per point (docs/PERFORMANCE.md): at 1.04
    /// every frame decodes at SNR 0.03, 0.1, 0.5 and 0.9 (β 0.942, 0.941, 0.909, 0.865)
    /// and half of them at 0.011 (β 0.943); at 1.07, β 0.917, 0.915, 0.887, 0.853 and
    /// 0.916 (7 of 8 at 0.011) with about twice the decoding speed. The default is 1.04:
    /// a CV key is a thin margin over Eve's information. At 120 km in 2e11-symbol blocks
    /// (`qkdnet rate`), β 0.916 leaves no key, the published β 0.925 leaves 8.8e-5
    /// bit/symbol, and β 0.943 leaves 3.6e-4: 1.8e-4 with half the frames kept.
    pub design_gap: f64,
    /// See `design_gap`.
    pub gap_slope: f64,
    /// Probability that a wrong frame passes verification.
    pub eps_cor: f64,
    /// Threads Alice decodes frames on.
    pub threads: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            dim: 8,
            frame_bits: 1 << 20,
            max_iter: 300,
            design_gap: 1.04,
            gap_slope: 0.13,
            eps_cor: 1e-15,
            threads: 1,
        }
    }
}

/// The reconciliation efficiency the default settings' codes reach at `snr` (per
/// quadrature pair): `0.945 − 0.09 SNR`, a fit to `qkdnet bench cv` at design gap 1.04
/// (β 0.943, 0.942, 0.941, 0.909 and 0.865 at SNR 0.011, 0.03, 0.1, 0.5 and 0.9; the fit
/// is within 0.01 of each), held in [0.8, 0.945]. A link runtime sets its modulation
/// variance with it: the SNR that maximises the key with the published β can be one where
/// these codes lose more than the key (at 15 km, V_A 6.1 for β 0.9 gives SNR 1.3 and
/// β 0.85).
pub fn expected_beta(snr: f64) -> f64 {
    (0.945 - 0.09 * snr).clamp(0.8, 0.945)
}

/// The code a block uses, as announced: both ends draw it from these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodeChoice {
    /// SNR the ensemble is designed for.
    pub design_snr: f64,
    /// Seed of the graph.
    pub seed: u64,
    /// Code length.
    pub frame_bits: usize,
}

impl CodeChoice {
    /// For an estimated SNR: the design SNR rounded down to a 1 % grid, so that blocks of
    /// similar SNR share a code (and a cache entry).
    pub fn for_snr(snr: f64, cfg: &ReconcileConfig, seed: u64) -> Self {
        let target = snr / (cfg.design_gap + cfg.gap_slope * snr);
        let step = 1.01f64;
        let k = (target.ln() / step.ln()).floor();
        Self {
            design_snr: step.powf(k),
            seed,
            frame_bits: cfg.frame_bits,
        }
    }

    /// The ensemble and code.
    pub fn build(&self) -> Result<(Ensemble, MetCode), BlockError> {
        let ens = design::design(&DesignTarget::at(self.design_snr))
            .ok_or(BlockError::NoCode(self.design_snr))?;
        let code = MetCode::new(&ens, self.frame_bits, self.seed)?;
        Ok((ens, code))
    }
}

/// Why a block could not be reconciled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// No ensemble converges at this SNR (too low or too high for the design range).
    #[error("no reconciliation code for SNR {0:.3e}")]
    NoCode(f64),
    /// The code could not be drawn.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// Randomness failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A message does not fit the block.
    #[error("reconciliation message: {0}")]
    Message(String),
}

/// Bob's announcement for a block.
pub struct BobMessage {
    /// The code.
    pub code: CodeChoice,
    /// Per frame: the MDR announcement and the syndrome.
    pub frames: Vec<(Announcement, Bits)>,
}

impl CodeChoice {
    /// The choice as bytes: design SNR, seed, frame length (24 bytes, little-endian).
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.design_snr.to_le_bytes());
        out[8..16].copy_from_slice(&self.seed.to_le_bytes());
        out[16..].copy_from_slice(&(self.frame_bits as u64).to_le_bytes());
        out
    }

    /// Reads [`CodeChoice::to_bytes`], refusing a design SNR outside (0, 100) or a frame
    /// length that is not a multiple of 8 between 2¹⁰ and 2²⁴.
    pub fn from_bytes(b: &[u8]) -> Result<Self, BlockError> {
        let word = |i: usize| -> Result<[u8; 8], BlockError> {
            b.get(i..i + 8)
                .and_then(|w| w.try_into().ok())
                .ok_or_else(|| {
                    BlockError::Message(format!("code choice: {} bytes, need 24", b.len()))
                })
        };
        let design_snr = f64::from_le_bytes(word(0)?);
        let seed = u64::from_le_bytes(word(8)?);
        let frame_bits = u64::from_le_bytes(word(16)?);
        if !(design_snr > 0.0 && design_snr < 100.0) {
            return Err(BlockError::Message(format!(
                "code choice: design SNR {design_snr}"
            )));
        }
        if !(1 << 10..=1 << 24).contains(&frame_bits) || !frame_bits.is_multiple_of(8) {
            return Err(BlockError::Message(format!(
                "code choice: frame length {frame_bits}"
            )));
        }
        Ok(Self {
            design_snr,
            seed,
            frame_bits: frame_bits as usize,
        })
    }
}

impl BobMessage {
    /// Frame `i`'s part of the message as bytes (what one authenticated message carries):
    /// the MDR dimension, `α` and `|y|` (little-endian `f32`) and the syndrome's words.
    pub fn frame_bytes(&self, i: usize) -> Vec<u8> {
        let (a, syn) = &self.frames[i];
        let mut out =
            Vec::with_capacity(4 + 4 * (a.alpha.len() + a.norms.len()) + 8 * syn.words().len());
        out.extend_from_slice(&(a.dim as u32).to_le_bytes());
        for v in a.alpha.iter().chain(&a.norms) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for w in syn.words() {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Reads one frame's part for `code`, refusing any other length or dimension.
    pub fn parse_frame(b: &[u8], code: &MetCode) -> Result<(Announcement, Bits), BlockError> {
        let bad = |what: String| BlockError::Message(format!("reconciliation frame: {what}"));
        let dim = b
            .get(..4)
            .map(|d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize)
            .ok_or_else(|| bad(format!("{} bytes", b.len())))?;
        let n = code.len();
        if !mdr::DIMENSIONS.contains(&dim) || !n.is_multiple_of(dim) {
            return Err(bad(format!("MDR dimension {dim}")));
        }
        let syn_bits = code.syndrome_len();
        let words = syn_bits.div_ceil(64);
        let want = 4 + 4 * (n + n / dim) + 8 * words;
        if b.len() != want {
            return Err(bad(format!("{} bytes, the code needs {want}", b.len())));
        }
        let f32s = |from: usize, count: usize| -> Vec<f32> {
            b[from..from + 4 * count]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let alpha = f32s(4, n);
        let norms = f32s(4 + 4 * n, n / dim);
        let at = 4 + 4 * (n + n / dim);
        let w: Vec<u64> = b[at..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let syn = Bits::from_words(w, syn_bits);
        Ok((Announcement { dim, alpha, norms }, syn))
    }
}

impl VerifyMessage {
    /// Reads [`VerifyMessage::to_bytes`] for `frames` frames.
    pub fn from_bytes(b: &[u8], frames: usize) -> Result<Self, BlockError> {
        let bad = |what: String| BlockError::Message(format!("verification: {what}"));
        let tag_bits = b
            .get(..4)
            .map(|d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
            .ok_or_else(|| bad(format!("{} bytes", b.len())))?;
        if !(1..=128).contains(&tag_bits) {
            return Err(bad(format!("tag length {tag_bits}")));
        }
        let mut keys = Vec::with_capacity(frames.min(b.len() / 17));
        let mut tags = Vec::with_capacity(frames.min(b.len() / 17));
        let mut at = 4;
        let u128_at = |i: usize| -> Result<u128, BlockError> {
            b.get(i..i + 16)
                .and_then(|w| w.try_into().ok())
                .map(u128::from_le_bytes)
                .ok_or_else(|| bad(format!("truncated at byte {i}")))
        };
        for _ in 0..frames {
            keys.push(u128_at(at)?);
            at += 16;
            match b.get(at) {
                Some(0) => {
                    tags.push(None);
                    at += 1;
                }
                Some(1) => {
                    tags.push(Some(u128_at(at + 1)?));
                    at += 17;
                }
                _ => return Err(bad(format!("frame flag at byte {at}"))),
            }
        }
        if at != b.len() {
            return Err(bad(format!("{} bytes past the last frame", b.len() - at)));
        }
        Ok(Self {
            keys,
            tags,
            tag_bits,
        })
    }
}

/// One end's reconciled frames (key material: `Bits` zeroize on drop and have no `Debug`).
pub struct Frames(pub Vec<Option<Bits>>);

/// Bob: draws his bits for every whole frame of `y` (flattened quadratures), and the
/// announcement. Dimensions past the last whole frame are left out.
pub fn bob_reconcile(
    y: &[f64],
    code: &MetCode,
    choice: CodeChoice,
    cfg: &ReconcileConfig,
    rng: &mut dyn SecureRandom,
) -> Result<(Frames, BobMessage), BlockError> {
    let n = code.len();
    let mut frames = Vec::new();
    let mut msgs = Vec::new();
    for ys in y.chunks_exact(n) {
        let mut bytes = vec![0u8; n.div_ceil(8)];
        rng.fill(&mut bytes)?;
        let bits = Bits::from_msb_bytes(&bytes, n)
            .ok_or_else(|| BlockError::Message("frame bits".into()))?;
        bytes.zeroize();
        let ann = mdr::bob_announce(ys, &bits, cfg.dim);
        msgs.push((ann, code.syndrome(&bits)));
        frames.push(Some(bits));
    }
    Ok((
        Frames(frames),
        BobMessage {
            code: choice,
            frames: msgs,
        },
    ))
}

/// Alice: decodes every frame of Bob's message from her `x`, the estimated gain `g` and
/// noise `noise`, frames spread over `cfg.threads` threads; `on_frame` is called after each
/// frame (progress). A frame the decoder gives up on is `None`.
pub fn alice_reconcile(
    x: &[f64],
    msg: &BobMessage,
    code: &MetCode,
    g: f64,
    noise: f64,
    cfg: &ReconcileConfig,
    on_frame: &(dyn Fn() + Sync),
) -> Result<Frames, BlockError> {
    let n = code.len();
    if x.len() / n != msg.frames.len() {
        return Err(BlockError::Message(format!(
            "{} frames announced for {} of Alice's",
            msg.frames.len(),
            x.len() / n
        )));
    }
    for (ann, syn) in &msg.frames {
        if ann.alpha.len() != n
            || ann.norms.len() * ann.dim != n
            || syn.len() != code.syndrome_len()
        {
            return Err(BlockError::Message(
                "announcement does not fit the code".into(),
            ));
        }
    }
    // A worker's frames, decoded in groups of up to `LANES` together (one per SIMD lane).
    let decode = |mine: &[usize]| {
        let mut out = Vec::with_capacity(mine.len());
        for group in mine.chunks(super::code::LANES) {
            let llrs: Vec<Vec<f32>> = group
                .iter()
                .map(|&i| mdr::alice_llr(&x[i * n..(i + 1) * n], &msg.frames[i].0, g, noise))
                .collect();
            let frames: Vec<(&[f32], &Bits)> = group
                .iter()
                .zip(&llrs)
                .map(|(&i, llr)| (llr.as_slice(), &msg.frames[i].1))
                .collect();
            for (&i, w) in group.iter().zip(code.decode_many(&frames, cfg.max_iter)) {
                out.push((i, w.map(|(w, _)| w)));
                on_frame();
            }
        }
        out
    };
    let frames = msg.frames.len();
    let threads = cfg.threads.clamp(1, frames.max(1));
    let mut out: Vec<Option<Bits>> = Vec::with_capacity(frames);
    if threads == 1 {
        let all: Vec<usize> = (0..frames).collect();
        out.extend(decode(&all).into_iter().map(|p| p.1));
    } else {
        // Frames dealt round-robin; each worker returns (index, word) pairs.
        let mut parts: Vec<Vec<(usize, Option<Bits>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let decode = &decode;
                    s.spawn(move || {
                        let mine: Vec<usize> = (t..frames).step_by(threads).collect();
                        decode(&mine)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut all: Vec<(usize, Option<Bits>)> = parts.drain(..).flatten().collect();
        all.sort_by_key(|p| p.0);
        if all.len() != frames {
            return Err(BlockError::Message("a decoder thread failed".into()));
        }
        out.extend(all.into_iter().map(|p| p.1));
    }
    Ok(Frames(out))
}

/// Bob's verification message: a fresh polynomial-hash key per frame and the tag of his
/// frame under it (`None` for a frame he has not got). Everything in it is disclosed.
pub struct VerifyMessage {
    /// Hash key per frame.
    pub keys: Vec<u128>,
    /// Bob's tag per frame, `tag_bits` long.
    pub tags: Vec<Option<u128>>,
    /// Tag length, bits (from the frame length and `eps_cor`).
    pub tag_bits: u32,
}

impl VerifyMessage {
    /// The message as bytes (what its authentication tag covers).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.keys.len() * 33);
        out.extend_from_slice(&self.tag_bits.to_le_bytes());
        for (k, t) in self.keys.iter().zip(&self.tags) {
            out.extend_from_slice(&k.to_le_bytes());
            match t {
                Some(t) => {
                    out.push(1);
                    out.extend_from_slice(&t.to_le_bytes());
                }
                None => out.push(0),
            }
        }
        out
    }
}

/// The tag of a frame under `key`, `tag_bits` long.
fn frame_tag(key: u128, frame: &Bits, tag_bits: u32) -> u128 {
    let mut h = polyhash::PolyHash::new(key);
    h.update_words(frame.words());
    polyhash::truncate(h.finish(), tag_bits)
}

/// Bob's side of verification: a fresh hash key per frame and his tags.
pub fn verify_message(
    bob: &Frames,
    cfg: &ReconcileConfig,
    rng: &mut dyn SecureRandom,
) -> Result<VerifyMessage, BlockError> {
    let bits = bob.0.iter().flatten().map(Bits::len).max().unwrap_or(0);
    let tag_bits = polyhash::tag_bits_for(bits as u64, cfg.eps_cor);
    let mut keys = Vec::with_capacity(bob.0.len());
    let mut tags = Vec::with_capacity(bob.0.len());
    for f in &bob.0 {
        let mut k = [0u8; 16];
        rng.fill(&mut k)?;
        let key = u128::from_le_bytes(k);
        k.zeroize();
        keys.push(key);
        tags.push(f.as_ref().map(|f| frame_tag(key, f, tag_bits)));
    }
    Ok(VerifyMessage {
        keys,
        tags,
        tag_bits,
    })
}

/// Alice's side of verification: the frames she decoded whose tag matches Bob's are kept
/// (the list she sends back); the rest are dropped at both ends. Returns the frames kept
/// and the tag bits disclosed on frames both ends hold.
pub fn verify_check(alice: &Frames, msg: &VerifyMessage) -> Result<(Vec<usize>, u64), BlockError> {
    if msg.keys.len() != alice.0.len() || msg.tags.len() != alice.0.len() {
        return Err(BlockError::Message(format!(
            "verification: {} tags for {} frames",
            msg.tags.len(),
            alice.0.len()
        )));
    }
    let mut kept = Vec::new();
    let mut disclosed = 0u64;
    for (i, (a, (k, t))) in alice
        .0
        .iter()
        .zip(msg.keys.iter().zip(&msg.tags))
        .enumerate()
    {
        let (Some(a), Some(t)) = (a, t) else {
            continue;
        };
        disclosed += msg.tag_bits as u64;
        if frame_tag(*k, a, msg.tag_bits) == *t {
            kept.push(i);
        }
    }
    Ok((kept, disclosed))
}

/// Verification of the decoded frames at both ends ([`verify_message`] then
/// [`verify_check`]): frames whose tags differ, or that Alice could not decode, are
/// dropped at both ends. Returns the frames kept and the tag bits disclosed.
pub fn verify(
    alice: &Frames,
    bob: &Frames,
    cfg: &ReconcileConfig,
    rng: &mut dyn SecureRandom,
) -> Result<(Vec<usize>, u64), BlockError> {
    verify_check(alice, &verify_message(bob, cfg, rng)?)
}

/// The kept frames of one end, concatenated.
pub fn concat(frames: &Frames, kept: &[usize]) -> Bits {
    let mut out = Bits::zeros(0);
    for &i in kept {
        if let Some(f) = &frames.0[i] {
            out.append_range(f, 0, f.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::danger::InsecureDeterministic;
    use rand::SeedableRng;

    #[test]
    fn a_block_reconciles_and_verifies() {
        let cfg = ReconcileConfig {
            frame_bits: 200_000,
            ..ReconcileConfig::default()
        };
        let snr = 0.04;
        let choice = CodeChoice::for_snr(snr, &cfg, 3);
        assert!(choice.design_snr <= snr / cfg.design_gap);
        assert!(choice.design_snr > snr / (cfg.design_gap + 0.05));
        let (_, code) = choice.build().expect("code");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let g = snr.sqrt();
        let (x, y) = super::super::gaussian_channel(2 * cfg.frame_bits + 1000, snr, &mut rng);
        let mut r = InsecureDeterministic::new(1, "cv-test");
        let (bob, msg) = bob_reconcile(&y, &code, choice, &cfg, &mut r).expect("bob");
        assert_eq!(msg.frames.len(), 2);
        let mut alice = alice_reconcile(
            &x,
            &msg,
            &code,
            g,
            1.0,
            &ReconcileConfig { threads: 2, ..cfg },
            &|| (),
        )
        .expect("alice");
        // A frame Alice got wrong must not pass verification.
        if let Some(f) = alice.0[1].as_mut() {
            f.flip(17);
        }
        let (kept, disclosed) = verify(&alice, &bob, &cfg, &mut r).expect("verify");
        assert_eq!(kept, vec![0]);
        assert!(disclosed >= 2 * 50);
        assert_eq!(concat(&alice, &kept).words(), concat(&bob, &kept).words());
        // A message that does not fit is refused by name.
        let short = &x[..cfg.frame_bits];
        assert!(matches!(
            alice_reconcile(short, &msg, &code, g, 1.0, &cfg, &|| ()),
            Err(BlockError::Message(_))
        ));
    }
}
