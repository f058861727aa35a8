#!/usr/bin/env bash
# Peak resident memory of `edgellama serve` and llama.cpp's `llama-server`
# with the same long-context flags, per cache type: each server starts, answers
# one chat request, and its peak RSS (VmHWM) is read before it is stopped.
#
#   LLAMA_CPP_DIR=<llama.cpp tree with build/bin/llama-server> \
#     bench/kv-memory.sh MODEL.gguf [--ctx 131072] [--parallel 4] [--types "f16 q8_0"]
#
# Both run with -c CTX --parallel N -ctk T -ctv T -t 2 (llama-server with
# -fa on, which its quantized values need); edgellama reads the model into
# memory, llama-server memory-maps it (its mapped pages count once touched).
# Prints a table with the ratio edgellama / llama-server; raw logs go to
# bench/results/kv-memory-<UTC time>/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "bench/kv-memory.sh: $*" >&2; exit 1; }
model="${1:-}"
[ -n "$model" ] && [ -f "$model" ] || die "usage: bench/kv-memory.sh MODEL.gguf [options]"
shift
ctx=131072; parallel=4; types="f16 q8_0"
while [ $# -gt 0 ]; do
  case "$1" in
    --ctx) ctx="${2:?}"; shift ;;
    --parallel) parallel="${2:?}"; shift ;;
    --types) types="${2:?}"; shift ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp tree with build/bin/llama-server}"
server="$LLAMA_CPP_DIR/build/bin/llama-server"
[ -x "$server" ] || die "no $server"
(cd "$root" && cargo build --release -q -p edgellama-cli)
edgellama="$root/target/release/edgellama"
out="$root/bench/results/kv-memory-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
port=18431

# run_one NAME cmd...: starts the server, waits for /health, sends one chat
# request, prints the peak RSS in KiB.
run_one() {
  local name="$1"; shift
  "$@" >"$out/$name.log" 2>&1 &
  local pid=$! i
  for i in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "$name did not start, see $out/$name.log" >&2; echo 0; return; }
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"Write one sentence about the sea."}],"max_tokens":32,"temperature":0}' \
    >"$out/$name.reply.json" || echo "$name: the request failed" >&2
  awk '/^VmHWM:/ {print $2}' "/proc/$pid/status"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

echo "| cache | -c | parallel | llama-server peak RSS MiB | edgellama peak RSS MiB | ratio |" | tee "$out/table.md"
echo "|---|---:|---:|---:|---:|---:|" | tee -a "$out/table.md"
for ty in $types; do
  l=$(run_one "llama-$ty" "$server" -m "$model" -c "$ctx" -np "$parallel" -ctk "$ty" -ctv "$ty" \
    -fa on -t 2 --port "$port")
  e=$(run_one "edge-$ty" "$edgellama" serve -m "$model" -c "$ctx" --parallel "$parallel" \
    -ctk "$ty" -ctv "$ty" -t 2 --port "$port")
  python3 -c "
l, e = $l / 1024, $e / 1024
print(f'| $ty | $ctx | $parallel | {l:.0f} | {e:.0f} | x{e / l if l else float(\"nan\"):.2f} |')
" | tee -a "$out/table.md"
done
echo "results in $out" >&2
