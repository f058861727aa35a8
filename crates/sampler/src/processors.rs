//! The individual steps of a sampling chain.
//!
//! Each follows the llama.cpp sampler of the same name (`src/llama-sampler.cpp`):
//! same arithmetic, same order of operations, same edge cases, except where a
//! comment says otherwise. None of them allocates per token once its buffers
//! have grown to the working size.

use crate::{Candidate, Candidates, LogitProcessor};
use std::collections::{HashMap, VecDeque};

/// Divides logits by a temperature; a temperature of 0 or less keeps only
/// the most likely token (the first one on a tie), as llama.cpp does.
pub struct Temperature(pub f32);

impl LogitProcessor for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.0 <= 0.0 {
            if let Some(best) = c.best_index() {
                let keep = c.items[best];
                c.items.clear();
                c.items.push(keep);
                c.sorted = true;
            }
            return;
        }
        let t = self.0;
        c.items.iter_mut().for_each(|x| x.logit /= t);
    }
}

/// Keeps the `k` most likely tokens.
pub struct TopK(pub usize);

impl LogitProcessor for TopK {
    fn name(&self) -> &'static str {
        "top-k"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.0 > 0 {
            c.truncate_top(self.0);
        }
    }
}

/// Keeps the smallest set of most likely tokens whose probability mass reaches `p`.
pub struct TopP(pub f32);

impl LogitProcessor for TopP {
    fn name(&self) -> &'static str {
        "top-p"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.0 >= 1.0 || c.items.is_empty() {
            return;
        }
        c.sort();
        c.softmax();
        let mut cum = 0.0f32;
        let mut keep = c.items.len();
        for (i, x) in c.items.iter().enumerate() {
            cum += x.p;
            if cum >= self.0 {
                keep = i + 1;
                break;
            }
        }
        c.items.truncate(keep);
    }
}

/// Drops tokens whose probability is below `p` times the best token's.
pub struct MinP(pub f32);

impl LogitProcessor for MinP {
    fn name(&self) -> &'static str {
        "min-p"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.0 <= 0.0 || c.items.is_empty() {
            return;
        }
        let max = c
            .items
            .iter()
            .map(|x| x.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        // p_i / p_max = exp(l_i - l_max): compare in logit space.
        let min_logit = max + self.0.ln();
        c.items.retain(|x| x.logit >= min_logit);
    }
}

/// Locally typical sampling (Meister et al. 2022): keeps the tokens whose
/// surprise `-ln p` is closest to the distribution's entropy, in that order,
/// until their mass exceeds `p`.
pub struct TypicalP {
    p: f32,
    /// (distance from the entropy, index in the candidates), reused.
    order: Vec<(f32, u32)>,
    /// The kept candidates, swapped in for the old list, reused.
    kept: Vec<Candidate>,
}

impl TypicalP {
    /// `p >= 1` disables it.
    pub fn new(p: f32) -> TypicalP {
        TypicalP {
            p,
            order: Vec::new(),
            kept: Vec::new(),
        }
    }
}

impl LogitProcessor for TypicalP {
    fn name(&self) -> &'static str {
        "typical"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.p >= 1.0 || c.items.is_empty() {
            return;
        }
        c.softmax();
        // A banned token (p = 0) adds nothing to the entropy; llama.cpp
        // would add 0 * ln 0 = NaN here.
        let entropy: f32 = c
            .items
            .iter()
            .filter(|x| x.p > 0.0)
            .map(|x| -x.p * x.p.ln())
            .sum();
        self.order.clear();
        self.order.extend(
            c.items
                .iter()
                .enumerate()
                .map(|(i, x)| ((-x.p.ln() - entropy).abs(), i as u32)),
        );
        // Ties go to the lower id, so the kept set does not depend on the
        // sort algorithm (llama.cpp's std::sort leaves them unspecified).
        let items = &c.items;
        self.order.sort_unstable_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(items[a.1 as usize].id.cmp(&items[b.1 as usize].id))
        });
        let mut cum = 0.0f32;
        let mut keep = self.order.len();
        for (i, &(_, idx)) in self.order.iter().enumerate() {
            cum += c.items[idx as usize].p;
            if cum > self.p {
                keep = i + 1;
                break;
            }
        }
        self.kept.clear();
        self.kept
            .extend(self.order[..keep].iter().map(|&(_, i)| c.items[i as usize]));
        std::mem::swap(&mut c.items, &mut self.kept);
        c.sorted = false;
    }
}

