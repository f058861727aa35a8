//! Model definitions. `layers/` holds the pieces every decoder shares;
//! each architecture is a folder that assembles them. [`load_model`] picks
//! the architecture named by the file's `general.architecture`.

pub mod layers;
pub mod llama;
pub mod mllama;

use edgellama_backend::{
    Backend, BackendError, KvConfig, KvError, KvLayout, KvPool, KvSeq, KvType,
};
use edgellama_gguf::{GgufError, GgufFile};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Kernel(#[from] edgellama_kernels::KernelError),
    #[error(transparent)]
    Image(#[from] mllama::preprocess::ImageError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("unsupported architecture '{arch}' (supported: {})", supported_list())]
    UnsupportedArchitecture { arch: String },
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {got:?}, expected {want:?}")]
    TensorShape {
        name: String,
        got: Vec<u64>,
        want: Vec<u64>,
    },
    #[error("tensor '{name}' has type {ty}, which {what}")]
    TensorType {
        name: String,
        ty: edgellama_gguf::GgmlType,
        what: &'static str,
    },
    #[error("the {arch} architecture takes no images")]
    NoImageInput { arch: String },
    #[error("{images} images for {tokens} image tokens in the prompt")]
    ImageCount { images: usize, tokens: usize },
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("context is full: {n_past} tokens held + {n_new} new > context size {n_ctx}")]
    ContextFull {
        n_past: usize,
        n_new: usize,
        n_ctx: usize,
    },
}

/// What every decoder-only architecture reports about itself.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_params: u64,
    pub weight_bytes: u64,
    /// The token that stands for an image in the prompt, for models that
    /// take images; `None` for text-only models.
    pub image_token: Option<u32>,
    /// How images are prepared for this model (with `image_token`).
    pub preprocess: Option<PreprocessConfig>,
}

impl ModelInfo {
    pub fn takes_images(&self) -> bool {
        self.image_token.is_some()
    }
}

/// Per-sequence state: the sequence's blocks of the KV pool, how much of
/// them is filled, and the images the sequence has seen.
pub struct SeqState {
    pub kv: KvSeq,
    pub n_past: usize,
    pub cross: CrossState,
}

impl SeqState {
    /// A state over `kv` with nothing in it yet.
    pub fn new(kv: KvSeq) -> SeqState {
        SeqState {
            kv,
            n_past: 0,
            cross: CrossState::default(),
        }
    }

    /// The most positions the sequence may hold.
    pub fn n_ctx(&self) -> usize {
        self.kv.max_len()
    }

    /// Makes room for `n_new` more positions: within the sequence's
    /// context, and with the pool's blocks taken for them.
    pub fn reserve(&mut self, n_new: usize) -> Result<(), ModelError> {
        if self.n_past + n_new > self.n_ctx() {
            return Err(ModelError::ContextFull {
                n_past: self.n_past,
                n_new,
                n_ctx: self.n_ctx(),
            });
        }
        Ok(self.kv.reserve(self.n_past + n_new)?)
    }

    /// Takes the first `n` positions of `src` (a sequence of the same
    /// pool): its keys and values, shared block by block until either
    /// writes, and the images bound in them; what this state held is
    /// dropped.
    pub fn copy_prefix_from(&mut self, src: &SeqState, n: usize) -> Result<(), ModelError> {
        let n = n.min(src.n_past);
        self.kv.share_prefix(&src.kv, n)?;
        self.n_past = n;
        self.cross.images = src
            .cross
            .images
            .iter()
            .filter(|im| im.pos < n)
            .cloned()
            .collect();
        self.cross.pending.clear();
        Ok(())
    }

    /// Forgets everything after the first `n` positions, images included,
    /// and gives the blocks past them back to the pool.
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
        self.kv.truncate(self.n_past);
        self.cross.images.retain(|im| im.pos < n);
        self.cross.pending.clear();
    }
}

/// Cross-attention state of a sequence: the images it has attached, each
/// bound to the position of its image token.
#[derive(Default, Clone)]
pub struct CrossState {
    pub images: Vec<AttachedImage>,
    /// Encoded images waiting for their image token (attached by
    /// [`CausalLm::forward_inputs`] before the token is processed).
    pub pending: Vec<Arc<ImageKv>>,
}

