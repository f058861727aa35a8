//! Speculative decoding: tokens proposed cheaply (by a small draft model,
//! or looked up in the text so far) are checked by the target model in one
//! batched forward pass, so one read of the target's weights can yield
//! several tokens.
//!
//! The target's output does not change: greedy decoding keeps a drafted
//! token only where it is the target's argmax, and sampling keeps it by the
//! speculative sampling rule ([`edgellama_sampler::Sampler::verify`]), so
//! tokens come out distributed as the target's. Rejected positions are
//! truncated from the target's KV sequence, and the sampler only ever
//! records tokens that were kept.

mod draft_model;
mod ngram;
mod pacer;

pub use draft_model::DraftModel;
pub use ngram::NgramSimple;
pub use pacer::Pacer;

use crate::EngineError;
use edgellama_tokenizer::Tokenizer;
use std::str::FromStr;
use thiserror::Error;

/// Drafted tokens checked per step at most, whatever a drafter proposes: a
/// verification batch of this many drafts plus the last sampled token stays
/// below the CPU backend's f32 attention route
/// ([`edgellama_backend::FA_TILE_Q`]), so every position is computed as
/// decoding one token at a time computes it, bit for bit.
pub const MAX_DRAFT: usize = edgellama_backend::FA_TILE_Q - 2;

/// Tokens proposed for the positions after the last sampled one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub tokens: Vec<u32>,
    /// For each token, the distribution it was drawn from as `(id, p)`;
    /// empty when the drafts are functions of the context (greedy drafts,
    /// n-gram lookups).
    pub dists: Vec<Vec<(u32, f32)>>,
}

impl Draft {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The distribution of draft `i`, if it was drawn from one.
    pub fn dist(&self, i: usize) -> Option<&[(u32, f32)]> {
        self.dists.get(i).map(Vec::as_slice)
    }

    fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.dists.truncate(n);
    }

    /// The draft as a step may check it: at most `room` tokens and
    /// [`MAX_DRAFT`], ended before the model's `image_token` (it stands for
    /// an image, which only a prompt can bring, so a lookup that copies one
    /// from the text must not propose it), and empty when fewer than
    /// `n_min` (at least 1) are left.
    pub fn fit(mut self, room: usize, n_min: usize, image_token: Option<u32>) -> Draft {
        let image_at = image_token.and_then(|t| self.tokens.iter().position(|&x| x == t));
        self.truncate(room.min(MAX_DRAFT).min(image_at.unwrap_or(usize::MAX)));
        if self.tokens.len() < n_min.max(1) {
            self.truncate(0);
        }
        self
    }
}

/// Something that proposes the next tokens of a sequence.
pub trait Drafter: Send {
    /// Proposes at most `n_max` tokens (and at most its own limit) to follow
    /// `history`: every token of the sequence, the prompt included, ending
    /// with the last sampled one (not yet evaluated by the target).
    fn draft(&mut self, history: &[u32], n_max: usize) -> Result<Draft, EngineError>;

    /// Told how many of the `n_drafted` tokens of its last draft the target
    /// kept, for drafters that size their drafts by how they fare.
    fn feedback(&mut self, _n_drafted: usize, _n_accepted: usize) {}
}

/// Drafters tried in order; the first one that proposes anything wins (an
/// n-gram lookup costs nothing when it misses, so it goes before a model).
pub struct DrafterChain {
    drafters: Vec<Box<dyn Drafter>>,
    /// Which drafter made the last draft.
    last: Option<usize>,
}

impl DrafterChain {
    pub fn new(drafters: Vec<Box<dyn Drafter>>) -> DrafterChain {
        DrafterChain {
            drafters,
            last: None,
        }
    }
}

impl Drafter for DrafterChain {
    fn draft(&mut self, history: &[u32], n_max: usize) -> Result<Draft, EngineError> {
        self.last = None;
        for (i, d) in self.drafters.iter_mut().enumerate() {
            let draft = d.draft(history, n_max)?;
            if !draft.is_empty() {
                self.last = Some(i);
                return Ok(draft);
            }
        }
        Ok(Draft::default())
    }

