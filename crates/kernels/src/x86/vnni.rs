//! AVX-512 VNNI tiled products of the 32-element formats (q4_0, q4_1, q5_0,
//! q5_1, q8_0 weights with q8_0/q8_1 activations), for prompt processing
//! and batched decoding.
//!
//! They give the bits of the AVX2 `vec_dot` of the same type pair by pair
//! (`legacy.rs`): that kernel's float work is, per group of four blocks, one
//! fused multiply-add of eight exact `i32` partial sums (block `b`'s first
//! and second halves in lanes `b` and `4 + b`) by the products of the
//! scales. Only the way those integer sums are found differs here, and
//! integer sums are exact whichever way they are found.
//!
//! The integer work is where the time goes, so both operands are first
//! repacked per group of four blocks so that one `vpdpbusd` chain leaves the
//! eight partial sums in the right lanes with no horizontal adds: vector
//! `k` of a packed group holds, in lane `i`, bytes `4k..4k + 4` of half
//! `i / 4` of block `i % 4` (a 4x4 transpose of 32-bit words inside each
//! 128-bit lane). `vpdpbusd` multiplies unsigned by signed bytes:
//! weights as unsigned bytes, activations signed as they are.
//! - `x = d * q` formats (`sym`): the weights' stored bytes read unsigned
//!   are `q + o` (`o` = 8 for q4_0, 16 for q5_0, 128 for q8_0 with its top
//!   bit flipped), so the chain starts from `-o * sum(y)` per lane,
//!   computed once per activation group rather than per weight group.
//! - `x = d * q + m` formats (`offset`): weights unsigned `q`.
//!
//! Each call packs its activation rows once and its weight rows once, then
//! works through tiles of up to 4 x 4 (row, column) pairs whose
//! accumulators stay in registers (AVX-512VL gives 32 of them). With a
//! single activation row (decoding) the weights are packed in registers
//! as they stream instead.

use std::arch::x86_64::*;
use std::cell::RefCell;

use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use super::legacy::{
    even_lanes, f16x4_twice, hsum_odd_ps, pair2, unpack_q4, unpack_q4_1, unpack_q5_0, unpack_q5_1,
};
use super::simd::{f16x8, hsum_ps, load_i8x32, pack4, prefetch_ahead, RowQuads};
use crate::blocks::{
    as_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, Half, QK,
};

/// Four blocks, transposed as the module note says, and their scales as
/// the AVX2 kernel lays them out.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Packed {
    q: [__m256i; 4],
    /// Activations of `sym` products: `-o * sum(y)` per lane (see the
    /// module note); otherwise zero.
    neg: __m256i,
    s: __m256,
}

