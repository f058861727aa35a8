//! Continuous batching: many requests share one model on a scheduler
//! thread.
//!
//! [`Engine::start`] spawns the thread and returns an [`EngineHandle`];
//! [`EngineHandle::submit`] queues a [`Request`] and returns the channel its
//! [`Event`]s arrive on. Each step the scheduler admits queued requests into
//! free slots (one KV cache each, reusing the longest usable prefix a slot
//! still holds), feeds every active sequence its next tokens (one sampled
//! token for those generating, a bounded chunk of prompt for those still
//! reading it) through a single [`CausalLm::forward_batch`], then samples.
//! Requests join and leave between steps; a request whose receiver is
//! dropped frees its slot at the next step.
//!
//! A request's output does not depend on its neighbours: the batched
//! forward pass is bit-identical per sequence to a solo one, each request
//! samples with its own seeded sampler, and cached prefixes are reused only
//! where they hold exactly the numbers a fresh run would compute (see
//! [`ROUTE_SPLIT`]).

mod json;
mod metrics;
mod pattern;
mod scheduler;

pub use json::{JsonConstraint, JsonSchemaError};
pub use metrics::{EngineMetrics, Histogram, MetricsSnapshot};

use crate::spec::{DraftModel, Drafter, DrafterChain, NgramSimple};
pub use crate::FinishReason;
pub use edgellama_backend::{KvType, DEFAULT_BLOCK_SIZE};
use edgellama_models::{CausalLm, ModelError, PreparedImage};
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::Tokenizer;
use scheduler::{Pending, Shared};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc;

/// Segments of fewer tokens than this go through the CPU backend's F16
/// attention route, longer ones through its f32 route (llama.cpp's
/// `GGML_FA_TILE_Q`); the two round differently. A position's cached keys
/// and values therefore depend on which route computed it, and a cached
/// prefix is reused only when a fresh run of the new prompt would have
/// taken the same route for every reused position.
pub const ROUTE_SPLIT: usize = edgellama_backend::FA_TILE_Q;

/// Speculative decoding in the server: how sequences draft, and when.
#[derive(Clone)]
pub struct SpecConfig {
    /// Lookup drafting from each sequence's own text.
    pub ngram: Option<NgramSimple>,
    /// A draft model, with its most drafted tokens per step and the
    /// probability below which it stops (`--spec-draft-n-max`,
    /// `--spec-draft-p-min`). Each sequence gets a sequence of its own in
    /// it.
    pub draft: Option<(Arc<dyn CausalLm>, usize, f32)>,
    /// Drafts shorter than this are not checked.
    pub n_min: usize,
    /// Drafts are added to a step only while its decoding rows, drafts
    /// included, stay within this, and never to a step that also reads a
    /// prompt: past a few rows a CPU step is bound by arithmetic, and more
    /// rows cost as much as the tokens they might save.
    pub max_rows: usize,
}

impl std::fmt::Debug for SpecConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecConfig")
            .field("ngram", &self.ngram)
            .field(
                "draft",
                &self
                    .draft
                    .as_ref()
                    .map(|d| (d.0.info().architecture.clone(), d.1, d.2)),
            )
            .field("n_min", &self.n_min)
            .field("max_rows", &self.max_rows)
            .finish()
    }
}

/// Decoding rows per step up to which drafts are added by default: where
/// a verification batch on this CPU backend costs about one decoding step
/// (measured on SmolLM2: 3 to 8 rows cost what 1 does).
pub const SPEC_MAX_ROWS: usize = 8;

impl SpecConfig {
    /// The drafter of one sequence of at most `n_ctx` positions (`None`
    /// when the config drafts nothing).
    pub fn drafter(&self, n_ctx: usize) -> Result<Option<Box<dyn Drafter>>, ModelError> {
        let mut chain: Vec<Box<dyn Drafter>> = Vec::new();
        if let Some(n) = self.ngram {
            chain.push(Box::new(NgramSimple::new(n.size_n, n.size_m)));
        }
        if let Some((model, n_max, p_min)) = &self.draft {
            let state = model.new_state(n_ctx)?;
            let d = DraftModel::new(model.clone(), state, *n_max, *p_min)
                .map_err(|e| ModelError::Config(e.to_string()))?;
            chain.push(Box::new(d));
        }
        Ok(match chain.len() {
            0 => None,
            1 => chain.pop(),
            _ => Some(Box::new(DrafterChain::new(chain))),
        })
    }
}

