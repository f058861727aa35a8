#!/usr/bin/env bash
# Prompt processing and generation at a depth (tokens already in the KV
# cache), per cache type: edgellama bench against llama.cpp's llama-bench
# with flash attention on (its fast route; quantized values need it), same
# file, same threads, same -d/-ctk/-ctv.
#
#   LLAMA_CPP_DIR=<llama.cpp tree with build/bin/llama-bench> \
#     bench/depth.sh MODEL.gguf [--depths "0 4096"] [--types "f16 q8_0"] \
#                    [--threads "1 2"] [--rounds N] [-p 512] [-n 128]
#
# LLAMA_CPP_DIR is the llama.cpp tree vendored in llama-cpp-python==0.3.36
# (bench/run.sh builds it into bench/.cache; scripts/golden/build_ref.sh says
# how by hand). For each depth, cache type (keys and values alike) and
# thread count, ROUNDS rounds run
#   llama-bench     -m MODEL -p P -n N -d D -ctk T -ctv T -fa 1 -t THREADS -r 1 -o json
#   edgellama bench -m MODEL -p P -n N -d D -ctk T -ctv T       -t THREADS -r 1 -o json
# alternating which goes first; the table gives the median t/s of each and
# the ratio edgellama / llama.cpp. Raw JSON and the table go to
# bench/results/depth-<UTC time>/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "bench/depth.sh: $*" >&2; exit 1; }
model="${1:-}"
[ -n "$model" ] && [ -f "$model" ] || die "usage: bench/depth.sh MODEL.gguf [options] (see the header)"
shift
depths="0 4096"; types="f16 q8_0"; threads="1 2"; rounds=1; np=512; ng=128
while [ $# -gt 0 ]; do
  case "$1" in
    --depths) depths="${2:?}"; shift ;;
    --types) types="${2:?}"; shift ;;
    --threads) threads="${2:?}"; shift ;;
    --rounds) rounds="${2:?}"; shift ;;
    -p) np="${2:?}"; shift ;;
    -n) ng="${2:?}"; shift ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp tree with build/bin/llama-bench}"
llama_bench="$LLAMA_CPP_DIR/build/bin/llama-bench"
[ -x "$llama_bench" ] || die "no $llama_bench"
(cd "$root" && cargo build --release -q -p edgellama-cli)
out="$root/bench/results/depth-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out/raw"
cp "$root/target/release/edgellama" "$out/edgellama"
{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "model=$(basename "$model")"
  echo "edgellama_commit=$(cd "$root" && git rev-parse --short HEAD)$(cd "$root" && git diff --quiet HEAD -- crates || echo '+dirty')"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "depths=$depths types=$types threads=$threads rounds=$rounds p=$np n=$ng"
} >"$out/meta.txt"

for d in $depths; do
  for ty in $types; do
    for t in $threads; do
      for r in $(seq 1 "$rounds"); do
        name="d$d-$ty-t$t-r$r"
        run_llama() {
          "$llama_bench" -m "$model" -p "$np" -n "$ng" -d "$d" -ctk "$ty" -ctv "$ty" -fa 1 \
            -t "$t" -r 1 -o json >"$out/raw/$name.llama.json" 2>"$out/raw/$name.llama.err" \
            || echo "llama-bench failed: $out/raw/$name.llama.err" >&2
        }
        run_edge() {
          "$out/edgellama" bench -m "$model" -p "$np" -n "$ng" -d "$d" -ctk "$ty" -ctv "$ty" \
            -t "$t" -r 1 -o json >"$out/raw/$name.edge.json" 2>"$out/raw/$name.edge.err" \
            || echo "edgellama bench failed: $out/raw/$name.edge.err" >&2
        }
        if [ $((r % 2)) = 1 ]; then run_llama; run_edge; else run_edge; run_llama; fi
        echo "done $name" >&2
      done
    done
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path
out = Path(sys.argv[1])
runs = defaultdict(lambda: {"llama": [], "edge": []})
for f in sorted((out / "raw").glob("*.json")):
    who = f.suffixes[-2].lstrip(".")
    try:
        rows = json.loads(f.read_text() or "[]")
    except json.JSONDecodeError:
        continue
    for r in rows:
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        key = (r.get("n_depth", 0), r.get("type_k", "f16"), r["n_threads"], test)
        runs[key][who].append(r["avg_ts"])
lines = ["| depth | cache | threads | test | llama.cpp t/s | edgellama t/s | ratio |",
         "|---:|---|---:|---|---:|---:|---:|"]
summary = []
for (d, ty, t, test), v in sorted(runs.items()):
    if not v["llama"] or not v["edge"]:
        continue
    a, b = statistics.median(v["llama"]), statistics.median(v["edge"])
    lines.append(f"| {d} | {ty} | {t} | {test} | {a:.2f} | {b:.2f} | x{b / a:.2f} |")
    summary.append({"depth": d, "cache": ty, "threads": t, "test": test,
                    "llama_cpp_ts": a, "edgellama_ts": b, "ratio": b / a})
(out / "table.md").write_text("\n".join(lines) + "\n")
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print("\n".join(lines))
PY
echo "results in $out" >&2
