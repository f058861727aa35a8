//! Checking drafted tokens against the target model (speculative
//! sampling, Leviathan et al. 2023 and Chen et al. 2023): a drafted token
//! `x` drawn from the draft's distribution `q` is kept with probability
//! `min(1, p(x) / q(x))`, where `p` is the target's distribution after the
//! whole sampling chain; otherwise the token is drawn from `max(0, p - q)`
//! normalised. Whatever `q` is, the token that comes out is distributed as
//! `p`: drafting changes the speed, never the output's distribution.

use crate::{draw, Sampler, SamplerError};
use std::collections::HashMap;

/// The outcome of checking one drafted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The token generated at this position: the drafted one when
    /// accepted, else the replacement.
    pub token: u32,
    pub accepted: bool,
}

impl Sampler {
    /// Checks `draft` against `logits` (the target's at the drafted
    /// position) and records the token that comes out in the history, as
    /// [`Sampler::sample`] does.
    ///
    /// `q` is the distribution the draft was drawn from as `(id, p)` pairs,
    /// or `None` for a draft that is a function of the context (a greedy
    /// draft model, an n-gram lookup): `q` is then all on `draft`, the rule
    /// keeps it with probability `p(draft)` and otherwise draws from `p`
    /// without it. That is exactly what drawing a token from `p` and
    /// comparing it with the draft does, so that is how it is done: with the
    /// same seed, the tokens are then the ones decoding without drafts
    /// draws. Greedy samplers keep a draft when it is the argmax.
    pub fn verify(
        &mut self,
        logits: &[f32],
        draft: u32,
        q: Option<&[(u32, f32)]>,
    ) -> Result<Verdict, SamplerError> {
        let q = match q {
            Some(q) if !self.greedy => q,
            _ => {
                let token = self.sample(logits)?;
                return Ok(Verdict {
                    token,
                    accepted: token == draft,
                });
            }
        };
        self.process(logits)?;
        let p_draft = self
            .cands
            .items
            .iter()
            .find(|c| c.id == draft)
            .map_or(0.0, |c| c.p);
        let q_of: HashMap<u32, f32> = q.iter().copied().collect();
        let q_draft = q_of.get(&draft).copied().unwrap_or(0.0);
        let r = self.rng.next_f32();
        // r < p / q without dividing: q may be tiny.
        if p_draft > 0.0 && q_draft > 0.0 && r * q_draft < p_draft {
            self.accept(draft);
            return Ok(Verdict {
                token: draft,
                accepted: true,
            });
        }
        let mut residual = 0.0f32;
        for c in self.cands.items.iter_mut() {
            c.p = (c.p - q_of.get(&c.id).copied().unwrap_or(0.0)).max(0.0);
            residual += c.p;
        }
        if residual <= 0.0 {
            // p and q agree to rounding, so the draft is kept with
            // probability 1 in exact arithmetic: draw from p itself.
            self.cands.softmax();
            residual = 1.0;
        }
        let token = draw(&self.cands, self.rng.next_f32(), residual)?;
        self.accept(token);
        Ok(Verdict {
            token,
            accepted: false,
        })
    }

    /// Draws a token as [`Sampler::sample`] does and returns it with the
    /// distribution it was drawn from (the candidates left with any
    /// probability), for a draft model whose drafts are checked with
    /// [`Sampler::verify`]. Nothing is recorded in the history. A greedy
    /// sampler returns its argmax and an empty distribution: its drafts are
    /// functions of the context.
    pub fn draw_draft(&mut self, logits: &[f32]) -> Result<(u32, Vec<(u32, f32)>), SamplerError> {
        if self.greedy {
            let token = self.pick_greedy(logits)?;
            return Ok((token, Vec::new()));
        }
        self.process(logits)?;
        let token = draw(&self.cands, self.rng.next_f32(), 1.0)?;
        let q = self
            .cands
            .items
            .iter()
            .filter(|c| c.p > 0.0)
            .map(|c| (c.id, c.p))
            .collect();
        Ok((token, q))
    }

