//! Simulation time: integer picoseconds.
//!
//! Emulation and the link runtime never read a clock; they are handed a [`Picoseconds`]
//! instant and return the next deadline. `i64` picoseconds span ±106 days, which covers
//! the 325-hour runs of the Nice network (1.17e18 ps) with room to spare.

use core::fmt;
use serde::{Deserialize, Serialize};

/// An instant or duration in integer picoseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Picoseconds(pub i64);

impl Picoseconds {
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// One nanosecond.
    pub const NANOSECOND: Self = Self(1_000);
    /// One microsecond.
    pub const MICROSECOND: Self = Self(1_000_000);
    /// One millisecond.
    pub const MILLISECOND: Self = Self(1_000_000_000);
    /// One second.
    pub const SECOND: Self = Self(1_000_000_000_000);

    /// From seconds, rounded to the nearest picosecond; `None` if out of range or not finite.
    pub fn from_secs_f64(s: f64) -> Option<Self> {
        let ps = (s * 1e12).round();
        if ps.is_finite() && ps.abs() < i64::MAX as f64 {
            Some(Self(ps as i64))
        } else {
            None
        }
    }

    /// As seconds.
    #[inline]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 * 1e-12
    }

    /// Checked addition.
    #[inline]
    pub fn checked_add(self, rhs: Self) -> Option<Self> {
        self.0.checked_add(rhs.0).map(Self)
    }
}

impl core::ops::Add for Picoseconds {
    type Output = Self;
    #[inline]
    fn add(self, rhs: Self) -> Self {
        Self(self.0 + rhs.0)
    }
}

impl core::ops::Sub for Picoseconds {
    type Output = Self;
    #[inline]
    fn sub(self, rhs: Self) -> Self {
        Self(self.0 - rhs.0)
    }
}

impl fmt::Display for Picoseconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ps", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_and_325_hours_fit() {
        let t = Picoseconds::from_secs_f64(325.0 * 3600.0).unwrap();
        assert_eq!(t.0, 1_170_000_000_000_000_000);
        assert!((t.as_secs_f64() - 1_170_000.0).abs() < 1e-6);
        assert_eq!(Picoseconds::from_secs_f64(f64::NAN), None);
        assert_eq!(Picoseconds::from_secs_f64(1e10), None);
        assert_eq!(
            Picoseconds::SECOND + Picoseconds::MILLISECOND,
            Picoseconds(1_001_000_000_000)
        );
    }
}
