//! Composable logit processors and seeded sampling.
//!
//! A [`Sampler`] owns a chain of [`LogitProcessor`]s that narrow and reshape a
//! candidate list, then draws one token from what is left. The candidate
//! buffer is reused between tokens, so sampling allocates nothing per token
//! once warmed up.
//!
//! The default chain is llama.cpp's common sampler (`common/sampling.cpp`):
//! logit bias, penalties, top-k, typical-p, top-p, min-p, temperature, then
//! the draw.

pub mod processors;
mod rng;
mod speculative;

pub use processors::{LogitBias, MinP, Penalties, Temperature, TopK, TopP, TypicalP};
pub use rng::Rng;
pub use speculative::Verdict;

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum SamplerError {
    #[error("no logits to sample from")]
    Empty,
    #[error("every token was excluded (by logit biases of -inf or non-finite logits)")]
    AllExcluded,
    #[error("invalid sampling parameter: {0}")]
    InvalidParam(String),
}

/// One candidate token and its logit (or, after [`Candidates::softmax`], its probability).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

/// The working set of a sampling step.
#[derive(Debug, Default, Clone)]
pub struct Candidates {
    pub items: Vec<Candidate>,
    /// Whether `items` is sorted by descending logit.
    pub sorted: bool,
}

impl Candidates {
    pub fn fill(&mut self, logits: &[f32]) {
        self.items.clear();
        self.items
            .extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
                id: i as u32,
                logit: l,
                p: 0.0,
            }));
        self.sorted = false;
    }

    pub fn sort(&mut self) {
        if !self.sorted {
            // Ties keep id order, so results do not depend on the sort's stability.
            self.items
                .sort_unstable_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
            self.sorted = true;
        }
    }

    /// Keeps the `k` best candidates, sorted.
    pub fn truncate_top(&mut self, k: usize) {
        if k >= self.items.len() {
            return;
        }
        if !self.sorted {
            // Partition first so only k items need a full sort.
            self.items.select_nth_unstable_by(k, |a, b| {
                b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
            });
            self.items.truncate(k);
            self.sort();
        } else {
            self.items.truncate(k);
        }
    }

    /// Index of the candidate with the largest logit, the first one on a
    /// tie; `None` when empty.
    pub fn best_index(&self) -> Option<usize> {
        let first = self.items.first()?;
        let mut best = 0usize;
        let mut best_logit = first.logit;
        for (i, x) in self.items.iter().enumerate().skip(1) {
            if x.logit > best_logit {
                best = i;
                best_logit = x.logit;
            }
        }
        Some(best)
    }

    /// Sets `p` to the softmax of the logits over the current candidates.
    /// Candidates at `-inf` get 0; when every one is, all get 0.
    pub fn softmax(&mut self) {
        let max = self
            .items
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            self.items.iter_mut().for_each(|c| c.p = 0.0);
            return;
        }
        let mut sum = 0.0f64;
        for c in self.items.iter_mut() {
            c.p = (c.logit - max).exp();
            sum += c.p as f64;
        }
        for c in self.items.iter_mut() {
            c.p = (c.p as f64 / sum) as f32;
        }
    }
}

/// A step of the sampling chain.
pub trait LogitProcessor: Send {
    /// Narrows or reshapes the candidates.
    fn apply(&mut self, cands: &mut Candidates);
    /// Told about the token finally chosen (for history-based processors).
    fn accept(&mut self, _token: u32) {}
    /// Forgets any history.
    fn reset(&mut self) {}
    /// A short name, for describing a chain.
    fn name(&self) -> &'static str {
        "custom"
    }
}

/// Settings for the usual chain, named and defaulted as llama.cpp's
/// `common_params_sampling`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 or less means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// Locally typical sampling; 1.0 disables.
    pub typical_p: f32,
    /// How many recent tokens the penalties look at; 0 disables them.
    pub penalty_last_n: usize,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// 0.0 disables.
    pub frequency_penalty: f32,
    /// 0.0 disables.
    pub presence_penalty: f32,
    /// Added to the logits of these tokens; `-inf` bans a token.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            penalty_last_n: 64,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with nothing else changed.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |msg: String| Err(SamplerError::InvalidParam(msg));
        if !self.temperature.is_finite() {
            return bad(format!(
                "temperature must be finite, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return bad(format!(
                "typical-p must be in (0, 1], got {}",
                self.typical_p
            ));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat penalty must be a positive number, got {}",
                self.repeat_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return bad(format!(
                "frequency penalty must be finite, got {}",
                self.frequency_penalty
            ));
        }
        if !self.presence_penalty.is_finite() {
            return bad(format!(
                "presence penalty must be finite, got {}",
                self.presence_penalty
            ));
        }
        for &(id, b) in &self.logit_bias {
            if b.is_nan() || b == f32::INFINITY {
                return bad(format!(
                    "logit bias of token {id} must be finite or -inf, got {b}"
                ));
            }
        }
        Ok(())
    }
}

