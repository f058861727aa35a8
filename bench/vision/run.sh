#!/usr/bin/env bash
# Image encoding: edgellama against transformers on the CPU, same threads.
# Time to encode one 1120x1120 image (2x2 tiles of 560) with the vision tower
# of Llama 3.2 11B/90B Vision (width 1280, 32 local + 8 global layers, 16
# heads, intermediate 5120, patch 14, intermediate layers [3, 7, 15, 23, 30],
# output 7680) and the projector (7680 -> 4096), random weights.
#
#   bench/vision/run.sh [--threads "1 2"] [--rounds N] [--reps N]
#                       [--local-layers N] [--global-layers N] [--text-width N]
#                       [--edgellama-load mmap|default] [--no-check]
#                       [--vision-types "f16 q8_0"] [--wait-idle SECONDS]
#
# Steps (the first four cached, so a second run only measures):
#  1. the Python environment .cache/venv-mllama (as the mllama goldens use):
#     made with ~/.pyenv/versions/3.12.1/bin/python (else python3) when
#     missing, and the pins below installed when any is missing or differs;
#     an environment that has them is used as it is.
#  2. edgellama: cargo build --release -p edgellama-cli (EDGELLAMA_BIN=<path>
#     uses a given binary instead), copied into the results folder.
#  3. in $EDGELLAMA_BENCH_CACHE/vision (default bench/.cache/vision): the
#     checkpoint of bench/vision/make-shaped-model.py (BF16, the real tower
#     unless --local-layers/--global-layers/--text-width shrink it; remade
#     when the generator changes), the test image test-1120x1120.png (made by
#     the same script), and the GGUF of `edgellama convert` with its default
#     types: the tower's and projector's matrices F16, position tables, norms
#     and biases F32, the text model BF16 (it is never run); for each other
#     type of --vision-types (default "f16 q8_0"), a copy with the tower's
#     and projector's matrices in that type (`edgellama quantize GGUF OUT
#     BF16 --vision-type TYPE`). A tower in F32 or F16 attends in f32; one in
#     BF16 or Q8_0 rounds its attention products to bfloat16 (README, Vision).
#  4. for each thread count T, ROUNDS rounds of the programs, each under
#     /usr/bin/time for its peak RSS, the order rotating (round 1
#     edgellama per vision type, torch f32, torch bf16; round 2 the
#     reverse; ...):
#       edgellama bench -m GGUF --image PNG -t T -r REPS -o json [--mmap]
#         (program edgellama-TYPE)
#       torch_encode.py MODEL_DIR PNG --dtype f32  -t T -r REPS
#       torch_encode.py MODEL_DIR PNG --dtype bf16 -t T -r REPS
#     Each prepares the image once (untimed), encodes it once to warm up and
#     REPS times timed (vision tower + projector, no text). Torch runs
#     transformers' MllamaVisionModel with SDPA attention (torch_encode.py
#     says how it is loaded).
#  5. check (unless --no-check): round 1 of the first thread count also dumps
#     the projected features of every program (streamed to disk, after the
#     warm-up, outside the timed encodes); each is compared with torch f32's
#     as the model tests compare: max |a - b| / max |b| (and the ratio of
#     RMS norms), expected below 1e-3 for an F32 or F16 tower; the others
#     (Q8_0 and BF16 weights, bfloat16 arithmetic) are reported beside torch
#     bf16's own distance from torch f32.
#  6. results: bench/vision/results/<UTC time>.jsonl, one line per run
#     (the program's JSON, its round, peak RSS, user/system/wall time and the
#     share of the CPUs other processes used meanwhile), the check as a line
#     of its own, <time>.jsonl.meta (machine, versions, settings); then
#     bench/vision/report.py prints the table: per thread count the median
#     over rounds of each program's mean time per image, the largest peak RSS,
#     and edgellama's time over the faster torch variant's at the same
#     threads.
#
# Peak RSS: with --edgellama-load mmap (the default) edgellama memory-maps the
# GGUF, so only the pages it reads count: the tower and projector and the few
# small text tensors a load reads, as torch holds only the tower and the
# projector. The file also holds the text model's embeddings (2 x 128256 rows
# of the text width, about 2.1 GB at 4096), which an encode never reads; with
# --edgellama-load default (edgellama's own default: the whole file read into
# memory) they count as well.
#
# --reps: timed encodes per run (default 1; with the full tower one encode
# takes minutes on one thread). --wait-idle S: before each run, wait up to S
# seconds for the CPUs to be less than 20% busy (timings are only comparable
# on an otherwise idle machine). Quick check on a reduced tower (minutes):
#   bench/vision/run.sh --local-layers 2 --global-layers 1 --rounds 1 --threads 1
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/bench/vision"
cache="${EDGELLAMA_BENCH_CACHE:-$root/bench/.cache}/vision"
testdata="${EDGELLAMA_TESTDATA:-$root/.cache/testdata}"
venv="$root/.cache/venv-mllama"
pins=(torch==2.15.0 transformers==5.25.0 numpy==2.4.6 pillow==12.3.0 safetensors==0.8.0)

