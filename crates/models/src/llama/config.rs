use crate::ModelError;
use edgellama_gguf::GgufFile;

/// Hyper-parameters of a Llama-architecture model, all read from metadata.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub arch: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that rotate.
    pub n_rot: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
}

/// Sizes beyond these are not models but corrupt or hostile files; the
/// limits keep every product below well inside `usize`.
const MAX_DIM: u64 = 1 << 20;
const MAX_LAYERS: u64 = 4096;

impl LlamaConfig {
    /// What a text decoder of this configuration reports (no image input).
    pub fn model_info(&self, file: &GgufFile) -> crate::ModelInfo {
        let (n_params, weight_bytes) = crate::count_weights(file);
        crate::ModelInfo {
            architecture: self.arch.clone(),
            n_vocab: self.n_vocab,
            n_ctx_train: self.n_ctx_train,
            n_embd: self.n_embd,
            n_layer: self.n_layer,
            n_params,
            weight_bytes,
            image_token: None,
            preprocess: None,
        }
    }

    pub fn block_dims(&self) -> crate::layers::BlockDims {
        crate::layers::BlockDims {
            n_embd: self.n_embd,
            heads: self.head_dims(),
            n_rot: self.n_rot,
            n_ff: self.n_ff,
            rms_eps: self.rms_eps,
        }
    }

    pub fn head_dims(&self) -> crate::layers::HeadDims {
        crate::layers::HeadDims {
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
        }
    }

    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, ModelError> {
        let arch = file.architecture()?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let dim = |k: &str, max: u64| -> Result<usize, ModelError> {
            let v = file.get_u64(&key(k))?;
            if v == 0 || v > max {
                return Err(ModelError::Config(format!(
                    "{} = {v} is out of range",
                    key(k)
                )));
            }
            Ok(v as usize)
        };
        let n_embd = dim("embedding_length", MAX_DIM)?;
        let n_layer = dim("block_count", MAX_LAYERS)?;
        let n_head = dim("attention.head_count", MAX_DIM)?;
        let n_head_kv = match file.get(&key("attention.head_count_kv")) {
            Some(_) => dim("attention.head_count_kv", MAX_DIM)?,
            None => n_head,
        };
        let n_ff = dim("feed_forward_length", MAX_DIM * 16)?;
        let head_dim = match file.get(&key("attention.key_length")) {
            Some(_) => dim("attention.key_length", MAX_DIM)?,
            None => n_embd / n_head,
        };
        let n_rot = match file.get(&key("rope.dimension_count")) {
            Some(_) => dim("rope.dimension_count", MAX_DIM)?,
            None => head_dim,
        };
        let n_ctx_train = match file.get(&key("context_length")) {
            Some(_) => dim("context_length", 1 << 24)?,
            None => 2048,
        };
        let rms_eps = file.get_f32_or(&key("attention.layer_norm_rms_epsilon"), 1e-5)?;
        // The vocabulary size is the embedding's second dimension; metadata may omit it.
        let n_vocab = file
            .tensor("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        if n_vocab == 0 || n_vocab > 1 << 24 {
            return Err(ModelError::Config(format!(
                "vocabulary of {n_vocab} tokens"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(ModelError::Config(format!(
                "{n_head} heads cannot share {n_head_kv} KV heads evenly"
            )));
        }
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope dimension {n_rot} does not fit head size {head_dim}"
            )));
        }
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(ModelError::Config(format!("rms epsilon {rms_eps}")));
        }
        Ok(LlamaConfig {
            arch,
            n_vocab: n_vocab as usize,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            n_ff,
            rms_eps,
        })
    }
}
