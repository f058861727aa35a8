#!/usr/bin/env bash
# Regenerates quants.bin, the llama.cpp reference outputs that
# crates/kernels/tests/golden.rs compares edgellama-kernels against.
#
#   crates/kernels/tests/golden/gen_golden.sh [LLAMA_CPP_DIR]
#
# Reference: llama.cpp as vendored in the llama-cpp-python==0.3.36 sdist
# (ggml 0.25.3). Pass the root of that tree, or leave it out and the sdist is
# downloaded with `pip download --no-binary :all: llama-cpp-python==0.3.36`.
# Compiler: any C11 gcc or clang on x86-64 or aarch64; this file was made with
# the system gcc on x86-64.
#
# Only ggml/src/ggml-quants.c (quantize_row_*_ref, dequantize_row_*) and
# ggml/src/ggml-cpu/quants.c (ggml_vec_dot_*_generic) are compiled, with no
# -march flag and -ffp-contract=off: the reference is the portable scalar
# code, with every multiply and add rounded separately as in our Rust.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
  llama="$(cd "$1" && pwd)"
else
  pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$work/sdist"
  tar -xzf "$work"/sdist/llama_cpp_python-0.3.36.tar.gz -C "$work/sdist"
  llama="$work/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp"
fi
[ -f "$llama/ggml/src/ggml-quants.c" ] || { echo "no llama.cpp tree at $llama" >&2; exit 1; }

CC="${CC:-cc}"
flags=(-std=c11 -O2 -ffp-contract=off -DNDEBUG
       -I "$llama/ggml/include" -I "$llama/ggml/src" -I "$llama/ggml/src/ggml-cpu")
"$CC" "${flags[@]}" -w -c "$llama/ggml/src/ggml-quants.c" -o "$work/ggml-quants.o"
"$CC" "${flags[@]}" -w -c "$llama/ggml/src/ggml-cpu/quants.c" -o "$work/cpu-quants.o"
"$CC" "${flags[@]}" -Wall -Wno-unused-function -c "$here/gen_golden.c" -o "$work/gen_golden.o"
"$CC" -o "$work/gen_golden" "$work/gen_golden.o" "$work/ggml-quants.o" "$work/cpu-quants.o" -lm

"$work/gen_golden" "$here/quants.bin"
echo "wrote $here/quants.bin ($(wc -c <"$here/quants.bin") bytes)"
