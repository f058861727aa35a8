use crate::EngineError;
use edgellama_models::{CausalLm, Logits, SeqState};
use edgellama_sampler::{Sampler, SamplingParams};
use edgellama_tokenizer::{StreamDecoder, Tokenizer};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Stop after this many new tokens (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    MaxTokens,
    /// The context is full; nothing was cut silently.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct GenerationStats {
    pub n_prompt: usize,
    pub prompt_time: Duration,
    pub n_generated: usize,
    pub gen_time: Duration,
    pub stop: StopReason,
    pub tokens: Vec<u32>,
}

impl GenerationStats {
    pub fn prompt_tps(&self) -> f64 {
        self.n_prompt as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    pub fn gen_tps(&self) -> f64 {
        self.n_generated as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// Evaluates `prompt` and generates until a stop condition, calling
/// `on_text` with each piece of decoded text as soon as it is whole UTF-8.
/// `on_text` returns `false` to stop early.
pub fn generate(
    model: &dyn CausalLm,
    state: &mut SeqState,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<GenerationStats, EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if state.n_past + prompt.len() > state.n_ctx() {
        return Err(EngineError::PromptTooLong {
            n_prompt: state.n_past + prompt.len(),
            n_ctx: state.n_ctx(),
        });
    }
    let mut sampler = Sampler::new(&params.sampling)?;
    let eog = tokenizer.eog_ids();
    let mut decoder = StreamDecoder::new(tokenizer, false);

    let t0 = Instant::now();
    let mut logits = model.forward(state, prompt, Logits::Last)?;
    let prompt_time = t0.elapsed();

    let t1 = Instant::now();
    let mut tokens = Vec::new();
    let stop = loop {
        if params.max_tokens.is_some_and(|m| tokens.len() >= m) {
            break StopReason::MaxTokens;
        }
        let id = sampler.sample(&logits)?;
        if eog.contains(&id) {
            break StopReason::EndOfGeneration;
        }
        tokens.push(id);
        if let Some(text) = decoder.push(id) {
            if !on_text(&text) {
                break StopReason::Cancelled;
            }
        }
        if state.n_past >= state.n_ctx() {
            break StopReason::ContextFull;
        }
        logits = model.forward(state, &[id], Logits::Last)?;
    };
    if let Some(rest) = decoder.flush() {
        on_text(&rest);
    }
    Ok(GenerationStats {
        n_prompt: prompt.len(),
        prompt_time,
        n_generated: tokens.len(),
        gen_time: t1.elapsed(),
        stop,
        tokens,
    })
}
