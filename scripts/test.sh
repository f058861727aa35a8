#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs the test tools
# (pinned Python packages; Debian's Chromium when missing), fetches the test
# models and texts (cached), checks formatting and lints, runs every Rust
# crate's tests, then drives `edgellama serve` with the official OpenAI
# client and its chat page in headless Chromium (tests/openai).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q --disable-pip-version-check \
    numpy==2.4.6 gguf==0.19.0 \
    openai==3.57.0 pytest==9.2.0 jsonschema==4.26.0 websocket-client==1.8.0
if ! command -v chromium >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

./scripts/fetch-testdata.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
cargo build --release -p edgellama-cli
python3 -m pytest tests/openai -q
