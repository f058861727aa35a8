#!/usr/bin/env bash
# edgellama against llama.cpp's llama-bench on the same GGUF files, same threads.
#
#   bench/run.sh [--quick] [--with-3b] [--threads "1 2"] [--rounds N] [--reps N]
#                [--models "key ..."] [--wait-idle SECONDS]
#
# Steps (each cached, so a second run only measures):
#  1. llama.cpp: builds llama-bench and llama-quantize from the pinned
#     llama-cpp-python==0.3.36 sdist (the llama.cpp tree it vendors), CMake
#     Release, -DLLAMA_CURL=OFF, default (native) CPU flags, into
#     $EDGELLAMA_BENCH_CACHE (default bench/.cache). LLAMA_CPP_DIR=<llama.cpp
#     tree with build/bin> reuses an existing build instead.
#  2. edgellama: cargo build --release -p edgellama-cli (EDGELLAMA_BIN=<path>
#     uses a given binary instead).
#  3. models, in $EDGELLAMA_BENCH_CACHE/models:
#       smollm2-q4_1    SmolLM2-135M-Instruct Q4_1 as shipped (scripts/fetch-testdata.sh)
#       smollm2-q8_0, smollm2-q4_k_m, smollm2-f16
#                       made from it by llama-quantize --allow-requantize
#       1b-q4_k_m, 1b-q8_0
#                       Llama 3.2 1B shapes, random weights: F16 from
#                       bench/make-shaped-models.py, then llama-quantize
#       3b-q4_k_m, 3b-q8_0   the same for 3B (only with --with-3b)
#  4. memory read bandwidth with bench/membw.c (1 GiB buffer, 1 and 2 threads).
#  5. for each model and thread count, ROUNDS rounds of
#       llama-bench    -m F -p 512 -n 128 -t T -r REPS -o json
#       edgellama bench -m F -p 512 -n 128 -t T -r REPS -o json
#     alternating which program goes first (ABBA...), each under
#     /usr/bin/time for its peak RSS; both programs run with their defaults
#     otherwise (F16 KV cache, one warm-up; llama.cpp memory-maps the file,
#     edgellama reads it into huge pages where the system grants them).
#  6. bench/report.py: medians over the rounds of each round's mean t/s, the
#     ratio edgellama / llama.cpp, peak RSS (max over rounds), the share of
#     the CPUs other processes used during the runs (timings are only
#     comparable on an otherwise idle machine), and for 1b-q4_k_m the tg
#     speed as a percentage of the bandwidth bound. Table and raw JSON go to
#     bench/results/<UTC time>/ (table.md, summary.json, raw/).
#
# --wait-idle S: before each run, wait up to S seconds for the CPUs to be less
# than 20% busy (on a shared machine other jobs distort every timing).
# --quick: smollm2-q4_1 and smollm2-q4_k_m, 2 rounds of 1 repetition (a smoke
# run of a few minutes once llama.cpp is built).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${EDGELLAMA_BENCH_CACHE:-$root/bench/.cache}"
testdata="${EDGELLAMA_TESTDATA:-$root/.cache/testdata}"
llama_version=0.3.36

args="$*"
quick=0
with3b=0
threads="1 2"
rounds=""
reps=""
models=""
wait_idle=0
die() { echo "bench/run.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --with-3b) with3b=1 ;;
    --threads) threads="${2:?}"; shift ;;
    --rounds) rounds="${2:?}"; shift ;;
    --reps) reps="${2:?}"; shift ;;
    --models) models="${2:?}"; shift ;;
    --wait-idle) wait_idle="${2:?}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  : "${rounds:=2}" "${reps:=1}"
  [ -n "$models" ] || models="smollm2-q4_1 smollm2-q4_k_m"
else
  : "${rounds:=3}"
  if [ -z "$models" ]; then
    models="smollm2-q4_1 smollm2-q8_0 smollm2-q4_k_m smollm2-f16 1b-q4_k_m 1b-q8_0"
    [ "$with3b" = 1 ] && models="$models 3b-q4_k_m 3b-q8_0"
  fi
fi
case "$rounds" in ''|*[!0-9]*|0) die "--rounds must be a positive integer" ;; esac
if [ -n "$reps" ]; then case "$reps" in *[!0-9]*|0) die "--reps must be a positive integer" ;; esac; fi
for t in $threads; do case "$t" in *[!0-9]*|0) die "--threads takes positive integers" ;; esac; done

# Repetitions per invocation when --reps is not given: the 135M model runs
# in seconds, the 1B/3B shapes in minutes per invocation.
reps_for() {
  if [ -n "$reps" ]; then echo "$reps"; else case "$1" in smollm2-*) echo 3 ;; *) echo 1 ;; esac; fi
}

