//! Shared by the CLI's end-to-end tests: paths into the repository and running the binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

/// Runs `lutlab args…` and returns what it did.
pub fn lutlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lutlab")).args(args).output().expect("runs lutlab")
}

/// Runs `lutlab args…`, which must succeed and print one JSON object.
pub fn lutlab_json(args: &[&str]) -> Value {
    json_of(args, lutlab(args))
}

/// [`lutlab_json`] with these environment variables set for the run.
#[allow(dead_code)] // not every test file sets one
pub fn lutlab_json_with(env: &[(&str, &str)], args: &[&str]) -> Value {
    json_of(args, Command::new(env!("CARGO_BIN_EXE_lutlab")).args(args).envs(env.iter().copied()).output().expect("runs lutlab"))
}

/// The one JSON object a successful run printed.
fn json_of(args: &[&str], out: Output) -> Value {
    assert!(out.status.success(), "lutlab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("lutlab {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}
