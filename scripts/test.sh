#!/usr/bin/env bash
# The whole test suite: fetch test data (cached), then lint and test every crate.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-testdata.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
