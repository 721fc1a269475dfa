//! Continuous-variable QKD reconciliation (GG02, reverse reconciliation).

pub mod code;
pub mod design;
pub mod mdr;