    /// The probability of the most likely token after the chain, and that
    /// token: for a greedy draft model deciding whether to go on drafting.
    pub fn top(&mut self, logits: &[f32]) -> Result<(u32, f32), SamplerError> {
        self.process(logits)?;
        let best = self
            .cands
            .items
            .iter()
            .filter(|c| c.p > 0.0)
            .max_by(|a, b| a.p.total_cmp(&b.p).then(b.id.cmp(&a.id)))
            .ok_or(SamplerError::AllExcluded)?;
        Ok((best.id, best.p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rng, SamplingParams};

    fn sampler(params: SamplingParams) -> Sampler {
        Sampler::new(&params).unwrap()
    }

    fn plain(seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..Default::default()
        }
    }

    fn ln(ps: &[f32]) -> Vec<f32> {
        ps.iter().map(|p| p.ln()).collect()
    }

    /// Draws `x` from `q` with `rng`.
    fn from(q: &[(u32, f32)], rng: &mut Rng) -> u32 {
        let r = rng.next_f32();
        let mut acc = 0.0;
        for &(id, p) in q {
            acc += p;
            if r < acc {
                return id;
            }
        }
        q.last().unwrap().0
    }

    /// `n` draws are within 4.5 standard deviations of `want` for every
    /// token.
    fn assert_frequencies(counts: &[usize], want: &[f64], n: usize) {
        for (i, (&c, &w)) in counts.iter().zip(want).enumerate() {
            let got = c as f64 / n as f64;
            let tol = 4.5 * (w * (1.0 - w) / n as f64).sqrt() + 1e-9;
            assert!(
                (got - w).abs() <= tol,
                "token {i}: {got} vs {w} ({counts:?})"
            );
        }
    }

    #[test]
    fn drafts_from_another_distribution_come_out_as_the_targets() {
        let p = [0.1f32, 0.2, 0.3, 0.4, 0.0];
        let q: Vec<(u32, f32)> = [0.4f32, 0.1, 0.1, 0.2, 0.2]
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        let logits = ln(&p);
        let mut s = sampler(plain(5));
        let mut drafts = Rng::new(99);
        let n = 100_000;
        let mut counts = [0usize; 5];
        let mut accepted = 0;
        for _ in 0..n {
            let x = from(&q, &mut drafts);
            let v = s.verify(&logits, x, Some(&q)).unwrap();
            counts[v.token as usize] += 1;
            accepted += v.accepted as usize;
            assert!(!v.accepted || v.token == x);
        }
        assert_frequencies(&counts, &[0.1, 0.2, 0.3, 0.4, 0.0], n);
        // The acceptance rate is the overlap of p and q: sum of min(p, q).
        let overlap = 0.1 + 0.1 + 0.1 + 0.2;
        assert_frequencies(&[accepted], &[overlap], n);
    }

    #[test]
    fn a_point_draft_is_kept_with_the_targets_probability() {
        let logits = ln(&[0.1, 0.2, 0.3, 0.4]);
        let mut s = sampler(plain(1));
        let n = 100_000;
        let mut counts = [0usize; 4];
        let mut accepted = 0;
        for _ in 0..n {
            let v = s.verify(&logits, 2, None).unwrap();
            counts[v.token as usize] += 1;
            accepted += v.accepted as usize;
        }
        assert_frequencies(&counts, &[0.1, 0.2, 0.3, 0.4], n);
        assert_eq!(accepted, counts[2]);
        // The same seed without drafts draws the same tokens.
        let mut a = sampler(plain(8));
        let mut b = sampler(plain(8));
        for i in 0..1000 {
            let v = a.verify(&logits, (i % 4) as u32, None).unwrap();
            assert_eq!(v.token, b.sample(&logits).unwrap());
        }
    }

    /// The rule applies to the distribution after the chain: top-k 3 and
    /// temperature 0.5 on 0.1..0.4 give 4/29, 9/29, 16/29 (see
    /// `chain_draw_matches_hand_distribution`), whatever the draft.
    #[test]
    fn the_rule_checks_against_the_chains_distribution() {
        let logits = ln(&[0.1, 0.2, 0.3, 0.4]);
        let mut s = sampler(SamplingParams {
            temperature: 0.5,
            top_k: 3,
            ..plain(3)
        });
        let q = [(0u32, 0.5f32), (1, 0.5)];
        let mut drafts = Rng::new(4);
        let n = 100_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            let x = from(&q, &mut drafts);
            counts[s.verify(&logits, x, Some(&q)).unwrap().token as usize] += 1;
        }
        assert_eq!(counts[0], 0, "top-k removed token 0");
        assert_frequencies(&counts, &[0.0, 4.0 / 29.0, 9.0 / 29.0, 16.0 / 29.0], n);
    }

    #[test]
    fn identical_distributions_accept_every_draft() {
        let p = [0.25f32, 0.25, 0.5];
        let q: Vec<(u32, f32)> = p.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
        let mut s = sampler(plain(2));
        let mut drafts = Rng::new(3);
        for _ in 0..10_000 {
            let x = from(&q, &mut drafts);
            let v = s.verify(&ln(&p), x, Some(&q)).unwrap();
            assert!(v.accepted, "{v:?}");
        }
    }

    #[test]
    fn greedy_keeps_a_draft_only_when_it_is_the_argmax() {
        let mut s = sampler(SamplingParams::greedy());
        let logits = [0.0, 2.0, 1.0];
        let q = [(2u32, 1.0f32)];
        assert_eq!(
            s.verify(&logits, 1, Some(&q)).unwrap(),
            Verdict {
                token: 1,
                accepted: true
            }
        );
        assert_eq!(
            s.verify(&logits, 2, None).unwrap(),
            Verdict {
                token: 1,
                accepted: false
            }
        );
    }

    #[test]
    fn a_draft_the_chain_removed_is_never_kept() {
        let logits = ln(&[0.1, 0.2, 0.3, 0.4]);
        let mut s = sampler(SamplingParams {
            logit_bias: vec![(3, f32::NEG_INFINITY)],
            ..plain(6)
        });
        for _ in 0..2000 {
            let v = s.verify(&logits, 3, Some(&[(3, 1.0)])).unwrap();
            assert!(!v.accepted && v.token != 3, "{v:?}");
        }
    }

    #[test]
    fn draft_draws_report_their_distribution() {
        let logits = ln(&[0.1, 0.2, 0.3, 0.4]);
        let mut s = sampler(SamplingParams {
            top_k: 2,
            ..plain(9)
        });
        let (x, q) = s.draw_draft(&logits).unwrap();
        assert!(x == 2 || x == 3);
        let want = [(3u32, 4.0f32 / 7.0), (2, 3.0 / 7.0)];
        assert_eq!(q.len(), 2);
        for ((id, p), (wid, wp)) in q.iter().zip(want) {
            assert_eq!(*id, wid);
            assert!((p - wp).abs() < 1e-6, "{p} vs {wp}");
        }
        let mut g = sampler(SamplingParams::greedy());
        assert_eq!(g.draw_draft(&logits).unwrap(), (3, Vec::new()));
        assert_eq!(g.top(&logits).unwrap().0, 3);
        assert!((g.top(&logits).unwrap().1 - 0.4).abs() < 1e-6);
    }
}