/// The 4x4 transpose of 32-bit words inside each 128-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose(b: [__m256i; 4]) -> [__m256i; 4] {
    let t0 = _mm256_unpacklo_epi32(b[0], b[1]);
    let t1 = _mm256_unpackhi_epi32(b[0], b[1]);
    let t2 = _mm256_unpacklo_epi32(b[2], b[3]);
    let t3 = _mm256_unpackhi_epi32(b[2], b[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// A weight format: its bytes as the signed or unsigned `vpdpbusd` operand,
/// and its scales.
trait WeightBlock: Sized + FromBytes + KnownLayout + Immutable + Unaligned {
    /// `sym` formats (`x = d * q`, activations q8_0).
    const SYM: bool;
    /// What [`WeightBlock::quants`] adds to a `sym` format's `q`.
    const OFFSET: i32 = 0;
    /// The 32 quants in element order as unsigned bytes: `q + OFFSET` for
    /// `sym` formats, `q` otherwise.
    unsafe fn quants(&self) -> __m256i;
    fn d(&self) -> Half;
    /// The offset format's `m`.
    fn m(&self) -> Half {
        Half::ZERO
    }
}

impl WeightBlock for BlockQ8_0 {
    const SYM: bool = true;
    const OFFSET: i32 = 128;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(&self) -> __m256i {
        _mm256_xor_si256(load_i8x32(&self.qs), _mm256_set1_epi8(-128))
    }
    fn d(&self) -> Half {
        self.d
    }
}

impl WeightBlock for BlockQ4_0 {
    const SYM: bool = true;
    const OFFSET: i32 = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(&self) -> __m256i {
        unpack_q4(self)[0]
    }
    fn d(&self) -> Half {
        self.d
    }
}

impl WeightBlock for BlockQ5_0 {
    const SYM: bool = true;
    const OFFSET: i32 = 16;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(&self) -> __m256i {
        unpack_q5_0(self)[0]
    }
    fn d(&self) -> Half {
        self.d
    }
}

impl WeightBlock for BlockQ4_1 {
    const SYM: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(&self) -> __m256i {
        unpack_q4_1(self)[0]
    }
    fn d(&self) -> Half {
        self.d
    }
    fn m(&self) -> Half {
        self.m
    }
}

impl WeightBlock for BlockQ5_1 {
    const SYM: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(&self) -> __m256i {
        unpack_q5_1(self)[0]
    }
    fn d(&self) -> Half {
        self.d
    }
    fn m(&self) -> Half {
        self.m
    }
}

/// An activation format: q8_0 (with `sym` weights) or q8_1.
trait ActBlock: Sized + FromBytes + KnownLayout + Immutable + Unaligned {
    fn qs(&self) -> &[i8; QK];
    /// Scales of up to four blocks in the AVX2 kernel's layout.
    unsafe fn scales(blocks: &[Self]) -> __m256;
}

impl ActBlock for BlockQ8_0 {
    fn qs(&self) -> &[i8; QK] {
        &self.qs
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(blocks: &[Self]) -> __m256 {
        let mut h = [0u16; 4];
        for (hb, b) in h.iter_mut().zip(blocks) {
            *hb = b.d.to_bits();
        }
        f16x4_twice(pack4(h))
    }
}

impl ActBlock for BlockQ8_1 {
    fn qs(&self) -> &[i8; QK] {
        &self.qs
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(blocks: &[Self]) -> __m256 {
        let mut h = [Half::ZERO; 8];
        for (i, b) in blocks.iter().take(4).enumerate() {
            h[2 * i] = b.d;
            h[2 * i + 1] = b.s;
        }
        f16x8(pair2(h[0], h[1], h[2], h[3]), pair2(h[4], h[5], h[6], h[7]))
    }
}

/// Packs up to four activation blocks (missing ones count as zeros) for
/// weights whose unsigned bytes carry `offset` (see [`WeightBlock::OFFSET`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn pack_act<A: ActBlock>(blocks: &[A], offset: i32) -> Packed {
    let mut b = [_mm256_setzero_si256(); 4];
    for (v, x) in b.iter_mut().zip(blocks) {
        *v = load_i8x32(x.qs());
    }
    let q = transpose(b);
    let mut neg = _mm256_setzero_si256();
    if offset != 0 {
        let ones = _mm256_set1_epi8(1);
        let mut sum = _mm256_setzero_si256();
        for v in q {
            sum = _mm256_dpbusd_epi32(sum, ones, v);
        }
        neg = _mm256_mullo_epi32(sum, _mm256_set1_epi32(-offset));
    }
    Packed {
        q,
        neg,
        s: A::scales(blocks),
    }
}

/// Packs up to four weight blocks (missing ones count as zeros).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn pack_weights<W: WeightBlock>(blocks: &[W]) -> Packed {
    let mut b = [_mm256_setzero_si256(); 4];
    let mut h = [Half::ZERO; 8];
    for (i, (v, x)) in b.iter_mut().zip(blocks).enumerate() {
        *v = x.quants();
        h[2 * i] = x.d();
        h[2 * i + 1] = x.m();
    }
    let q = transpose(b);
    let s = if W::SYM {
        let d = [h[0], h[2], h[4], h[6]].map(|x| x.to_bits());
        f16x4_twice(pack4(d))
    } else {
        f16x8(pair2(h[0], h[1], h[2], h[3]), pair2(h[4], h[5], h[6], h[7]))
    };
    Packed {
        q,
        neg: _mm256_setzero_si256(),
        s,
    }
}

/// `R x C` pairs over `groups` packed groups: weight rows at
/// `w[r * groups..]`, activation rows at `a[c * groups..]`; writes
/// `out[r * stride + c]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn micro<const SYM: bool, const R: usize, const C: usize>(
    w: &[Packed],
    a: &[Packed],
    groups: usize,
    out: &mut [f32],
    stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut acc_m = [[_mm256_setzero_ps(); C]; R];
    for g in 0..groups {
        for r in 0..R {
            let pw = &w[r * groups + g];
            for c in 0..C {
                group_step::<SYM>(pw, &a[c * groups + g], &mut acc[r][c], &mut acc_m[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * stride + c] = finish::<SYM>(acc[r][c], acc_m[r][c]);
        }
    }
}

/// One group of four blocks of a pair folded into its accumulators, in the
/// AVX2 kernel's float steps.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn group_step<const SYM: bool>(
    pw: &Packed,
    pa: &Packed,
    acc: &mut __m256,
    acc_m: &mut __m256,
) {
    if SYM {
        let mut s = pa.neg;
        for k in 0..4 {
            s = _mm256_dpbusd_epi32(s, pw.q[k], pa.q[k]);
        }
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(pw.s, pa.s), *acc);
    } else {
        let mut s = _mm256_setzero_si256();
        for k in 0..4 {
            s = _mm256_dpbusd_epi32(s, pw.q[k], pa.q[k]);
        }
        let ds = _mm256_mul_ps(pw.s, pa.s);
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), even_lanes(ds), *acc);
        *acc_m = _mm256_add_ps(*acc_m, ds);
    }
}