    fn feedback(&mut self, n_drafted: usize, n_accepted: usize) {
        if let Some(i) = self.last {
            self.drafters[i].feedback(n_drafted, n_accepted);
        }
    }
}

/// How a generation loop uses its drafter (each drafter has its own
/// length limit: `--spec-draft-n-max` for a draft model, the m-gram size for
/// a lookup).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpecParams {
    /// Drafts shorter than this are not checked (`--spec-draft-n-min`).
    pub n_min: usize,
    /// Draft only while drafting pays ([`Pacer`]); otherwise at every step.
    pub paced: bool,
}

impl Default for SpecParams {
    fn default() -> Self {
        SpecParams {
            n_min: 0,
            paced: true,
        }
    }
}

/// Drafted and kept tokens, for closing stats and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Verification steps (target forward passes with drafts).
    pub n_steps: usize,
    pub n_drafted: usize,
    pub n_accepted: usize,
}

impl SpecStats {
    /// Accepted drafts over drafted ones (0 when nothing was drafted).
    pub fn acceptance(&self) -> f64 {
        if self.n_drafted == 0 {
            0.0
        } else {
            self.n_accepted as f64 / self.n_drafted as f64
        }
    }
}

/// `--spec-type`, with llama.cpp's names for the kinds edgellama has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecType {
    None,
    /// A draft model, drafting greedily (or by sampling when the target
    /// samples).
    DraftSimple,
    /// The tokens that followed the last earlier occurrence of the last
    /// `n` tokens.
    NgramSimple,
}

impl SpecType {
    pub const NAMES: &'static [&'static str] = &["none", "draft-simple", "ngram-simple"];
}

#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    #[error("unknown speculative decoding type {0:?} (known: {known})", known = SpecType::NAMES.join(", "))]
    UnknownType(String),
    #[error("the draft model's vocabulary differs from the target's: {0}")]
    VocabMismatch(String),
}

impl FromStr for SpecType {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "none" => Ok(SpecType::None),
            "draft-simple" | "draft" => Ok(SpecType::DraftSimple),
            "ngram-simple" => Ok(SpecType::NgramSimple),
            other => Err(SpecError::UnknownType(other.to_string())),
        }
    }
}

/// Checks that a draft model's tokens mean what the target's do: the same
/// number of tokens, the same text for each, the same end-of-generation
/// tokens. A draft that tokenizes differently could only propose tokens
/// the target rejects, or worse, ids it reads as other text.
pub fn check_vocab(target: &Tokenizer, draft: &Tokenizer) -> Result<(), SpecError> {
    let (nt, nd) = (target.vocab_size(), draft.vocab_size());
    if nt != nd {
        return Err(SpecError::VocabMismatch(format!(
            "{nd} tokens in the draft, {nt} in the target"
        )));
    }
    if let Some(id) = (0..nt as u32).find(|&id| target.token_text(id) != draft.token_text(id)) {
        return Err(SpecError::VocabMismatch(format!(
            "token {id} is {:?} in the draft and {:?} in the target",
            draft.token_text(id).unwrap_or_default(),
            target.token_text(id).unwrap_or_default()
        )));
    }
    if target.eog_ids() != draft.eog_ids() {
        return Err(SpecError::VocabMismatch(format!(
            "end-of-generation tokens {:?} in the draft, {:?} in the target",
            draft.eog_ids(),
            target.eog_ids()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(tokens: &[u32]) -> Draft {
        Draft {
            tokens: tokens.to_vec(),
            dists: Vec::new(),
        }
    }

    #[test]
    fn a_draft_fits_its_room_stops_before_an_image_and_may_be_too_short() {
        let d = draft(&[1, 2, 3, 4, 5]);
        assert_eq!(d.clone().fit(3, 0, None).tokens, [1, 2, 3]);
        assert_eq!(d.clone().fit(9, 0, Some(4)).tokens, [1, 2, 3]);
        assert_eq!(d.clone().fit(9, 4, Some(4)).tokens, [] as [u32; 0]);
        assert_eq!(d.clone().fit(0, 0, None).tokens, [] as [u32; 0]);
        let long = draft(&vec![7; MAX_DRAFT + 5]);
        assert_eq!(long.fit(usize::MAX, 0, None).tokens.len(), MAX_DRAFT);
    }
}