/// How the scheduler is sized.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded together (slots, each a sequence of the KV pool).
    pub n_parallel: usize,
    /// Positions of the KV pool that every sequence draws from (llama-server's
    /// `-c`): prompts and replies of all slots together.
    pub n_ctx: usize,
    /// Whether one sequence may fill the whole pool (`--kv-unified`); else
    /// each holds at most `n_ctx / n_parallel` positions, as llama-server's
    /// slots do.
    pub kv_unified: bool,
    /// The cache types (`-ctk`, `-ctv`).
    pub type_k: KvType,
    pub type_v: KvType,
    /// Positions per block of the pool.
    pub block_size: usize,
    /// The model's training context, the most one sequence may hold
    /// whatever the pool's size (0: no ceiling).
    pub n_ctx_train: usize,
    /// Requests that may wait while every slot is busy; one more gets
    /// [`SubmitError::QueueFull`].
    pub max_queue: usize,
    /// Tokens per forward step, decode tokens and prompt chunks together:
    /// bounds how long a long prompt can hold up the others.
    pub batch_tokens: usize,
    /// Speculative decoding, when asked for.
    pub spec: Option<SpecConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            n_parallel: 4,
            n_ctx: 4096,
            kv_unified: false,
            type_k: KvType::F16,
            type_v: KvType::F16,
            block_size: DEFAULT_BLOCK_SIZE,
            n_ctx_train: 0,
            max_queue: 64,
            batch_tokens: 512,
            spec: None,
        }
    }
}

impl EngineConfig {
    /// The most positions one sequence may hold.
    pub fn n_ctx_seq(&self) -> usize {
        let n = if self.kv_unified {
            self.n_ctx
        } else {
            self.n_ctx / self.n_parallel.max(1)
        };
        match self.n_ctx_train {
            0 => n,
            train => n.min(train),
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("n_parallel must be at least 1")]
    NoSlots,
    #[error("each of the parallel sequences needs a context of at least 2 positions, got {0} (-c is shared by all of them)")]
    ContextTooSmall(usize),
    #[error("batch_tokens ({batch_tokens}) must be at least n_parallel + {ROUTE_SPLIT} = {need}")]
    BatchTooSmall { batch_tokens: usize, need: usize },
    #[error("cannot allocate the slots' caches: {0}")]
    Model(String),
}

/// Something a request asks the output to satisfy, checked byte by byte
/// on the text of the tokens: tokens whose text would break it are masked
/// out before sampling, and end-of-generation is allowed only once the
/// output is complete.
pub trait Constraint: Send {
    /// Whether `bytes` may come next.
    fn allows(&self, bytes: &[u8]) -> bool;
    /// Records bytes that were generated (already checked by `allows`).
    fn accept(&mut self, bytes: &[u8]);
    /// Whether the output so far is complete and generation may end.
    fn can_end(&self) -> bool;
}

/// One generation request, already tokenized.
pub struct Request {
    pub prompt: Vec<u32>,
    /// New tokens at most; `None`: until the context is full.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Texts that end generation; they are never sent, not even in part.
    pub stop: Vec<String>,
    /// Send control tokens (such as `<|python_tag|>`) as their text.
    pub special: bool,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    /// Report, at every generated position, the log-probabilities of these
    /// tokens (a classifier reading its label's probability, such as a
    /// guard model's `unsafe`); implies per-token log-probabilities.
    pub watch: Vec<u32>,
    pub constraint: Option<Box<dyn Constraint>>,
    /// The images of the prompt's image tokens, in order (vision models).
    pub images: Vec<Arc<PreparedImage>>,
    /// Whether the engine may draft for this request (when it drafts at
    /// all); the reply is the same either way.
    pub speculative: bool,
}

impl Request {
    pub fn new(prompt: Vec<u32>, sampling: SamplingParams) -> Request {
        Request {
            images: Vec::new(),
            prompt,
            max_tokens: None,
            sampling,
            stop: Vec::new(),
            special: false,
            logprobs: None,
            watch: Vec::new(),
            constraint: None,
            speculative: true,
        }
    }
}

/// A token's log-probability under the model (before sampling settings),
/// and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    /// `(id, logprob)`, most likely first.
    pub top: Vec<(u32, f32)>,
    /// The log-probabilities of [`Request::watch`]'s tokens, in its order.
    pub watched: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    pub id: u32,
    /// Text this token released: empty while held back (part of a UTF-8
    /// character, or possibly the start of a stop string).
    pub text: String,
    pub logprob: Option<TokenLogprob>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose cache was reused rather than computed.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub finish: FinishReason,
    /// Text released only at the end (held back until then).
    pub tail: String,
    pub usage: Usage,
    pub time_to_first_token: Duration,
    pub total_time: Duration,
    /// Where an end-of-generation token ended the reply and log-probabilities
    /// were asked for: that token's (it sends no [`TokenEvent`]).
    pub end_logprob: Option<TokenLogprob>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token(TokenEvent),
    Done(Done),
    Error(String),
}