args="$*"
threads="1 2"
rounds=2
reps=1
local_layers=32
global_layers=8
text_width=4096
el_load=mmap
check=1
wait_idle=0
vision_types="f16 q8_0"
die() { echo "bench/vision/run.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="${2:?}"; shift ;;
    --rounds) rounds="${2:?}"; shift ;;
    --reps) reps="${2:?}"; shift ;;
    --local-layers) local_layers="${2:?}"; shift ;;
    --global-layers) global_layers="${2:?}"; shift ;;
    --text-width) text_width="${2:?}"; shift ;;
    --edgellama-load) el_load="${2:?}"; shift ;;
    --no-check) check=0 ;;
    --vision-types) vision_types="${2:?}"; shift ;;
    --wait-idle) wait_idle="${2:?}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
posint() { case "$2" in ''|*[!0-9]*|0) die "$1 must be a positive integer" ;; esac; }
posint --rounds "$rounds"
posint --reps "$reps"
posint --local-layers "$local_layers"
posint --text-width "$text_width"
case "$global_layers" in ''|*[!0-9]*) die "--global-layers must be a non-negative integer" ;; esac
case "$wait_idle" in ''|*[!0-9]*) die "--wait-idle takes seconds" ;; esac
case "$el_load" in mmap|default) ;; *) die "--edgellama-load is mmap or default" ;; esac
[ -n "$threads" ] || die "--threads is empty"
for t in $threads; do posint --threads "$t"; done
for v in $vision_types; do
  case "$v" in f32|f16|bf16|q8_0) ;; *) die "--vision-types takes f32, f16, bf16, q8_0" ;; esac
done
[ -n "$vision_types" ] || die "--vision-types is empty"

# --- 1. Python environment ----------------------------------------------------
py="$venv/bin/python"
have_pins() {
  [ -x "$py" ] && "$py" - "${pins[@]}" <<'PY' 2>/dev/null
import importlib.metadata as md, sys
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if md.version(name) != want:
        sys.exit(1)
PY
}
if ! have_pins; then
  if ! [ -x "$py" ]; then
    base="$HOME/.pyenv/versions/3.12.1/bin/python"
    [ -x "$base" ] || base="$(command -v python3)"
    echo "making $venv with $base" >&2
    "$base" -m venv "$venv"
  fi
  echo "installing ${pins[*]} into $venv" >&2
  "$py" -m pip install -q "${pins[@]}" >&2
  have_pins || die "$venv lacks ${pins[*]} after installing"
fi

# --- 2. edgellama -------------------------------------------------------------
if [ -n "${EDGELLAMA_BIN:-}" ]; then
  edgellama="$EDGELLAMA_BIN"
else
  (cd "$root" && cargo build --release -q -p edgellama-cli) >&2
  edgellama="$root/target/release/edgellama"
fi
[ -x "$edgellama" ] || die "no edgellama binary at $edgellama"

# --- 3. model, image, GGUF ----------------------------------------------------
if ! [ -s "$testdata/llama3.2-tokenizer.json" ]; then
  EDGELLAMA_TESTDATA="$testdata" "$root/scripts/fetch-testdata.sh" >&2
