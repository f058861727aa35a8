//! iq4_nl: ggml's 4-bit non-linear format, 32 elements per block with one
//! f16 scale, each element an index into [`KVALUES_IQ4NL`]. llama.cpp offers
//! it for the KV cache (`-ctk iq4_nl`) and as a weight type.
//!
//! Ports of the pinned llama.cpp (ggml 0.25.3, commit 0c1e570, as vendored
//! in llama-cpp-python 0.3.36): `dequantize_row_iq4_nl`,
//! `quantize_row_iq4_nl_impl` (with its `best_index_int8`) as
//! `quantize_row_iq4_nl_ref` and `quantize_iq4_nl` call it for one block of
//! 32 without importance weights, and `ggml_vec_dot_iq4_nl_q8_0_generic` /
//! the AVX2 `ggml_vec_dot_iq4_nl_q8_0`, each keeping its order of float
//! operations so that results are bit-identical.
//!
//! ggml has two quantizers for this type, and they write different blocks:
//!
//! - [`quantize_row_iq4_nl`] is `quantize_row_iq4_nl_ref` (`ntry = -1`: the
//!   first scale guess, refined once by least squares). ggml-cpu's
//!   `from_float` calls it, so it is what llama.cpp writes into an iq4_nl KV
//!   cache; it is the table's `quantize_act`.
//! - [`quantize_iq4_nl`] is `quantize_iq4_nl` without an importance matrix
//!   (`ntry = 7`: 15 more scale candidates, then the indices chosen again
//!   for the final scale), what `ggml_quantize_chunk` and so llama-quantize
//!   write; it is the table's `quantize`.
//!
//! Contract of the `&[u8]` functions as in [`super::legacy`]: only whole
//! blocks present in every slice are processed.

use std::mem::size_of;

use edgellama_gguf::GgmlType;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::blocks::{as_blocks, as_blocks_mut, BlockQ8_0, Half, QK};

/// `kvalues_iq4nl` (ggml-common.h): the 16 levels a 4-bit index selects.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// `block_iq4_nl` (ggml-common.h): `x = d * KVALUES_IQ4NL[q]`, 4-bit `q`.
/// Byte `j` of `qs` holds element `j` in its low nibble and element `j + 16`
/// in its high nibble, as in `q4_0`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: Half,
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockIQ4NL>() == 18);
const _: () = assert!(size_of::<BlockIQ4NL>() == GgmlType::IQ4_NL.type_size());
const _: () = assert!(QK == GgmlType::IQ4_NL.block_size());

/// `GROUP_MAX_EPS`: a block whose largest magnitude is below this gets
/// scale 0.
const GROUP_MAX_EPS: f32 = 1e-15;

/// The index written for a block of scale 0 by [`quantize_row_iq4_nl`]
/// (level 1, so the block dequantizes to `+0.0`); see there.
const ZERO_BLOCK_INDEX: u8 = 8;

/// `best_index_int8(16, kvalues_iq4nl, x)` of the pinned ggml: the level
/// nearest to `x`, the upper one on a tie. A NaN `x` gives 15, as in C.
/// (Later ggml replaced this with a branch-free search comparing `2x` with
/// the sums of neighbouring levels, which can differ within a rounding of
/// a midpoint.)
#[inline]
fn best_index(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// `(sum w q x, sum w q^2)` over a block for the indices `best_index(id * x)`,
/// with `w = x^2` (ggml's weights when it has no importance matrix), summed
/// in order as ggml does. Writes the indices to `l` when given.
#[inline]
fn sums(x: &[f32], id: f32, mut l: Option<&mut [u8; QK]>) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for (j, &v) in x.iter().enumerate() {
        let i = best_index(id * v);
        if let Some(l) = l.as_deref_mut() {
            l[j] = i;
        }
        let q = KVALUES_IQ4NL[i as usize] as f32;
        let w = v * v;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// `quantize_row_iq4_nl_impl(32, 32, x, ..., kvalues_iq4nl, NULL, ntry)`:
/// one block of 32.
fn quantize_block(x: &[f32], ntry: i32, b: &mut BlockIQ4NL) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut l = [ZERO_BLOCK_INDEX; QK];
    let v0 = KVALUES_IQ4NL[0] as f32;
    let scale = if amax < GROUP_MAX_EPS {
        0.0
    } else {
        let d = if ntry > 0 { -max / v0 } else { max / v0 };
        let (sumqx, sumq2) = sums(x, 1.0 / d, Some(&mut l));
        let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            // `(itry + values[0]) / max`: an int sum, converted exactly.
            let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
            let (sumqx, sumq2) = sums(x, id, None);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        d
    };
    b.d = Half::from_f32(scale);
    if ntry > 0 {
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for (li, &v) in l.iter_mut().zip(x) {
            *li = best_index(id * v);
        }
    }
    for j in 0..QK / 2 {
        b.qs[j] = l[j] | (l[j + QK / 2] << 4);
    }
}

/// `quantize_row_iq4_nl_ref`: ggml-cpu's `from_float` for iq4_nl, what
/// llama.cpp writes into an iq4_nl KV cache.
///
/// One deliberate difference: for a block of scale 0 (all magnitudes below
/// `1e-15`, or NaN) ggml leaves the indices of whatever its stack buffer
/// last held (the previous block's, or uninitialised memory for a row's
/// first block); here they are all 8. Both dequantize to zeros (this one to
/// `+0.0` throughout, ggml's to zeros of either sign).
pub fn quantize_row_iq4_nl(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockIQ4NL] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        quantize_block(x, -1, b);
    }
}

