#!/usr/bin/env bash
# Speculative decoding against plain decoding and against llama.cpp: one
# stream, greedy, same prompt, same files, same threads, alternating rounds.
#
#   LLAMA_CPP_DIR=<llama.cpp tree> bench/spec.sh [--rounds N] [-n N] [-t THREADS]
#
# LLAMA_CPP_DIR is the llama.cpp tree vendored in llama-cpp-python==0.3.36
# with build/bin/llama-bench and build/bin/llama-speculative-simple
# (cmake --build build --target llama-bench llama-speculative-simple).
# The models are SmolLM2-135M-Instruct made from the test model
# (scripts/fetch-testdata.sh) by edgellama quantize: an F16 copy (the
# target), and Q8_0 and Q4_0 copies made from it (the other target, the
# draft). Cases, each a row of the table:
#   f16+q4_0 draft   story prompt, -md Q4_0, 2 and 3 drafted tokens
#   q8_0+q4_0 draft  story prompt, -md Q4_0, 3 drafted tokens
#   f16 n-gram       rewrite prompt, ngram-simple (each engine's defaults)
# Every case runs the plain decoding of its target too: edgellama run, and
# for llama.cpp llama-bench's tg test (-p 0 -n N: llama-speculative-simple
# cannot run without a draft, and llama-simple takes no thread count);
# llama-speculative-simple for llama.cpp's speculation. The
# table gives the median generation t/s and the ratios; raw logs go to
# bench/results/spec-<UTC time>/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "bench/spec.sh: $*" >&2; exit 1; }
rounds=3; ng=256; threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="${2:?}"; shift ;;
    -n) ng="${2:?}"; shift ;;
    -t) threads="${2:?}"; shift ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp tree (see the header)}"
bin="$LLAMA_CPP_DIR/build/bin"
for b in llama-bench llama-speculative-simple; do
  [ -x "$bin/$b" ] || die "no $bin/$b: cmake --build $LLAMA_CPP_DIR/build --target $b"
done
(cd "$root" && cargo build --release -q -p edgellama-cli)
out="$root/bench/results/spec-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out/raw"
cp "$root/target/release/edgellama" "$out/edgellama"
el="$out/edgellama"

models="${EDGELLAMA_BENCH_CACHE:-$root/bench/.cache}/models"
mkdir -p "$models"
src="$root/.cache/testdata/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$src" ] || "$root/scripts/fetch-testdata.sh"
f16="$models/smollm2-135m-f16.gguf"; q8="$models/smollm2-135m-q8_0.gguf"; q4="$models/smollm2-135m-q4_0.gguf"
[ -f "$f16" ] || "$el" quantize --allow-requantize "$src" "$f16" F16 >/dev/null
[ -f "$q8" ] || "$el" quantize "$f16" "$q8" Q8_0 >/dev/null
[ -f "$q4" ] || "$el" quantize "$f16" "$q4" Q4_0 >/dev/null

story="$(cat "$root/bench/spec/story.txt")"
rewrite="$(cat "$root/bench/spec/rewrite.txt")"
{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "edgellama_commit=$(cd "$root" && git rev-parse --short HEAD)$(cd "$root" && git diff --quiet HEAD -- crates || echo '+dirty')"
  echo "llama_cpp=$(cd "$LLAMA_CPP_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "rounds=$rounds n=$ng threads=$threads"
} >"$out/meta.txt"

# Prints the generation t/s of one run, logging it to raw/NAME.
el_run() { # NAME MODEL PROMPT [FLAGS...]
  local name="$1" model="$2" prompt="$3"; shift 3
  "$el" run -m "$model" -p "$prompt" -n "$ng" --temp 0 -t "$threads" "$@" \
    >"$out/raw/$name.out" 2>"$out/raw/$name.err"
  sed -n 's/^generation: .*(\([0-9.]*\) tokens\/s)$/\1/p' "$out/raw/$name.err"
}
lc_plain() { # NAME MODEL PROMPT
  "$bin/llama-bench" -m "$2" -p 0 -n "$ng" -t "$threads" -r 1 -o json >"$out/raw/$1.out" 2>"$out/raw/$1.err"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["avg_ts"])' "$out/raw/$1.out"
}
lc_spec() { # NAME MODEL PROMPT [FLAGS...]
  local name="$1" model="$2" prompt="$3"; shift 3
  "$bin/llama-speculative-simple" -m "$model" -p "$prompt" -n "$ng" --temp 0 -t "$threads" "$@" \
    >"$out/raw/$name.out" 2>"$out/raw/$name.err"
  sed -n 's/.*decoded .* speed: *\([0-9.]*\) t\/s.*/\1/p' "$out/raw/$name.err" | tail -1
}
# Acceptance of an edgellama run: accepted / drafted.
el_accept() { sed -n 's/^speculative: .*(\([0-9.]*%\)).*/\1/p' "$out/raw/$1.err"; }
lc_accept() { sed -n 's/.*accept *= *\([0-9.]*%\).*/\1/p' "$out/raw/$1.err" | tail -1; }

