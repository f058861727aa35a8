//! Composable logit processors and seeded sampling.
//!
//! A [`Sampler`] owns a chain of [`LogitProcessor`]s that narrow and reshape a
//! candidate list, then draws one token from what is left. The candidate
//! buffer is reused between tokens, so sampling allocates nothing per token
//! once warmed up.

pub mod processors;
mod rng;

pub use processors::{MinP, Temperature, TopK, TopP};
pub use rng::Rng;

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum SamplerError {
    #[error("no logits to sample from")]
    Empty,
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

    /// Sets `p` to the softmax of the logits over the current candidates.
    pub fn softmax(&mut self) {
        let max = self
            .items
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
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
}

/// Settings for the usual chain, named as llama.cpp names them.
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
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !self.temperature.is_finite() {
            return Err(SamplerError::InvalidParam(format!(
                "temperature must be finite, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::InvalidParam(format!(
                "top-p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplerError::InvalidParam(format!(
                "min-p must be in [0, 1], got {}",
                self.min_p
            )));
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
    /// Builds the chain llama.cpp uses by default: top-k, top-p, min-p, temperature, draw.
    pub fn new(params: &SamplingParams) -> Result<Sampler, SamplerError> {
        params.validate()?;
        let greedy = params.temperature <= 0.0;
        let mut chain: Vec<Box<dyn LogitProcessor>> = Vec::new();
        if !greedy {
            if params.top_k > 0 {
                chain.push(Box::new(TopK(params.top_k)));
            }
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

    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::Empty);
        }
        if self.greedy && self.chain.is_empty() {
            return Ok(argmax(logits));
        }
        self.cands.fill(logits);
        for p in self.chain.iter_mut() {
            p.apply(&mut self.cands);
        }
        let id = if self.greedy {
            self.cands.sort();
            self.cands.items.first().ok_or(SamplerError::Empty)?.id
        } else {
            self.cands.softmax();
            let r = self.rng.next_f32();
            let mut acc = 0.0f32;
            let mut chosen = self.cands.items.last().ok_or(SamplerError::Empty)?.id;
            for c in &self.cands.items {
                acc += c.p;
                if r < acc {
                    chosen = c.id;
                    break;
                }
            }
            chosen
        };
        for p in self.chain.iter_mut() {
            p.accept(id);
        }
        Ok(id)
    }

    pub fn reset(&mut self) {
        for p in self.chain.iter_mut() {
            p.reset();
        }
    }
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
}