fi
mkdir -p "$cache"
name="mllama-vision-l$local_layers-g$global_layers-w$text_width"
model="$cache/$name"
gguf="$cache/$name.gguf"
image="$cache/test-1120x1120.png"
stamp="$(cat "$here/make-shaped-model.py" "$root/scripts/make-tiny-mllama.py" | sha256sum | cut -c1-16)"
if ! [ -s "$model/model.safetensors" ] || [ "$(cat "$model/.made-by" 2>/dev/null)" != "$stamp" ]; then
  echo "making $name (random weights)" >&2
  rm -f "$gguf"
  "$py" "$here/make-shaped-model.py" "$model" --tokenizer "$testdata/llama3.2-tokenizer.json" \
    --local-layers "$local_layers" --global-layers "$global_layers" --text-width "$text_width" >&2
  echo "$stamp" >"$model/.made-by"
fi
[ -s "$image" ] || "$py" "$here/make-shaped-model.py" --image "$image"
if ! [ -s "$gguf" ] || [ "$model/model.safetensors" -nt "$gguf" ]; then
  echo "edgellama convert $name" >&2
  "$edgellama" convert "$model" -o "$gguf.part" >&2
  mv "$gguf.part" "$gguf"
fi
# The converter's default keeps the tower at F16; other types are copies.
gguf_for() { if [ "$1" = f16 ]; then echo "$gguf"; else echo "${gguf%.gguf}-vision-$1.gguf"; fi; }
for v in $vision_types; do
  g="$(gguf_for "$v")"
  if [ "$g" != "$gguf" ] && { ! [ -s "$g" ] || [ "$gguf" -nt "$g" ]; }; then
    echo "edgellama quantize $name --vision-type $v" >&2
    "$edgellama" quantize "$gguf" "$g.part" BF16 --vision-type "$v" >&2
    mv "$g.part" "$g"
  fi
done

# --- 4. the runs --------------------------------------------------------------
stamp_utc="$(date -u +%Y%m%dT%H%M%SZ)"
results="$here/results"
mkdir -p "$results"
out="$results/$stamp_utc.jsonl"
raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT
# A private copy, so a rebuild of target/ during a long run cannot mix versions.
cp "$edgellama" "$raw/edgellama"
edgellama="$raw/edgellama"

time_bin=/usr/bin/time
[ -x "$time_bin" ] || die "needs GNU time at /usr/bin/time (apt-get install time)"

