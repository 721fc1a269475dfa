//! Shared by the end-to-end tests of the `qkdnet` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Runs `qkdnet` from the workspace root: (exit code, stdout, stderr).
pub fn qkdnet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qkdnet"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run qkdnet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
