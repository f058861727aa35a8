//! The file types (quantization mixes) a model can be quantized to, numbered as
//! `enum llama_ftype` in llama.cpp's `llama.h`; the number is what
//! `general.file_type` holds. Also the types a vision tower may be kept at
//! ([`VisionType`]).

use std::fmt;
use std::str::FromStr;

use edgellama_gguf::GgmlType;

use crate::error::QuantizeError;

/// A quantization mix: a default tensor type plus llama-quantize's rules for
/// promoting or demoting individual tensors (see [`crate::plan`]).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// Names llama-quantize also accepts for a mix, with the mix they mean.
const ALIASES: [(&str, FileType); 3] = [
    ("Q3_K", FileType::Q3_K_M),
    ("Q4_K", FileType::Q4_K_M),
    ("Q5_K", FileType::Q5_K_M),
];

impl FileType {
    /// Every mix, in llama-quantize's listing order.
    pub const ALL: [FileType; 17] = [
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q2_K,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
        FileType::Q8_0,
        FileType::F16,
        FileType::BF16,
        FileType::F32,
    ];

    /// The name llama-quantize takes on its command line.
    pub const fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q8_0 => "Q8_0",
            FileType::Q2_K => "Q2_K",
            FileType::Q3_K_S => "Q3_K_S",
            FileType::Q3_K_M => "Q3_K_M",
            FileType::Q3_K_L => "Q3_K_L",
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q5_K_S => "Q5_K_S",
            FileType::Q5_K_M => "Q5_K_M",
            FileType::Q6_K => "Q6_K",
        }
    }

    /// The `llama_ftype` number, written to `general.file_type`.
    pub const fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
        }
    }

    /// The tensor type of the mix before any per-tensor rule
    /// (`llama_ftype_get_default_type`).
    pub const fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q2_K => GgmlType::Q2_K,
            FileType::Q3_K_S | FileType::Q3_K_M | FileType::Q3_K_L => GgmlType::Q3_K,
            FileType::Q4_K_S | FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// Whether the default type is a block-quantized one (`ggml_is_quantized`);
    /// only such mixes apply the per-tensor rules.
    pub const fn is_quantized(self) -> bool {
        !matches!(self, FileType::F32 | FileType::F16 | FileType::BF16)
    }

    /// The mix with this `llama_ftype` number, if supported.
    pub fn from_llama_ftype(n: u32) -> Option<FileType> {
        FileType::ALL.into_iter().find(|t| t.llama_ftype() == n)
    }

    /// Parses a type as llama-quantize does: a name in any case (`q4_k_m`),
    /// one of the aliases `Q3_K`, `Q4_K`, `Q5_K`, or a `llama_ftype` number.
    pub fn parse(s: &str) -> Result<FileType, QuantizeError> {
        let upper = s.trim().to_ascii_uppercase();
        let by_name = FileType::ALL
            .into_iter()
            .map(|t| (t.name(), t))
            .chain(ALIASES)
            .find(|(name, _)| *name == upper)
            .map(|(_, t)| t);
        by_name
            .or_else(|| {
                upper
                    .parse::<u32>()
                    .ok()
                    .and_then(FileType::from_llama_ftype)
            })
            .ok_or_else(|| QuantizeError::UnknownFileType {
                name: s.to_owned(),
                valid: FileType::valid_names(),
            })
    }

    /// The accepted names, comma-separated, for error messages and help.
    pub fn valid_names() -> String {
        let names: Vec<&str> = FileType::ALL
            .into_iter()
            .map(FileType::name)
            .chain(ALIASES.iter().map(|(n, _)| *n))
            .collect();
        names.join(", ")
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = QuantizeError;

    fn from_str(s: &str) -> Result<FileType, QuantizeError> {
        FileType::parse(s)
    }
}

/// The type of a multimodal model's vision tower and projector (the `v.*` and
/// `mm.*` matrices of a Llama 3.2 Vision file), which never takes the text
/// model's mix: the tower is small next to the text model and its quality
/// drops fast below 8 bits. Text-only models have no such tensors.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum VisionType {
    F32,
    #[default]
    F16,
    BF16,
    Q8_0,
}

impl VisionType {
    pub const ALL: [VisionType; 4] = [
        VisionType::F32,
        VisionType::F16,
        VisionType::BF16,
        VisionType::Q8_0,
    ];

    /// The name taken on the command line (any case).
    pub const fn name(self) -> &'static str {
        match self {
            VisionType::F32 => "f32",
            VisionType::F16 => "f16",
            VisionType::BF16 => "bf16",
            VisionType::Q8_0 => "q8_0",
        }
    }

    /// The tensor type of every vision matrix whose rows hold whole blocks.
    pub const fn ggml_type(self) -> GgmlType {
        match self {
            VisionType::F32 => GgmlType::F32,
            VisionType::F16 => GgmlType::F16,
            VisionType::BF16 => GgmlType::BF16,
            VisionType::Q8_0 => GgmlType::Q8_0,
        }
    }

    pub fn parse(s: &str) -> Result<VisionType, QuantizeError> {
        let lower = s.trim().to_ascii_lowercase();
        VisionType::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| QuantizeError::UnknownVisionType {
                name: s.to_owned(),
                valid: VisionType::valid_names(),
            })
    }

    /// The accepted names, comma-separated, for error messages and help.
    pub fn valid_names() -> String {
        let names: Vec<&str> = VisionType::ALL.into_iter().map(VisionType::name).collect();
        names.join(", ")
    }
}

impl fmt::Display for VisionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VisionType {
    type Err = QuantizeError;

    fn from_str(s: &str) -> Result<VisionType, QuantizeError> {
        VisionType::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_resolve() {
        for t in FileType::ALL {
            assert_eq!(FileType::parse(t.name()).unwrap(), t);
            assert_eq!(FileType::parse(&t.name().to_lowercase()).unwrap(), t);
            assert_eq!(FileType::parse(&t.llama_ftype().to_string()).unwrap(), t);
        }
        assert_eq!(FileType::parse("q4_k").unwrap(), FileType::Q4_K_M);
        assert_eq!(FileType::parse("Q3_K").unwrap(), FileType::Q3_K_M);
        assert_eq!(FileType::parse("Q5_K").unwrap(), FileType::Q5_K_M);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = FileType::parse("Q4_2").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("Q4_2"), "{msg}");
        for t in FileType::ALL {
            assert!(msg.contains(t.name()), "{msg}");
        }
        // Formats llama.cpp has but this build cannot write.
        for name in ["IQ2_XXS", "Q2_K_S", "COPY", "4", "1024"] {
            assert!(FileType::parse(name).is_err(), "{name}");
        }
    }

    #[test]
    fn vision_types_parse_in_any_case_and_list_the_valid_ones() {
        for t in VisionType::ALL {
            assert_eq!(VisionType::parse(t.name()).unwrap(), t);
            assert_eq!(VisionType::parse(&t.name().to_uppercase()).unwrap(), t);
        }
        assert_eq!(VisionType::default(), VisionType::F16);
        for name in ["q4_0", "Q4_K_M", "f8", "", "16"] {
            let msg = VisionType::parse(name).unwrap_err().to_string();
            assert!(msg.contains("f32, f16, bf16, q8_0"), "{msg}");
        }
    }
}
