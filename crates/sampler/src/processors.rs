//! The individual steps of a sampling chain.

use crate::{Candidates, LogitProcessor};

/// Divides logits by a temperature.
pub struct Temperature(pub f32);

impl LogitProcessor for Temperature {
    fn apply(&mut self, c: &mut Candidates) {
        let t = self.0.max(1e-6);
        c.items.iter_mut().for_each(|x| x.logit /= t);
    }
}

/// Keeps the `k` most likely tokens.
pub struct TopK(pub usize);

impl LogitProcessor for TopK {
    fn apply(&mut self, c: &mut Candidates) {
        if self.0 > 0 {
            c.truncate_top(self.0);
        }
    }
}

/// Keeps the smallest set of most likely tokens whose probability mass reaches `p`.
pub struct TopP(pub f32);

impl LogitProcessor for TopP {
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
}