/// An image whose token sits at `pos`.
#[derive(Clone)]
pub struct AttachedImage {
    pub pos: usize,
    pub kv: Arc<ImageKv>,
}

/// An image's keys and values for every cross-attention layer, computed
/// once from its encoding and shared by every sequence that shows it.
pub struct ImageKv {
    /// sha256 of the image (see [`PreparedImage::hash`]).
    pub hash: [u8; 32],
    /// Key/value rows per image.
    pub n_tokens: usize,
    /// Per cross-attention layer: keys and values, `[n_tokens][n_head_kv * head_dim]`.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl CrossState {
    /// The images position `pos` attends to: the run of consecutive image
    /// tokens that ends last at or before `pos`, those of its members at or
    /// before `pos` (transformers' `get_cross_attention_token_mask`: an image
    /// is seen from its own token to the next image token, and images in a
    /// run of adjacent tokens all reach past the run). Empty before the first
    /// image.
    pub fn visible_at(&self, pos: usize) -> &[AttachedImage] {
        let upto = self.images.partition_point(|im| im.pos <= pos);
        if upto == 0 {
            return &[];
        }
        let mut start = upto - 1;
        while start > 0 && self.images[start - 1].pos + 1 == self.images[start].pos {
            start -= 1;
        }
        &self.images[start..upto]
    }
}

/// A piece of a prompt: a run of tokens, or an image, which stands where the
/// model's image token would ([`ModelInfo::image_token`]).
#[derive(Debug, Clone)]
pub enum Input {
    Tokens(Vec<u32>),
    Image(Arc<PreparedImage>),
}

pub use mllama::preprocess::{PreparedImage, PreprocessConfig};

/// Which positions of a batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
    /// Every position from this index of the batch on.
    From(usize),
}

impl Logits {
    /// The first of `n` batch rows that gets logits.
    pub fn first_row(self, n: usize) -> usize {
        match self {
            Logits::All => 0,
            Logits::Last => n.saturating_sub(1),
            Logits::From(i) => i.min(n),
        }
    }
}

/// One sequence's part of a batched step.
pub struct BatchItem<'a> {
    pub state: &'a mut SeqState,
    /// Tokens appended to the sequence in this step (may be empty).
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// A causal language model: tokens in, next-token logits out.
pub trait CausalLm: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// What the model keeps per position in a KV pool.
    fn kv_layout(&self) -> KvLayout;

    /// A fresh sequence of up to `n_ctx` positions with a pool of its own
    /// (F16 keys and values).
    fn new_state(&self, n_ctx: usize) -> Result<SeqState, ModelError> {
        self.new_state_typed(n_ctx, KvType::F16, KvType::F16)
    }

    /// A fresh sequence of up to `n_ctx` positions with a pool of its own
    /// holding keys as `type_k` and values as `type_v`.
    fn new_state_typed(
        &self,
        n_ctx: usize,
        type_k: KvType,
        type_v: KvType,
    ) -> Result<SeqState, ModelError> {
        if n_ctx == 0 {
            return Err(ModelError::Config("context size must be at least 1".into()));
        }
        let config = KvConfig {
            type_k,
            type_v,
            ..KvConfig::f16(n_ctx)
        };
        let pool = KvPool::new(self.kv_layout(), config)?;
        Ok(SeqState::new(KvSeq::new(pool, n_ctx)))
    }

    /// A fresh sequence of up to `max_len` positions drawing on `pool`.
    fn new_state_in(&self, pool: &Arc<KvPool>, max_len: usize) -> Result<SeqState, ModelError> {
        if pool.layout() != self.kv_layout() {
            return Err(ModelError::Config(format!(
                "a KV pool of {:?} for a model of {:?}",
                pool.layout(),
                self.kv_layout()
            )));
        }
        Ok(SeqState::new(KvSeq::new(pool.clone(), max_len)))
    }
    /// Appends `tokens` to the sequence and returns logits for the requested
    /// positions, `n_vocab` floats each.
    fn forward(
        &self,
        state: &mut SeqState,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, ModelError>;

    /// Encodes `image` (or reuses an encoding of the same image) and queues
    /// it for the sequence's next image token. Models without image input
    /// refuse.
    fn attach_image(
        &self,
        _state: &mut SeqState,
        _image: &PreparedImage,
    ) -> Result<(), ModelError> {
        Err(ModelError::NoImageInput {
            arch: self.info().architecture.clone(),
        })
    }

    /// Appends a prompt of token runs and images, each image standing where
    /// the model's image token goes. Image tokens inside a token run are
    /// refused: an image comes with its pixels or not at all.
    fn forward_inputs(
        &self,
        state: &mut SeqState,
        inputs: &[Input],
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        let image_token = self.info().image_token;
        let mut tokens = Vec::new();
        let n_images = inputs
            .iter()
            .filter(|i| matches!(i, Input::Image(_)))
            .count();
        for input in inputs {
            match input {
                Input::Tokens(t) => {
                    if let Some(id) = image_token {
                        if t.contains(&id) {
                            return Err(ModelError::ImageCount {
                                images: n_images,
                                tokens: n_images + t.iter().filter(|&&x| x == id).count(),
                            });
                        }
                    }
                    tokens.extend_from_slice(t)
                }
                Input::Image(img) => {
                    let Some(id) = image_token else {
                        return Err(ModelError::NoImageInput {
                            arch: self.info().architecture.clone(),
                        });
                    };
                    self.attach_image(state, img)?;
                    tokens.push(id);
                }
            }
        }
        self.forward(state, &tokens, which)
    }

    /// Advances several sequences in one pass: their tokens share every
    /// matrix product, each attends only to its own cache. Per sequence the
    /// result is the same as [`CausalLm::forward`] on its tokens alone, bit
    /// for bit. The caller bounds the batch size.
    fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        items
            .iter_mut()
            .map(|it| self.forward(it.state, it.tokens, it.logits))
            .collect()
    }
}

