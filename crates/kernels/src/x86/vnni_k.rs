//! AVX-512 VNNI products of q4_K and q6_K weights with q8_K activations:
//! this table's `vec_dot`, batched and tiled entries for the two types.
//!
//! Their arithmetic, the same for every pair whatever path computes it:
//! per super-block, the exact integer sum `S = sum_j scale_j * sum(q * y)`
//! over its sub-blocks (q6_K: minus `32 * sum_j scale_j * bsum_j`) and, for
//! q4_K, `M = sum_j min_j * (sum of the sub-block's activations)`; then
//! `acc = fma(d * dy, S, acc)` and `acc_m = fma(dmin * dy, M, acc_m)` in
//! `f32`, super-block by super-block, and the result `acc - acc_m`. That is
//! fewer roundings than ggml's (which keeps eight float lanes per pair), and
//! lets a tile keep one pair per vector lane.
//!
//! - Prompts (4 or more activation rows): weight rows are interleaved in
//!   groups of 16 (lane `l` = row `l`), a chunk at a time kept in L2; one
//!   `vpdpbusd` of a group vector with four broadcast activation bytes
//!   advances 16 pairs, sub-block sums are scaled with one `vpmullo` and a
//!   super-block's float steps are one conversion and one multiply-add for
//!   the 16 pairs.
//! - Decoding (1 to 3 activation rows): four weight rows at a time, each
//!   super-block unpacked in registers, their integer sums reduced
//!   together so the float steps again run on one vector.

use std::arch::x86_64::*;
use std::cell::RefCell;

use edgellama_gguf::QK_K;

use super::kquants::k4_scales_mins;
use super::simd::{hsum4_epi32, prefetch_ahead, RowQuads};
use crate::blocks::{as_blocks, BlockQ4K, BlockQ6K, BlockQ8K, Half};

/// One q8_K activation block with its quants on a cache line boundary (in
/// the file format they sit 4 bytes in, so every 512-bit load would split
/// a line).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct ActK {
    qs: [i8; QK_K],
    bsums: [i16; QK_K / 16],
    /// Sums of each 32 quants (pairs of `bsums`, which stay inside `i16`),
    /// the q4_K min products' operand.
    b32: [i16; QK_K / 32],
    d: f32,
}

impl ActK {
    fn new(b: &BlockQ8K) -> ActK {
        let bsums: [i16; QK_K / 16] = std::array::from_fn(|i| b.bsums[i].get());
        ActK {
            qs: b.qs,
            bsums,
            // The AVX2 kernel's `hadd` of the two halves: wrapping, like it.
            b32: std::array::from_fn(|i| bsums[2 * i].wrapping_add(bsums[2 * i + 1])),
            d: b.d.get(),
        }
    }
}

/// One weight super-block, unpacked.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Packed {
    /// Unsigned quants, elements `64v..64v + 64` in vector `v`.
    q: [__m512i; 4],
    /// The scale of each `i16` lane pair of `q`.
    sc: [__m512i; 4],
    /// q6_K: the 16 scales as `i16` (for the `-32` offset); q4_K: the 8
    /// mins in the low half.
    corr: __m256i,
    /// `[d, dmin, 0, 0]` (q4_K) or `[d, 0, 0, 0]` (q6_K), widened.
    dd: __m128,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `vpermw` indices: lane `l` of vector `v` takes scale `v * S + l / P`
/// (q4_K: two sub-blocks of 32 per vector; q6_K: four groups of 16).
const fn spread_idx<const S: i16, const P: i16>() -> [[i16; 32]; 4] {
    let mut out = [[0i16; 32]; 4];
    let mut v = 0;
    while v < 4 {
        let mut l = 0;
        while l < 32 {
            out[v][l] = v as i16 * S + l as i16 / P;
            l += 1;
        }
        v += 1;
    }
    out
}

static IDX_Q4K: [[i16; 32]; 4] = spread_idx::<2, 16>();
static IDX_Q6K: [[i16; 32]; 4] = spread_idx::<4, 8>();

