//! AVX-512 VNNI tiled products of q4_K and q6_K weights with q8_K
//! activations.
//!
//! They give the bits of the AVX2 `vec_dot` of the same type
//! (`kquants.rs`) pair by pair: per super-block that kernel folds eight
//! exact `i32` lane sums (lane `i` gathers, over the super-block's
//! sub-blocks, `scale * (4 products at bytes 4i..4i + 4 of each 32)`) into
//! its accumulator with one fused multiply-add, plus the min or offset
//! correction. Here the same integer lanes come from 512-bit operations
//! (two 32-element vectors at a time, their halves added at the end, which
//! is exact) with `vpdpwssd` fusing the scale multiply and the add, and the
//! float steps are the AVX2 kernel's, in its order.
//!
//! Weight rows are unpacked once per call into a scratch layout (quants as
//! 64-byte vectors in activation order, scales widened to one `i16` per
//! lane pair), a few rows at a time so they stay in L1 while every
//! activation row passes.

use std::arch::x86_64::*;
use std::cell::RefCell;

use edgellama_gguf::QK_K;

use super::kquants::{hsum_ps128, k4_scales_mins};
use super::simd::hsum_ps;
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
        sc: std::array::from_fn(|v| spread16(sm, &IDX_Q4K[v])),
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
    let q = std::array::from_fn(|v| join(v32[2 * v], v32[2 * v + 1]));
    // SAFETY: `scales` is 16 readable bytes.
    let all = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr().cast()));
    Packed {
        q,
        // One scale per 16 elements: vector `v` holds scales 4v..4v + 4.
        sc: std::array::from_fn(|v| spread16(all, &IDX_Q6K[v])),
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

/// One super-block pair folded into its accumulators, in the AVX2
/// kernel's steps.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn pair<const Q6: bool>(pw: &Packed, yb: &ActK, acc: &mut __m256, acc_m: &mut __m128) {
    accumulate::<Q6>(pw, yb, lane_sums(pw, yb), acc, acc_m);
}

/// The float steps of one super-block pair whose lane sums are `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn accumulate<const Q6: bool>(
    pw: &Packed,
    yb: &ActK,
    s: __m256i,
    acc: &mut __m256,
    acc_m: &mut __m128,
) {
    let dd = _mm_mul_ps(pw.dd, _mm_set1_ps(yb.d));
    if Q6 {
        // SAFETY: `bsums` is 32 readable bytes.
        let bsums = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, pw.corr));
        let s = _mm256_sub_epi32(s, offset);
        *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(s), *acc);
    } else {
        // SAFETY: `b32` is 16 readable bytes.
        let b32 = _mm_loadu_si128(yb.b32.as_ptr().cast());
        let mins = _mm_madd_epi16(_mm256_castsi256_si128(pw.corr), b32);
        let dmin = _mm_permute_ps::<0b0101_0101>(dd);
        *acc_m = _mm_fnmadd_ps(dmin, _mm_cvtepi32_ps(mins), *acc_m);
        *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(s), *acc);
    }
}

/// The final sum of a pair's accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn finish<const Q6: bool>(acc: __m256, acc_m: __m128) -> f32 {
    if Q6 {
        hsum_ps(acc)
    } else {
        hsum_ps(acc) + hsum_ps128(acc_m)
    }
}

/// One weight row against `C` activation rows, each super-block unpacked
/// in registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn row_tile<X: KBlock, const Q6: bool, const C: usize>(
    x: &[X],
    y: [&[ActK]; C],
) -> [f32; C] {
    let mut acc = [_mm256_setzero_ps(); C];
    let mut acc_m = [_mm_setzero_ps(); C];
    for (i, xb) in x.iter().enumerate() {
        let pw = xb.pack();
        for c in 0..C {
            pair::<Q6>(&pw, &y[c][i], &mut acc[c], &mut acc_m[c]);
        }
    }
    std::array::from_fn(|c| finish::<Q6>(acc[c], acc_m[c]))
}

/// `R x C` pairs over `nb` super-blocks: packed weight rows at
/// `w[r * nb..]`, activation rows `y[c]`; writes `out[r * stride + c]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn micro<const Q6: bool, const R: usize, const C: usize>(
    w: &[Packed],
    y: [&[ActK]; C],
    nb: usize,
    out: &mut [f32],
    stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut acc_m = [[_mm_setzero_ps(); C]; R];
    for i in 0..nb {
        // Integer part: each weight vector and activation vector loaded
        // once per step for all R x C pairs.
        let mut sums = [[_mm512_setzero_si512(); C]; R];
        for v in 0..4 {
            let wq: [__m512i; R] = std::array::from_fn(|r| w[r * nb + i].q[v]);
            let ws: [__m512i; R] = std::array::from_fn(|r| w[r * nb + i].sc[v]);
            // SAFETY: bytes 64v..64v + 64 of the 256 `qs`.
            let yv: [__m512i; C] =
                std::array::from_fn(|c| _mm512_loadu_si512(y[c][i].qs.as_ptr().add(64 * v).cast()));
            for r in 0..R {
                for c in 0..C {
                    sums[r][c] =
                        _mm512_dpwssd_epi32(sums[r][c], ws[r], _mm512_maddubs_epi16(wq[r], yv[c]));
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                let s = fold(sums[r][c]);
                accumulate::<Q6>(
                    &w[r * nb + i],
                    &y[c][i],
                    s,
                    &mut acc[r][c],
                    &mut acc_m[r][c],
                );
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * stride + c] = finish::<Q6>(acc[r][c], acc_m[r][c]);
        }
    }
}

