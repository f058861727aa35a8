//! The Hugging Face checkpoint layout: `config.json` and the safetensors
//! weights beside it, in one `model.safetensors` or sharded as
//! `model-0000N-of-0000M.safetensors` with `model.safetensors.index.json`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::safetensors::{SafetensorsFile, TensorEntry, TensorView};
use super::FormatError;

/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The safetensors files of a checkpoint directory, opened and cross-checked.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    /// Sorted by file name.
    files: Vec<SafetensorsFile>,
    /// Tensor name -> (file, entry) indices.
    by_name: HashMap<String, (usize, usize)>,
}

impl Checkpoint {
    /// Finds the weights as llama.cpp's converter does: the shards named by
    /// `model.safetensors.index.json` when it exists (every tensor it lists must
    /// be in the shard it names, and every tensor of a shard must be listed),
    /// else every `model*.safetensors` file. A tensor found in two files is an
    /// error.
    pub fn open(dir: impl AsRef<Path>) -> Result<Checkpoint, FormatError> {
        let dir = dir.as_ref();
        let index_path = dir.join(INDEX_FILE);
        let (names, weight_map) = if index_path.is_file() {
            let map = read_weight_map(&index_path)?;
            let names: BTreeSet<String> = map.values().cloned().collect();
            for name in &names {
                let plain = Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name);
                if !plain {
                    return Err(FormatError::BadShardName {
                        index: index_path.clone(),
                        name: name.clone(),
                    });
                }
            }
            (names.into_iter().collect::<Vec<_>>(), Some(map))
        } else {
            (model_part_names(dir)?, None)
        };
        if names.is_empty() {
            return Err(FormatError::NoWeights {
                dir: dir.to_owned(),
            });
        }
        let files = names
            .iter()
            .map(|n| SafetensorsFile::open(dir.join(n)))
            .collect::<Result<Vec<_>, _>>()?;

        let mut by_name: HashMap<String, (usize, usize)> = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            for (ti, t) in f.tensors().iter().enumerate() {
                if let Some(&(other, _)) = by_name.get(&t.name) {
                    return Err(FormatError::DuplicateAcrossShards {
                        tensor: t.name.clone(),
                        first: files[other].path().to_owned(),
                        second: f.path().to_owned(),
                    });
                }
                by_name.insert(t.name.clone(), (fi, ti));
            }
        }
        if let Some(map) = weight_map {
            let mut listed: Vec<_> = map.iter().collect();
            listed.sort();
            for (tensor, shard) in listed {
                let found = by_name.get(tensor).map(|&(fi, _)| names[fi].as_str());
                if found != Some(shard.as_str()) {
                    return Err(FormatError::MissingFromShard {
                        index: index_path,
                        tensor: tensor.clone(),
                        listed: shard.clone(),
                    });
                }
            }
            for (fi, f) in files.iter().enumerate() {
                if let Some(t) = f.tensors().iter().find(|t| !map.contains_key(&t.name)) {
                    return Err(FormatError::NotInIndex {
                        index: index_path,
                        tensor: t.name.clone(),
                        found: names[fi].clone(),
                    });
                }
            }
        }
        Ok(Checkpoint {
            dir: dir.to_owned(),
            files,
            by_name,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files, sorted by name.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Every tensor, file by file (sorted by file name), each file's sorted by
    /// tensor name: the order llama.cpp's converter visits them.
    pub fn tensors(&self) -> impl Iterator<Item = (&SafetensorsFile, &TensorEntry)> {
        self.files
            .iter()
            .flat_map(|f| f.tensors().iter().map(move |t| (f, t)))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        let &(fi, ti) = self.by_name.get(name)?;
        let f = &self.files[fi];
        Some(f.view(&f.tensors()[ti]))
    }
}

fn model_part_names(dir: &Path) -> Result<Vec<String>, FormatError> {
    let io = |source| FormatError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with("model") && name.ends_with(".safetensors") {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

fn read_weight_map(path: &Path) -> Result<HashMap<String, String>, FormatError> {
    let v = read_json(path)?;
    let bad = |message: &str| FormatError::BadJson {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"weight_map\" object"))?;
    map.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_owned()))
                .ok_or_else(|| bad("weight_map values must be file names"))
        })
        .collect()
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Value, FormatError> {
    let text = std::fs::read_to_string(path).map_err(|source| FormatError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FormatError::BadJson {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// RoPE scaling from `rope_scaling` (or `rope_parameters`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1+: per-frequency factors (`rope_freqs.weight` in GGUF).
    /// Missing fields take the defaults of llama.cpp's converter.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    Linear {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_max_position_embeddings: u64,
        extrapolation_factor: Option<f64>,
        attention_factor: Option<f64>,
        beta_fast: Option<f64>,
        beta_slow: Option<f64>,
    },
    /// Computed at run time from the context length; nothing is stored.
    Dynamic,
    /// A type this reader does not know.
    Other {
        rope_type: String,
    },
}

/// `config.json` of a Llama-architecture model, with the defaults of
/// `transformers.LlamaConfig` for absent fields (what llama.cpp's converter
/// sees, since it loads the file through `AutoConfig`). A multimodal
/// config's `text_config` is merged over the top level, as the converter does.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architectures: Vec<String>,
    pub model_type: Option<String>,
    pub hidden_act: String,
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub max_position_embeddings: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// The merged JSON object, for fields this struct does not name.
    pub raw: Map<String, Value>,
}

