#!/usr/bin/env bash
# Regenerates the forward-pass goldens in crates/models/tests/golden/ from
# llama.cpp: logits at the end of each prompt in scripts/golden/prompts.json and
# 32 greedy tokens, for SmolLM2-135M-Instruct Q4_1 and the three tiny
# Llama-3.2-shaped models.
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp scripts/golden/make_forward_goldens.sh
#
# Needs:
#   - LLAMA_CPP_DIR: the llama.cpp tree vendored in llama-cpp-python==0.3.36,
#     built with shared libraries (exact commands in build_ref.sh);
#   - the test data from scripts/fetch-testdata.sh (EDGELLAMA_TESTDATA, default
#     .cache/testdata), whose tiny models come from scripts/make-tiny-models.py
#     with numpy==2.4.6 and gguf==0.19.0;
#   - python3 (standard library only here).
#
# llama.cpp runs with its defaults for this version (flash attention "auto",
# F16 KV cache, n_batch 2048 / n_ubatch 512), n_ctx 512 and 2 threads; each
# golden records what "auto" resolved to and the CPU features llama.cpp used.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to the llama.cpp tree (see build_ref.sh)}"
testdata="${EDGELLAMA_TESTDATA:-$root/.cache/testdata}"

ref="$("$here/build_ref.sh" | tail -n 1)"
# The portable build (see build_ref.sh), when present, gives NAME.portable.json too.
portable=()
if [ -e "$LLAMA_CPP_DIR/build-portable/bin/libllama.so" ]; then
  portable=(--portable-ref "$(LLAMA_CPP_BUILD=build-portable "$here/build_ref.sh" | tail -n 1)")
fi
source "$here/lib.sh"
commit="$(llama_commit)"
start=$(date +%s)
python3 "$here/forward_goldens.py" --llama-ref "$ref" --llama-commit "$commit" --testdata "$testdata" "${portable[@]}"
echo "forward goldens took $(( $(date +%s) - start ))s"