/// The final sum of a pair's accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn finish<const SYM: bool>(acc: __m256, acc_m: __m256) -> f32 {
    if SYM {
        hsum_ps(acc)
    } else {
        hsum_ps(acc) + hsum_odd_ps(acc_m)
    }
}

/// Tile rows and columns.
const TR: usize = 4;
const TC: usize = 4;

/// [`micro`] for `rr <= TR` rows and `cc <= TC` columns.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn micro_any<const SYM: bool>(
    rr: usize,
    cc: usize,
    w: &[Packed],
    a: &[Packed],
    groups: usize,
    out: &mut [f32],
    stride: usize,
) {
    macro_rules! arms {
        ($($r:literal, $c:literal);*) => {
            match (rr, cc) {
                $(($r, $c) => micro::<SYM, $r, $c>(w, a, groups, out, stride),)*
                _ => {}
            }
        };
    }
    arms!(4, 4; 4, 3; 4, 2; 4, 1; 3, 4; 3, 3; 3, 2; 3, 1;
          2, 4; 2, 3; 2, 2; 2, 1; 1, 4; 1, 3; 1, 2; 1, 1);
}

/// One weight row against one packed activation row: [`micro`]'s 1 x 1
/// case with the weight groups packed in registers on the way (decoding
/// multiplies each weight row with a single activation row, so packing
/// rows into scratch would not pay).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn row_dot<W: WeightBlock>(x: &[W], a: &[Packed]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (ch, pa) in x.chunks(4).zip(a) {
        // Measured: SmolLM2 Q4_1 tg128 one thread 196 -> 208 t/s, two
        // threads 253 -> 300.
        prefetch_ahead::<2>(ch.as_ptr().cast());
        let pw = pack_weights(ch);
        if W::SYM {
            group_step::<true>(&pw, pa, &mut acc, &mut acc_m);
        } else {
            group_step::<false>(&pw, pa, &mut acc, &mut acc_m);
        }
    }
    if W::SYM {
        finish::<true>(acc, acc_m)
    } else {
        finish::<false>(acc, acc_m)
    }
}