/// A chain of processors followed by a draw (or argmax when greedy).
pub struct Sampler {
    chain: Vec<Box<dyn LogitProcessor>>,
    greedy: bool,
    rng: Rng,
    cands: Candidates,
}

impl Sampler {
    /// Builds llama.cpp's default chain: logit bias, penalties, top-k,
    /// typical-p, top-p, min-p, temperature, draw. Disabled steps are left
    /// out. When greedy, the steps that always keep the most likely token
    /// (top-k, top-p, min-p, temperature) are left out too, as they cannot
    /// change the argmax.
    pub fn new(params: &SamplingParams) -> Result<Sampler, SamplerError> {
        params.validate()?;
        let greedy = params.temperature <= 0.0;
        let mut chain: Vec<Box<dyn LogitProcessor>> = Vec::new();
        if !params.logit_bias.is_empty() {
            chain.push(Box::new(LogitBias::new(params.logit_bias.clone())));
        }
        let penalties = Penalties::new(
            params.penalty_last_n,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        );
        if !penalties.is_disabled() {
            chain.push(Box::new(penalties));
        }
        if !greedy && params.top_k > 0 {
            chain.push(Box::new(TopK(params.top_k)));
        }
        if params.typical_p < 1.0 {
            chain.push(Box::new(TypicalP::new(params.typical_p)));
        }
        if !greedy {
            if params.top_p < 1.0 {
                chain.push(Box::new(TopP(params.top_p)));
            }
            if params.min_p > 0.0 {
                chain.push(Box::new(MinP(params.min_p)));
            }
            chain.push(Box::new(Temperature(params.temperature)));
        }
        Ok(Sampler {
            chain,
            greedy,
            rng: Rng::new(params.seed),
            cands: Candidates::default(),
        })
    }

    /// A sampler from an explicit chain; `greedy` picks the argmax after the chain.
    pub fn from_chain(chain: Vec<Box<dyn LogitProcessor>>, greedy: bool, seed: u64) -> Sampler {
        Sampler {
            chain,
            greedy,
            rng: Rng::new(seed),
            cands: Candidates::default(),
        }
    }

    /// Picks the next token from `logits` and records it in the history
    /// (as [`Sampler::accept`] does).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        let id = if self.greedy {
            self.pick_greedy(logits)?
        } else {
            self.process(logits)?;
            let r = self.rng.next_f32();
            draw(&self.cands, r, 1.0)?
        };
        self.accept(id);
        Ok(id)
    }

    /// The greedy pick: the best candidate left by the chain.
    fn pick_greedy(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::Empty);
        }
        if self.chain.is_empty() {
            return Ok(argmax(logits));
        }
        self.cands.fill(logits);
        for p in self.chain.iter_mut() {
            p.apply(&mut self.cands);
        }
        let best = self.cands.best_index().ok_or(SamplerError::AllExcluded)?;
        let c = self.cands.items[best];
        if c.logit == f32::NEG_INFINITY || c.logit.is_nan() {
            return Err(SamplerError::AllExcluded);
        }
        Ok(c.id)
    }

    /// Runs the chain on `logits` and leaves the candidates with their
    /// probabilities.
    fn process(&mut self, logits: &[f32]) -> Result<(), SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::Empty);
        }
        self.cands.fill(logits);
        for p in self.chain.iter_mut() {
            p.apply(&mut self.cands);
        }
        self.cands.softmax();
        Ok(())
    }

    /// Records a token in the history of the history-based steps
    /// (penalties) without sampling: for prompt tokens.
    pub fn accept(&mut self, token: u32) {
        for p in self.chain.iter_mut() {
            p.accept(token);
        }
    }

    pub fn reset(&mut self) {
        for p in self.chain.iter_mut() {
            p.reset();
        }
    }

    /// The steps of the chain, in order, then `greedy` or `dist` for the pick.
    pub fn describe(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.chain.iter().map(|p| p.name()).collect();
        v.push(if self.greedy { "greedy" } else { "dist" });
        v
    }
}

/// The candidate where the running sum of `p` first exceeds `r * total`
/// (`total`: the sum of `p`). Rounding can leave the sum just under it:
/// then the last token that has any probability is taken, never a banned
/// one.
fn draw(cands: &Candidates, r: f32, total: f32) -> Result<u32, SamplerError> {
    let target = r * total;
    let mut acc = 0.0f32;
    let mut chosen = None;
    for c in &cands.items {
        if c.p > 0.0 {
            chosen = Some(c.id);
            acc += c.p;
            if target < acc {
                break;
            }
        }
    }
    chosen.ok_or(SamplerError::AllExcluded)
}

