//! `--outtype`: the type the 2-D weights are written in.

use std::fmt;
use std::str::FromStr;

use edgellama_gguf::formats::Dtype;
use edgellama_gguf::GgmlType;

use crate::ConvertError;

/// The choices of convert_hf_to_gguf.py's `--outtype` that this crate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutType {
    /// BF16 or F16 as the checkpoint's first 2-D tensor is, else F16
    /// (the converter's "auto" heuristic).
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl OutType {
    pub const ALL: [OutType; 5] = [
        OutType::Auto,
        OutType::F32,
        OutType::F16,
        OutType::Bf16,
        OutType::Q8_0,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            OutType::Auto => "auto",
            OutType::F32 => "f32",
            OutType::F16 => "f16",
            OutType::Bf16 => "bf16",
            OutType::Q8_0 => "q8_0",
        }
    }

    /// Resolves `Auto` from the dtypes of the 2-D tensors in checkpoint order.
    pub fn resolve(self, dtypes_2d: impl IntoIterator<Item = Dtype>) -> OutType {
        if self != OutType::Auto {
            return self;
        }
        for d in dtypes_2d {
            match d {
                Dtype::BF16 => return OutType::Bf16,
                Dtype::F16 => return OutType::F16,
                _ => {}
            }
        }
        OutType::F16
    }

    /// The tensor type of weights that are neither 1-D nor norms. `None` for `Auto`.
    pub const fn weight_type(self) -> Option<GgmlType> {
        match self {
            OutType::Auto => None,
            OutType::F32 => Some(GgmlType::F32),
            OutType::F16 => Some(GgmlType::F16),
            OutType::Bf16 => Some(GgmlType::BF16),
            OutType::Q8_0 => Some(GgmlType::Q8_0),
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`). `None` for `Auto`.
    pub const fn file_type(self) -> Option<u32> {
        match self {
            OutType::Auto => None,
            OutType::F32 => Some(0),
            OutType::F16 => Some(1),
            OutType::Q8_0 => Some(7),
            OutType::Bf16 => Some(32),
        }
    }
}

impl FromStr for OutType {
    type Err = ConvertError;

    fn from_str(s: &str) -> Result<OutType, ConvertError> {
        OutType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ConvertError::UnknownOutType { name: s.to_owned() })
    }
}

impl fmt::Display for OutType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_first_half_precision_matrix() {
        use Dtype::*;
        assert_eq!(OutType::Auto.resolve([F32, BF16, F16]), OutType::Bf16);
        assert_eq!(OutType::Auto.resolve([F16, BF16]), OutType::F16);
        assert_eq!(OutType::Auto.resolve([F32, F32]), OutType::F16);
        assert_eq!(OutType::Q8_0.resolve([BF16]), OutType::Q8_0);
        assert_eq!("Q8_0".parse::<OutType>().unwrap(), OutType::Q8_0);
        assert!("q4_k".parse::<OutType>().is_err());
    }
}