/// The 16 `i16` of `v` spread to 32 lanes by `idx`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn spread16(v: __m256i, idx: &[i16; 32]) -> __m512i {
    // SAFETY: `idx` is 64 readable bytes.
    let idx = _mm512_loadu_si512(idx.as_ptr().cast());
    _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(v))
}

/// A K-quant weight format this module unpacks.
trait KBlock:
    zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + zerocopy::Unaligned
{
    unsafe fn pack(&self) -> Packed;
}

impl KBlock for BlockQ4K {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn pack(&self) -> Packed {
        pack_q4_k(self)
    }
}

impl KBlock for BlockQ6K {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn pack(&self) -> Packed {
        pack_q6_k(self)
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn pack_q4_k(x: &BlockQ4K) -> Packed {
    let m4 = _mm512_set1_epi8(0x0f);
    let mut q = [_mm512_setzero_si512(); 4];
    for m in 0..2 {
        // SAFETY: bytes 64m..64m + 64 of the 128 `qs`: the low nibbles are
        // sub-blocks 4m and 4m + 2, the high ones 4m + 1 and 4m + 3.
        let bits = _mm512_loadu_si512(x.qs.as_ptr().add(64 * m).cast());
        let lo = _mm512_and_si512(bits, m4);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(bits), m4);
        q[2 * m] = _mm512_shuffle_i64x2::<0b01_00_01_00>(lo, hi);
        q[2 * m + 1] = _mm512_shuffle_i64x2::<0b11_10_11_10>(lo, hi);
    }
    let sm = k4_scales_mins(&x.scales);
    let bits = x.d.to_bits() as i32 | (x.dmin.to_bits() as i32) << 16;
    Packed {
        q,
        // Sub-block scales are `i16` lanes 0..8 of `sm`; vector `v` holds
        // sub-blocks 2v and 2v + 1.
        sc: [
            spread16(sm, &IDX_Q4K[0]),
            spread16(sm, &IDX_Q4K[1]),
            spread16(sm, &IDX_Q4K[2]),
            spread16(sm, &IDX_Q4K[3]),
        ],
        corr: _mm256_castsi128_si256(_mm256_extracti128_si256::<1>(sm)),
        dd: _mm_cvtph_ps(_mm_cvtsi32_si128(bits)),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn pack_q6_k(x: &BlockQ6K) -> Packed {
    let m15 = _mm256_set1_epi8(15);
    let mut v32 = [_mm256_setzero_si256(); 8];
    for (half, (ql, qh)) in x.ql.chunks_exact(64).zip(x.qh.chunks_exact(32)).enumerate() {
        // SAFETY: `ql` is 64 readable bytes, `qh` 32.
        let (l0, l1, h) = (
            _mm256_loadu_si256(ql.as_ptr().cast()),
            _mm256_loadu_si256(ql.as_ptr().add(32).cast()),
            _mm256_loadu_si256(qh.as_ptr().cast()),
        );
        v32[4 * half] = _mm256_or_si256(
            _mm256_and_si256(l0, m15),
            _mm256_slli_epi16::<4>(_mm256_and_si256(h, _mm256_set1_epi8(0x03))),
        );
        v32[4 * half + 1] = _mm256_or_si256(
            _mm256_and_si256(l1, m15),
            _mm256_slli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(0x0c))),
        );
        v32[4 * half + 2] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m15),
            _mm256_and_si256(h, _mm256_set1_epi8(0x30)),
        );
        v32[4 * half + 3] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m15),
            _mm256_srli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(0xc0u8 as i8))),
        );
    }
    let q = [
        join(v32[0], v32[1]),
        join(v32[2], v32[3]),
        join(v32[4], v32[5]),
        join(v32[6], v32[7]),
    ];
    // SAFETY: `scales` is 16 readable bytes.
    let all = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr().cast()));
    Packed {
        q,
        // One scale per 16 elements: vector `v` holds scales 4v..4v + 4.
        sc: [
            spread16(all, &IDX_Q6K[0]),
            spread16(all, &IDX_Q6K[1]),
            spread16(all, &IDX_Q6K[2]),
            spread16(all, &IDX_Q6K[3]),
        ],
        corr: all,
        dd: _mm_cvtph_ps(_mm_cvtsi32_si128(
            x.d.to_bits() as i32 | (Half::ZERO.to_bits() as i32) << 16,
        )),
    }
}

