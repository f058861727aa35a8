#!/usr/bin/env bash
# What speculative decoding does to a loaded server: `edgellama serve` with
# and without drafting, same model, same flags otherwise, taking turns,
# at 1, 4 and 16 concurrent streams (loadgen.py: chat questions, every
# request generating exactly MAX_TOKENS tokens). The server drafts only
# while a step's decoding rows stay few (--spec-max-rows), so at 16 streams
# it should not draft at all, and must not be slower.
#
#   bench/serve/spec.sh
#
# Settings (environment): MODEL (SmolLM2 F16 made by bench/spec.sh),
# SPEC (the drafting flags, default "--spec-type ngram-simple"), PARALLEL
# (16), CTX (per sequence, 1024), THREADS (2), MAX_TOKENS (128),
# PER_WORKER (4), LEVELS (1,4,16), ROUNDS (2), OUT
# (bench/serve/results/spec-<date>.jsonl).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MODEL="${MODEL:-$ROOT/bench/.cache/models/smollm2-135m-f16.gguf}"
SPEC="${SPEC:---spec-type ngram-simple}"
PARALLEL="${PARALLEL:-16}"
CTX="${CTX:-1024}"
THREADS="${THREADS:-2}"
MAX_TOKENS="${MAX_TOKENS:-128}"
PER_WORKER="${PER_WORKER:-4}"
LEVELS="${LEVELS:-1,4,16}"
ROUNDS="${ROUNDS:-2}"
mkdir -p "$ROOT/bench/serve/results"
OUT="${OUT:-$ROOT/bench/serve/results/spec-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
[ -f "$MODEL" ] || { echo "no $MODEL: run bench/spec.sh once, or set MODEL" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -q -p edgellama-cli)
EDGELLAMA="$ROOT/target/release/edgellama"
. "$ROOT/bench/serve/lib.sh"

run_one() { # label [flags...]
    local label="$1" port pid
    shift
    port="$(free_port)"
    "$EDGELLAMA" serve -m "$MODEL" --host 127.0.0.1 --port "$port" \
        --parallel "$PARALLEL" -c $((CTX * PARALLEL)) -t "$THREADS" "$@" >"$OUT.$label.log" 2>&1 &
    pid=$!
    wait_up "$port" "$pid"
    python3 "$ROOT/bench/serve/loadgen.py" --port "$port" --levels 1 \
        --requests-per-worker 1 --max-tokens 8 >/dev/null
    python3 "$ROOT/bench/serve/loadgen.py" --port "$port" --levels "$LEVELS" \
        --requests-per-worker "$PER_WORKER" --max-tokens "$MAX_TOKENS" \
        --label "$label" --json "$OUT"
    curl -s "http://127.0.0.1:$port/metrics" | grep -E '^edgellama_spec' >"$OUT.$label.metrics" || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

{
    echo "# model=$(basename "$MODEL") spec=$SPEC parallel=$PARALLEL ctx/seq=$CTX threads=$THREADS"
    echo "# max_tokens=$MAX_TOKENS per_worker=$PER_WORKER rounds=$ROUNDS"
    echo "# edgellama $(cd "$ROOT" && git rev-parse --short HEAD)"
} >"$OUT.meta"
for _ in $(seq 1 "$ROUNDS"); do
    # shellcheck disable=SC2086
    run_one speculative $SPEC
    run_one plain
done
python3 "$ROOT/bench/serve/report.py" "$OUT" | tee "$OUT.table.md"
