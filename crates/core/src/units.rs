//! Unit newtypes.
//!
//! Every constructor that takes a raw `f64` validates it and names the quantity in its
//! error, so that callers reading outside data (files, flags, requests) can report
//! which field was wrong and why. Arithmetic that cannot leave the valid range
//! (adding losses, multiplying probabilities) is provided without re-validation.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Why a raw number could not become a unit value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// NaN or an infinity.
    #[error("{quantity} must be a finite number, got {value}")]
    NotFinite {
        /// Name of the quantity.
        quantity: &'static str,
        /// The offending value.
        value: f64,
    },
    /// Below the allowed minimum.
    #[error("{quantity} must be at least {min}, got {value}")]
    TooSmall {
        /// Name of the quantity.
        quantity: &'static str,
        /// The offending value.
        value: f64,
        /// Smallest allowed value.
        min: f64,
    },
    /// Above the allowed maximum.
    #[error("{quantity} must be at most {max}, got {value}")]
    TooLarge {
        /// Name of the quantity.
        quantity: &'static str,
        /// The offending value.
        value: f64,
        /// Largest allowed value.
        max: f64,
    },
}

/// Checks that `value` is finite and within `[min, max]`.
pub fn check_range(
    quantity: &'static str,
    value: f64,
    min: f64,
    max: f64,
) -> Result<f64, UnitError> {
    if !value.is_finite() {
        return Err(UnitError::NotFinite { quantity, value });
    }
    if value < min {
        return Err(UnitError::TooSmall {
            quantity,
            value,
            min,
        });
    }
    if value > max {
        return Err(UnitError::TooLarge {
            quantity,
            value,
            max,
        });
    }
    Ok(value)
}

macro_rules! nonneg_unit {
    ($(#[$doc:meta])* $name:ident, $qty:literal, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            /// Zero.
            pub const ZERO: Self = Self(0.0);

            /// Validates a finite, non-negative value.
            pub fn new(value: f64) -> Result<Self, UnitError> {
                check_range($qty, value, 0.0, f64::MAX).map(Self)
            }

            /// The raw value in this type's unit.
            #[inline]
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = UnitError;
            fn try_from(value: f64) -> Result<Self, UnitError> {
                Self::new(value)
            }
        }

        impl From<$name> for f64 {
            fn from(v: $name) -> f64 {
                v.0
            }
        }

        impl core::ops::Add for $name {
            type Output = Self;
            #[inline]
            fn add(self, rhs: Self) -> Self {
                Self(self.0 + rhs.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {}", self.0, $suffix)
            }
        }
    };
}

nonneg_unit!(
    /// An attenuation (loss) in decibels, ≥ 0. A loss of `L` dB transmits `10^(−L/10)`.
    Decibels, "loss (dB)", "dB"
);
nonneg_unit!(
    /// An attenuation coefficient in dB per kilometre, ≥ 0.
    DbPerKm, "attenuation (dB/km)", "dB/km"
);
nonneg_unit!(
    /// A length in kilometres, ≥ 0 (0 km is a valid back-to-back link).
    Kilometres, "distance (km)", "km"
);
nonneg_unit!(
    /// A frequency or rate in hertz (events per second), ≥ 0.
    Hertz, "rate (Hz)", "Hz"
);
nonneg_unit!(
    /// A duration in seconds, ≥ 0.
    Seconds, "duration (s)", "s"
);
nonneg_unit!(
    /// A wavelength or spectral width in nanometres, ≥ 0.
    Nanometres, "wavelength (nm)", "nm"
);

impl Decibels {
    /// Power transmittance `10^(−dB/10)` of this loss, in (0, 1].
    #[inline]
    pub fn transmittance(self) -> f64 {
        10f64.powf(-self.0 / 10.0)
    }

    /// The loss in dB of a transmittance `t` in (0, 1].
    pub fn from_transmittance(t: f64) -> Result<Self, UnitError> {
        let t = check_range("transmittance", t, f64::MIN_POSITIVE, 1.0)?;
        Ok(Self(-10.0 * t.log10()))
    }
}

impl DbPerKm {
    /// Total loss over `length`.
    #[inline]
    pub fn over(self, length: Kilometres) -> Decibels {
        Decibels(self.0 * length.0)
    }
}

/// A probability in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Probability(f64);

impl Probability {
    /// Zero.
    pub const ZERO: Self = Self(0.0);
    /// One.
    pub const ONE: Self = Self(1.0);

    /// Validates a value in [0, 1].
    pub fn new(value: f64) -> Result<Self, UnitError> {
        check_range("probability", value, 0.0, 1.0).map(Self)
    }

    /// The raw value.
    #[inline]
    pub fn get(self) -> f64 {
        self.0
    }

    /// `1 − p`.
    #[inline]
    pub fn complement(self) -> Self {
        Self(1.0 - self.0)
    }
}

impl core::ops::Mul for Probability {
    type Output = Self;
    #[inline]
    fn mul(self, rhs: Self) -> Self {
        Self(self.0 * rhs.0)
    }
}

impl TryFrom<f64> for Probability {
    type Error = UnitError;
    fn try_from(value: f64) -> Result<Self, UnitError> {
        Self::new(value)
    }
}

impl From<Probability> for f64 {
    fn from(v: Probability) -> f64 {
        v.0
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nan_infinities_and_negatives_with_the_quantity_named() {
        let e = Decibels::new(f64::NAN).unwrap_err();
        assert!(e.to_string().contains("loss (dB)"), "{e}");
        assert!(matches!(
            Kilometres::new(f64::INFINITY),
            Err(UnitError::NotFinite { .. })
        ));
        let e = Kilometres::new(-1.0).unwrap_err();
        assert_eq!(e.to_string(), "distance (km) must be at least 0, got -1");
        assert!(Probability::new(1.5).is_err());
        assert!(Probability::new(-0.0).is_ok());
        assert!(Kilometres::new(0.0).is_ok());
    }

    #[test]
    fn decibels_and_transmittance_are_inverse() {
        for db in [0.0, 3.0, 33.5, 56.0, 74.0] {
            let t = Decibels::new(db).unwrap().transmittance();
            let back = Decibels::from_transmittance(t).unwrap().get();
            assert!((back - db).abs() < 1e-9, "{db} → {t} → {back}");
        }
        assert!((Decibels::new(3.0).unwrap().transmittance() - 0.501187).abs() < 1e-6);
    }

    #[test]
    fn serde_validates() {
        #[derive(Deserialize, Debug)]
        struct S {
            p: Probability,
        }
        let err = serde_json::from_str::<S>(r#"{"p": 1.5}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("probability must be at most 1, got 1.5"),
            "{err}"
        );
        let ok: S = serde_json::from_str(r#"{"p": 0.25}"#).unwrap();
        assert_eq!(ok.p.get(), 0.25);
    }
}
