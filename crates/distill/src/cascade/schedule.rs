//! Cascade block-size schedules (plain data, so tests can assert them).

/// Which published parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Brassard & Salvail 1993: k₁ = ⌈0.73/Q⌉, kᵢ₊₁ = 2kᵢ, four passes.
    Original,
    /// Yan et al. (2008), as reviewed by Martinez-Mateo et al. 2015 §4: k₁ = ⌈0.80/Q⌉,
    /// k₂ = 5k₁, then n/2 for passes 3–10.
    YanEtAl,
}

impl Variant {
    /// Parses `original` or `yanetal` / `yan-et-al`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "original" => Some(Self::Original),
            "yanetal" | "yan-et-al" | "yan" => Some(Self::YanEtAl),
            _ => None,
        }
    }
}

/// Block sizes per pass for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    sizes: Vec<usize>,
}

impl Schedule {
    /// The schedule of `variant` for a frame of `n` bits at estimated error rate `qber`
    /// (clamped to [10⁻⁴, 0.25]), plus `biconf` extra passes with blocks of n/2 (the
    /// BICONF refinement of Buttler et al., PRA 67, 052303 (2003): random halves compared
    /// and searched, with the cascade into earlier passes).
    pub fn with_biconf(variant: Variant, qber: f64, n: usize, biconf: usize) -> Self {
        let q = if qber.is_finite() {
            qber.clamp(1e-4, 0.25)
        } else {
            0.25
        };
        let half = n.div_ceil(2).max(1);
        let cap = |k: usize| k.clamp(1, n.max(1));
        let mut sizes = match variant {
            Variant::Original => {
                let k1 = (0.73 / q).ceil() as usize;
                (0..4).map(|i| cap(k1 << i)).collect::<Vec<_>>()
            }
            Variant::YanEtAl => {
                let k1 = (0.80 / q).ceil() as usize;
                let mut v = vec![cap(k1), cap(5 * k1)];
                v.extend(std::iter::repeat_n(cap(half), 8));
                v
            }
        };
        sizes.extend(std::iter::repeat_n(cap(half), biconf));
        Self { sizes }
    }

    /// [`Schedule::with_biconf`] without extra passes.
    pub fn new(variant: Variant, qber: f64, n: usize) -> Self {
        Self::with_biconf(variant, qber, n, 0)
    }

    /// Explicit block sizes (each at least 1).
    pub fn from_sizes(sizes: Vec<usize>) -> Self {
        Self {
            sizes: sizes.into_iter().map(|k| k.max(1)).collect(),
        }
    }

    /// Number of passes.
    pub fn passes(&self) -> usize {
        self.sizes.len()
    }

    /// Block size of pass `p`.
    #[inline]
    pub fn block_size(&self, p: usize) -> usize {
        self.sizes[p]
    }

    /// All block sizes.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_schedules() {
        let s = Schedule::new(Variant::Original, 0.02, 100_000);
        assert_eq!(s.sizes(), &[37, 74, 148, 296]);
        let s = Schedule::new(Variant::YanEtAl, 0.02, 100_000);
        assert_eq!(s.passes(), 10);
        assert_eq!(&s.sizes()[..3], &[40, 200, 50_000]);
        let s = Schedule::with_biconf(Variant::Original, 0.5, 10, 2);
        assert_eq!(s.sizes(), &[3, 6, 10, 10, 5, 5]);
        assert_eq!(Variant::parse("yanetal"), Some(Variant::YanEtAl));
    }
}