/// The exact lane sums of one super-block pair.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn lane_sums(w: &Packed, y: &ActK) -> __m256i {
    let mut s = _mm512_setzero_si512();
    for v in 0..4 {
        // SAFETY: bytes 64v..64v + 64 of the 256 `qs`.
        let yv = _mm512_loadu_si512(y.qs.as_ptr().add(64 * v).cast());
        s = _mm512_dpwssd_epi32(s, w.sc[v], _mm512_maddubs_epi16(w.q[v], yv));
    }
    fold(s)
}

/// The two 32-element halves of a 512-bit lane sum added (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn fold(s: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s))
}

/// Four 8-lane `i32` sums reduced to `[sum(a), sum(b), sum(c), sum(d)]`
/// (exact: integer adds in any order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn sums4(v: [__m256i; 4]) -> __m128i {
    let h = hsum4_epi32(v[0], v[1], v[2], v[3]);
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Four weight rows against `C` activation rows, each super-block unpacked
/// in registers; lane `r` of the float steps is row `r`'s pair, in the
/// module's float steps.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn rows_pairs<X: KBlock, const Q6: bool, const C: usize>(
    x: [&[X]; 4],
    y: [&[ActK]; C],
) -> [[f32; 4]; C] {
    let mut acc = [_mm_setzero_ps(); C];
    let mut acc_m = [_mm_setzero_ps(); C];
    for i in 0..y[0].len() {
        // Loops, not `array::from_fn`: closures do not inherit the target
        // features, so the intrinsics inside them would not inline.
        // SAFETY: all-zero bytes are a valid `Packed`.
        let mut pw: [Packed; 4] = std::mem::zeroed();
        for r in 0..4 {
            // A super-block of either type spans three cache lines.
            prefetch_ahead::<3>(x[r].as_ptr().wrapping_add(i).cast());
            pw[r] = x[r][i].pack();
        }
        // `[d0, d1, dmin0, dmin1]` and `[d2, d3, dmin2, dmin3]`.
        let (lo, hi) = (
            _mm_unpacklo_ps(pw[0].dd, pw[1].dd),
            _mm_unpacklo_ps(pw[2].dd, pw[3].dd),
        );
        let (d, dmin) = (_mm_movelh_ps(lo, hi), _mm_movehl_ps(hi, lo));
        for c in 0..C {
            let yb = &y[c][i];
            let dy = _mm_set1_ps(yb.d);
            let mut s = [_mm256_setzero_si256(); 4];
            for r in 0..4 {
                s[r] = lane_sums(&pw[r], yb);
            }
            if Q6 {
                // SAFETY: `bsums` is 32 readable bytes.
                let bsums = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
                for r in 0..4 {
                    let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, pw[r].corr));
                    s[r] = _mm256_sub_epi32(s[r], offset);
                }
            } else {
                // SAFETY: `b32` is 16 readable bytes.
                let b32 = _mm_loadu_si128(yb.b32.as_ptr().cast());
                let mut m = [_mm_setzero_si128(); 4];
                for r in 0..4 {
                    m[r] = _mm_madd_epi16(_mm256_castsi256_si128(pw[r].corr), b32);
                }
                let m = _mm_hadd_epi32(_mm_hadd_epi32(m[0], m[1]), _mm_hadd_epi32(m[2], m[3]));
                acc_m[c] = _mm_fmadd_ps(_mm_mul_ps(dmin, dy), _mm_cvtepi32_ps(m), acc_m[c]);
            }
            acc[c] = _mm_fmadd_ps(_mm_mul_ps(d, dy), _mm_cvtepi32_ps(sums4(s)), acc[c]);
        }
    }
    let mut out = [[0f32; 4]; C];
    for c in 0..C {
        let v = if Q6 {
            acc[c]
        } else {
            _mm_sub_ps(acc[c], acc_m[c])
        };
        _mm_storeu_ps(out[c].as_mut_ptr(), v);
    }
    out
}