# case name | target | prompt var | edgellama flags | llama.cpp flags
cases=(
  "f16+q4_0 n3|$f16|story|-md $q4 --spec-draft-n-max 3|-md $q4 --spec-type draft-simple --spec-draft-n-max 3"
  "f16+q4_0 n2|$f16|story|-md $q4 --spec-draft-n-max 2|-md $q4 --spec-type draft-simple --spec-draft-n-max 2"
  "q8_0+q4_0 n3|$q8|story|-md $q4 --spec-draft-n-max 3|-md $q4 --spec-type draft-simple --spec-draft-n-max 3"
  "f16 n-gram|$f16|rewrite|--spec-type ngram-simple|--spec-type ngram-simple"
)
: >"$out/runs.tsv"
for r in $(seq 1 "$rounds"); do
  for i in "${!cases[@]}"; do
    IFS='|' read -r label model pvar elf lcf <<<"${cases[$i]}"
    prompt="${!pvar}"
    tag="c$i-r$r"
    # Alternate which engine goes first.
    if [ $(( (r + i) % 2 )) -eq 0 ]; then order="el lc"; else order="lc el"; fi
    for who in $order; do
      if [ "$who" = el ]; then
        a=$(el_run "$tag-el-plain" "$model" "$prompt")
        # shellcheck disable=SC2086
        b=$(el_run "$tag-el-spec" "$model" "$prompt" $elf)
        printf '%s\t%s\tedgellama\t%s\t%s\t%s\n' "$i" "$r" "$a" "$b" "$(el_accept "$tag-el-spec")" >>"$out/runs.tsv"
      else
        a=$(lc_plain "$tag-lc-plain" "$model" "$prompt")
        # shellcheck disable=SC2086
        b=$(lc_spec "$tag-lc-spec" "$model" "$prompt" $lcf)
        printf '%s\t%s\tllama.cpp\t%s\t%s\t%s\n' "$i" "$r" "$a" "$b" "$(lc_accept "$tag-lc-spec")" >>"$out/runs.tsv"
      fi
    done
  done
done

python3 - "$out" "${cases[@]}" <<'EOF' | tee "$out/table.md"
import statistics, sys
out, cases = sys.argv[1], sys.argv[2:]
rows = [l.rstrip("\n").split("\t") for l in open(f"{out}/runs.tsv")]
def med(i, who, col):
    v = [float(r[col]) for r in rows if r[0] == str(i) and r[2] == who and r[col]]
    return statistics.median(v) if v else float("nan")
def acc(i, who):
    v = [r[5] for r in rows if r[0] == str(i) and r[2] == who]
    return v[-1] if v else ""
print("| case | edgellama plain | edgellama spec (accept) | spec / plain | llama.cpp plain | llama.cpp spec (accept) | edgellama spec / llama.cpp best |")
print("|---|---:|---:|---:|---:|---:|---:|")
for i, c in enumerate(cases):
    label = c.split("|")[0]
    ep, es = med(i, "edgellama", 3), med(i, "edgellama", 4)
    lp, ls = med(i, "llama.cpp", 3), med(i, "llama.cpp", 4)
    print(f"| {label} | {ep:.1f} | {es:.1f} ({acc(i, 'edgellama')}) | x{es / ep:.2f} | {lp:.1f} | {ls:.1f} ({acc(i, 'llama.cpp')}) | x{es / max(lp, ls):.2f} |")
EOF
echo "results in $out"