mkdir -p "$cache/models"

# --- 1. llama.cpp ----------------------------------------------------------
if [ -n "${LLAMA_CPP_DIR:-}" ]; then
  llama_src="$LLAMA_CPP_DIR"
  [ -x "$llama_src/build/bin/llama-bench" ] && [ -x "$llama_src/build/bin/llama-quantize" ] \
    || die "LLAMA_CPP_DIR=$llama_src has no build/bin/llama-bench and llama-quantize"
else
  llama_src="$cache/llama_cpp_python-$llama_version/vendor/llama.cpp"
  if ! [ -x "$llama_src/build/bin/llama-bench" ] || ! [ -x "$llama_src/build/bin/llama-quantize" ]; then
    if ! [ -f "$llama_src/CMakeLists.txt" ]; then
      mkdir -p "$cache/sdist"
      if ! [ -f "$cache/sdist/llama_cpp_python-$llama_version.tar.gz" ]; then
        # Without build isolation pip does not need the build backend just
        # to read the sdist's metadata; fall back to the default otherwise.
        python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
          "llama-cpp-python==$llama_version" -d "$cache/sdist" 2>/dev/null \
          || python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$llama_version" -d "$cache/sdist"
      fi
      tar -xzf "$cache/sdist/llama_cpp_python-$llama_version.tar.gz" -C "$cache"
    fi
    echo "building llama.cpp (llama-cpp-python==$llama_version sdist) in $llama_src/build" >&2
    cmake -S "$llama_src" -B "$llama_src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF >&2
    cmake --build "$llama_src/build" --config Release -j "$(nproc)" --target llama-bench llama-quantize >&2
  fi
fi
llama_bench="$llama_src/build/bin/llama-bench"
llama_quantize="$llama_src/build/bin/llama-quantize"

# --- 2. edgellama ----------------------------------------------------------
if [ -n "${EDGELLAMA_BIN:-}" ]; then
  edgellama="$EDGELLAMA_BIN"
else
  (cd "$root" && cargo build --release -q -p edgellama-cli) >&2
  edgellama="$root/target/release/edgellama"
fi
[ -x "$edgellama" ] || die "no edgellama binary at $edgellama"

# --- 3. models -------------------------------------------------------------
smol_src="$testdata/SmolLM2-135M-Instruct.Q4_1.gguf"
if ! [ -s "$smol_src" ] || ! [ -s "$testdata/llama3.2-tokenizer.json" ]; then
  EDGELLAMA_TESTDATA="$testdata" "$root/scripts/fetch-testdata.sh" >&2
fi

quantize() { # SRC DST TYPE
  [ -s "$2" ] && return 0
  echo "llama-quantize $(basename "$1") -> $(basename "$2")" >&2
  "$llama_quantize" --allow-requantize "$1" "$2.part" "$3" >"$2.log" 2>&1 \
    || { tail -20 "$2.log" >&2; die "llama-quantize failed for $2"; }
  mv "$2.part" "$2"
}

shaped() { # 1b|3b
  local f="$cache/models/llama32-$1-shaped-f16.gguf"
  if ! [ -s "$f" ]; then
    echo "making the $1-shaped F16 model" >&2
    python3 "$root/bench/make-shaped-models.py" "$cache/models" --size "$1" \
      --tokenizer "$testdata/llama3.2-tokenizer.json" >&2
  fi
  echo "$f"
}

model_file() { # KEY -> path, made on first use
  local m="$cache/models"
  case "$1" in
    smollm2-q4_1) echo "$smol_src" ;;
    smollm2-q8_0) quantize "$smol_src" "$m/SmolLM2-135M-Instruct.Q8_0.gguf" Q8_0; echo "$m/SmolLM2-135M-Instruct.Q8_0.gguf" ;;
    smollm2-q4_k_m) quantize "$smol_src" "$m/SmolLM2-135M-Instruct.Q4_K_M.gguf" Q4_K_M; echo "$m/SmolLM2-135M-Instruct.Q4_K_M.gguf" ;;
    smollm2-f16) quantize "$smol_src" "$m/SmolLM2-135M-Instruct.F16.gguf" F16; echo "$m/SmolLM2-135M-Instruct.F16.gguf" ;;
    [13]b-q4_k_m|[13]b-q8_0)
      local size="${1%%-*}" type="${1#*-}" f16
      f16="$(shaped "$size")"
      local out="$m/llama32-$size-shaped-$type.gguf"
      quantize "$f16" "$out" "$(echo "$type" | tr a-z A-Z)"
      echo "$out" ;;
    *) die "unknown model key $1 (smollm2-{q4_1,q8_0,q4_k_m,f16}, {1b,3b}-{q4_k_m,q8_0})" ;;
  esac
}