cpu_line() { head -1 /proc/stat; }
cpu_busy() { # share of all CPUs busy over one second, in percent
  local a b i idle total=0
  read -r -a a < <(cpu_line); sleep 1; read -r -a b < <(cpu_line)
  idle=$(( (b[4] + b[5]) - (a[4] + a[5]) ))
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  [ "$total" -gt 0 ] || { echo 0; return; }
  echo $(( 100 * (total - idle) / total ))
}
wait_for_idle() { # waits up to --wait-idle seconds for the CPUs to be < 20% busy
  [ "$wait_idle" -gt 0 ] || return 0
  local deadline busy
  deadline=$(( $(date +%s) + wait_idle ))
  while busy="$(cpu_busy)"; [ "$busy" -ge 20 ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 4
  done
}

# Runs one timed command and appends its line to $out.
measure() { # PROGRAM THREADS ROUND cmd...
  local prog="$1" t="$2" round="$3" base rc=0
  shift 3
  base="$raw/$prog.t$t.r$round"
  wait_for_idle
  cpu_line >"$base.stat"
  "$time_bin" -f "%M %U %S %e" -o "$base.time" "$@" >"$base.json" 2>"$base.err" || rc=$?
  cpu_line >>"$base.stat"
  if [ "$rc" != 0 ]; then
    echo "  $prog -t $t round $round failed (exit $rc):" >&2
    tail -5 "$base.err" >&2
  fi
  "$py" - "$base" "$prog" "$t" "$round" "$rc" >>"$out" <<'PY'
import json, os, sys
base, prog, threads, rnd, rc = sys.argv[1:]
line = {"program": prog, "n_threads": int(threads), "round": int(rnd), "exit": int(rc)}
try:
    r = json.load(open(base + ".json"))
    line.update(r[0] if isinstance(r, list) else r)
except (OSError, ValueError, IndexError):
    line["error"] = open(base + ".err").read()[-2000:]
line["program"] = prog
try:
    kb, user, sys_s, wall = open(base + ".time").read().split()[-4:]
    line.update(peak_rss_kb=int(kb), user_s=float(user), sys_s=float(sys_s), wall_s=float(wall))
    a, b = ([int(x) for x in l.split()[1:9]] for l in open(base + ".stat"))
    d = [y - x for x, y in zip(a, b)]
    total, idle = sum(d), d[3] + d[4]
    own = (float(user) + float(sys_s)) * os.sysconf("SC_CLK_TCK")
    line["other_cpu_pct"] = round(100 * max(0.0, total - idle - own) / total, 1) if total else 0.0
except (OSError, ValueError):
    pass
print(json.dumps(line))
PY
}

{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command=bench/vision/run.sh${args:+ $args}"
  echo "edgellama_commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$root" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')"
  echo "python=$("$py" -c 'import sys; print(sys.version.split()[0])') ${pins[*]}"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "ncpu=$(nproc)"
  echo "model=$name (local $local_layers, global $global_layers, text width $text_width)"
  echo "gguf=$(basename "$gguf") $(stat -c %s "$gguf") bytes"
  echo "image=$(basename "$image")"
  echo "edgellama_load=$el_load"
  echo "vision_types=$vision_types"
  echo "rounds=$rounds reps=$reps threads=$threads"
} >"$out.meta"

load_flag=()
[ "$el_load" = mmap ] && load_flag=(--mmap)
first_t="${threads%% *}"
for t in $threads; do
  for ((round = 1; round <= rounds; round++)); do
    dump() { # NAME: the --dump-features arguments of round 1 of the first thread count
      if [ "$check" = 1 ] && [ "$round" = 1 ] && [ "$t" = "$first_t" ]; then
        echo "--dump-features $raw/$1.npy"
      fi
    }
    progs=()
    for v in $vision_types; do
      # shellcheck disable=SC2046 # dump's words are meant to split
      progs+=("measure edgellama-$v $t $round $edgellama bench -m $(gguf_for "$v") --image $image -t $t -r $reps -o json ${load_flag[*]} $(dump "edgellama-$v")")
    done
    progs+=("measure torch-f32 $t $round $py $here/torch_encode.py $model $image --dtype f32 -t $t -r $reps $(dump torch-f32)")
    progs+=("measure torch-bf16 $t $round $py $here/torch_encode.py $model $image --dtype bf16 -t $t -r $reps $(dump torch-bf16)")
    echo "-t $t round $round/$rounds (-r $reps)" >&2
    n=${#progs[@]}
    for ((i = 0; i < n; i++)); do
      if (( round % 2 )); then j=$i; else j=$((n - 1 - i)); fi
      # Paths hold no spaces (the cache and results folders are ours).
      # shellcheck disable=SC2086
      ${progs[$j]}
    done
  done
done

# --- 5. check -----------------------------------------------------------------
if [ "$check" = 1 ]; then
  "$py" - "$raw" "$vision_types" >>"$out" <<'PY'
import json, os, sys
import numpy as np
raw, types = sys.argv[1], sys.argv[2].split()
ref = os.path.join(raw, "torch-f32.npy")
for prog in [f"edgellama-{v}" for v in types] + ["torch-bf16"]:
    strict = prog in ("edgellama-f32", "edgellama-f16")
    line = {"check": f"projected features, {prog} vs torch-f32", "program": prog}
    if strict:
        line["tolerance"] = 1e-3
    try:
        a = np.load(os.path.join(raw, prog + ".npy")).astype(np.float32)
        b = np.load(ref).astype(np.float32)
        line.update(shape=list(a.shape), torch_shape=list(b.shape))
        if a.shape == b.shape:
            line["rel_max_diff"] = float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-6))
            line["rel_rms_diff"] = float(np.sqrt(((a - b) ** 2).mean()) / max(float(np.sqrt((b ** 2).mean())), 1e-6))
            line["pass"] = line["rel_max_diff"] < 1e-3 if strict else True
        else:
            line["pass"] = False
    except OSError as e:
        line.update(error=str(e), **{"pass": False})
    print(json.dumps(line))
PY
fi

# --- 6. report ----------------------------------------------------------------
"$py" "$here/report.py" "$out"
echo "results in $out" >&2
