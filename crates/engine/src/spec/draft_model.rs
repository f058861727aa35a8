//! Drafting with a small model of the same vocabulary (llama.cpp's
//! `draft-simple`): it keeps its own sequence in step with the target's
//! text and proposes the tokens it would generate next.

use super::{Draft, Drafter};
use crate::generate::PROMPT_CHUNK;
use crate::EngineError;
use edgellama_models::{CausalLm, Logits, SeqState};
use edgellama_sampler::{Sampler, SamplingParams};
use std::sync::Arc;

/// The most tokens a draft model reads to catch up with the text.
pub const WINDOW: usize = 64;

pub struct DraftModel {
    model: Arc<dyn CausalLm>,
    state: SeqState,
    /// The tokens in `state`, in order: those of the text from `offset` on.
    cached: Vec<u32>,
    offset: usize,
    sampler: Sampler,
    /// Tokens proposed per step at most (`--spec-draft-n-max`).
    n_max: usize,
    /// A greedy draft stops where its best token is less likely than this
    /// (`--spec-draft-p-min`).
    p_min: f32,
    greedy: bool,
}

impl DraftModel {
    /// A drafter over `state` (a sequence of the draft model's own) that
    /// proposes its most likely tokens, stopping early where the best one
    /// is less likely than `p_min`. Such drafts are functions of the text, so
    /// the target checks them by drawing its own token and comparing
    /// ([`edgellama_sampler::Sampler::verify`]): with a seed, a sampled reply
    /// is then the one decoding without drafts gives, token for token.
    pub fn new(
        model: Arc<dyn CausalLm>,
        state: SeqState,
        n_max: usize,
        p_min: f32,
    ) -> Result<DraftModel, EngineError> {
        Ok(DraftModel {
            model,
            state,
            cached: Vec::new(),
            offset: 0,
            sampler: Sampler::new(&SamplingParams::greedy())?,
            n_max,
            p_min,
            greedy: true,
        })
    }

    /// Drafts drawn from the draft model's distribution under the target's
    /// temperature and truncation (not its penalties or biases, which the
    /// target applies when it checks), checked by the speculative sampling
    /// rule. Where the two models' distributions are close this keeps more
    /// drafts than greedy ones; a reply's tokens then depend on which
    /// positions were drafted, though their distribution does not. A greedy
    /// `target` keeps greedy drafts.
    pub fn sampled(mut self, target: &SamplingParams) -> Result<DraftModel, EngineError> {
        if target.temperature <= 0.0 {
            return Ok(self);
        }
        let params = SamplingParams {
            penalty_last_n: 0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            // Not the target's seed: the drafts' randomness must be
            // independent of the checks'.
            seed: target.seed ^ 0x5eed_d4af_7000_0001,
            ..target.clone()
        };
        self.sampler = Sampler::new(&params)?;
        self.greedy = false;
        Ok(self)
    }

    /// Brings the draft's sequence to `history` and returns the logits
    /// after its last token, leaving room for `n_max` drafts. When that
    /// would mean reading more than [`WINDOW`] tokens (a prompt, the text
    /// of a pause in drafting) or the draft's context is full, the draft
    /// starts over on the last [`WINDOW`] tokens alone: its drafts are only
    /// proposals, and a bounded catch-up keeps a pause cheap.
    fn catch_up(&mut self, history: &[u32], n_max: usize) -> Result<Vec<f32>, EngineError> {
        let n_ctx = self.state.n_ctx();
        let window = WINDOW.min(n_ctx - n_max);
        let start = self.offset.min(history.len());
        let mut common = if start == self.offset {
            self.cached
                .iter()
                .zip(&history[start..])
                .take_while(|(a, b)| a == b)
                .count()
        } else {
            0
        };
        let new = history.len() - start - common;
        if start != self.offset || new > window || history.len() - start + n_max > n_ctx {
            self.offset = history.len().saturating_sub(window);
            self.state.truncate(0);
            self.cached.clear();
            return self.feed(&history[self.offset..]);
        }
        // The last token is evaluated again when nothing else is new: its
        // logits are what the draft starts from.
        if new == 0 {
            common -= 1;
        }
        self.state.truncate(common);
        self.cached.truncate(common);
        self.feed(&history[start + common..])
    }

    /// Appends `tokens` to the draft's sequence; the logits after the last.
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let mut logits = Vec::new();
        for chunk in tokens.chunks(PROMPT_CHUNK) {
            logits = self.model.forward(&mut self.state, chunk, Logits::Last)?;
            self.cached.extend_from_slice(chunk);
        }
        Ok(logits)
    }
}

impl Drafter for DraftModel {
    fn draft(&mut self, history: &[u32], n_max: usize) -> Result<Draft, EngineError> {
        let n_max = n_max.min(self.n_max);
        let mut draft = Draft::default();
        if n_max == 0 || history.is_empty() || n_max >= self.state.n_ctx() {
            return Ok(draft);
        }
        let mut logits = self.catch_up(history, n_max)?;
        loop {
            if self.greedy && self.p_min > 0.0 {
                let (_, p) = self.sampler.top(&logits)?;
                if p < self.p_min {
                    break;
                }
            }
            let (token, q) = self.sampler.draw_draft(&logits)?;
            draft.tokens.push(token);
            if !self.greedy {
                draft.dists.push(q);
            }
            if draft.tokens.len() == n_max {
                break;
            }
            logits = self
                .model
                .forward(&mut self.state, &[token], Logits::Last)?;
            self.cached.push(token);
        }
        Ok(draft)
    }
}
