// Writes quants.bin: reference outputs of llama.cpp's own quantization code for
// the tensor types edgellama-kernels implements. Built and run by gen_golden.sh,
// which compiles this file together with the pinned llama.cpp's
// ggml/src/ggml-quants.c (quantize_row_*_ref, dequantize_row_*) and
// ggml/src/ggml-cpu/quants.c (ggml_vec_dot_*_generic, the scalar dot products).
//
// The float dot products (f32, f16, bf16) live in ggml-cpu/vec.cpp behind SIMD
// switches; their scalar branch is three lines, ported verbatim below.
//
// File layout (all little-endian):
//   "EGQ1", u32 n_rows, u32 n
//   f32 weights[n_rows][n], f32 acts[n_rows][n]        inputs
//   u32 n_conv, u32 f32_bits[n_conv], u16 f16[n_conv], u16 bf16[n_conv]
//                                                      ggml's f32 -> f16/bf16
//   u32 n_types, then per type:
//     u32 type, u32 vec_dot_type, u32 row_bytes, u32 act_row_bytes,
//     u32 has_dequantize, u32 has_vec_dot
//     per row r:
//       u8  q[row_bytes]             quantize(weights[r])
//       f32 deq[n]                   dequantize(q)              if has_dequantize
//       u8  aq[act_row_bytes]        quantize_vec_dot_type(acts[r]) if has_vec_dot
//       f32 dot                      vec_dot(q, aq)             if has_vec_dot

#include "ggml-quants.h"
#include "ggml-impl.h"
#include "ggml-cpu/quants.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- the few ggml symbols the two compiled files reference ----------------

// ggml-cpu.c fills this table at init; the generic dot products read fp16
// scales through it.
float ggml_table_f32_f16[1 << 16];