/// Shortest rows of the 4- and 5-bit formats decoded four at a time
/// (measured on one thread: SmolLM2's 576- and 1536-element rows decode
/// faster one by one, by 5% for its Q5_0 tensors; the 1B shape's 2048 and
/// 8192 faster four by four). Q8_0 rows always go four at a time (SmolLM2
/// Q8_0 tg128 about 159 -> 174 t/s, the 1B shape's 21.5 -> 25.3 t/s).
const QUAD_MIN_N: usize = 2048;

/// [`row_dot`] for four weight rows at once (the same steps for each), so
/// that four streams of weights are read side by side, each prefetched
/// ahead.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn rows_dot4<W: WeightBlock>(x: [&[W]; 4], a: &[Packed]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut acc_m = [_mm256_setzero_ps(); 4];
    for (g, pa) in a.iter().enumerate() {
        for r in 0..4 {
            let ch = &x[r][4 * g..(4 * g + 4).min(x[r].len())];
            prefetch_ahead::<2>(ch.as_ptr().cast());
            let pw = pack_weights(ch);
            if W::SYM {
                group_step::<true>(&pw, pa, &mut acc[r], &mut acc_m[r]);
            } else {
                group_step::<false>(&pw, pa, &mut acc[r], &mut acc_m[r]);
            }
        }
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = if W::SYM {
            finish::<true>(acc[r], acc_m[r])
        } else {
            finish::<false>(acc[r], acc_m[r])
        };
    }
    out
}

/// [`row_dot`] against `C` packed activation rows at once (each `groups`
/// long): every group of weights is packed in registers once for all of
/// them, and each pair takes [`micro`]'s steps.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn row_dot_cols<W: WeightBlock, const C: usize>(x: &[W], a: [&[Packed]; C]) -> [f32; C] {
    let mut acc = [_mm256_setzero_ps(); C];
    let mut acc_m = [_mm256_setzero_ps(); C];
    for (g, ch) in x.chunks(4).enumerate() {
        prefetch_ahead::<2>(ch.as_ptr().cast());
        let pw = pack_weights(ch);
        for c in 0..C {
            if W::SYM {
                group_step::<true>(&pw, &a[c][g], &mut acc[c], &mut acc_m[c]);
            } else {
                group_step::<false>(&pw, &a[c][g], &mut acc[c], &mut acc_m[c]);
            }
        }
    }
    let mut out = [0f32; C];
    for c in 0..C {
        out[c] = if W::SYM {
            finish::<true>(acc[c], acc_m[c])
        } else {
            finish::<false>(acc[c], acc_m[c])
        };
    }
    out
}

/// Below this many activation rows (and above one), each weight row is
/// packed in registers on the way and used for up to four activation rows
/// at a time, instead of packing the weights into scratch first: the short
/// batches that check speculative drafts cost about what decoding does.
const FEW_COLS: usize = 9;