/// Weight rows of a group, one lane each.
const GR: usize = 16;

/// One super-block of a group of 16 weight rows, interleaved so that lane
/// `l` of every vector belongs to row `l`: one `vpdpbusd` against four
/// broadcast activation bytes then advances 16 pairs at once, and a
/// super-block's float steps are one conversion and one multiply-add for
/// all of them.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Group {
    /// Vector `g`: the unsigned quants of elements `4g..4g + 4` of each row.
    q: [__m512i; QK_K / 4],
    /// Vector `j`: each row's scale of sub-block `j` (q4_K: 8 of 32
    /// elements; q6_K: 16 of 16).
    sc: [__m512i; 16],
    /// Vector `k`: each row's `i16` pair (min or scale `2k`, `2k + 1`)
    /// for the correction term (q4_K: mins, 4 used; q6_K: scales, 8).
    corr: [__m512i; 8],
    d: __m512,
    dmin: __m512,
}

const Q4K_QS: i32 = std::mem::offset_of!(BlockQ4K, qs) as i32;
const Q6K_QH: i32 = std::mem::offset_of!(BlockQ6K, qh) as i32;

/// Gathers the 4 bytes at `off` of `rows` rows `stride` bytes apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn gather(base: *const u8, starts: __m512i, mask: __mmask16, off: i32) -> __m512i {
    // SAFETY (caller): for each lane in `mask`, `base + starts[l] + off` has
    // 4 readable bytes; other lanes read nothing.
    let idx = _mm512_add_epi32(starts, _mm512_set1_epi32(off));
    _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, idx, base.cast())
}

/// A K-quant format the group kernel interleaves.
trait KGroup: KBlock {
    /// Super-block `i` of `rows` (<= 16) rows of `nb` blocks starting at
    /// `x`, into `g`; lanes past `rows` are zero.
    unsafe fn pack_group(x: &[Self], nb: usize, i: usize, rows: usize, g: &mut Group)
    where
        Self: Sized;
}

fn lane_mask(rows: usize) -> __mmask16 {
    ((1u32 << rows.min(GR)) - 1) as __mmask16
}

/// `[0, stride, 2 * stride, ...]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn row_starts(stride: usize) -> __m512i {
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride as i32))
}

/// A group's per-row numbers, gathered row by row (`x[v][l]` for row `l`),
/// into its vectors: scales `sc`, correction pairs `corr`, `d` and `dmin`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn set_lanes(
    g: &mut Group,
    sc: &[[i32; GR]],
    corr: &[[i32; GR]],
    d: &[f32; GR],
    dmin: &[f32; GR],
) {
    for (v, s) in g.sc.iter_mut().zip(sc) {
        // SAFETY: each source holds GR = 16 lanes, one 512-bit vector.
        *v = _mm512_loadu_si512(s.as_ptr().cast());
    }
    for (v, c) in g.corr.iter_mut().zip(corr) {
        // SAFETY: as above.
        *v = _mm512_loadu_si512(c.as_ptr().cast());
    }
    g.d = _mm512_loadu_ps(d.as_ptr());
    g.dmin = _mm512_loadu_ps(dmin.as_ptr());
}