void ggml_abort(const char * file, int line, const char * fmt, ...) {
    fprintf(stderr, "ggml_abort at %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

// Only reached by the imatrix/iq paths, which this program never calls.
size_t ggml_type_size(enum ggml_type type) { (void) type; abort(); }
size_t ggml_row_size(enum ggml_type type, int64_t ne) { (void) type; (void) ne; abort(); }
const char * ggml_type_name(enum ggml_type type) { (void) type; abort(); }

// ---- deterministic inputs ---------------------------------------------------

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t next_u32(void) {
    // Knuth's MMIX LCG; the high half has the good bits.
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t) (rng_state >> 32);
}

static float uniform(void) { // [0, 1)
    return (float) (next_u32() >> 8) * (1.0f / 16777216.0f);
}

static float normalish(void) { // Irwin-Hall(4), mean 0, variance 1/3
    return uniform() + uniform() + uniform() + uniform() - 2.0f;
}

enum { N_ROWS = 4, N = 512 };

static float weights[N_ROWS][N];
static float acts[N_ROWS][N];

static void make_inputs(void) {
    // Row 0: weight-like values around zero.
    for (int i = 0; i < N; ++i) weights[0][i] = 0.05f * normalish();

    // Row 1: strictly positive values (exercises the min > 0 paths), with one
    // constant 32-block (max == min) and one constant 16-block.
    for (int i = 0; i < N; ++i) weights[1][i] = 0.1f + 1.2f * uniform();
    for (int i = 96; i < 128; ++i) weights[1][i] = 0.75f;
    for (int i = 304; i < 320; ++i) weights[1][i] = -0.25f;

    // Row 2: heavy tails, an all-zero 32-block, a block far below
    // GROUP_MAX_EPS, a block whose extreme is negative, and a subnormal block.
    for (int i = 0; i < N; ++i) {
        float v = normalish();
        if ((next_u32() & 31) == 0) v *= 20.0f;
        weights[2][i] = v;
    }
    for (int i = 64; i < 96; ++i) weights[2][i] = 0.0f;
    for (int i = 160; i < 192; ++i) weights[2][i] = 1e-17f * normalish();
    for (int i = 384; i < 416; ++i) weights[2][i] = -3.0f * uniform();
    // A block so small that its scale d is subnormal and 1/d overflows to
    // inf: the float-to-int conversions then see inf and NaN.
    for (int i = 448; i < 480; ++i) weights[2][i] = 2e-39f * normalish();

    // Row 3: every 32-block at its own scale, 2^-10 .. 2^5.
    for (int i = 0; i < N; ++i) {
        const int b = i / 32;
        weights[3][i] = ldexpf(normalish(), (b % 16) - 10);
    }

    // Activations: hidden-state-like rows; row 3 starts with a zero
    // super-block (the q8_K amax == 0 path).
    for (int r = 0; r < N_ROWS; ++r) {
        const float scale = r == 1 ? 4.0f : r == 2 ? 0.01f : 1.0f;
        for (int i = 0; i < N; ++i) acts[r][i] = scale * normalish();
    }
    for (int i = 0; i < 256; ++i) acts[3][i] = 0.0f;
}

// Bit patterns for the f32 -> f16/bf16 conversions: specials, rounding ties
// and random bits (which include NaNs with payloads).
enum { N_CONV_FIXED = 24, N_CONV_RANDOM = 2048, N_CONV = N_CONV_FIXED + N_CONV_RANDOM };

static const uint32_t conv_fixed[N_CONV_FIXED] = {
    0x00000000u, 0x80000000u,             // +-0
    0x7f800000u, 0xff800000u,             // +-inf
    0x7fc00000u, 0xffc00000u,             // quiet NaNs
    0x7f800001u, 0x7fa00000u, 0xff812345u, // signalling NaNs with payloads
    0x00000001u, 0x80000001u,             // smallest f32 subnormals
    0x33800000u,                          // 2^-24: smallest f16 subnormal
    0x33000000u,                          // 2^-25: ties to zero in f16
    0x38800000u,                          // 2^-14: smallest f16 normal
    0x477fe000u,                          // 65504: largest f16
    0x477ff000u,                          // 65520: ties up to inf in f16
    0x3f801000u,                          // 1 + 2^-11: f16 tie, rounds to even (1)
    0x3f803000u,                          // 1 + 3*2^-11: f16 tie, rounds up
    0x3f808000u,                          // 1 + 2^-8: bf16 tie, rounds to even (1)
    0x3f818000u,                          // 1 + 3*2^-8: bf16 tie, rounds up
    0x7f7fffffu,                          // FLT_MAX: bf16 rounds to inf
    0x3f800000u, 0xbf800000u,             // +-1
    0x40490fdbu,                          // pi
};

// ---- per-type reference calls -------------------------------------------------

typedef void (*quantize_fn)(const float * x, void * y, int64_t k);
typedef void (*dequantize_fn)(const void * x, float * y, int64_t k);
typedef void (*vec_dot_fn)(int n, float * s, size_t bs, const void * x, size_t bx,
                           const void * y, size_t by, int nrc);

static void q_f32(const float * x, void * y, int64_t k) { memcpy(y, x, (size_t) k * 4); }
static void dq_f32(const void * x, float * y, int64_t k) { memcpy(y, x, (size_t) k * 4); }

static void q_f16(const float * x, void * vy, int64_t k) {
    ggml_fp16_t * y = vy;
    for (int64_t i = 0; i < k; ++i) y[i] = ggml_compute_fp32_to_fp16(x[i]);
}
static void dq_f16(const void * vx, float * y, int64_t k) {
    const ggml_fp16_t * x = vx;
    for (int64_t i = 0; i < k; ++i) y[i] = ggml_compute_fp16_to_fp32(x[i]);
}
static void q_bf16(const float * x, void * vy, int64_t k) {
    ggml_bf16_t * y = vy;
    for (int64_t i = 0; i < k; ++i) y[i] = ggml_compute_fp32_to_bf16(x[i]);
}
static void dq_bf16(const void * vx, float * y, int64_t k) {
    const ggml_bf16_t * x = vx;
    for (int64_t i = 0; i < k; ++i) y[i] = ggml_compute_bf16_to_fp32(x[i]);
}

// The !GGML_SIMD branches of ggml_vec_dot_{f32,f16,bf16} in ggml-cpu/vec.cpp
// (GGML_CPU_FP16_TO_FP32 and GGML_BF16_TO_FP32 are exact conversions, spelled
// here through the ggml-impl.h functions they resolve to).
typedef double ggml_float; // as in ggml-cpu/vec.h

static void vd_f32(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    const float * x = vx;
    const float * y = vy;
    ggml_float sumf = 0.0;
    for (int i = 0; i < n; ++i) sumf += (ggml_float) (x[i] * y[i]);
    *s = sumf;
}
static void vd_f16(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    const ggml_fp16_t * x = vx;
    const ggml_fp16_t * y = vy;
    ggml_float sumf = 0.0;
    for (int i = 0; i < n; ++i) {
        sumf += (ggml_float) (ggml_compute_fp16_to_fp32(x[i]) * ggml_compute_fp16_to_fp32(y[i]));
    }
    *s = sumf;
}
static void vd_bf16(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    const ggml_bf16_t * x = vx;
    const ggml_bf16_t * y = vy;
    ggml_float sumf = 0;
    for (int i = 0; i < n; ++i) {
        sumf += (ggml_float) (ggml_compute_bf16_to_fp32(x[i]) * ggml_compute_bf16_to_fp32(y[i]));
    }
    *s = sumf;
}

#define Q(name) ((quantize_fn) (name))
#define DQ(name) ((dequantize_fn) (name))
#define VD(name) ((vec_dot_fn) (name))

typedef struct {
    enum ggml_type type;
    enum ggml_type vec_dot_type;
    int block;
    int block_bytes;
    quantize_fn quantize;
    dequantize_fn dequantize; // NULL: llama.cpp has none (q8_1)
    vec_dot_fn vec_dot;       // NULL: activation-only format
} type_case;

static const type_case cases[] = {
    { GGML_TYPE_F32,  GGML_TYPE_F32,  1,     4,                  q_f32,  dq_f32,  vd_f32 },
    { GGML_TYPE_F16,  GGML_TYPE_F16,  1,     2,                  q_f16,  dq_f16,  vd_f16 },
    { GGML_TYPE_BF16, GGML_TYPE_BF16, 1,     2,                  q_bf16, dq_bf16, vd_bf16 },
    { GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, QK4_0, sizeof(block_q4_0), Q(quantize_row_q4_0_ref), DQ(dequantize_row_q4_0), VD(ggml_vec_dot_q4_0_q8_0_generic) },
    { GGML_TYPE_Q4_1, GGML_TYPE_Q8_1, QK4_1, sizeof(block_q4_1), Q(quantize_row_q4_1_ref), DQ(dequantize_row_q4_1), VD(ggml_vec_dot_q4_1_q8_1_generic) },
    { GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, QK5_0, sizeof(block_q5_0), Q(quantize_row_q5_0_ref), DQ(dequantize_row_q5_0), VD(ggml_vec_dot_q5_0_q8_0_generic) },
    { GGML_TYPE_Q5_1, GGML_TYPE_Q8_1, QK5_1, sizeof(block_q5_1), Q(quantize_row_q5_1_ref), DQ(dequantize_row_q5_1), VD(ggml_vec_dot_q5_1_q8_1_generic) },
    { GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, QK8_0, sizeof(block_q8_0), Q(quantize_row_q8_0_ref), DQ(dequantize_row_q8_0), VD(ggml_vec_dot_q8_0_q8_0_generic) },
    { GGML_TYPE_Q8_1, GGML_TYPE_Q8_1, QK8_1, sizeof(block_q8_1), Q(quantize_row_q8_1_ref), NULL,                   NULL },
    { GGML_TYPE_Q2_K, GGML_TYPE_Q8_K, QK_K,  sizeof(block_q2_K), Q(quantize_row_q2_K_ref), DQ(dequantize_row_q2_K), VD(ggml_vec_dot_q2_K_q8_K_generic) },
    { GGML_TYPE_Q3_K, GGML_TYPE_Q8_K, QK_K,  sizeof(block_q3_K), Q(quantize_row_q3_K_ref), DQ(dequantize_row_q3_K), VD(ggml_vec_dot_q3_K_q8_K_generic) },
    { GGML_TYPE_Q4_K, GGML_TYPE_Q8_K, QK_K,  sizeof(block_q4_K), Q(quantize_row_q4_K_ref), DQ(dequantize_row_q4_K), VD(ggml_vec_dot_q4_K_q8_K_generic) },
    { GGML_TYPE_Q5_K, GGML_TYPE_Q8_K, QK_K,  sizeof(block_q5_K), Q(quantize_row_q5_K_ref), DQ(dequantize_row_q5_K), VD(ggml_vec_dot_q5_K_q8_K_generic) },
    { GGML_TYPE_Q6_K, GGML_TYPE_Q8_K, QK_K,  sizeof(block_q6_K), Q(quantize_row_q6_K_ref), DQ(dequantize_row_q6_K), VD(ggml_vec_dot_q6_K_q8_K_generic) },
    { GGML_TYPE_Q8_K, GGML_TYPE_Q8_K, QK_K,  sizeof(block_q8_K), Q(quantize_row_q8_K_ref), DQ(dequantize_row_q8_K), NULL },
};

static const type_case * find_case(enum ggml_type t) {
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        if (cases[i].type == t) return &cases[i];
    }
    abort();
}

