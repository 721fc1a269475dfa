//! Repeaterless bounds on the secret-key capacity of a pure-loss channel.

/// PLOB bound `−log₂(1−η)` bits per channel use (Pirandola, Laurenza, Ottaviani, Banchi,
/// Nat. Commun. 8, 15043 (2017), Eq. (3)), computed with `ln_1p` so it stays accurate at
/// the 1e-7 transmittances of 70 dB links.
#[inline]
pub fn plob(eta: f64) -> f64 {
    if eta >= 1.0 {
        return f64::INFINITY;
    }
    -(-eta).ln_1p() / std::f64::consts::LN_2
}

/// TGW bound `log₂((1+η)/(1−η))` bits per channel use (Takeoka, Guha, Wilde,
/// Nat. Commun. 5, 5235 (2014)).
#[inline]
pub fn tgw(eta: f64) -> f64 {
    if eta >= 1.0 {
        return f64::INFINITY;
    }
    (eta.ln_1p() - (-eta).ln_1p()) / std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// REFERENCE.md §2: PLOB at 56.0 dB = 3.624e-6 bit/use; at 74 dB = 5.74e-8.
    #[test]
    fn plob_reference_values() {
        let at = |db: f64| plob(10f64.powf(-db / 10.0));
        assert!((at(56.0) / 3.624e-6 - 1.0).abs() < 1e-3, "{}", at(56.0));
        assert!((at(74.0) / 5.74e-8 - 1.0).abs() < 2e-3, "{}", at(74.0));
        // At small η both approach η/ln2, TGW twice PLOB.
        let eta = 1e-6;
        assert!((tgw(eta) / plob(eta) - 2.0).abs() < 1e-5);
    }
}
