//! Hyper-parameters of a Llama 3.2 Vision file, all read from metadata
//! (keys as ollama's unified mllama GGUF names them) and tensor shapes.

use super::preprocess::PreprocessConfig;
use crate::llama::LlamaConfig;
use crate::ModelError;
use edgellama_gguf::GgufFile;

/// Sizes beyond these are corrupt or hostile files, not models.
const MAX_DIM: u64 = 1 << 16;
const MAX_LAYERS: u64 = 1024;

#[derive(Debug, Clone)]
pub struct VisionConfig {
    /// Layers of the local transformer.
    pub n_layer: usize,
    /// Layers of the gated global transformer.
    pub n_global: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub eps: f32,
    pub image_size: usize,
    pub patch_size: usize,
    pub n_channels: usize,
    pub max_num_tiles: usize,
    /// Local layers whose inputs join the output, in this order.
    pub intermediate_layers: Vec<usize>,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl VisionConfig {
    /// Patches per tile side.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per tile: the patches and the class token.
    pub fn n_tile_tokens(&self) -> usize {
        self.patches_per_side().pow(2) + 1
    }

    /// Tokens per tile inside the tower, padded to a multiple of 8.
    pub fn n_tile_tokens_padded(&self) -> usize {
        self.n_tile_tokens().next_multiple_of(8)
    }

    /// Width of the tower's output: the final state and every intermediate one.
    pub fn output_dim(&self) -> usize {
        self.n_embd * (1 + self.intermediate_layers.len())
    }

    /// Floats of one patch: channels x patch x patch.
    pub fn patch_len(&self) -> usize {
        self.n_channels * self.patch_size * self.patch_size
    }

    pub fn preprocess(&self) -> PreprocessConfig {
        PreprocessConfig {
            tile_size: self.image_size,
            max_num_tiles: self.max_num_tiles,
            image_mean: self.image_mean,
            image_std: self.image_std,
            ..PreprocessConfig::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct MllamaConfig {
    /// The text decoder; its `n_vocab` is the output's row count.
    pub text: LlamaConfig,
    /// Rows of the token embedding (the vocabulary plus 8 for the image token).
    pub n_embd_rows: usize,
    /// Text layers that are cross-attention layers, ascending.
    pub cross_layers: Vec<usize>,
    pub image_token: u32,
    pub vision: VisionConfig,
}

fn err(msg: String) -> ModelError {
    ModelError::Config(msg)
}

impl MllamaConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<MllamaConfig, ModelError> {
        let mut text = LlamaConfig::from_gguf(file)?;
        let arch = text.arch.clone();
        let key = |k: &str| format!("{arch}.{k}");
        let dim = |k: &str, max: u64| -> Result<usize, ModelError> {
            let v = file.get_u64(&key(k))?;
            if v == 0 || v > max {
                return Err(err(format!("{} = {v} is out of range", key(k))));
            }
            Ok(v as usize)
        };
        let list = |k: &str| -> Result<Vec<usize>, ModelError> {
            let a = file.get_array(&key(k))?;
            let v = a
                .as_i64_vec()
                .ok_or_else(|| err(format!("{} is not a list of integers", key(k))))?;
            v.into_iter()
                .map(|x| usize::try_from(x).map_err(|_| err(format!("{} holds {x}", key(k)))))
                .collect()
        };
        let floats3 = |k: &str, default: [f32; 3]| -> Result<[f32; 3], ModelError> {
            match file.get(&key(k)) {
                None => Ok(default),
                Some(_) => {
                    let a = file.get_array(&key(k))?;
                    let v = a.f32s().unwrap_or_default();
                    <[f32; 3]>::try_from(v)
                        .map_err(|_| err(format!("{} must hold 3 floats", key(k))))
                }
            }
        };
        let n_embd_rows = text.n_vocab;
        // The output matrix has the real vocabulary; the embedding has extra rows.
        text.n_vocab = match file.tensor("output.weight") {
            Some(t) => t.dims.get(1).copied().unwrap_or(0) as usize,
            None => n_embd_rows,
        };
        if text.n_vocab == 0 || text.n_vocab > n_embd_rows {
            return Err(err(format!(
                "output has {} rows for an embedding of {n_embd_rows}",
                text.n_vocab
            )));
        }
        let cross_layers = list("attention.cross_attention_layers")?;
        if cross_layers.windows(2).any(|w| w[0] >= w[1])
            || cross_layers.iter().any(|&l| l >= text.n_layer)
        {
            return Err(err(format!(
                "cross-attention layers {cross_layers:?} for {} layers",
                text.n_layer
            )));
        }
        let image_token = match file.get(&key("image_token_id")) {
            Some(_) => file.get_u32(&key("image_token_id"))?,
            None => text.n_vocab as u32,
        };
        if image_token as usize >= n_embd_rows {
            return Err(err(format!(
                "image token {image_token} outside an embedding of {n_embd_rows} rows"
            )));
        }
        let n_layer = dim("vision.block_count", MAX_LAYERS)?;
        let vision = VisionConfig {
            n_layer,
            n_global: dim("vision.global.block_count", MAX_LAYERS)?,
            n_embd: dim("vision.embedding_length", MAX_DIM)?,
            n_ff: dim("vision.feed_forward_length", MAX_DIM * 16)?,
            n_head: dim("vision.attention.head_count", MAX_DIM)?,
            eps: file.get_f32_or(&key("vision.attention.layer_norm_epsilon"), 1e-5)?,
            image_size: dim("vision.image_size", MAX_DIM)?,
            patch_size: dim("vision.patch_size", MAX_DIM)?,
            n_channels: dim("vision.num_channels", 16)?,
            max_num_tiles: dim("vision.max_num_tiles", 64)?,
            intermediate_layers: list("vision.intermediate_layers_indices")?,
            // CLIP's, which every Llama 3.2 Vision checkpoint uses, when the
            // file does not say (ollama's files do not).
            image_mean: floats3("vision.image_mean", PreprocessConfig::default().image_mean)?,
            image_std: floats3("vision.image_std", PreprocessConfig::default().image_std)?,
        };
        let v = &vision;
        if !v.image_size.is_multiple_of(v.patch_size)
            || !v.n_embd.is_multiple_of(v.n_head)
            || v.n_channels != 3
        {
            return Err(err(format!(
                "vision tower: {} px tiles of {} px patches, {} channels, width {} over {} heads",
                v.image_size, v.patch_size, v.n_channels, v.n_embd, v.n_head
            )));
        }
        if v.intermediate_layers.iter().any(|&l| l >= n_layer) {
            return Err(err(format!(
                "intermediate layers {:?} of {n_layer}",
                v.intermediate_layers
            )));
        }
        if !(v.eps.is_finite() && v.eps >= 0.0) {
            return Err(err(format!("vision layer-norm epsilon {}", v.eps)));
        }
        v.preprocess().validate()?;
        Ok(MllamaConfig {
            text,
            n_embd_rows,
            cross_layers,
            image_token,
            vision,
        })
    }

    pub fn is_cross(&self, layer: usize) -> bool {
        self.cross_layers.binary_search(&layer).is_ok()
    }
}
