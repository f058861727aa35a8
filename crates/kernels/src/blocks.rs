//! Binary layouts of the quantized blocks, field for field the structs of
//! llama.cpp's `ggml/src/ggml-common.h`, so a GGUF tensor's bytes can be viewed
//! as a slice of blocks without copying.
//!
//! Every field is a byte array (multi-byte scalars are stored little-endian, as
//! ggml writes them), so every block has alignment 1 and any byte slice of the
//! right length can be viewed as blocks: an mmap'd tensor, a `Vec<u8>`, or a
//! sub-slice at any offset.

use std::mem::size_of;

use edgellama_gguf::{GgmlType, QK_K};
use zerocopy::little_endian::{F32 as LeF32, I16 as LeI16};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::convert::{f16_to_f32, f32_to_f16};

/// Elements per block of the legacy 4/5/8-bit formats (`QK4_0`, `QK8_0`, ...).
pub const QK: usize = 32;

/// Bytes of the packed 6-bit scales and mins of `q4_K`/`q5_K` (`K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// `ggml_half`: IEEE binary16 bits, little-endian.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(transparent)]
pub struct Half([u8; 2]);

impl Half {
    pub const ZERO: Half = Half([0, 0]);

    #[inline]
    pub const fn from_bits(bits: u16) -> Half {
        Half(bits.to_le_bytes())
    }

    #[inline]
    pub const fn to_bits(self) -> u16 {
        u16::from_le_bytes(self.0)
    }

    /// Rounds like `GGML_FP32_TO_FP16`.
    #[inline]
    pub fn from_f32(f: f32) -> Half {
        Half::from_bits(f32_to_f16(f))
    }

    #[inline]
    pub fn to_f32(self) -> f32 {
        f16_to_f32(self.to_bits())
    }
}

/// `block_q4_0`: `x = d * (q - 8)`, 4-bit `q`. Byte `j` of `qs` holds element
/// `j` in its low nibble and element `j + 16` in its high nibble.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: Half,
    pub qs: [u8; QK / 2],
}

/// `block_q4_1`: `x = d * q + m`, 4-bit `q`, nibbles as in `q4_0`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: Half,
    pub m: Half,
    pub qs: [u8; QK / 2],
}

/// `block_q5_0`: `x = d * (q - 16)`, 5-bit `q`: low nibbles as in `q4_0`, bit
/// `j` of the little-endian `u32` `qh` is the fifth bit of element `j`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: Half,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// `block_q5_1`: `x = d * q + m`, 5-bit `q` packed as in `q5_0`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: Half,
    pub m: Half,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// `block_q8_0`: `x = d * q`, 8-bit `q`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: Half,
    pub qs: [i8; QK],
}

/// `block_q8_1`: as `q8_0` plus `s = d * sum(qs)`, which lets the dot product
/// with `q4_1`/`q5_1` apply their offset `m` once per block.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: Half,
    pub s: Half,
    pub qs: [i8; QK],
}

/// `block_q2_K`: 16 sub-blocks of 16, `x = d * sc * q - dmin * m` with 2-bit
/// `q` and 4-bit `sc` (low nibble of `scales[j]`) and `m` (high nibble).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: Half,
    pub dmin: Half,
}

/// `block_q3_K`: 16 sub-blocks of 16, `x = d * (sc - 32) * (q - 4)` with 3-bit
/// `q` (2 bits in `qs`, the third in `hmask`) and 6-bit `sc` packed in `scales`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: Half,
}

/// `block_q4_K`: 8 sub-blocks of 32, `x = d * sc * q - dmin * m` with 4-bit `q`
/// and 6-bit `sc`, `m` packed in `scales` (see `get_scale_min_k4`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: Half,
    pub dmin: Half,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

/// `block_q5_K`: as `q4_K` with a fifth bit per element in `qh`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: Half,
    pub dmin: Half,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// `block_q6_K`: 16 sub-blocks of 16, `x = d * sc * (q - 32)` with 6-bit `q`
/// (4 bits in `ql`, 2 in `qh`) and signed 8-bit `sc`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: Half,
}

/// `block_q8_K`: the activation format of the K-quant dot products. `d` is a
/// full `f32`, and `bsums` holds the sums of each 16 quants, which the dot
/// products with `q2_K`/`q4_K`/`q5_K` use to apply the mins.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: LeF32,
    pub qs: [i8; QK_K],
    pub bsums: [LeI16; QK_K / 16],
}