impl KGroup for BlockQ4K {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn pack_group(x: &[Self], nb: usize, i: usize, rows: usize, g: &mut Group) {
        let mask = lane_mask(rows);
        let starts = row_starts(nb * size_of::<BlockQ4K>());
        let base: *const u8 = (&raw const x[i]).cast();
        let m4 = _mm512_set1_epi8(0x0f);
        for j2 in 0..4 {
            for k in (0..32).step_by(4) {
                // Byte `32 * j2 + k` of `qs`: low nibbles are elements
                // `64 * j2 + k..`, high ones `64 * j2 + 32 + k..`.
                // SAFETY: lanes in `mask` are rows `< rows` of `x`.
                let v = gather(base, starts, mask, Q4K_QS + 32 * j2 + k);
                g.q[(64 * j2 + k) as usize / 4] = _mm512_and_si512(v, m4);
                g.q[(64 * j2 + 32 + k) as usize / 4] =
                    _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4);
            }
        }
        let mut sc = [[0i32; GR]; 8];
        let mut corr = [[0i32; GR]; 4];
        let mut d = [0f32; GR];
        let mut dmin = [0f32; GR];
        for l in 0..rows.min(GR) {
            let b = &x[l * nb + i];
            let mut sm = [0i16; 16];
            _mm256_storeu_si256(sm.as_mut_ptr().cast(), k4_scales_mins(&b.scales));
            for j in 0..8 {
                sc[j][l] = sm[j] as i32;
            }
            for k in 0..4 {
                corr[k][l] = (sm[8 + 2 * k] as u16 as i32) | (sm[9 + 2 * k] as i32) << 16;
            }
            d[l] = b.d.to_f32();
            dmin[l] = b.dmin.to_f32();
        }
        set_lanes(g, &sc, &corr, &d, &dmin);
    }
}

impl KGroup for BlockQ6K {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn pack_group(x: &[Self], nb: usize, i: usize, rows: usize, g: &mut Group) {
        let mask = lane_mask(rows);
        let starts = row_starts(nb * size_of::<BlockQ6K>());
        let base: *const u8 = (&raw const x[i]).cast();
        let m15 = _mm512_set1_epi8(15);
        let bits = |m: u8| _mm512_set1_epi8(m as i8);
        for h in 0..2 {
            for k in (0..32).step_by(4) {
                // SAFETY: lanes in `mask` are rows `< rows` of `x`.
                let l0 = gather(base, starts, mask, 64 * h + k);
                let l1 = gather(base, starts, mask, 64 * h + 32 + k);
                let hb = gather(base, starts, mask, Q6K_QH + 32 * h + k);
                let e = (128 * h + k) as usize / 4;
                g.q[e] = _mm512_or_si512(
                    _mm512_and_si512(l0, m15),
                    _mm512_slli_epi32::<4>(_mm512_and_si512(hb, bits(0x03))),
                );
                g.q[e + 8] = _mm512_or_si512(
                    _mm512_and_si512(l1, m15),
                    _mm512_slli_epi32::<2>(_mm512_and_si512(hb, bits(0x0c))),
                );
                g.q[e + 16] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi32::<4>(l0), m15),
                    _mm512_and_si512(hb, bits(0x30)),
                );
                g.q[e + 24] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi32::<4>(l1), m15),
                    _mm512_srli_epi32::<2>(_mm512_and_si512(hb, bits(0xc0))),
                );
            }
        }
        let mut sc = [[0i32; GR]; 16];
        let mut corr = [[0i32; GR]; 8];
        let mut d = [0f32; GR];
        for l in 0..rows.min(GR) {
            let b = &x[l * nb + i];
            for j in 0..16 {
                sc[j][l] = b.scales[j] as i32;
            }
            for k in 0..8 {
                corr[k][l] =
                    (b.scales[2 * k] as i16 as u16 as i32) | (b.scales[2 * k + 1] as i32) << 16;
            }
            d[l] = b.d.to_f32();
        }
        set_lanes(g, &sc, &corr, &d, &[0.0; GR]);
    }
}

/// The 4 bytes at byte `off` of `p`, broadcast to every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn bcast<T>(p: *const T, off: usize) -> __m512i {
    // SAFETY (caller): `p + off` has 4 readable bytes.
    _mm512_set1_epi32(std::ptr::read_unaligned(
        p.cast::<u8>().add(off).cast::<i32>(),
    ))
}

