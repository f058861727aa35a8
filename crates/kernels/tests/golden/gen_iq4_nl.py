#!/usr/bin/env python3
"""Writes iq4_nl.bin, llama.cpp's own iq4_nl results that
crates/kernels/tests/iq4_nl.rs compares edgellama-kernels against.

    python3 crates/kernels/tests/golden/gen_iq4_nl.py LLAMA_CPP_BUILD_BIN

LLAMA_CPP_BUILD_BIN holds libggml-base.so and libggml-cpu.so built from the
llama.cpp vendored in llama-cpp-python==0.3.36 (ggml 0.25.3, git commit
0c1e57098bba43ac29e6e3b677cdceebdd22334f), with its default native CPU flags:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz
    cd llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_OPENMP=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
    cmake --build build -j --target ggml-base ggml-cpu

The committed file was made with Python 3.11 (standard library only), gcc 12 on
an x86-64 CPU with AVX2 (so ggml-cpu's `vec_dot` is its AVX2 kernel).

Functions called through ctypes:
  ggml_get_type_traits(IQ4_NL)->from_float_ref   quantize_row_iq4_nl_ref
  ggml_quantize_chunk(IQ4_NL, ..., imatrix=NULL)  quantize_iq4_nl, ntry 7
  ggml_get_type_traits(IQ4_NL)->to_float          dequantize_row_iq4_nl
  ggml_get_type_traits(Q8_0)->from_float_ref      quantize_row_q8_0_ref
  ggml_vec_dot_iq4_nl_q8_0_generic                the portable C
  ggml_get_type_traits_cpu(IQ4_NL)->vec_dot       this build's kernel

File layout (little-endian):
  "EIQ4", u32 n_rows, u32 n, u32 flags (bit 0: ggml_cpu_has_avx2())
  per row:
    f32 x[n]              input (weights / keys)
    u8  q_ref[n/32*18]    quantize_row_iq4_nl_ref(x)
    u8  q_chunk[n/32*18]  ggml_quantize_chunk(IQ4_NL, x)
    f32 deq[n]            dequantize_row_iq4_nl(q_ref)
    u8  aq[n/32*34]       quantize_row_q8_0_ref(activations), some rows
                          with bytes set to -128 afterwards
    f32 dot_generic_ref, dot_cpu_ref      vec_dot(q_ref, aq)
    f32 dot_generic_chunk, dot_cpu_chunk  vec_dot(q_chunk, aq)
  u32 bulk_blocks, then for bulk_blocks * 32 values from bulk() (which the
  Rust test regenerates: integers times powers of two, exact in f32):
    u8  q_ref[bulk_blocks*18], u8 q_chunk[bulk_blocks*18]
  (ggml_quantize_chunk's extra scale candidates win in a few percent of
  blocks, so it takes a hundred or so to tell every one of them apart.)
"""

import ctypes as C
import math
import random
import struct
import sys
from pathlib import Path

GGML_TYPE_Q8_0 = 8
GGML_TYPE_IQ4_NL = 20
N = 160  # 5 blocks: two AVX2 pairs and an odd last block
HERE = Path(__file__).resolve().parent

TO_FLOAT = C.CFUNCTYPE(None, C.c_void_p, C.POINTER(C.c_float), C.c_int64)
FROM_FLOAT = C.CFUNCTYPE(None, C.POINTER(C.c_float), C.c_void_p, C.c_int64)
VEC_DOT = C.CFUNCTYPE(None, C.c_int, C.POINTER(C.c_float), C.c_size_t, C.c_void_p,
                      C.c_size_t, C.c_void_p, C.c_size_t, C.c_int)


class TypeTraits(C.Structure):  # struct ggml_type_traits (ggml.h)
    _fields_ = [("type_name", C.c_char_p), ("blck_size", C.c_int64),
                ("blck_size_interleave", C.c_int64), ("type_size", C.c_size_t),
                ("is_quantized", C.c_bool), ("to_float", TO_FLOAT),
                ("from_float_ref", FROM_FLOAT)]


class TypeTraitsCpu(C.Structure):  # struct ggml_type_traits_cpu (ggml-cpu.h)
    _fields_ = [("from_float", FROM_FLOAT), ("vec_dot", VEC_DOT),
                ("vec_dot_type", C.c_int), ("nrows", C.c_int64)]


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def inputs():
    """(weights, activations) rows covering the quantizer's branches."""
    rng = random.Random(20250611)
    g = lambda s: [f32(rng.gauss(0.0, s)) for _ in range(N)]  # noqa: E731
    rows = []
    # Weight-like values.
    rows.append(g(0.05))
    # Key-like values with outliers.
    x = g(2.0)
    for i in range(0, N, 37):
        x[i] *= 8.0
    rows.append(x)
    # Uniform values, all positive (ntry -1 then gives a negative scale).
    rows.append([f32(rng.uniform(0.0, 30.0)) for _ in range(N)])
    # Block 0 all zero (scale 0), block 1 tiny (subnormal f16 scale),
    # block 2 below f16's range (scale rounds to 0), the rest normal.
    x = g(1.0)
    x[0:32] = [0.0] * 32
    x[32:64] = [f32(v * 1e-3) for v in x[32:64]]
    x[64:96] = [f32(v * 1e-9) for v in x[64:96]]
    rows.append(x)
    # Levels and exact midpoints between them at a power-of-two scale: with
    # amax 127/8 the first guess hits ties of best_index_int8.
    lv = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    x = []
    for i in range(N):
        if i % 32 == 0:
            x.append(-127 / 8)
        elif i % 2:
            k = (i * 5) % 15
            x.append((lv[k] + lv[k + 1]) / 16)
        else:
            x.append(lv[(i * 3) % 16] / 8)
    rows.append([f32(v) for v in x])
    acts = [g(1.0) for _ in rows]
    return rows, acts


