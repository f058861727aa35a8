//! `ggml_validate_row_data` for the types written here: every float and every
//! f16 block scale must be finite. A NaN or infinity in the input makes one of
//! them non-finite, and such a file would poison every matrix product.

use edgellama_gguf::GgmlType;
use edgellama_kernels::blocks::{
    as_blocks, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8_0, Half,
};

fn f16_finite(h: Half) -> bool {
    h.to_bits() & 0x7c00 != 0x7c00
}

/// Whether `data`, whole blocks of `ty`, holds only finite values and scales.
pub(crate) fn row_data_is_finite(ty: GgmlType, data: &[u8]) -> bool {
    macro_rules! all {
        ($block:ty, $ok:expr) => {
            as_blocks::<$block>(data).iter().all($ok)
        };
    }
    match ty {
        GgmlType::F32 => data
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
        GgmlType::F16 => data
            .chunks_exact(2)
            .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 != 0x7c00),
        GgmlType::BF16 => data
            .chunks_exact(2)
            .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7fff < 0x7f80),
        GgmlType::Q4_0 => all!(BlockQ4_0, |b| f16_finite(b.d)),
        GgmlType::Q4_1 => all!(BlockQ4_1, |b| f16_finite(b.d) && f16_finite(b.m)),
        GgmlType::Q5_0 => all!(BlockQ5_0, |b| f16_finite(b.d)),
        GgmlType::Q5_1 => all!(BlockQ5_1, |b| f16_finite(b.d) && f16_finite(b.m)),
        GgmlType::Q8_0 => all!(BlockQ8_0, |b| f16_finite(b.d)),
        // 18-byte blocks led by their f16 scale.
        GgmlType::IQ4_NL => data
            .chunks_exact(18)
            .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 != 0x7c00),
        GgmlType::Q2_K => all!(BlockQ2K, |b| f16_finite(b.d) && f16_finite(b.dmin)),
        GgmlType::Q3_K => all!(BlockQ3K, |b| f16_finite(b.d)),
        GgmlType::Q4_K => all!(BlockQ4K, |b| f16_finite(b.d) && f16_finite(b.dmin)),
        GgmlType::Q5_K => all!(BlockQ5K, |b| f16_finite(b.d) && f16_finite(b.dmin)),
        GgmlType::Q6_K => all!(BlockQ6K, |b| f16_finite(b.d)),
        // Activation-only formats are never a quantization target.
        GgmlType::Q8_1 | GgmlType::Q8_K => true,
    }
}
