//! The types a KV cache can be stored in, with llama.cpp's names.

use super::KvError;
use edgellama_gguf::GgmlType;
use edgellama_kernels::TypeKernels;
use edgellama_kernels::{self as k, scalar::attn::bf16_bits};
use std::fmt;
use std::str::FromStr;

/// A cache type (`--cache-type-k`, `--cache-type-v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvType {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Iq4Nl,
    Q5_0,
    Q5_1,
}

impl KvType {
    /// In llama.cpp's order (`kv_cache_types` of its `common/arg.cpp`).
    pub const ALL: [KvType; 9] = [
        KvType::F32,
        KvType::F16,
        KvType::Bf16,
        KvType::Q8_0,
        KvType::Q4_0,
        KvType::Q4_1,
        KvType::Iq4Nl,
        KvType::Q5_0,
        KvType::Q5_1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
            KvType::Q4_1 => "q4_1",
            KvType::Iq4Nl => "iq4_nl",
            KvType::Q5_0 => "q5_0",
            KvType::Q5_1 => "q5_1",
        }
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            KvType::F32 => GgmlType::F32,
            KvType::F16 => GgmlType::F16,
            KvType::Bf16 => GgmlType::BF16,
            KvType::Q8_0 => GgmlType::Q8_0,
            KvType::Q4_0 => GgmlType::Q4_0,
            KvType::Q4_1 => GgmlType::Q4_1,
            KvType::Iq4Nl => GgmlType::IQ4_NL,
            KvType::Q5_0 => GgmlType::Q5_0,
            KvType::Q5_1 => GgmlType::Q5_1,
        }
    }

    /// Whether the type is a block format (not a float of one element).
    pub fn is_quantized(self) -> bool {
        self.ggml().block_size() > 1
    }

    /// The kernel table's entry for the type, if this build has one.
    pub fn kernels(self) -> Option<&'static TypeKernels> {
        k::kernels()
            .get(self.ggml())
            .filter(|t| t.vec_dot.is_some())
    }

    /// Writes a row of floats as this type: F16 and BF16 round to nearest
    /// even, block formats quantize as llama.cpp's `ggml_cpy` into its
    /// cache does (the CPU's `from_float`). `dst` is exactly the row's bytes.
    pub fn store(self, src: &[f32], dst: &mut [u8]) {
        match self {
            KvType::F32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
            KvType::F16 => (k::kernels().f32_to_f16_row())(src, bytemuck::cast_slice_mut(dst)),
            KvType::Bf16 => {
                let d: &mut [u16] = bytemuck::cast_slice_mut(dst);
                for (d, &s) in d.iter_mut().zip(src) {
                    *d = bf16_bits(s);
                }
            }
            _ => {
                if let Some(t) = self.kernels() {
                    (t.quantize_act)(src, dst)
                }
            }
        }
    }
}

pub(super) fn known_names() -> String {
    KvType::ALL
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvType {
    type Err = KvError;

    fn from_str(s: &str) -> Result<KvType, KvError> {
        let lower = s.to_ascii_lowercase();
        KvType::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| KvError::UnknownType(s.to_string()))
    }
}
