//! Special functions shared by the physics and security models.

/// Complementary error function, |relative error| < 1.2e-7 everywhere (Chebyshev fit of
/// Numerical Recipes, 3rd ed., §6.2.2).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// Error function, `1 − erfc(x)`.
#[inline]
pub fn erf(x: f64) -> f64 {
    1.0 - erfc(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, v) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (-1.0, -0.842_700_792_9),
        ] {
            assert!((erf(x) - v).abs() < 2e-7, "erf({x}) = {} ≠ {v}", erf(x));
        }
    }

    #[test]
    fn erfc_tail() {
        // erfc(3) = 2.209049699858544e-5 (A&S Table 7.1).
        assert!((erfc(3.0) / 2.209_049_699_858_544e-5 - 1.0).abs() < 1.2e-7);
        assert!((erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-7);
    }
}
