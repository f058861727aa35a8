//! Shared by the integration tests: test data, the llama-quantize golden, and
//! hashing of written bytes.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use edgellama_gguf::GgmlType;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A file from the test data directory; fails loudly when it is missing.
pub fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test data file {} is missing: run scripts/fetch-testdata.sh",
        path.display()
    );
    path
}

/// What llama-quantize wrote and chose (scripts/golden/quantize/make_goldens.py).
pub fn golden() -> &'static Value {
    static GOLDEN: OnceLock<Value> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/golden/quantize/quantize.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
    })
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

pub fn ggml_type(name: &str) -> GgmlType {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown ggml type {name}"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `Write` that only hashes and counts, so whole output files can be
/// compared without touching the disk.
#[derive(Default)]
pub struct HashSink {
    hasher: Sha256,
    pub len: u64,
}

impl HashSink {
    pub fn hex(self) -> String {
        hex(&self.hasher.finalize())
    }
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
