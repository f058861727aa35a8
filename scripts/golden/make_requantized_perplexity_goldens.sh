#!/usr/bin/env bash
# Regenerates crates/models/tests/golden/perplexity-requantized.json and the
# llama-perplexity logs beside it (perplexity-<type>-c512.log): SmolLM2-135M-
# Instruct requantized from the shipped Q4_1 to Q4_K_M and F16 by
# llama-quantize, scored on Hamlet by llama.cpp's default build. These types
# take kernels of their own on AVX-512 VNNI machines (q4_K/q6_K and f16
# products), which the Q4_1 golden does not reach.
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp scripts/golden/make_requantized_perplexity_goldens.sh
#
# Needs LLAMA_CPP_DIR, the llama.cpp tree vendored in llama-cpp-python==0.3.36
# built with its tools (build_ref.sh; targets llama-quantize and
# llama-perplexity), and the test data from scripts/fetch-testdata.sh
# (EDGELLAMA_TESTDATA, default .cache/testdata).
#
# For each type T in Q4_K_M, F16:
#   llama-quantize --allow-requantize SmolLM2-135M-Instruct.Q4_1.gguf T.gguf T
#   llama-perplexity -m T.gguf -f shakespeare-hamlet.txt -c 512 --chunks 4 -t 2
# The golden records each file's sha256: the test makes the same file with
# edgellama's quantizer and checks the hash before scoring it, so both
# programs score identical bytes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to the llama.cpp tree (see build_ref.sh)}"
testdata="${EDGELLAMA_TESTDATA:-$root/.cache/testdata}"
out="$root/crates/models/tests/golden"
bin="$LLAMA_CPP_DIR/build/bin"
source_model=SmolLM2-135M-Instruct.Q4_1.gguf
text=shakespeare-hamlet.txt
source "$here/lib.sh"
require_testdata "$testdata" "$source_model" "$text"
require_tools "$bin" llama-quantize llama-perplexity
commit="$(llama_commit)"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

types=(Q4_K_M F16)
for t in "${types[@]}"; do
  "$bin/llama-quantize" --allow-requantize "$testdata/$source_model" "$tmp/SmolLM2-135M-Instruct.$t.gguf" "$t" \
    > "$tmp/quantize-$t.log" 2>&1
  lower="$(echo "$t" | tr 'A-Z' 'a-z')"
  # Relative paths and no timestamps keep the logs free of machine details.
  (cd "$tmp" && ln -sf "$testdata/$text" "$text" \
    && "$bin/llama-perplexity" -m "SmolLM2-135M-Instruct.$t.gguf" -f "$text" -c 512 --chunks 4 -t 2 \
      --no-log-timestamps --log-colors off -lv 4) > "$out/perplexity-$lower-c512.log" 2>&1
done

python3 - "$out" "$tmp" "$source_model" "$text" "$commit" "${types[@]}" <<'PY'
import hashlib, json, re, sys
from pathlib import Path

out, tmp, source, text, commit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
types = sys.argv[6:]
runs = []
for t in types:
    model = tmp / f"SmolLM2-135M-Instruct.{t}.gguf"
    log_name = f"perplexity-{t.lower()}-c512.log"
    log = (out / log_name).read_text(encoding="utf-8")
    running = [float(v) for _, v in re.findall(r"\[(\d+)\]([0-9.]+),", log)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    if not m or len(running) != 4:
        sys.exit(f"cannot parse {log_name}")
    runs.append({
        "type": t,
        "model": model.name,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "made_by": f"llama-quantize --allow-requantize {source} {model.name} {t}",
        "command": f"llama-perplexity -m {model.name} -f {text} -c 512 --chunks 4 -t 2",
        "c": 512,
        "chunks": 4,
        "running_ppl": running,
        "ppl": float(m.group(1)),
        "ppl_error": float(m.group(2)),
        "log": log_name,
    })
doc = {
    "source_model": source,
    "file": text,
    "llama_cpp": f"llama-cpp-python 0.3.36 vendored tree, commit {commit}, default (native) build",
    "script": "scripts/golden/make_requantized_perplexity_goldens.sh",
    "runs": runs,
}
(out / "perplexity-requantized.json").write_text(json.dumps(doc, indent=2) + "\n")
print(json.dumps([(r["type"], r["ppl"]) for r in runs]))
PY
