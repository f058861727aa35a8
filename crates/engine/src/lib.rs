//! The engine: drives a model through prompt processing and generation,
//! applies sampling and stop conditions, and scores text (perplexity).

pub mod batch;
pub mod decode;
mod generate;
pub mod guard;
mod perplexity;
pub mod spec;
pub mod stop;

pub use generate::{
    generate, generate_after, generate_speculative, GenerateParams, GenerationStats, PROMPT_CHUNK,
};
pub use perplexity::{perplexity, PerplexityResult};

use thiserror::Error;

/// Why a reply ended: one type for the generation loop, the batching
/// scheduler and the servers on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token (EOS, end of turn, end
    /// of message).
    EndOfGeneration,
    /// The text produced the stop string at this index of the request's
    /// stop strings.
    StopString(usize),
    MaxTokens,
    /// The context is full; nothing was cut silently.
    ContextFull,
    /// The caller asked to stop (the generation loop's callback).
    Cancelled,
    /// A guard judged the reply unsafe and stopped it (a server's output
    /// shield; the engine itself never ends a reply so).
    ContentFilter,
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] edgellama_models::ModelError),
    #[error(transparent)]
    Sampler(#[from] edgellama_sampler::SamplerError),
    #[error("the prompt is empty after tokenization")]
    EmptyPrompt,
    #[error("the prompt has {n_prompt} tokens but the context holds only {n_ctx}; use a larger context (-c)")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
    #[error("the text tokenizes to {n_tokens} tokens; perplexity with a context of {n_ctx} needs at least {need}")]
    TextTooShort {
        n_tokens: usize,
        n_ctx: usize,
        need: usize,
    },
    #[error("perplexity needs a context of at least 4 tokens, got {0}")]
    ContextTooSmall(usize),
}