#[derive(Debug, Error, PartialEq)]
pub enum SubmitError {
    #[error("the server is busy: {0} requests are already waiting")]
    QueueFull(usize),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {n_prompt} tokens but the context holds only {n_ctx}")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("the prompt has {tokens} image tokens for {images} images")]
    ImageCount { images: usize, tokens: usize },
    #[error("this model takes no images")]
    NoImageInput,
    #[error(transparent)]
    Sampling(#[from] edgellama_sampler::SamplerError),
    #[error("the engine has stopped")]
    ShutDown,
}

/// Starts the scheduler.
pub struct Engine;

impl Engine {
    /// Makes the KV pool of `n_ctx` positions and `n_parallel` sequences
    /// drawing on it, and starts the scheduler thread; it runs until the
    /// last handle is dropped.
    pub fn start(
        model: Arc<dyn CausalLm>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
    ) -> Result<EngineHandle, ConfigError> {
        if config.n_parallel == 0 {
            return Err(ConfigError::NoSlots);
        }
        if config.n_ctx_seq() < 2 {
            return Err(ConfigError::ContextTooSmall(config.n_ctx_seq()));
        }
        let need = config.n_parallel + ROUTE_SPLIT;
        if config.batch_tokens < need {
            return Err(ConfigError::BatchTooSmall {
                batch_tokens: config.batch_tokens,
                need,
            });
        }
        let metrics = Arc::new(EngineMetrics::new(&config));
        let shared = Arc::new(Shared::new(metrics.clone()));
        let sched = scheduler::Scheduler::new(
            model.clone(),
            tokenizer.clone(),
            config.clone(),
            shared.clone(),
        )
        .map_err(|e| ConfigError::Model(e.to_string()))?;
        let thread = std::thread::Builder::new()
            .name("edgellama-scheduler".into())
            .spawn(move || sched.run())
            .map_err(|e| ConfigError::Model(e.to_string()))?;
        Ok(EngineHandle {
            inner: Arc::new(Inner {
                shared,
                config,
                n_vocab: model.info().n_vocab,
                image_token: model.info().image_token,
                metrics,
                thread: Some(thread),
            }),
        })
    }
}

struct Inner {
    shared: Arc<Shared>,
    config: EngineConfig,
    n_vocab: usize,
    /// Allowed in prompts beyond `n_vocab` (vision models).
    image_token: Option<u32>,
    metrics: Arc<EngineMetrics>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shut_down();
        if let Some(t) = self.thread.take() {
            // The scheduler finishes its current step and exits.
            let _ = t.join();
        }
    }
}

/// The way into a running engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

impl EngineHandle {
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.inner.metrics
    }

    /// Queues a request. Its events arrive on the returned channel, ending
    /// with [`Event::Done`] or [`Event::Error`]; dropping the receiver
    /// cancels the request.
    pub fn submit(&self, req: Request) -> Result<mpsc::UnboundedReceiver<Event>, SubmitError> {
        let n_ctx = self.inner.config.n_ctx_seq();
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.prompt.len() > n_ctx {
            return Err(SubmitError::PromptTooLong {
                n_prompt: req.prompt.len(),
                n_ctx,
            });
        }
        let n_vocab = self.inner.n_vocab;
        let image_token = self.inner.image_token;
        let outside = |id: u32| id as usize >= n_vocab && Some(id) != image_token;
        if let Some(&id) = req.prompt.iter().find(|&&id| outside(id)) {
            return Err(SubmitError::TokenOutOfRange { id, n_vocab });
        }
        if let Some(&id) = req.watch.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(SubmitError::TokenOutOfRange { id, n_vocab });
        }
        if image_token.is_none() && !req.images.is_empty() {
            return Err(SubmitError::NoImageInput);
        }
        let n_image_tokens =
            image_token.map_or(0, |t| req.prompt.iter().filter(|&&x| x == t).count());
        if n_image_tokens != req.images.len() {
            return Err(SubmitError::ImageCount {
                images: req.images.len(),
                tokens: n_image_tokens,
            });
        }
        req.sampling.validate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Pending {
            req,
            tx,
            submitted: Instant::now(),
        };
        self.inner.shared.push(
            pending,
            self.inner.config.n_parallel,
            self.inner.config.max_queue,
        )?;
        Ok(rx)
    }
}