# --- 4. bandwidth, output folder ---------------------------------------------
out="$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
raw="$out/raw"
mkdir -p "$raw"
# A private copy, so a rebuild of target/ during a long run cannot mix versions.
cp "$edgellama" "$out/edgellama"
edgellama="$out/edgellama"
membw="$cache/membw"
if ! [ -x "$membw" ] || [ "$root/bench/membw.c" -nt "$membw" ]; then
  cc -O3 -march=native -pthread -o "$membw" "$root/bench/membw.c"
fi

time_bin=/usr/bin/time
if ! [ -x "$time_bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q time >&2 || true
  fi
  [ -x "$time_bin" ] || time_bin=""
fi

cpu_line() { head -1 /proc/stat; }
cpu_busy() { # share of all CPUs busy over one second, in percent
  local a b
  a=($(cpu_line)); sleep 1; b=($(cpu_line))
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  [ "$total" -gt 0 ] || { echo 0; return; }
  echo $(( 100 * (total - idle) / total ))
}
wait_for_idle() { # waits up to --wait-idle seconds for the CPUs to be < 20% busy
  [ "$wait_idle" -gt 0 ] || return 0
  local deadline=$(( $(date +%s) + wait_idle )) busy
  while busy="$(cpu_busy)"; [ "$busy" -ge 20 ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 4
  done
}

# Runs one timed command; writes NAME.json (stdout), NAME.err, NAME.time
# ("peak_kb user_s sys_s wall_s") and NAME.stat (/proc/stat's cpu line before
# and after, for the other processes' CPU share).
measure() { # NAME cmd...
  local name="$1"; shift
  wait_for_idle
  cpu_line >"$raw/$name.stat"
  local rc=0
  if [ -n "$time_bin" ]; then
    "$time_bin" -f "%M %U %S %e" -o "$raw/$name.time" "$@" >"$raw/$name.json" 2>"$raw/$name.err" || rc=$?
  else
    # Without GNU time: poll the child's VmHWM (its peak RSS so far) until
    # it exits; the last reading is within 0.1 s of the end.
    local t0 t1 pid now_kb hwm="-"
    t0=$(date +%s.%N)
    "$@" >"$raw/$name.json" 2>"$raw/$name.err" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      now_kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
      [ -z "$now_kb" ] || hwm="$now_kb"
      sleep 0.1
    done
    wait "$pid" || rc=$?
    t1=$(date +%s.%N)
    echo "$hwm - - $(python3 -c "print($t1 - $t0)")" >"$raw/$name.time"
  fi
  cpu_line >>"$raw/$name.stat"
  if [ "$rc" != 0 ]; then
    echo "  $name failed (exit $rc), see $raw/$name.err" >&2
  fi
}

{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command=bench/run.sh${args:+ $args}"
  echo "edgellama_commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$root" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')"
  echo "llama_cpp=llama-cpp-python==$llama_version sdist, $("$llama_bench" --version 2>&1 | grep -m1 -i 'version' || true)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "ncpu=$(nproc)"
  echo "rounds=$rounds"
  echo "threads=$threads"
} >"$out/meta.txt"

echo "measuring memory bandwidth" >&2
for t in $threads; do
  wait_for_idle
  "$membw" "$t" 1024 10 >"$raw/membw.t$t.json"
done

# --- 5. the runs -------------------------------------------------------------
: >"$out/models.tsv"
for key in $models; do
  f="$(model_file "$key")"
  r="$(reps_for "$key")"
  printf '%s\t%s\t%s\n' "$key" "$f" "$r" >>"$out/models.tsv"
  for t in $threads; do
    for ((round = 1; round <= rounds; round++)); do
      echo "$key -t $t round $round/$rounds (-r $r)" >&2
      lb=(measure "$key.t$t.r$round.llama.cpp" "$llama_bench" -m "$f" -p 512 -n 128 -t "$t" -r "$r" -o json)
      el=(measure "$key.t$t.r$round.edgellama" "$edgellama" bench -m "$f" -p 512 -n 128 -t "$t" -r "$r" -o json)
      if (( round % 2 )); then "${lb[@]}"; "${el[@]}"; else "${el[@]}"; "${lb[@]}"; fi
    done
  done
done

# --- 6. report ---------------------------------------------------------------
rm -f "$out/edgellama"
python3 "$root/bench/report.py" "$out"
echo "results in $out" >&2
