//! Shared by the emulator's statistical tests.

/// Acceptance bound on |z|: a false alarm has probability below 10⁻⁵ per check.
pub const Z_MAX: f64 = 4.5;

/// Asserts `|observed − expected| ≤ Z_MAX · sd`, naming the quantity.
pub fn z(what: &str, observed: f64, expected: f64, sd: f64) {
    let z = (observed - expected) / sd;
    assert!(
        z.abs() <= Z_MAX,
        "{what}: observed {observed}, expected {expected}, sd {sd}, z = {z:.2}"
    );
}
