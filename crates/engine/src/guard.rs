//! Llama Guard 3 checks on a running engine: the verdict and its scores.
//!
//! A check renders the guard's prompt (see
//! [`edgellama_tokenizer::chat::guard`]), decodes the reply greedily and
//! reads two kinds of numbers from the model's distributions:
//!
//! - `unsafe_probability`: the probability of the token `unsafe` where the
//!   verdict word starts, as the model card defines the score. The templates
//!   end at the assistant header without its `\n\n`, which real guard models
//!   emit first, so the position is the first one of the greedy reply whose
//!   token is not whitespace (or the end of the reply, if it ends first); the
//!   softmax is over the whole vocabulary. Nothing is appended to the prompt.
//! - `category_scores`: for each listed category, `unsafe_probability` times
//!   the probability that the category is the first one named, read where it
//!   would be named: after the reply's leading whitespace and `unsafe\n` plus
//!   the code's first tokens (`S` for `S1`..`S14`), at the code's last token
//!   (`1`..`14`). The format tokens in between are taken as given (a guard
//!   writes them with probability near 1), so the scores add up to at most
//!   `unsafe_probability`. One short extra request reads them; a shield
//!   that only needs the verdict skips it.
//!
//! `flagged` is `unsafe_probability >= threshold`. The verdict and the
//! categories are the greedy reply's, parsed as Llama Stack parses them;
//! a reply that is neither (a model that is not a guard) falls back to the
//! score, with no categories.

use crate::batch::{EngineHandle, Event, Request, SubmitError};
use edgellama_models::PreparedImage;
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::chat::guard::{
    listed_categories, parse_verdict, render_guard_prompt, verdict_progress, GuardPolicy,
    VerdictProgress,
};
use edgellama_tokenizer::{ChatMessage, ChatTemplate, ChatTemplateError, Tokenizer};
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;

/// Greedy reply tokens read at most: whitespace, the verdict, a newline and
/// a few codes.
const MAX_REPLY_TOKENS: usize = 24;

#[derive(Debug, Error)]
pub enum GuardError {
    #[error(transparent)]
    Prompt(#[from] ChatTemplateError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("the guard's generation failed: {0}")]
    Generation(String),
    #[error("the guard model's vocabulary has no single `unsafe` token: not a Llama Guard model")]
    NoVerdictToken,
    #[error("invalid guard threshold {0}: it must be within [0, 1]")]
    Threshold(f32),
}

/// What a check asks for.
#[derive(Debug, Clone)]
pub struct GuardOptions {
    pub policy: GuardPolicy,
    /// `flagged` from this `unsafe_probability` on.
    pub threshold: f32,
    /// Read the per-category scores (one more short request).
    pub category_scores: bool,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            policy: GuardPolicy::default(),
            threshold: 0.5,
            category_scores: true,
        }
    }
}

/// A check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardReport {
    /// The verdict: the reply's, or the score's where the reply states none.
    pub unsafe_: bool,
    /// Category codes the reply names (after exclusions).
    pub categories: Vec<String>,
    pub unsafe_probability: f64,
    /// Per listed category, in the prompt's order (empty unless asked).
    pub category_scores: Vec<(String, f64)>,
    pub flagged: bool,
    /// The greedy reply as the model wrote it.
    pub reply: String,
    /// Tokens of the guard prompt.
    pub prompt_tokens: usize,
}

impl GuardReport {
    /// `guard --json`'s object (and the `llama_guard` member of a
    /// moderation result).
    pub fn to_json(&self) -> serde_json::Value {
        let scores: serde_json::Map<String, serde_json::Value> = self
            .category_scores
            .iter()
            .map(|(c, s)| (c.clone(), serde_json::json!(s)))
            .collect();
        serde_json::json!({
            "verdict": if self.unsafe_ { "unsafe" } else { "safe" },
            "categories": self.categories,
            "unsafe_probability": self.unsafe_probability,
            "category_scores": scores,
            "flagged": self.flagged,
        })
    }
}

/// A guard model on its engine.
#[derive(Clone)]
pub struct Guard {
    engine: EngineHandle,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    unsafe_id: u32,
}

/// Events of one request, collected.
struct Collected {
    ids: Vec<u32>,
    /// Log-probabilities of the watched tokens at each generated position,
    /// the ending token's last where one ended the reply.
    watched: Vec<Vec<f32>>,
    text: String,
}

impl Guard {
    pub fn new(
        engine: EngineHandle,
        tokenizer: Arc<Tokenizer>,
        template: Arc<ChatTemplate>,
    ) -> Result<Guard, GuardError> {
        let unsafe_id = match tokenizer.encode("unsafe", false, false)[..] {
            [id] => id,
            _ => return Err(GuardError::NoVerdictToken),
        };
        Ok(Guard {
            engine,
            tokenizer,
            template,
            unsafe_id,
        })
    }

    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// The rendered guard prompt.
    pub fn prompt_text(
        &self,
        messages: &[ChatMessage],
        policy: &GuardPolicy,
    ) -> Result<String, GuardError> {
        Ok(render_guard_prompt(&self.template, messages, policy)?)
    }

    /// Judges the last turn of `messages`.
    pub async fn check(
        &self,
        messages: &[ChatMessage],
        opts: &GuardOptions,
    ) -> Result<GuardReport, GuardError> {
        self.check_with_images(messages, &[], opts).await
    }