/// Repetition, frequency and presence penalties over the last `last_n`
/// accepted tokens, as llama.cpp's `penalties` sampler: a repeated token's
/// logit is divided by `repeat` when positive and multiplied by it when not,
/// then lowered by `count * freq + present`.
///
/// The counts live in a map keyed by token, updated as tokens are accepted,
/// so applying costs O(distinct recent tokens), never a pass over the
/// vocabulary.
pub struct Penalties {
    last_n: usize,
    repeat: f32,
    freq: f32,
    present: f32,
    window: VecDeque<u32>,
    counts: HashMap<u32, u32>,
    /// Recent tokens not found at their own index in the candidates, reused.
    missed: Vec<(u32, u32)>,
}

/// Window sizes up to this get a count map that never grows.
const MAX_RESERVED_WINDOW: usize = 4096;

impl Penalties {
    pub fn new(last_n: usize, repeat: f32, freq: f32, present: f32) -> Penalties {
        Penalties {
            last_n,
            repeat,
            freq,
            present,
            window: VecDeque::with_capacity(last_n.min(1 << 16)),
            counts: HashMap::new(),
            missed: Vec::new(),
        }
    }

    /// Whether applying it changes nothing (llama.cpp's test).
    pub fn is_disabled(&self) -> bool {
        self.last_n == 0 || (self.repeat == 1.0 && self.freq == 0.0 && self.present == 0.0)
    }

    /// How often `token` occurs in the window.
    pub fn count(&self, token: u32) -> u32 {
        self.counts.get(&token).copied().unwrap_or(0)
    }

    fn penalize(&self, x: &mut Candidate, count: u32) {
        if x.logit <= 0.0 {
            x.logit *= self.repeat;
        } else {
            x.logit /= self.repeat;
        }
        x.logit -= count as f32 * self.freq + if count > 0 { self.present } else { 0.0 };
    }
}

