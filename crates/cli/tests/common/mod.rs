//! Shared by the CLI tests: the test data, running the binary, and the
//! checks every command's errors must pass.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A file of the test data (`EDGELLAMA_TESTDATA`, default `.cache/testdata`).
pub fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

pub fn edgellama(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellama"))
        .args(args)
        .output()
        .expect("run edgellama")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure must be a message and exit code 1, never a panic.
pub fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(
        err.contains(needle),
        "error should mention {needle:?}: {err}"
    );
}

/// A fresh folder of this test process under the system's temporary one.
pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellama-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch folder");
    d
}