/// A group's 16 rows against the first `C` activation rows of `y` over `nb` super-blocks
/// (`g[i]` is super-block `i`); writes `out[l * stride + c]` for the
/// group's first `rows` rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn micro<const Q6: bool, const C: usize>(
    g: &[Group],
    y: &[&[ActK]; TC],
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    let (subs, per_sub) = if Q6 { (16, 4) } else { (8, 8) };
    let mut acc = [_mm512_setzero_ps(); C];
    let mut acc_m = [_mm512_setzero_ps(); C];
    for (i, gb) in g.iter().enumerate() {
        let mut s = [_mm512_setzero_si512(); C];
        for j in 0..subs {
            let mut sub = [_mm512_setzero_si512(); C];
            for k in 0..per_sub {
                let e = j * per_sub + k;
                let w = gb.q[e];
                for c in 0..C {
                    // SAFETY: bytes 4e..4e + 4 of the 256 `qs`.
                    sub[c] = _mm512_dpbusd_epi32(sub[c], w, bcast(y[c][i].qs.as_ptr(), 4 * e));
                }
            }
            for c in 0..C {
                s[c] = _mm512_add_epi32(s[c], _mm512_mullo_epi32(sub[c], gb.sc[j]));
            }
        }
        for c in 0..C {
            let yb = &y[c][i];
            let dy = _mm512_set1_ps(yb.d);
            if Q6 {
                let mut off = _mm512_setzero_si512();
                for k in 0..8 {
                    // SAFETY: bytes 4k..4k + 4 of the 32 of `bsums`.
                    off = _mm512_dpwssd_epi32(off, gb.corr[k], bcast(yb.bsums.as_ptr(), 4 * k));
                }
                s[c] = _mm512_sub_epi32(s[c], _mm512_slli_epi32::<5>(off));
            } else {
                let mut m = _mm512_setzero_si512();
                for k in 0..4 {
                    // SAFETY: bytes 4k..4k + 4 of the 16 of `b32`.
                    m = _mm512_dpwssd_epi32(m, gb.corr[k], bcast(yb.b32.as_ptr(), 4 * k));
                }
                acc_m[c] =
                    _mm512_fmadd_ps(_mm512_mul_ps(gb.dmin, dy), _mm512_cvtepi32_ps(m), acc_m[c]);
            }
            acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(gb.d, dy), _mm512_cvtepi32_ps(s[c]), acc[c]);
        }
    }
    for c in 0..C {
        let v = if Q6 {
            acc[c]
        } else {
            _mm512_sub_ps(acc[c], acc_m[c])
        };
        let mut lanes = [0f32; GR];
        _mm512_storeu_ps(lanes.as_mut_ptr(), v);
        for (l, &x) in lanes.iter().enumerate().take(rows) {
            out[l * stride + c] = x;
        }
    }
}

/// Activation rows per group tile.
const TC: usize = 8;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn micro_any<const Q6: bool>(
    g: &[Group],
    y: &[&[ActK]; TC],
    cols: usize,
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    // The array is passed whole: `array::from_fn` closures building a
    // smaller one are not inlined.
    macro_rules! arms {
        ($($c:literal)*) => {
            match cols {
                $($c => micro::<Q6, $c>(g, y, rows, out, stride),)*
                _ => {}
            }
        };
    }
    arms!(1 2 3 4 5 6 7 8);
}

/// Bytes of interleaved weight groups worked through together (they stay
/// in L2 while every activation row passes).
const ROW_CHUNK_BYTES: usize = 256 * 1024;
/// Below this many activation rows, weights are unpacked in registers four
/// rows at a time instead of interleaved into groups: interleaving costs
/// about as much as 8 (q4_K) or 12 (q6_K, more bytes to gather) activation
/// rows' worth of products (measured with the `tile_throughput` example).
const fn few_cols(q6: bool) -> usize {
    if q6 {
        12
    } else {
        8
    }
}
/// Below this many weight rows, the same (most of a group's lanes would be
/// empty).
const FEW_ROWS: usize = 4;