const _: () = assert!(size_of::<Half>() == 2);
const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(size_of::<BlockQ5_0>() == 22);
const _: () = assert!(size_of::<BlockQ5_1>() == 24);
const _: () = assert!(size_of::<BlockQ8_0>() == 34);
const _: () = assert!(size_of::<BlockQ8_1>() == 36);
const _: () = assert!(size_of::<BlockQ2K>() == 84);
const _: () = assert!(size_of::<BlockQ3K>() == 110);
const _: () = assert!(size_of::<BlockQ4K>() == 144);
const _: () = assert!(size_of::<BlockQ5K>() == 176);
const _: () = assert!(size_of::<BlockQ6K>() == 210);
const _: () = assert!(size_of::<BlockQ8K>() == 292);

// The file-format table in edgellama-gguf must agree with the layouts.
const _: () = assert!(size_of::<BlockQ4_0>() == GgmlType::Q4_0.type_size());
const _: () = assert!(size_of::<BlockQ4_1>() == GgmlType::Q4_1.type_size());
const _: () = assert!(size_of::<BlockQ5_0>() == GgmlType::Q5_0.type_size());
const _: () = assert!(size_of::<BlockQ5_1>() == GgmlType::Q5_1.type_size());
const _: () = assert!(size_of::<BlockQ8_0>() == GgmlType::Q8_0.type_size());
const _: () = assert!(size_of::<BlockQ8_1>() == GgmlType::Q8_1.type_size());
const _: () = assert!(size_of::<BlockQ2K>() == GgmlType::Q2_K.type_size());
const _: () = assert!(size_of::<BlockQ3K>() == GgmlType::Q3_K.type_size());
const _: () = assert!(size_of::<BlockQ4K>() == GgmlType::Q4_K.type_size());
const _: () = assert!(size_of::<BlockQ5K>() == GgmlType::Q5_K.type_size());
const _: () = assert!(size_of::<BlockQ6K>() == GgmlType::Q6_K.type_size());
const _: () = assert!(size_of::<BlockQ8K>() == GgmlType::Q8_K.type_size());
const _: () = assert!(QK == GgmlType::Q4_0.block_size() && QK == GgmlType::Q8_1.block_size());

/// Views the whole blocks at the start of `bytes` (a trailing partial block is
/// left out; callers validate lengths before getting here).
#[inline]
pub fn as_blocks<B: FromBytes + KnownLayout + Immutable + Unaligned>(bytes: &[u8]) -> &[B] {
    let n = bytes.len() / size_of::<B>();
    match <[B]>::ref_from_prefix_with_elems(bytes, n) {
        Ok((blocks, _)) => blocks,
        // Unreachable: alignment is 1 and the prefix fits by construction.
        Err(_) => &[],
    }
}

/// Mutable counterpart of [`as_blocks`].
#[inline]
pub fn as_blocks_mut<B: FromBytes + IntoBytes + KnownLayout + Unaligned>(
    bytes: &mut [u8],
) -> &mut [B] {
    let n = bytes.len() / size_of::<B>();
    match <[B]>::mut_from_prefix_with_elems(bytes, n) {
        Ok((blocks, _)) => blocks,
        Err(_) => &mut [],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_view_any_offset() {
        // Alignment 1: a view at an odd offset works and sees the right bytes.
        let mut bytes = vec![0u8; 1 + 2 * 144 + 7];
        bytes[1] = 0x00;
        bytes[2] = 0x3c; // d = 1.0 in the first block
        bytes[1 + 144 + 4] = 42; // scales[0] of the second block
        let blocks: &[BlockQ4K] = as_blocks(&bytes[1..]);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].d.to_f32(), 1.0);
        assert_eq!(blocks[1].scales[0], 42);
    }

    #[test]
    fn q8k_fields_are_little_endian() {
        let mut bytes = vec![0u8; 292];
        bytes[..4].copy_from_slice(&0.5f32.to_le_bytes());
        bytes[260..262].copy_from_slice(&(-300i16).to_le_bytes());
        let b: &[BlockQ8K] = as_blocks(&bytes);
        assert_eq!(b[0].d.get(), 0.5);
        assert_eq!(b[0].bsums[0].get(), -300);
    }
}