thread_local! {
    /// Packed activations and weights of the current call, kept between
    /// calls so that a prompt's products do not allocate.
    static SCRATCH: RefCell<(Vec<Packed>, Vec<Packed>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Bytes of packed weight rows worked through together (they stay in L2
/// while a chunk of activation rows passes).
const ROW_CHUNK_BYTES: usize = 192 * 1024;
/// Bytes of packed activation rows worked through together (they stay in
/// L1 while every weight row of the chunk passes).
const COL_CHUNK_BYTES: usize = 32 * 1024;

/// The `vec_dot_tile` contract over `W` weights and `A` activations.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn tile<W: WeightBlock, A: ActBlock>(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let per_row = n / QK;
    if per_row == 0 {
        out.fill(0.0);
        return;
    }
    let x: &[W] = as_blocks(w);
    let y: &[A] = as_blocks(a);
    let cols = y.len() / per_row;
    if cols == 0 {
        return;
    }
    let rows = (x.len() / per_row).min(out.len() / cols);
    let groups = per_row.div_ceil(4);
    SCRATCH.with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            return;
        };
        let (pa, pw) = &mut *guard;
        pa.clear();
        pw.clear();
        for c in 0..cols {
            let yr = &y[c * per_row..(c + 1) * per_row];
            for ch in yr.chunks(4) {
                pa.push(pack_act(ch, W::OFFSET));
            }
        }
        if cols == 1 {
            // Four long sequential streams of weights at a time (RowQuads).
            // Rows shorter than QUAD_MIN_N run one at a time (measured: the
            // quads cost more than they save there).
            if n >= QUAD_MIN_N || size_of::<W>() >= size_of::<BlockQ8_0>() {
                let quads = RowQuads::new(rows);
                for k in 0..quads.count() {
                    let [a, b, c, d] = quads.rows(k);
                    let row = |r: usize| &x[r * per_row..][..per_row];
                    let v = rows_dot4([row(a), row(b), row(c), row(d)], pa);
                    for (l, &o) in v.iter().enumerate() {
                        if let Some(r) = quads.lane(k, l) {
                            out[r] = o;
                        }
                    }
                }
            } else {
                for (r, o) in out[..rows].iter_mut().enumerate() {
                    *o = row_dot(&x[r * per_row..(r + 1) * per_row], pa);
                }
            }
            return;
        }
        if cols < FEW_COLS {
            for r in 0..rows {
                let xr = &x[r * per_row..(r + 1) * per_row];
                let act = |c: usize| &pa[c * groups..(c + 1) * groups];
                let o = &mut out[r * cols..(r + 1) * cols];
                let mut c0 = 0;
                while c0 < cols {
                    let v: &[f32] = match cols - c0 {
                        1 => &row_dot_cols::<W, 1>(xr, [act(c0)]),
                        2 => &row_dot_cols::<W, 2>(xr, [act(c0), act(c0 + 1)]),
                        3 => &row_dot_cols::<W, 3>(xr, [act(c0), act(c0 + 1), act(c0 + 2)]),
                        _ => &row_dot_cols::<W, 4>(
                            xr,
                            [act(c0), act(c0 + 1), act(c0 + 2), act(c0 + 3)],
                        ),
                    };
                    o[c0..c0 + v.len()].copy_from_slice(v);
                    c0 += v.len();
                }
            }
            return;
        }
        // Blocking: packed weight rows a chunk at a time (kept in L2), and
        // against them packed activation rows a chunk at a time (kept in L1).
        let group_bytes = size_of::<Packed>() * groups;
        let row_chunk = (ROW_CHUNK_BYTES / group_bytes).max(TR) / TR * TR;
        let col_chunk = (COL_CHUNK_BYTES / group_bytes).max(TC) / TC * TC;
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + row_chunk).min(rows);
            pw.clear();
            for r in r0..r1 {
                let xr = &x[r * per_row..(r + 1) * per_row];
                for ch in xr.chunks(4) {
                    pw.push(pack_weights(ch));
                }
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
                        let (wt, at) = (&pw[(r - r0) * groups..], &pa[c * groups..]);
                        let o = &mut out[r * cols + c..];
                        if W::SYM {
                            micro_any::<true>(rr, cc, wt, at, groups, o, cols);
                        } else {
                            micro_any::<false>(rr, cc, wt, at, groups, o, cols);
                        }
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

macro_rules! tile_entry {
    ($name:ident, $W:ty, $A:ty) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
        pub unsafe fn $name(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            tile::<$W, $A>(n, w, a, out)
        }
    };
}

tile_entry!(vec_dot_tile_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
tile_entry!(vec_dot_tile_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
tile_entry!(vec_dot_tile_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
tile_entry!(vec_dot_tile_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
tile_entry!(vec_dot_tile_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