static size_t row_bytes(const type_case * c) { return (size_t) (N / c->block) * (size_t) c->block_bytes; }

static FILE * out;

static void put(const void * p, size_t n) {
    if (fwrite(p, 1, n, out) != n) { perror("write"); exit(1); }
}
static void put_u32(uint32_t v) { put(&v, 4); }

int main(int argc, char ** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.bin\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < (1 << 16); ++i) ggml_table_f32_f16[i] = ggml_compute_fp16_to_fp32((ggml_fp16_t) i);

    make_inputs();

    out = fopen(argv[1], "wb");
    if (!out) { perror(argv[1]); return 1; }

    put("EGQ1", 4);
    put_u32(N_ROWS);
    put_u32(N);
    put(weights, sizeof(weights));
    put(acts, sizeof(acts));

    static uint32_t conv_in[N_CONV];
    static uint16_t conv_f16[N_CONV];
    static uint16_t conv_bf16[N_CONV];
    for (int i = 0; i < N_CONV; ++i) {
        const uint32_t bits = i < N_CONV_FIXED ? conv_fixed[i] : next_u32();
        float f;
        memcpy(&f, &bits, 4);
        conv_in[i] = bits;
        conv_f16[i] = ggml_compute_fp32_to_fp16(f);
        conv_bf16[i] = ggml_compute_fp32_to_bf16(f).bits;
    }
    put_u32(N_CONV);
    put(conv_in, sizeof(conv_in));
    put(conv_f16, sizeof(conv_f16));
    put(conv_bf16, sizeof(conv_bf16));

    const size_t n_cases = sizeof(cases) / sizeof(cases[0]);
    put_u32((uint32_t) n_cases);

    static uint8_t q[N * 4];
    static uint8_t aq[N * 4];
    static float deq[N];

    for (size_t ci = 0; ci < n_cases; ++ci) {
        const type_case * c = &cases[ci];
        const type_case * a = find_case(c->vec_dot_type);
        const size_t qb = row_bytes(c);
        const size_t ab = row_bytes(a);
        put_u32(c->type);
        put_u32(c->vec_dot_type);
        put_u32((uint32_t) qb);
        put_u32((uint32_t) ab);
        put_u32(c->dequantize != NULL);
        put_u32(c->vec_dot != NULL);

        for (int r = 0; r < N_ROWS; ++r) {
            // q8_K leaves bsums untouched for an all-zero block; start clean.
            memset(q, 0, sizeof(q));
            memset(aq, 0, sizeof(aq));
            c->quantize(weights[r], q, N);
            put(q, qb);
            if (c->dequantize) {
                c->dequantize(q, deq, N);
                put(deq, sizeof(deq));
            }
            if (c->vec_dot) {
                a->quantize(acts[r], aq, N);
                put(aq, ab);
                float s = 0.0f;
                c->vec_dot(N, &s, 0, q, 0, aq, 0, 1);
                put(&s, 4);
            }
        }
    }

    if (fclose(out) != 0) { perror("close"); return 1; }
    return 0;
}
