#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs the test tools
# (pinned Python packages; Debian's Chromium when missing), fetches the test
# models and texts (cached), checks formatting and lints, runs every Rust
# crate's tests, then drives `edgellama serve` with the official OpenAI
# client and its chat page in headless Chromium (tests/openai), and the
# real OGX (Llama Stack) server in front of it with its own client
# (tests/ogx, in a Python 3.12 environment made from tests/ogx/requirements.txt;
# skipped with a message where no Python 3.12 is found or the install fails).
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

# OGX needs Python >= 3.12.
# (A pyenv shim may stand on PATH without a 3.12 behind it: each candidate
# must run.)
py312=""
for cand in "$(command -v python3.12 || true)" "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
    if [ -n "$cand" ] && [ -x "$cand" ] &&
        "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        py312="$cand"
        break
    fi
done
venv=.cache/venv-ogx
if [ -n "$py312" ]; then
    if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/ogx/requirements.txt "$venv/requirements.txt"; then
        rm -rf "$venv"
        if "$py312" -m venv "$venv" &&
            "$venv/bin/pip" install -q --disable-pip-version-check -r tests/ogx/requirements.txt; then
            cp tests/ogx/requirements.txt "$venv/requirements.txt"
        else
            echo "tests/ogx skipped: OGX could not be installed" >&2
            rm -rf "$venv"
        fi
    fi
else
    echo "tests/ogx skipped: no Python 3.12 found for OGX" >&2
fi
if [ -x "$venv/bin/python" ]; then
    "$venv/bin/python" -m pytest tests/ogx -q -p no:cacheprovider
fi