thread_local! {
    static SCRATCH: RefCell<(Vec<Group>, Vec<ActK>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The `vec_dot_tile` contract for weights `X` (`Q6`: q6_K).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn tile<X, const Q6: bool>(n: usize, w: &[u8], a: &[u8], out: &mut [f32])
where
    X: KGroup,
{
    let nb = n / QK_K;
    if nb == 0 {
        out.fill(0.0);
        return;
    }
    let x: &[X] = as_blocks(w);
    let y: &[BlockQ8K] = as_blocks(a);
    let cols = y.len() / nb;
    if cols == 0 {
        return;
    }
    let rows = (x.len() / nb).min(out.len() / cols);
    SCRATCH.with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            return;
        };
        let (gs, ya) = &mut *guard;
        ya.clear();
        ya.extend(y[..cols * nb].iter().map(ActK::new));
        let ya = &ya[..];
        if cols < few_cols(Q6) || rows < FEW_ROWS {
            // Few products per weight row (decoding) or few rows: unpack
            // each super-block in registers on the way, for up to three
            // activation rows at a time.
            let quads = RowQuads::new(rows);
            for k in 0..quads.count() {
                let [a, b, c, d] = quads.rows(k);
                let row = |r: usize| &x[r * nb..][..nb];
                let xr: [&[X]; 4] = [row(a), row(b), row(c), row(d)];
                let mut c = 0;
                while c < cols {
                    let cc = (cols - c).min(3);
                    let yrow = |j: usize| &ya[(c + j.min(cc - 1)) * nb..][..nb];
                    let yc: [&[ActK]; 3] = [yrow(0), yrow(1), yrow(2)];
                    let mut put = |v: &[[f32; 4]]| {
                        for (j, col) in v.iter().enumerate() {
                            for (l, &o) in col.iter().enumerate() {
                                if let Some(r) = quads.lane(k, l) {
                                    out[r * cols + c + j] = o;
                                }
                            }
                        }
                    };
                    match cc {
                        1 => put(&rows_pairs::<X, Q6, 1>(xr, [yc[0]])),
                        2 => put(&rows_pairs::<X, Q6, 2>(xr, [yc[0], yc[1]])),
                        _ => put(&rows_pairs::<X, Q6, 3>(xr, yc)),
                    }
                    c += cc;
                }
            }
            return;
        }
        // Groups of 16 rows are interleaved a chunk at a time (kept in L2)
        // and every activation row passes them.
        let groups_per_chunk = (ROW_CHUNK_BYTES / (nb * size_of::<Group>())).max(1);
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + groups_per_chunk * GR).min(rows);
            gs.clear();
            // SAFETY: all-zero bytes are a valid `Group` (integers and floats).
            gs.resize((r1 - r0).div_ceil(GR) * nb, std::mem::zeroed());
            for (gi, r) in (r0..r1).step_by(GR).enumerate() {
                for i in 0..nb {
                    X::pack_group(&x[r * nb..], nb, i, (r1 - r).min(GR), &mut gs[gi * nb + i]);
                }
            }
            let mut c = 0;
            while c < cols {
                let cc = (cols - c).min(TC);
                let yrow = |j: usize| &ya[(c + j.min(cc - 1)) * nb..][..nb];
                let yc: [&[ActK]; TC] = [
                    yrow(0),
                    yrow(1),
                    yrow(2),
                    yrow(3),
                    yrow(4),
                    yrow(5),
                    yrow(6),
                    yrow(7),
                ];
                let mut r = r0;
                let mut gi = 0;
                while r < r1 {
                    let rr = (r1 - r).min(GR);
                    micro_any::<Q6>(
                        &gs[gi * nb..(gi + 1) * nb],
                        &yc,
                        cc,
                        rr,
                        &mut out[r * cols + c..],
                        cols,
                    );
                    gi += 1;
                    r += GR;
                }
                c += cc;
            }
            r0 = r1;
        }
    });
}

/// One pair, in the tile's arithmetic: the table's `vec_dot`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn one<X: KGroup, const Q6: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut out = [0f32];
    tile::<X, Q6>(n, w, a, &mut out);
    out[0]
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub unsafe fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    one::<BlockQ4K, false>(n, w, a)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub unsafe fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    one::<BlockQ6K, true>(n, w, a)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub unsafe fn vec_dot_tile_q4_k_q8_k(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    tile::<BlockQ4K, false>(n, w, a, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub unsafe fn vec_dot_tile_q6_k_q8_k(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    tile::<BlockQ6K, true>(n, w, a, out)
}
