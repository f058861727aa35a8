#!/usr/bin/env bash
# What the input shield costs: `edgellama serve` under the same streaming
# load with and without `--guard input`, taking turns ROUNDS times. The
# shielded server runs the guard on every request and blocks none
# (--guard-threshold 1), so the difference is the check itself: the guard's
# prefill of its prompt (about 230 tokens plus the conversation) and its few
# decoded tokens, on the same threads as the main model.
#
#   bench/serve/shield.sh
#
# Models (made when missing into bench/.cache/models, random weights with
# the real shapes): Llama 3.2 1B Q4_K_M as the main model, Llama Guard 3 1B
# Q8_0 as the guard (bench/make-shaped-models.py, then edgellama quantize).
# Settings (environment): MODEL, GUARD, PARALLEL (16), CTX (per sequence,
# 1024), THREADS (2), MAX_TOKENS (64), PER_WORKER (2), LEVELS (16),
# GUARD_PARALLEL (4), ROUNDS (2), OUT (bench/serve/results/shield-<date>.jsonl).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
models="${EDGELLAMA_BENCH_CACHE:-$ROOT/bench/.cache}/models"
PARALLEL="${PARALLEL:-16}"
CTX="${CTX:-1024}"
THREADS="${THREADS:-2}"
MAX_TOKENS="${MAX_TOKENS:-64}"
PER_WORKER="${PER_WORKER:-2}"
LEVELS="${LEVELS:-16}"
GUARD_PARALLEL="${GUARD_PARALLEL:-4}"
ROUNDS="${ROUNDS:-2}"
mkdir -p "$ROOT/bench/serve/results" "$models"
OUT="${OUT:-$ROOT/bench/serve/results/shield-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"

(cd "$ROOT" && cargo build --release -p edgellama-cli)
EDGELLAMA="$ROOT/target/release/edgellama"
tok="$ROOT/.cache/testdata/llama3.2-tokenizer.json"
[ -s "$tok" ] || "$ROOT/scripts/fetch-testdata.sh"

shaped() { # size file-f16 file-quantized type
    if [ ! -s "$models/$3" ]; then
        [ -s "$models/$2" ] || python3 "$ROOT/bench/make-shaped-models.py" "$models" --size "$1" --tokenizer "$tok" >&2
        "$EDGELLAMA" quantize "$models/$2" "$models/$3" "$4" >&2
    fi
    echo "$models/$3"
}
MODEL="${MODEL:-$(shaped 1b llama32-1b-shaped-f16.gguf llama32-1b-shaped-q4_k_m.gguf Q4_K_M)}"
GUARD="${GUARD:-$(shaped guard1b llama-guard3-1b-shaped-f16.gguf llama-guard3-1b-shaped-q8_0.gguf Q8_0)}"

. "$ROOT/bench/serve/lib.sh"

run_one() { # plain|shielded
    local label="$1" port pid extra=()
    if [ "$label" = shielded ]; then
        extra=(--guard-model "$GUARD" --guard input --guard-threshold 1 --guard-parallel "$GUARD_PARALLEL")
    fi
    port="$(free_port)"
    "$EDGELLAMA" serve -m "$MODEL" --alias main --host 127.0.0.1 --port "$port" --parallel "$PARALLEL" \
        -c $((CTX * PARALLEL)) -t "$THREADS" "${extra[@]}" >"$OUT.$label.log" 2>&1 &
    pid=$!
    wait_up "$port" "$pid"
    # Llama 3's end-of-generation tokens are banned so every request decodes
    # MAX_TOKENS tokens. One warm-up request, not counted.
    python3 "$ROOT/bench/serve/loadgen.py" --port "$port" --levels 1 --ban 128001,128008,128009 \
        --model main --requests-per-worker 1 --max-tokens 8 >/dev/null
    python3 "$ROOT/bench/serve/loadgen.py" --port "$port" --levels "$LEVELS" \
        --ban 128001,128008,128009 --model main --requests-per-worker "$PER_WORKER" --max-tokens "$MAX_TOKENS" \
        --label "$label" --json "$OUT"
    if [ "$label" = shielded ]; then
        curl -s "http://127.0.0.1:$port/metrics" | grep '^edgellama_guard' >"$OUT.$label.metrics" || true
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

{
    echo "# model=$(basename "$MODEL") guard=$(basename "$GUARD") parallel=$PARALLEL ctx/seq=$CTX threads=$THREADS"
    echo "# max_tokens=$MAX_TOKENS per_worker=$PER_WORKER guard_parallel=$GUARD_PARALLEL rounds=$ROUNDS"
    echo "# edgellama $(cd "$ROOT" && git rev-parse --short HEAD)"
    echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
} >"$OUT.meta"
for _ in $(seq 1 "$ROUNDS"); do
    run_one plain
    run_one shielded
done
python3 "$ROOT/bench/serve/report.py" "$OUT"