    /// [`Guard::check`] for a vision guard (Llama Guard 3 11B-Vision): the
    /// conversation's image parts make its template write `<|image|>`, and
    /// `images` are the prepared images of those tokens (its template
    /// writes one, so one image).
    pub async fn check_with_images(
        &self,
        messages: &[ChatMessage],
        images: &[Arc<PreparedImage>],
        opts: &GuardOptions,
    ) -> Result<GuardReport, GuardError> {
        if !(0.0..=1.0).contains(&opts.threshold) {
            return Err(GuardError::Threshold(opts.threshold));
        }
        let text = self.prompt_text(messages, &opts.policy)?;
        let prompt = self.template.encode(&self.tokenizer, &text);
        let reply = self
            .run(
                prompt.clone(),
                images,
                vec![self.unsafe_id],
                MAX_REPLY_TOKENS,
                true,
            )
            .await?;
        // The verdict position: the first token that is not whitespace, or
        // the ending token.
        let at = reply
            .ids
            .iter()
            .position(|&id| !self.is_whitespace(id))
            .unwrap_or(reply.ids.len());
        let lead = &reply.ids[..at];
        // The verdict position's distribution as the last position of a
        // prompt: prompt positions take the backend's f32 attention route, a
        // decoding step its F16 one, and the score should not depend on
        // that. With no leading whitespace it already is one.
        let verdict = if lead.is_empty() {
            reply.watched.first().cloned()
        } else {
            let mut forced = prompt.clone();
            forced.extend_from_slice(lead);
            let v = self
                .run(forced, images, vec![self.unsafe_id], 1, false)
                .await?;
            v.watched.first().cloned()
        };
        let lp = verdict
            .and_then(|w| w.first().copied())
            .unwrap_or(f32::NEG_INFINITY);
        let unsafe_probability = (lp as f64).exp();
        let flagged = unsafe_probability >= opts.threshold as f64;
        let (unsafe_, categories) = match parse_verdict(&reply.text, &opts.policy.excluded) {
            Some(v) => (v.unsafe_, v.categories),
            None => (flagged, Vec::new()),
        };
        let category_scores = if opts.category_scores {
            let mut codes = listed_categories(&text);
            if codes.is_empty() {
                codes = opts.policy.listed().into_iter().map(|(c, _)| c).collect();
            }
            self.category_scores(&prompt, images, lead, &codes, unsafe_probability)
                .await?
        } else {
            Vec::new()
        };
        Ok(GuardReport {
            unsafe_,
            categories,
            unsafe_probability,
            category_scores,
            flagged,
            reply: reply.text,
            prompt_tokens: prompt.len(),
        })
    }

    fn is_whitespace(&self, id: u32) -> bool {
        if self.tokenizer.is_eog(id) {
            return false;
        }
        let piece = self.tokenizer.piece(id, false);
        !piece.is_empty() && piece.iter().all(|b| b.is_ascii_whitespace())
    }

    /// See the module note. Codes are grouped by their tokens before the
    /// last, one request per group.
    async fn category_scores(
        &self,
        prompt: &[u32],
        images: &[Arc<PreparedImage>],
        lead: &[u32],
        codes: &[String],
        unsafe_probability: f64,
    ) -> Result<Vec<(String, f64)>, GuardError> {
        let mut groups: BTreeMap<Vec<u32>, Vec<(usize, u32)>> = BTreeMap::new();
        for (i, code) in codes.iter().enumerate() {
            let mut ids = self
                .tokenizer
                .encode(&format!("unsafe\n{code}"), false, false);
            let Some(last) = ids.pop() else { continue };
            groups.entry(ids).or_default().push((i, last));
        }
        let mut scores = vec![0.0f64; codes.len()];
        for (prefix, members) in groups {
            let mut forced = prompt.to_vec();
            forced.extend_from_slice(lead);
            forced.extend_from_slice(&prefix);
            let watch = members.iter().map(|m| m.1).collect();
            let got = self.run(forced, images, watch, 1, false).await?;
            let Some(w) = got.watched.first() else {
                continue;
            };
            for (k, &(i, _)) in members.iter().enumerate() {
                scores[i] = unsafe_probability * (w[k] as f64).exp();
            }
        }
        Ok(codes.iter().cloned().zip(scores).collect())
    }

    /// One greedy request, collected; with `verdict_only` it ends (and the
    /// generation is cancelled) once the reply's verdict is complete or the
    /// reply is no verdict at all.
    async fn run(
        &self,
        prompt: Vec<u32>,
        images: &[Arc<PreparedImage>],
        watch: Vec<u32>,
        max_tokens: usize,
        verdict_only: bool,
    ) -> Result<Collected, GuardError> {
        let mut req = Request::new(prompt, SamplingParams::greedy());
        req.max_tokens = Some(max_tokens);
        req.watch = watch;
        req.images = images.to_vec();
        let mut rx = self.engine.submit(req)?;
        let mut out = Collected {
            ids: Vec::new(),
            watched: Vec::new(),
            text: String::new(),
        };
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token(t) => {
                    out.ids.push(t.id);
                    out.text.push_str(&t.text);
                    out.watched
                        .push(t.logprob.map(|l| l.watched).unwrap_or_default());
                    if verdict_only && verdict_progress(&out.text) != VerdictProgress::Open {
                        return Ok(out);
                    }
                }
                Event::Done(d) => {
                    out.text.push_str(&d.tail);
                    if let Some(l) = d.end_logprob {
                        out.watched.push(l.watched);
                    }
                    return Ok(out);
                }
                Event::Error(e) => return Err(GuardError::Generation(e)),
            }
        }
        Err(GuardError::Generation("the engine stopped".into()))
    }
}
