#!/usr/bin/env bash
# Builds llama_ref (the llama.cpp reference program for the forward-pass goldens).
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp scripts/golden/build_ref.sh [OUTDIR]
#
# LLAMA_CPP_DIR is the llama.cpp tree vendored in the pinned llama-cpp-python
# sdist, already built as shared libraries in $LLAMA_CPP_DIR/build:
#
#   pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
#   tar xzf llama_cpp_python-0.3.36.tar.gz
#   cd llama_cpp_python-0.3.36/vendor/llama.cpp     # git commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f
#   cmake -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF
#   cmake --build build -j --target llama-simple llama-perplexity llama-tokenize llama-quantize llama-bench
#
# (GGML_NATIVE is on by default, so the CPU kernels are chosen for the build
# machine; the goldens record llama.cpp's system info line.)
#
# LLAMA_CPP_BUILD names the build folder inside the tree (default: build). The
# portable goldens use a second build without any x86 SIMD, so that llama.cpp
# runs its plain C kernels:
#
#   cmake -B build-portable -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
#     -DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF \
#     -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_LLAMAFILE=OFF -DGGML_OPENMP=OFF
#   cmake --build build-portable -j --target llama llama-perplexity
#
# The binary goes to OUTDIR (default: target/golden/$LLAMA_CPP_BUILD in the
# repository) with an rpath to $LLAMA_CPP_DIR/$LLAMA_CPP_BUILD/bin.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to the llama.cpp tree (see the header of this script)}"
build="${LLAMA_CPP_BUILD:-build}"
bin="$LLAMA_CPP_DIR/$build/bin"
out="${1:-$root/target/golden/$build}"
for lib in libllama.so libggml.so libggml-base.so; do
  [ -e "$bin/$lib" ] || { echo "missing $bin/$lib: build llama.cpp first (see the header of this script)" >&2; exit 1; }
done
mkdir -p "$out"
${CXX:-c++} -std=c++17 -O2 -Wall -Wextra \
  -I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" \
  "$here/llama_ref.cpp" -o "$out/llama_ref" \
  -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin"
echo "$out/llama_ref"