const TR: usize = 2;
const TC: usize = 4;
/// Bytes of unpacked weight rows worked through together (they stay in L2
/// while a chunk of activation rows passes).
const ROW_CHUNK_BYTES: usize = 192 * 1024;
/// Bytes of activation rows worked through together (they stay in L1 while
/// every weight row of the chunk passes).
const COL_CHUNK_BYTES: usize = 32 * 1024;
/// Below this many activation rows, weights are unpacked in registers.
const FEW_COLS: usize = 4;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn micro_any<const Q6: bool>(
    rr: usize,
    y: &[&[ActK]],
    w: &[Packed],
    nb: usize,
    out: &mut [f32],
    stride: usize,
) {
    macro_rules! arms {
        ($($r:literal, $c:literal);*) => {
            match (rr, y.len()) {
                $(($r, $c) => micro::<Q6, $r, $c>(w, std::array::from_fn(|j| y[j]), nb, out, stride),)*
                _ => {}
            }
        };
    }
    arms!(2, 4; 2, 3; 2, 2; 2, 1; 1, 4; 1, 3; 1, 2; 1, 1);
}

thread_local! {
    static SCRATCH: RefCell<(Vec<Packed>, Vec<ActK>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The `vec_dot_tile` contract for weights `X` (`Q6`: q6_K).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn tile<X, const Q6: bool>(n: usize, w: &[u8], a: &[u8], out: &mut [f32])
where
    X: KBlock,
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
        let (pw, ya) = &mut *guard;
        ya.clear();
        ya.extend(y[..cols * nb].iter().map(ActK::new));
        let ya = &ya[..];
        if cols < FEW_COLS {
            // Few products per weight row (decoding): unpack each
            // super-block in registers on the way instead of into scratch.
            let yc: [&[ActK]; FEW_COLS] =
                std::array::from_fn(|c| &ya[c.min(cols - 1) * nb..][..nb]);
            for r in 0..rows {
                let xr = &x[r * nb..(r + 1) * nb];
                let o = &mut out[r * cols..(r + 1) * cols];
                match cols {
                    1 => o.copy_from_slice(&row_tile::<X, Q6, 1>(xr, [yc[0]])),
                    2 => o.copy_from_slice(&row_tile::<X, Q6, 2>(xr, [yc[0], yc[1]])),
                    _ => o.copy_from_slice(&row_tile::<X, Q6, 3>(xr, [yc[0], yc[1], yc[2]])),
                }
            }
            return;
        }
        // Blocking: unpacked weight rows a chunk at a time (kept in L2), and
        // against them activation rows a chunk at a time (kept in L1).
        let row_chunk = (ROW_CHUNK_BYTES / (nb * size_of::<Packed>())).max(TR) / TR * TR;
        let col_chunk = (COL_CHUNK_BYTES / (nb * size_of::<ActK>())).max(TC) / TC * TC;
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + row_chunk).min(rows);
            pw.clear();
            for xb in &x[r0 * nb..r1 * nb] {
                pw.push(xb.pack());
            }
            let mut c0 = 0;
            while c0 < cols {
                let c1 = (c0 + col_chunk).min(cols);
                let mut r = r0;
                while r < r1 {
                    let rr = (r1 - r).min(TR);
                    let mut c = c0;
                    while c < c1 {
                        let cc = (c1 - c).min(TC);
                        let yc: [&[ActK]; TC] =
                            std::array::from_fn(|j| &ya[(c + j.min(cc - 1)) * nb..][..nb]);
                        micro_any::<Q6>(
                            rr,
                            &yc[..cc],
                            &pw[(r - r0) * nb..],
                            nb,
                            &mut out[r * cols + c..],
                            cols,
                        );
                        c += cc;
                    }
                    r += rr;
                }
                c0 = c1;
            }
            r0 = r1;
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub unsafe fn vec_dot_tile_q4_k_q8_k(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    tile::<BlockQ4K, false>(n, w, a, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub unsafe fn vec_dot_tile_q6_k_q8_k(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    tile::<BlockQ6K, true>(n, w, a, out)
}