/// `quantize_iq4_nl` without an importance matrix, which
/// `ggml_quantize_chunk` (llama-quantize) calls: byte-identical to it,
/// blocks of scale 0 included.
pub fn quantize_iq4_nl(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockIQ4NL] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        quantize_block(x, 7, b);
    }
}

pub fn dequantize_row_iq4_nl(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockIQ4NL] = as_blocks(src);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK / 2 {
            y[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0x0f) as usize] as f32;
            y[j + QK / 2] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}

/// The integer dot product of one block with its activations, as two sums
/// of 16 (ggml's `sumi1`, `sumi2`).
#[inline]
fn block_sum(x: &BlockIQ4NL, y: &BlockQ8_0) -> i32 {
    let mut sumi1 = 0i32;
    let mut sumi2 = 0i32;
    for j in 0..QK / 2 {
        sumi1 += y.qs[j] as i32 * KVALUES_IQ4NL[(x.qs[j] & 0x0f) as usize] as i32;
        sumi2 += y.qs[j + QK / 2] as i32 * KVALUES_IQ4NL[(x.qs[j] >> 4) as usize] as i32;
    }
    sumi1 + sumi2
}

/// `ggml_vec_dot_iq4_nl_q8_0_generic`.
pub fn vec_dot_iq4_nl_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockIQ4NL] = as_blocks(w);
    let y: &[BlockQ8_0] = as_blocks(a);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y).take(n / QK) {
        let d = yb.d.to_f32() * xb.d.to_f32();
        sumf += d * block_sum(xb, yb) as f32;
    }
    sumf
}