BULK_BLOCKS = 128


def bulk():
    """Irwin-Hall(4) values from Knuth's MMIX LCG, scaled per block by 2^-5..2^1,
    every 11th value of every 5th block times 8 (outliers)."""
    state = 0x9E3779B97F4A7C15
    out = []
    for b in range(BULK_BLOCKS):
        for j in range(32):
            s = 0
            for _ in range(4):
                state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
                s += (state >> 32) >> 10
            v = (s - 2**23) * 2.0**-22 * 2.0**(b % 7 - 5)
            if b % 5 == 0 and j % 11 == 3:
                v *= 8
            out.append(v)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bin_dir = Path(sys.argv[1])
    base = C.CDLL(str(bin_dir / "libggml-base.so"), mode=C.RTLD_GLOBAL)
    cpu = C.CDLL(str(bin_dir / "libggml-cpu.so"))
    cpu.ggml_cpu_init()
    base.ggml_get_type_traits.restype = C.POINTER(TypeTraits)
    cpu.ggml_get_type_traits_cpu.restype = C.POINTER(TypeTraitsCpu)
    base.ggml_quantize_chunk.restype = C.c_size_t
    base.ggml_quantize_chunk.argtypes = [C.c_int, C.POINTER(C.c_float), C.c_void_p,
                                         C.c_int64, C.c_int64, C.c_int64, C.c_void_p]
    generic = VEC_DOT(("ggml_vec_dot_iq4_nl_q8_0_generic", cpu))

    iq4 = base.ggml_get_type_traits(GGML_TYPE_IQ4_NL).contents
    q8 = base.ggml_get_type_traits(GGML_TYPE_Q8_0).contents
    iq4_cpu = cpu.ggml_get_type_traits_cpu(GGML_TYPE_IQ4_NL).contents
    assert iq4.type_name == b"iq4_nl" and iq4.blck_size == 32 and iq4.type_size == 18
    assert iq4_cpu.vec_dot_type == GGML_TYPE_Q8_0
    rb, arb = N // 32 * 18, N // 32 * 34
    avx2 = cpu.ggml_cpu_has_avx2()

    def dot(f, w, a):
        s = C.c_float()
        f(N, C.byref(s), 0, w, 0, a, 0, 1)
        return s.value

    rows, acts = inputs()
    out = bytearray(b"EIQ4" + struct.pack("<III", len(rows), N, 1 if avx2 else 0))
    for r, (x, y) in enumerate(zip(rows, acts)):
        xs = (C.c_float * N)(*x)
        q_ref = C.create_string_buffer(rb)
        iq4.from_float_ref(xs, q_ref, N)
        # ggml-cpu's from_float (the KV-cache writer) is the reference quantizer.
        q_cpu = C.create_string_buffer(rb)
        iq4_cpu.from_float(xs, q_cpu, N)
        if r != 3:  # row 3's zero block keeps stale indices (see iq4nl.rs)
            assert q_cpu.raw == q_ref.raw, r
        q_chunk = C.create_string_buffer(rb)
        assert base.ggml_quantize_chunk(GGML_TYPE_IQ4_NL, xs, q_chunk, 0, 1, N, None) == rb
        deq = (C.c_float * N)()
        iq4.to_float(q_ref, deq, N)
        aq = C.create_string_buffer(arb)
        q8.from_float_ref((C.c_float * N)(*y), aq, N)
        if r in (1, 4):
            # Activations of -128 (never written by ggml's quantizers) in
            # both blocks of a pair and in the odd last block.
            raw = bytearray(aq.raw)
            for b in (0, 1, 4):
                for j in (3, 17, 30):
                    raw[b * 34 + 2 + j] = 0x80
            aq = C.create_string_buffer(bytes(raw), arb)
        dots = [dot(f, q, aq) for q in (q_ref, q_chunk) for f in (generic, iq4_cpu.vec_dot)]
        assert all(math.isfinite(d) for d in dots), dots
        out += struct.pack(f"<{N}f", *x) + q_ref.raw + q_chunk.raw
        out += struct.pack(f"<{N}f", *deq) + aq.raw + struct.pack("<4f", *dots)
    x = bulk()
    xs = (C.c_float * len(x))(*x)
    assert list(xs) == x  # exact in f32
    q_ref = C.create_string_buffer(BULK_BLOCKS * 18)
    iq4.from_float_ref(xs, q_ref, len(x))
    q_chunk = C.create_string_buffer(BULK_BLOCKS * 18)
    base.ggml_quantize_chunk(GGML_TYPE_IQ4_NL, xs, q_chunk, 0, 1, len(x), None)
    out += struct.pack("<I", BULK_BLOCKS) + q_ref.raw + q_chunk.raw
    path = HERE / "iq4_nl.bin"
    path.write_bytes(bytes(out))
    print(f"wrote {path} ({len(out)} bytes, avx2={bool(avx2)})")


if __name__ == "__main__":
    main()