impl LlamaConfig {
    pub fn from_file(path: impl AsRef<Path>) -> Result<LlamaConfig, FormatError> {
        let path = path.as_ref();
        LlamaConfig::from_json(&read_json(path)?, path)
    }

    /// `path` only names the file in errors.
    pub fn from_json(v: &Value, path: &Path) -> Result<LlamaConfig, FormatError> {
        let bad = |message: String| FormatError::BadConfig {
            path: path.to_owned(),
            message,
        };
        let top = v
            .as_object()
            .ok_or_else(|| bad("config is not a JSON object".into()))?;
        let mut raw = top.clone();
        if let Some(text) = top.get("text_config").and_then(Value::as_object) {
            for (k, v) in text {
                raw.insert(k.clone(), v.clone());
            }
        }
        let get = |k: &str| raw.get(k).filter(|v| !v.is_null());
        let uint = |k: &str, default: u64| -> Result<u64, FormatError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| bad(format!("\"{k}\" must be a non-negative integer, got {v}"))),
            }
        };
        let float = |k: &str, default: f64| -> Result<f64, FormatError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| bad(format!("\"{k}\" must be a number, got {v}"))),
            }
        };
        let boolean = |k: &str, default: bool| -> Result<bool, FormatError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| bad(format!("\"{k}\" must be true or false, got {v}"))),
            }
        };
        let architectures = match get("architectures") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| bad("\"architectures\" must be a list of names".into()))?,
        };
        let hidden_size = uint("hidden_size", 4096)?;
        let num_attention_heads = uint("num_attention_heads", 32)?;
        if num_attention_heads == 0 {
            return Err(bad("\"num_attention_heads\" is 0".into()));
        }
        let num_key_value_heads = uint("num_key_value_heads", num_attention_heads)?;
        let head_dim = uint("head_dim", hidden_size / num_attention_heads)?;
        let rope_scaling = match get("rope_parameters").or_else(|| get("rope_scaling")) {
            None => None,
            Some(v) => rope_scaling(v).map_err(bad)?,
        };
        // rope_parameters may carry the base itself.
        let rope_theta = match get("rope_parameters").and_then(|p| p.get("rope_theta")) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(format!("\"rope_theta\" must be a number, got {v}")))?,
            None => float("rope_theta", 10000.0)?,
        };
        Ok(LlamaConfig {
            architectures,
            model_type: get("model_type").and_then(Value::as_str).map(str::to_owned),
            hidden_act: get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("silu")
                .to_owned(),
            vocab_size: uint("vocab_size", 32000)?,
            hidden_size,
            intermediate_size: uint("intermediate_size", 11008)?,
            num_hidden_layers: uint("num_hidden_layers", 32)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: uint("max_position_embeddings", 2048)?,
            rms_norm_eps: float("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: boolean("tie_word_embeddings", false)?,
            attention_bias: boolean("attention_bias", false)?,
            mlp_bias: boolean("mlp_bias", false)?,
            raw,
        })
    }

    /// The first architecture listed (`LlamaForCausalLM`).
    pub fn architecture(&self) -> Option<&str> {
        self.architectures.first().map(String::as_str)
    }

    /// `{kind}_token_id` when it is a single integer (a list, as Llama 3's
    /// `eos_token_id`, names no single token).
    pub fn token_id(&self, kind: &str) -> Option<i64> {
        self.raw.get(&format!("{kind}_token_id"))?.as_i64()
    }
}