/// The AVX2 `ggml_vec_dot_iq4_nl_q8_0` of llama.cpp's x86 builds, step for
/// step: the scalar twin of the x86 table's kernel, and a model of what
/// llama.cpp computes there.
///
/// Pairs of blocks go to two accumulators of 8 lanes, lane `k` taking the
/// products of elements `4k..4k + 4` through one fused multiply-add by
/// `d_y * d_x`; the accumulators are added, folded as `hsum_float_8`, and an
/// odd last block is added as in the generic code, a product and a sum each
/// rounded (gcc 12 with `-march=native` leaves them unfused in the golden
/// build, though GNU C would allow contracting them). The integer
/// products are `maddubs(|q|, sign(y, q))`, so an activation of -128 against
/// a negative level counts as -128 (negation wraps), as on the CPU.
pub fn vec_dot_iq4_nl_q8_0_x86(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockIQ4NL] = as_blocks(w);
    let y: &[BlockQ8_0] = as_blocks(a);
    let nb = (n / QK).min(x.len()).min(y.len());
    let mut acc = [[0.0f32; 8]; 2];
    let mut ib = 0;
    while ib + 1 < nb {
        for (k, acc) in acc.iter_mut().enumerate() {
            let (xb, yb) = (&x[ib + k], &y[ib + k]);
            let d = yb.d.to_f32() * xb.d.to_f32();
            for (lane, a) in acc.iter_mut().enumerate() {
                let p: i32 = (4 * lane..4 * lane + 4)
                    .map(|e| {
                        let nib = if e < QK / 2 {
                            xb.qs[e] & 0x0f
                        } else {
                            xb.qs[e - QK / 2] >> 4
                        };
                        let q = KVALUES_IQ4NL[nib as usize];
                        let sy = if q < 0 {
                            yb.qs[e].wrapping_neg()
                        } else {
                            yb.qs[e]
                        };
                        q.unsigned_abs() as i32 * sy as i32
                    })
                    .sum();
                *a = d.mul_add(p as f32, *a);
            }
        }
        ib += 2;
    }
    let v: [f32; 8] = std::array::from_fn(|i| acc[0][i] + acc[1][i]);
    let r: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
    let mut sumf = (r[0] + r[2]) + (r[1] + r[3]);
    for (xb, yb) in x.iter().zip(y).take(nb).skip(ib) {
        let d = yb.d.to_f32() * xb.d.to_f32();
        sumf += d * block_sum(xb, yb) as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_picks_the_nearest_level_and_the_upper_on_ties() {
        assert_eq!(best_index(-1000.0), 0);
        assert_eq!(best_index(1000.0), 15);
        assert_eq!(best_index(f32::NAN), 15);
        assert_eq!(best_index(0.0), 8);
        for (i, &v) in KVALUES_IQ4NL.iter().enumerate() {
            assert_eq!(best_index(v as f32), i as u8);
        }
        for i in 1..16 {
            let (lo, hi) = (KVALUES_IQ4NL[i - 1] as f32, KVALUES_IQ4NL[i] as f32);
            let mid = (lo + hi) / 2.0;
            assert_eq!(best_index(mid), i as u8, "tie {lo}..{hi}");
            assert_eq!(best_index(mid - 0.25), (i - 1) as u8);
        }
    }

    #[test]
    fn a_block_on_the_levels_round_trips() {
        // Values exactly on the levels times a power of two are recovered.
        let x: Vec<f32> = (0..QK)
            .map(|i| KVALUES_IQ4NL[(i * 7) % 16] as f32 * 0.125)
            .collect();
        for quantize in [quantize_row_iq4_nl, quantize_iq4_nl] {
            let mut q = [0u8; 18];
            quantize(&x, &mut q);
            let mut y = [0f32; QK];
            dequantize_row_iq4_nl(&q, &mut y);
            assert_eq!(y.to_vec(), x);
        }
    }

    #[test]
    fn zero_blocks_dequantize_to_positive_zeros() {
        let x = [0.0f32; 2 * QK];
        for quantize in [quantize_row_iq4_nl, quantize_iq4_nl] {
            let mut q = [0xffu8; 36];
            quantize(&x, &mut q);
            assert_eq!(&q[..2], &[0, 0]);
            assert!(q[2..18].iter().all(|&b| b == 0x88));
            let mut y = [1f32; 2 * QK];
            dequantize_row_iq4_nl(&q, &mut y);
            assert!(y.iter().all(|v| v.to_bits() == 0));
        }
    }

    #[test]
    fn x86_model_counts_minus_128_as_the_cpu_does() {
        // Level -127 (index 0) against an activation of -128 in a pair of
        // blocks: the true product is +16256, maddubs gives 127 * -128. The
        // odd last block takes the generic path, which multiplies exactly.
        let one = Half::from_f32(1.0).to_bits().to_le_bytes();
        let mut w = [0u8; 3 * 18];
        let mut a = [0u8; 3 * 34];
        for b in 0..3 {
            w[18 * b..18 * b + 2].copy_from_slice(&one);
            a[34 * b..34 * b + 2].copy_from_slice(&one);
        }
        a[2] = 0x80; // block 0, y[0] = -128; the other activations are 0
        assert_eq!(vec_dot_iq4_nl_q8_0(64, &w, &a), 16256.0);
        assert_eq!(vec_dot_iq4_nl_q8_0_x86(64, &w, &a), -16256.0);
        a[2] = 0;
        a[2 * 34 + 2] = 0x80; // block 2, the odd one out
        assert_eq!(vec_dot_iq4_nl_q8_0_x86(96, &w, &a), 16256.0);
    }
}