/// Builds a model of one architecture from its file.
pub type LoadFn = fn(Arc<GgufFile>, Arc<dyn Backend>) -> Result<Box<dyn CausalLm>, ModelError>;

/// One architecture this crate runs.
pub struct Architecture {
    /// `general.architecture`.
    pub name: &'static str,
    /// Builds the model from its file.
    pub load: LoadFn,
    /// Lines describing what the architecture adds to a text decoder
    /// (`inspect` prints them; empty for none).
    pub describe: fn(&GgufFile) -> Vec<String>,
}

/// The architectures this crate runs. A new architecture is a folder under
/// `models/` and a row here.
pub const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        name: "llama",
        load: |file, backend| Ok(Box::new(llama::Llama::load(file, backend)?)),
        describe: |_| Vec::new(),
    },
    Architecture {
        name: "mllama",
        load: |file, backend| Ok(Box::new(mllama::Mllama::load(file, backend)?)),
        describe: mllama::describe,
    },
];

fn supported_list() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn architecture(file: &GgufFile) -> Result<&'static Architecture, ModelError> {
    let arch = file.architecture()?;
    ARCHITECTURES
        .iter()
        .find(|a| a.name == arch)
        .ok_or_else(|| ModelError::UnsupportedArchitecture {
            arch: arch.to_string(),
        })
}

/// Builds the model named by the file's `general.architecture`.
pub fn load_model(
    file: Arc<GgufFile>,
    backend: Arc<dyn Backend>,
) -> Result<Box<dyn CausalLm>, ModelError> {
    (architecture(&file)?.load)(file, backend)
}

/// Lines describing what the file's architecture adds to a text decoder
/// (`inspect` prints them): the vision tower of a vision model. Empty for
/// text-only and unknown architectures.
pub fn describe(file: &GgufFile) -> Vec<String> {
    architecture(file).map_or_else(|_| Vec::new(), |a| (a.describe)(file))
}

/// Refuses token ids past the `n_rows` rows of the embedding.
pub(crate) fn check_ids(tokens: &[u32], n_rows: usize) -> Result<(), ModelError> {
    match tokens.iter().find(|&&id| id as usize >= n_rows) {
        Some(&id) => Err(ModelError::TokenOutOfRange {
            id,
            n_vocab: n_rows,
        }),
        None => Ok(()),
    }
}

/// Elements and bytes of every tensor in the file.
pub(crate) fn count_weights(file: &GgufFile) -> (u64, u64) {
    file.tensors()
        .iter()
        .fold((0, 0), |(n, b), t| (n + t.n_elements(), b + t.n_bytes()))
}