impl LogitProcessor for Penalties {
    fn name(&self) -> &'static str {
        "penalties"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.is_disabled() || self.counts.is_empty() {
            return;
        }
        // Candidates usually still sit at index == id (this runs first in the
        // chain); any that do not are found in one pass afterwards.
        self.missed.clear();
        for (&id, &count) in &self.counts {
            match c.items.get_mut(id as usize) {
                Some(x) if x.id == id => {
                    let mut y = *x;
                    self.penalize(&mut y, count);
                    *x = y;
                }
                _ => self.missed.push((id, count)),
            }
        }
        if !self.missed.is_empty() {
            self.missed.sort_unstable();
            for i in 0..c.items.len() {
                let id = c.items[i].id;
                if let Ok(k) = self.missed.binary_search_by_key(&id, |m| m.0) {
                    let count = self.missed[k].1;
                    let mut y = c.items[i];
                    self.penalize(&mut y, count);
                    c.items[i] = y;
                }
            }
        }
        c.sorted = false;
    }

    fn accept(&mut self, token: u32) {
        if self.last_n == 0 {
            return;
        }
        if self.counts.capacity() == 0 {
            // Twice the most distinct tokens the window can hold: the map
            // then never grows, and clearing its tombstones rehashes in
            // place, so sampling stops allocating once warm whatever the
            // hash seed (a map sized by use could still grow now and then).
            self.counts
                .reserve(2 * (self.last_n.min(MAX_RESERVED_WINDOW) + 1));
        }
        *self.counts.entry(token).or_insert(0) += 1;
        if self.window.len() >= self.last_n {
            if let Some(old) = self.window.pop_front() {
                if let Some(n) = self.counts.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.window.push_back(token);
    }

    fn reset(&mut self) {
        self.window.clear();
        self.counts.clear();
    }
}

/// Adds a fixed bias to chosen tokens' logits; a bias of `-inf` bans the
/// token.
pub struct LogitBias {
    biases: Vec<(u32, f32)>,
    /// Biases whose token is not at its own index in the candidates, reused.
    missed: Vec<(u32, f32)>,
}

impl LogitBias {
    pub fn new(biases: Vec<(u32, f32)>) -> LogitBias {
        LogitBias {
            biases,
            missed: Vec::new(),
        }
    }
}

impl LogitProcessor for LogitBias {
    fn name(&self) -> &'static str {
        "logit-bias"
    }

    fn apply(&mut self, c: &mut Candidates) {
        if self.biases.is_empty() {
            return;
        }
        self.missed.clear();
        for &(id, bias) in &self.biases {
            match c.items.get_mut(id as usize) {
                Some(x) if x.id == id => x.logit += bias,
                _ => self.missed.push((id, bias)),
            }
        }
        if !self.missed.is_empty() {
            for x in c.items.iter_mut() {
                // Every entry for the token, so repeated ids add up as they
                // do on the fast path.
                for &(id, bias) in &self.missed {
                    if id == x.id {
                        x.logit += bias;
                    }
                }
            }
        }
        c.sorted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(probs: &[f32]) -> Candidates {
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let mut c = Candidates::default();
        c.fill(&logits);
        c
    }

    fn ids(c: &Candidates) -> Vec<u32> {
        let mut v: Vec<u32> = c.items.iter().map(|x| x.id).collect();
        v.sort();
        v
    }

    #[test]
    fn top_p_keeps_smallest_set_reaching_mass() {
        // Sorted masses 0.4, 0.3, 0.2, 0.1: p = 0.65 needs {0.4, 0.3}; p = 0.7 is reached
        // exactly by the same two; p = 0.71 needs a third.
        let probs = [0.1, 0.4, 0.2, 0.3];
        for (p, want) in [
            (0.65f32, vec![1, 3]),
            (0.69, vec![1, 3]),
            (0.71, vec![1, 2, 3]),
            (0.3, vec![1]),
        ] {
            let mut c = cands(&probs);
            TopP(p).apply(&mut c);
            assert_eq!(ids(&c), want, "p = {p}");
        }
    }

    #[test]
    fn top_k_keeps_k_best() {
        let mut c = cands(&[0.1, 0.4, 0.2, 0.3]);
        TopK(2).apply(&mut c);
        assert_eq!(ids(&c), vec![1, 3]);
        assert!(c.sorted);
        assert_eq!(c.items[0].id, 1);
    }

    #[test]
    fn min_p_drops_relative_to_best() {
        // Best 0.4: min-p 0.5 keeps probabilities >= 0.2.
        let mut c = cands(&[0.1, 0.4, 0.2, 0.3]);
        MinP(0.5).apply(&mut c);
        assert_eq!(ids(&c), vec![1, 2, 3]);
    }

    #[test]
    fn temperature_sharpens_distribution() {
        let mut c = cands(&[0.25, 0.75]);
        Temperature(0.5).apply(&mut c);
        c.softmax();
        // (0.25^2, 0.75^2) normalised: 0.1, 0.9.
        assert!((c.items[0].p - 0.1).abs() < 1e-6);
        assert!((c.items[1].p - 0.9).abs() < 1e-6);
    }

    fn logits_of(c: &Candidates) -> Vec<(u32, f32)> {
        let mut v: Vec<(u32, f32)> = c.items.iter().map(|x| (x.id, x.logit)).collect();
        v.sort_by_key(|x| x.0);
        v
    }

    #[test]
    fn temperature_zero_keeps_first_best() {
        let mut c = Candidates::default();
        c.fill(&[1.0, 3.0, -2.0, 3.0]);
        Temperature(0.0).apply(&mut c);
        assert_eq!(ids(&c), vec![1]);
    }

    /// Probabilities 1/2, 1/4, 1/8, 1/8. Entropy H = 1.75 ln 2; surprises
    /// -ln p = (1, 2, 3, 3) ln 2; distances |-ln p - H| = (0.75, 0.25, 1.25,
    /// 1.25) ln 2. Typical order: 1, 0, 2, 3 (tie by id), cumulative mass
    /// 0.25, 0.75, 0.875, 1: the first prefix whose mass exceeds p is kept.
    #[test]
    fn typical_keeps_tokens_nearest_the_entropy() {
        for (p, want) in [
            (0.2f32, vec![1u32]),
            (0.7, vec![1, 0]),
            (0.8, vec![1, 0, 2]),
            (0.9, vec![1, 0, 2, 3]),
        ] {
            let mut c = cands(&[0.5, 0.25, 0.125, 0.125]);
            TypicalP::new(p).apply(&mut c);
            let got: Vec<u32> = c.items.iter().map(|x| x.id).collect();
            assert_eq!(got, want, "p = {p}");
            assert!(!c.sorted);
        }
        let mut c = cands(&[0.5, 0.25, 0.125, 0.125]);
        TypicalP::new(1.0).apply(&mut c);
        assert_eq!(c.items.len(), 4);
    }

    /// One token at 0.4 and ten at 0.06: H = -0.4 ln 0.4 - 0.6 ln 0.06 = 2.0545;
    /// the small tokens' surprise ln(1/0.06) = 2.8134 is 0.759 from H, the big
    /// one's ln 2.5 = 0.9163 is 1.138 away, so the small ones come first and
    /// nine of them (0.54 > 0.5) are kept: the most likely token is dropped.
    #[test]
    fn typical_can_drop_the_most_likely_token() {
        let mut probs = vec![0.4f32];
        probs.extend([0.06f32; 10]);
        let mut c = cands(&probs);
        TypicalP::new(0.5).apply(&mut c);
        assert_eq!(ids(&c), (1..=9).collect::<Vec<u32>>());
    }

    /// Window of the last 4 accepted tokens after 3, 0, 1, 0, 0: token 0
    /// three times, token 1 once, token 3 has left the window.
    /// repeat 2, freq 0.5, presence 1:
    ///   token 0:  2.0 / 2 - (3 * 0.5 + 1) = -1.5
    ///   token 1: -1.0 * 2 - (1 * 0.5 + 1) = -3.5
    ///   tokens 2 and 3 unchanged.
    #[test]
    fn penalties_by_hand() {
        let logits = [2.0f32, -1.0, 0.5, 3.0];
        let want = vec![(0, -1.5f32), (1, -3.5), (2, 0.5), (3, 3.0)];
        let mut pen = Penalties::new(4, 2.0, 0.5, 1.0);
        for t in [3, 0, 1, 0, 0] {
            pen.accept(t);
        }
        assert_eq!((pen.count(0), pen.count(1), pen.count(3)), (3, 1, 0));

        let mut c = Candidates::default();
        c.fill(&logits);
        pen.apply(&mut c);
        assert_eq!(logits_of(&c), want);
        assert!(!c.sorted);

        // Candidates no longer at index == id (sorted, or narrowed by an
        // earlier step) get the same penalties.
        let mut c = Candidates::default();
        c.fill(&logits);
        c.sort();
        pen.apply(&mut c);
        assert_eq!(logits_of(&c), want);
        let mut c = Candidates::default();
        c.fill(&logits);
        c.items.remove(2);
        pen.apply(&mut c);
        assert_eq!(logits_of(&c), vec![(0, -1.5f32), (1, -3.5), (3, 3.0)]);

        pen.reset();
        let mut c = Candidates::default();
        c.fill(&logits);
        pen.apply(&mut c);
        assert_eq!(logits_of(&c), vec![(0, 2.0), (1, -1.0), (2, 0.5), (3, 3.0)]);
    }

    #[test]
    fn penalties_disabled_settings() {
        assert!(Penalties::new(0, 1.3, 0.1, 0.1).is_disabled());
        assert!(Penalties::new(64, 1.0, 0.0, 0.0).is_disabled());
        assert!(!Penalties::new(64, 1.0, 0.0, 0.5).is_disabled());
        // last_n = 0 keeps no history at all.
        let mut p = Penalties::new(0, 1.3, 0.0, 0.0);
        p.accept(5);
        assert_eq!(p.count(5), 0);
    }

    #[test]
    fn logit_bias_adds_and_bans() {
        let mut c = Candidates::default();
        c.fill(&[1.0, 2.0, 3.0, 0.0]);
        let mut b = LogitBias::new(vec![(0, 5.0), (2, f32::NEG_INFINITY), (3, 0.25), (3, 0.25)]);
        b.apply(&mut c);
        assert_eq!(
            logits_of(&c),
            vec![(0, 6.0), (1, 2.0), (2, f32::NEG_INFINITY), (3, 0.5)]
        );
        // Same result when the candidates are not at their own index; ids
        // outside the candidates are ignored.
        let mut c = Candidates::default();
        c.fill(&[1.0, 2.0, 3.0, 0.0]);
        c.sort();
        let mut b = LogitBias::new(vec![
            (0, 5.0),
            (2, f32::NEG_INFINITY),
            (3, 0.25),
            (3, 0.25),
            (99, 1.0),
        ]);
        b.apply(&mut c);
        assert_eq!(
            logits_of(&c),
            vec![(0, 6.0), (1, 2.0), (2, f32::NEG_INFINITY), (3, 0.5)]
        );
    }
}
