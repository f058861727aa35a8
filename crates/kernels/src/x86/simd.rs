//! Building blocks shared by the AVX2 kernels. Every function here needs
//! AVX2, FMA and F16C (see the safety argument in the module above) and is
//! meant to be inlined into kernels compiled for the same features.

use std::arch::x86_64::*;

/// Horizontal sum of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of 8 `i32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s)
}

/// Four vectors of 8 `i32` partial sums reduced to `[a, b, c, d | a', b',
/// c', d']`, where `a + a'` is the sum of `a`'s lanes: one conversion and
/// one multiply-add then serve four blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum4_epi32(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d))
}

/// Eight f16 values, packed four to a `u64` (lowest first), as `f32`
/// `[lo0..lo3 | hi0..hi3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16x8(lo: u64, hi: u64) -> __m256 {
    _mm256_cvtph_ps(_mm_set_epi64x(hi as i64, lo as i64))
}

/// Four f16 bit patterns packed into a `u64`, first in the low bits.
#[inline]
pub fn pack4(h: [u16; 4]) -> u64 {
    h[0] as u64 | (h[1] as u64) << 16 | (h[2] as u64) << 32 | (h[3] as u64) << 48
}

/// 32 four-bit values from 16 bytes: the low nibbles (elements 0..16) then
/// the high nibbles (16..32), one per byte, as ggml packs `q4_0`/`q4_1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes.
    let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr().cast()));
    // The high lane's copy shifted down a nibble: one variable shift instead
    // of a shift and a lane insert.
    let both = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Bit `j` of the little-endian `bits` as byte `j`: `0x10` where set, else 0
/// (the fifth bit of the `q5_0`/`q5_1` quants).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn fifth_bits(bits: [u8; 4]) -> __m256i {
    // Byte j of the result starts as byte j / 8 of `bits`; the mask then
    // keeps bit j % 8 of it.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(i32::from_le_bytes(bits)),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// 32 bytes from a 32-byte array.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn load_u8x32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes.
    _mm256_loadu_si256(b.as_ptr().cast())
}

/// 32 bytes from a 32-element `i8` array.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn load_i8x32(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes.
    _mm256_loadu_si256(b.as_ptr().cast())
}

/// Products of unsigned `u` (below 64) and signed `y`, summed in fours to
/// `i32` (exact: a pair's sum stays below `2 * 63 * 128`, inside `i16`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_u8x32(u: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1))
}

/// `sum((u - OFF) * y)` in pairs to `i16` for unsigned `u` below 32 (each
/// pair at most `2 * 32 * 128` in magnitude): the offset comes off as
/// `OFF * y`, computed the same way, so no byte has to hold a negative quant.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_u8x32_offset_i16<const OFF: i8>(u: __m256i, y: __m256i) -> __m256i {
    _mm256_sub_epi16(
        _mm256_maddubs_epi16(u, y),
        _mm256_maddubs_epi16(_mm256_set1_epi8(OFF), y),
    )
}

/// Bytes ahead of the current weights at which decoding prefetches each
/// stream of weight rows (2 KiB measured best of 512 to 8192 bytes, and T0
/// better than T1, on this crate's decoding kernels).
pub const PREFETCH_AHEAD: usize = 2048;

/// Prefetches `LINES` cache lines from [`PREFETCH_AHEAD`] bytes past `p`
/// into L1. A prefetch never faults, so `p` may run past its allocation.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn prefetch_ahead<const LINES: usize>(p: *const u8) {
    let ahead = p.wrapping_add(PREFETCH_AHEAD);
    for l in 0..LINES {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l).cast());
    }
}

/// Decoding's quads of weight rows: quad `k` of [`RowQuads::count`] is rows
/// `k, k + q, k + 2q, k + 3q` with `q = rows.div_ceil(4)`, four long
/// sequential streams of weights, which the prefetchers follow (four
/// neighbouring short rows at once they do not).
pub struct RowQuads {
    q: usize,
    rows: usize,
}

impl RowQuads {
    pub fn new(rows: usize) -> RowQuads {
        RowQuads {
            q: rows.div_ceil(4),
            rows,
        }
    }

    pub fn count(&self) -> usize {
        self.q
    }

    /// The rows of quad `k`; a lane past the last row repeats it.
    pub fn rows(&self, k: usize) -> [usize; 4] {
        let last = self.rows.saturating_sub(1);
        let q = self.q;
        [
            k.min(last),
            (k + q).min(last),
            (k + 2 * q).min(last),
            (k + 3 * q).min(last),
        ]
    }

    /// The row lane `l` of quad `k` stands for, if it is one of its own.
    pub fn lane(&self, k: usize, l: usize) -> Option<usize> {
        let r = k + l * self.q;
        (r < self.rows).then_some(r)
    }
}