fn rope_scaling(v: &Value) -> Result<Option<RopeScaling>, String> {
    let Some(o) = v.as_object() else {
        return Err(format!("\"rope_scaling\" must be an object, got {v}"));
    };
    let kind = o
        .get("rope_type")
        .or_else(|| o.get("type"))
        .and_then(Value::as_str);
    let num = |k: &str| -> Result<Option<f64>, String> {
        match o.get(k).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("rope_scaling \"{k}\" must be a number, got {v}")),
        }
    };
    Ok(Some(match kind.map(str::to_ascii_lowercase).as_deref() {
        None | Some("default") => return Ok(None),
        Some("llama3") => RopeScaling::Llama3 {
            factor: num("factor")?.unwrap_or(8.0),
            low_freq_factor: num("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: num("high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: num("original_max_position_embeddings")?
                .unwrap_or(8192.0),
        },
        Some("linear") => match num("factor")? {
            Some(factor) => RopeScaling::Linear { factor },
            None => return Ok(None),
        },
        Some("yarn") => match num("factor")? {
            Some(factor) => RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: o
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                    .ok_or("yarn rope_scaling needs an integer original_max_position_embeddings")?,
                extrapolation_factor: num("extrapolation_factor")?,
                attention_factor: match num("attention_factor")? {
                    Some(f) => Some(f),
                    None => num("attn_factor")?,
                },
                beta_fast: num("beta_fast")?,
                beta_slow: num("beta_slow")?,
            },
            None => return Ok(None),
        },
        Some("dynamic") => RopeScaling::Dynamic,
        Some(_) => RopeScaling::Other {
            rope_type: kind.unwrap_or_default().to_owned(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Result<LlamaConfig, FormatError> {
        LlamaConfig::from_json(&v, Path::new("config.json"))
    }

    #[test]
    fn absent_fields_take_transformers_defaults() {
        let c = cfg(
            json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                           "num_attention_heads": 4}),
        )
        .unwrap();
        assert_eq!(c.architecture(), Some("LlamaForCausalLM"));
        assert_eq!((c.num_key_value_heads, c.head_dim), (4, 16));
        assert_eq!(
            (c.vocab_size, c.intermediate_size, c.num_hidden_layers),
            (32000, 11008, 32)
        );
        assert_eq!(c.max_position_embeddings, 2048);
        assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-6, 10000.0));
        assert!(!c.tie_word_embeddings && c.rope_scaling.is_none());
        assert_eq!(c.hidden_act, "silu");
    }

    #[test]
    fn llama3_rope_scaling_and_text_config() {
        let c = cfg(json!({
            "architectures": ["MllamaForConditionalGeneration"],
            "text_config": {"architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
                "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                "rope_theta": 500000.0,
                "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
            "eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000
        }))
        .unwrap();
        assert_eq!(c.architecture(), Some("LlamaForCausalLM"));
        assert_eq!(
            (c.hidden_size, c.num_key_value_heads, c.head_dim),
            (2048, 8, 64)
        );
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(
            c.rope_scaling,
            Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            })
        );
        assert_eq!(c.token_id("bos"), Some(128000));
        assert_eq!(c.token_id("eos"), None);
    }

    #[test]
    fn other_rope_types() {
        let rope = |v: Value| cfg(json!({"rope_scaling": v})).unwrap().rope_scaling;
        assert_eq!(
            rope(json!({"type": "linear", "factor": 2})),
            Some(RopeScaling::Linear { factor: 2.0 })
        );
        assert_eq!(rope(json!({"rope_type": "default"})), None);
        assert_eq!(
            rope(json!({"rope_type": "dynamic", "factor": 2.0})),
            Some(RopeScaling::Dynamic)
        );
        assert!(matches!(
            rope(
                json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "beta_fast": 32})
            ),
            Some(RopeScaling::Yarn {
                original_max_position_embeddings: 4096,
                beta_fast: Some(32.0),
                ..
            })
        ));
        assert_eq!(
            rope(json!({"rope_type": "longrope"})),
            Some(RopeScaling::Other {
                rope_type: "longrope".into()
            })
        );
    }

    #[test]
    fn wrong_types_are_named() {
        for bad in [
            json!([]),
            json!({"hidden_size": "64"}),
            json!({"num_attention_heads": 0}),
            json!({"vocab_size": -1}),
            json!({"vocab_size": 1.5}),
            json!({"tie_word_embeddings": 1}),
            json!({"rope_scaling": {"rope_type": "llama3", "factor": "x"}}),
            json!({"rope_scaling": 3}),
            json!({"architectures": "LlamaForCausalLM"}),
        ] {
            assert!(
                matches!(cfg(bad.clone()), Err(FormatError::BadConfig { .. })),
                "{bad}"
            );
        }
    }
}
