#!/usr/bin/env bash
# Load benchmark: `edgellama serve` against llama.cpp's `llama-server`, same
# model, same number of parallel sequences, same per-sequence context, same
# threads, on loopback. Measures aggregate generated tokens/s and p50/p99
# time to first token at 1, 4 and 16 concurrent streams (loadgen.py).
# The two servers take turns, ROUNDS times, so drift in the machine's load
# hits both alike.
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp bench/serve/run.sh
#
# LLAMA_CPP_DIR is llama.cpp's source tree (the pinned sdist's
# vendor/llama.cpp); llama-server is built in its build/ folder when
# missing. Other settings (environment): MODEL, PARALLEL (16), CTX (per
# sequence, 1024), THREADS (2), MAX_TOKENS (128), PER_WORKER (4),
# LEVELS (1,4,16), ROUNDS (2), OUT (bench/serve/results/<date>.jsonl).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to the llama.cpp source tree}"
MODEL="${MODEL:-$ROOT/.cache/testdata/SmolLM2-135M-Instruct.Q4_1.gguf}"
PARALLEL="${PARALLEL:-16}"
CTX="${CTX:-1024}"
THREADS="${THREADS:-2}"
MAX_TOKENS="${MAX_TOKENS:-128}"
PER_WORKER="${PER_WORKER:-4}"
LEVELS="${LEVELS:-1,4,16}"
ROUNDS="${ROUNDS:-2}"
mkdir -p "$ROOT/bench/serve/results"
OUT="${OUT:-$ROOT/bench/serve/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl}"

LLAMA_SERVER="$LLAMA_CPP_DIR/build/bin/llama-server"
if [ ! -x "$LLAMA_SERVER" ]; then
    cmake -S "$LLAMA_CPP_DIR" -B "$LLAMA_CPP_DIR/build" -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF >/dev/null
    cmake --build "$LLAMA_CPP_DIR/build" --target llama-server -j2
fi
(cd "$ROOT" && cargo build --release -p edgellama-cli)
EDGELLAMA="$ROOT/target/release/edgellama"

. "$ROOT/bench/serve/lib.sh"

run_one() { # label
    local label="$1" port pid
    port="$(free_port)"
    if [ "$label" = edgellama ]; then
        "$EDGELLAMA" serve -m "$MODEL" --host 127.0.0.1 --port "$port" \
            --parallel "$PARALLEL" -c $((CTX * PARALLEL)) -t "$THREADS" >"$OUT.$label.log" 2>&1 &
    else
        # llama-server divides -c among its slots.
        "$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port "$port" \
            -np "$PARALLEL" -c $((CTX * PARALLEL)) -t "$THREADS" -tb "$THREADS" \
            --no-webui >"$OUT.$label.log" 2>&1 &
    fi
    pid=$!
    wait_up "$port" "$pid"
    # One warm-up request, not counted.
    python3 "$ROOT/bench/serve/loadgen.py" --port "$port" --levels 1 \
        --requests-per-worker 1 --max-tokens 8 >/dev/null
    python3 "$ROOT/bench/serve/loadgen.py" --port "$port" --levels "$LEVELS" \
        --requests-per-worker "$PER_WORKER" --max-tokens "$MAX_TOKENS" \
        --label "$label" --json "$OUT"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

{
    echo "# model=$(basename "$MODEL") parallel=$PARALLEL ctx/seq=$CTX threads=$THREADS"
    echo "# max_tokens=$MAX_TOKENS per_worker=$PER_WORKER rounds=$ROUNDS"
    echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
} >"$OUT.meta"
for _ in $(seq 1 "$ROUNDS"); do
    run_one edgellama
    run_one llama-server
done
python3 "$ROOT/bench/serve/report.py" "$OUT"
