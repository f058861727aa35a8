//! Shared pieces of the hub tests: deterministic file contents and a
//! client pointed at a stand-in with a fresh cache.
#![allow(dead_code)]

use edgellama_hub::{Hub, HubConfig};
use std::path::Path;
use std::time::Duration;

/// Bytes that differ at every offset of a range (so a resume at the wrong
/// offset cannot go unnoticed).
pub fn data(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub fn config(endpoint: &str, cache: &Path) -> HubConfig {
    let mut c = HubConfig::new(endpoint, cache.to_path_buf()).expect("endpoint");
    c.progress = false;
    c.retry_delay = Duration::from_millis(20);
    c.connect_timeout = Duration::from_secs(2);
    c.read_timeout = Duration::from_secs(10);
    c
}

pub fn hub(endpoint: &str, cache: &Path) -> Hub {
    Hub::new(config(endpoint, cache))
}

pub const COMMIT: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f001122334";
