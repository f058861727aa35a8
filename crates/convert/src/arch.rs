//! The seam between the generic converter (reading, planning, type rules,
//! writing) and one model family: its metadata keys, how its checkpoint
//! names and shapes become GGUF tensors, and what it generates. A table
//! picks the family from `architectures[0]` of config.json.

use std::path::Path;

use edgellama_gguf::formats::LlamaConfig;
use edgellama_gguf::{GgmlType, MetadataValue};
use serde_json::Value;

use crate::{llama, mllama, tensors, ConvertError, OutType};

/// What becomes of a checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// Written as these GGUF tensors (usually one; mllama's positional gate
    /// becomes two).
    To(Vec<Target>),
    /// Not written (RoPE caches, attention masks, towers of other models).
    Skip,
}

impl Mapped {
    /// One tensor, its rows permuted when `permute_heads` is given.
    pub fn one(name: String, permute_heads: Option<u64>) -> Mapped {
        let transform = match permute_heads {
            Some(h) => Transform::PermuteHeads(h),
            None => Transform::Copy,
        };
        Mapped::To(vec![Target { name, transform }])
    }
}

/// One GGUF tensor made from a checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub transform: Transform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// The values as they are (converted to the output type).
    Copy,
    /// `LlamaModel.permute` with this many heads: rotate-half rows to
    /// ggml's interleaved pairs.
    PermuteHeads(u64),
    /// A gate stored with its activation applied, always F32.
    Gate(GateFn),
}

/// The activation baked into a stored gate, computed in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateFn {
    Tanh,
    OneMinusTanh,
}

impl GateFn {
    pub fn apply(self, g: f32) -> f32 {
        match self {
            GateFn::Tanh => g.tanh(),
            GateFn::OneMinusTanh => 1.0 - g.tanh(),
        }
    }
}

/// A generated tensor: F32 values, written before the checkpoint's.
pub struct Extra {
    pub name: String,
    pub values: Vec<f32>,
}

/// The vocabulary's length: `vocab_size` ids, or with `id_limit`, as many
/// as the tokenizer defines when that is more (an id at or past the limit
/// is refused).
pub struct VocabLen {
    pub vocab_size: u64,
    pub id_limit: Option<u64>,
}

/// One model family as the converter writes it.
pub trait Architecture {
    /// `general.architecture`.
    fn name(&self) -> &'static str;

    /// The `{arch}.*` keys and `general.file_type`, in the order written
    /// (after `general.*` naming, before the vocabulary).
    fn hparams_metadata(
        &self,
        file_type: u32,
    ) -> Result<Vec<(String, MetadataValue)>, ConvertError>;

    /// The GGUF tensor(s) of a checkpoint tensor; an unknown name is an error.
    fn map_name(&self, hf_name: &str) -> Result<Mapped, ConvertError>;

    /// The checkpoint (row-major) shape the config implies for a GGUF
    /// tensor, `None` when there is nothing to check.
    fn expected_shape(&self, gguf_name: &str) -> Option<Vec<u64>>;

    /// The first required GGUF tensor that `present` lacks. Loops over
    /// layers stop one past `n_tensors`, so a hostile layer count costs
    /// nothing.
    fn first_missing(&self, n_tensors: usize, present: &dyn Fn(&str) -> bool) -> Option<String>;

    /// Generated tensors (computed once the shapes have been checked).
    fn extra_tensors(&self) -> Vec<Extra>;

    /// The output type of a checkpoint tensor; by default the converter's
    /// rule (`tensors::target_type`).
    fn tensor_type(
        &self,
        gguf_name: &str,
        n_dims: usize,
        row_len: u64,
        outtype: OutType,
    ) -> GgmlType {
        tensors::target_type(gguf_name, n_dims, row_len, outtype)
    }

    /// How many tokens the vocabulary lists.
    fn vocab_len(&self) -> VocabLen;
}

/// Reads config.json into an architecture (`path` names it in errors).
type Open = fn(&Value, &Path) -> Result<Box<dyn Architecture>, ConvertError>;

/// `architectures[0]` of config.json -> the family that converts it.
const ARCHITECTURES: &[(&str, Open)] = &[
    ("LlamaForCausalLM", llama::open),
    ("LLaMAForCausalLM", llama::open),
    ("MllamaForConditionalGeneration", mllama::open),
];

/// The config.json `architectures` this crate converts.
pub fn supported_architectures() -> impl Iterator<Item = &'static str> {
    ARCHITECTURES.iter().map(|(n, _)| *n)
}

fn first_architecture(v: Option<&Value>) -> Option<&str> {
    v?.get("architectures")?.as_array()?.first()?.as_str()
}

/// Picks the family by config.json's `architectures[0]`, else by its
/// `text_config`'s (a multimodal wrapper whose text model is a Llama: its
/// other towers are skipped by name, as llama.cpp's converter does).
pub fn open(config: &Value, path: &Path) -> Result<Box<dyn Architecture>, ConvertError> {
    let candidates = [
        first_architecture(Some(config)),
        first_architecture(config.get("text_config")),
    ];
    for name in candidates.into_iter().flatten() {
        if let Some((_, open)) = ARCHITECTURES.iter().find(|(n, _)| *n == name) {
            return open(config, path);
        }
    }
    // A malformed config is reported as such, not as an unknown name.
    let cfg = LlamaConfig::from_json(config, path)?;
    Err(ConvertError::UnsupportedArchitecture {
        found: cfg.architecture().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_computed_in_f32() {
        for g in [-1.5f32, -0.3, 0.0, 0.7, 1.2] {
            assert_eq!(GateFn::Tanh.apply(g).to_bits(), g.tanh().to_bits());
            assert_eq!(
                GateFn::OneMinusTanh.apply(g).to_bits(),
                (1.0 - g.tanh()).to_bits()
            );
        }
    }

    #[test]
    fn the_error_lists_the_table() {
        let e = open(
            &serde_json::json!({"architectures": ["MistralForCausalLM"]}),
            Path::new("config.json"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        for (name, _) in ARCHITECTURES {
            assert!(e.contains(name), "{e}");
        }
        assert!(e.contains("MistralForCausalLM"), "{e}");
    }
}