/// Index of the largest logit; the lowest index wins a tie, as in llama.cpp.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_first_maximum() {
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 17) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p).unwrap();
            (0..50)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&params), run(&params));
        let other = SamplingParams {
            seed: 43,
            ..params.clone()
        };
        assert_ne!(run(&params), run(&other));
    }

    #[test]
    fn draw_frequencies_follow_softmax() {
        // logits ln(1), ln(2), ln(3), ln(4): probabilities 0.1 .. 0.4.
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let mut s = Sampler::new(&SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        })
        .unwrap();
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        for (i, c) in counts.iter().enumerate() {
            let expect = (i + 1) as f64 / 10.0;
            let got = *c as f64 / n as f64;
            // 4 standard deviations of a binomial proportion.
            let tol = 4.0 * (expect * (1.0 - expect) / n as f64).sqrt();
            assert!((got - expect).abs() < tol, "token {i}: {got} vs {expect}");
        }
    }

    #[test]
    fn invalid_params_are_rejected() {
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(matches!(
            Sampler::new(&bad),
            Err(SamplerError::InvalidParam(_))
        ));
        assert_eq!(
            Sampler::new(&SamplingParams::default())
                .unwrap()
                .sample(&[]),
            Err(SamplerError::Empty)
        );
    }

    #[test]
    fn default_chain_follows_llama_cpp_order() {
        let all = SamplingParams {
            typical_p: 0.9,
            repeat_penalty: 1.1,
            logit_bias: vec![(1, -1.0)],
            ..Default::default()
        };
        assert_eq!(
            Sampler::new(&all).unwrap().describe(),
            vec![
                "logit-bias",
                "penalties",
                "top-k",
                "typical",
                "top-p",
                "min-p",
                "temperature",
                "dist"
            ]
        );
        // llama.cpp's defaults leave penalties, typical-p and biases off.
        assert_eq!(
            Sampler::new(&SamplingParams::default()).unwrap().describe(),
            vec!["top-k", "top-p", "min-p", "temperature", "dist"]
        );
        assert_eq!(
            Sampler::new(&SamplingParams {
                temperature: 0.0,
                ..all
            })
            .unwrap()
            .describe(),
            vec!["logit-bias", "penalties", "typical", "greedy"]
        );
    }

    #[test]
    fn greedy_sees_penalties_of_accepted_tokens() {
        // Token 0 leads 3.0 to 2.9; once it is in the history a repeat
        // penalty of 1.5 brings it to 2.0 and token 1 wins.
        let params = SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.5,
            ..Default::default()
        };
        let mut s = Sampler::new(&params).unwrap();
        assert_eq!(s.sample(&[3.0, 2.9]).unwrap(), 0);
        assert_eq!(s.sample(&[3.0, 2.9]).unwrap(), 1);
        s.reset();
        s.accept(1);
        assert_eq!(s.sample(&[3.0, 2.9]).unwrap(), 0);
    }

    #[test]
    fn greedy_after_typical_is_the_best_survivor() {
        // See processors::tests::typical_can_drop_the_most_likely_token.
        let mut logits = vec![0.4f32.ln()];
        logits.extend([0.06f32.ln(); 10]);
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.0,
            typical_p: 0.5,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&logits).unwrap(), 1);
    }

    #[test]
    fn banned_tokens_are_never_drawn() {
        let mut s = Sampler::new(&SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            logit_bias: vec![(1, f32::NEG_INFINITY)],
            seed: 3,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..2000 {
            assert_eq!(s.sample(&[0.0, 0.0]).unwrap(), 0);
        }
        for temperature in [0.0, 1.0] {
            let mut s = Sampler::new(&SamplingParams {
                temperature,
                logit_bias: vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)],
                ..Default::default()
            })
            .unwrap();
            assert_eq!(s.sample(&[0.0, 0.0]), Err(SamplerError::AllExcluded));
        }
    }

    /// Frequencies after top-k 3 then temperature 0.5 on probabilities
    /// 0.1, 0.2, 0.3, 0.4: top-k drops 0.1; squaring and normalising
    /// 0.2, 0.3, 0.4 gives 4/29, 9/29, 16/29.
    #[test]
    fn chain_draw_matches_hand_distribution() {
        let logits = [0.1f32.ln(), 0.2f32.ln(), 0.3f32.ln(), 0.4f32.ln()];
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.5,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            seed: 11,
            ..Default::default()
        })
        .unwrap();
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        for (i, want) in [(1, 4.0 / 29.0), (2, 9.0 / 29.0), (3, 16.0 / 29.0)] {
            let got = counts[i] as f64 / n as f64;
            let tol = 4.0 * (want * (1.0 - want) / n as f64).sqrt();
            assert!((got - want).abs() < tol, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn new_params_are_validated() {
        for bad in [
            SamplingParams {
                typical_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                typical_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplingParams {
                frequency_penalty: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                presence_penalty: f32::INFINITY,
                ..Default::default()
            },
            SamplingParams {
                logit_bias: vec![(3, f32::INFINITY)],
                ..Default::default()
            },
        ] {
            assert!(
                matches!(Sampler::new(&bad), Err(SamplerError::InvalidParam(_))),
                "{bad:?}"
            );
        }
    }
}
