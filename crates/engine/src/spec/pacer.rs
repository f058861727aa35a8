//! Whether drafting pays, decided as generation goes: on a CPU a draft
//! model costs a good part of a target step, and a check of several
//! positions more than one decoding step, so speculation can lose. The pacer
//! compares the time per generated token of steps that consulted the
//! drafter with steps that did not, and pauses drafting, for longer each
//! time, while it loses. Only the speed changes: the tokens are the same
//! either way.

use std::time::Duration;

/// Weight of the newest step in the running averages.
const ALPHA: f64 = 0.3;
/// Plain steps measured before the first draft.
const WARMUP: usize = 2;
/// Drafting steps measured before drafting is judged (one check that
/// happens to fail says little).
const JUDGE_AFTER: usize = 3;
/// The first pause, in steps; each pause in a row doubles it.
const FIRST_PAUSE: usize = 8;
const MAX_PAUSE: usize = 128;

#[derive(Debug, Clone)]
pub struct Pacer {
    /// Seconds per token of steps without drafts, and with.
    plain: Option<f64>,
    spec: Option<f64>,
    /// Plain steps left before drafting again.
    pause: usize,
    next_pause: usize,
    /// Whether the next drafting step goes unmeasured: the first one
    /// includes a draft model's reading the prompt, which later steps do not
    /// pay. (After a pause the catching up is measured: it is what trying
    /// again costs.)
    unmeasured: bool,
    /// Drafting steps measured since the last pause.
    measured: usize,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            plain: None,
            spec: None,
            pause: WARMUP,
            next_pause: FIRST_PAUSE,
            unmeasured: true,
            measured: 0,
        }
    }
}

fn average(old: Option<f64>, new: f64) -> Option<f64> {
    Some(match old {
        None => new,
        Some(o) => o + ALPHA * (new - o),
    })
}

impl Pacer {
    /// Whether the next step consults the drafter.
    pub fn draft_now(&mut self) -> bool {
        if self.pause > 0 {
            self.pause -= 1;
            false
        } else {
            true
        }
    }

    /// A step without drafts took `time` for one token.
    pub fn plain_step(&mut self, time: Duration) {
        self.plain = average(self.plain, time.as_secs_f64());
    }

    /// A step that consulted the drafter took `time` (drafting and
    /// checking) and generated `tokens` tokens.
    pub fn spec_step(&mut self, time: Duration, tokens: usize) {
        if std::mem::take(&mut self.unmeasured) {
            return;
        }
        let per_token = time.as_secs_f64() / tokens.max(1) as f64;
        self.spec = average(self.spec, per_token);
        self.measured += 1;
        if self.measured < JUDGE_AFTER {
            return;
        }
        if let (Some(plain), Some(spec)) = (self.plain, self.spec) {
            if spec > plain {
                self.measured = 0;
                self.pause = self.next_pause;
                self.next_pause = (2 * self.next_pause).min(MAX_PAUSE);
                // The next try starts from an even footing, not from the
                // average that made this pause.
                self.spec = Some(plain);
            } else {
                self.next_pause = FIRST_PAUSE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: f64) -> Duration {
        Duration::from_secs_f64(x / 1000.0)
    }

    /// Drafts until the first measurement, then as the comparison says.
    fn run(pacer: &mut Pacer, steps: usize, plain_ms: f64, spec_ms: f64, tokens: usize) -> usize {
        let mut drafted = 0;
        for _ in 0..steps {
            if pacer.draft_now() {
                drafted += 1;
                pacer.spec_step(ms(spec_ms), tokens);
            } else {
                pacer.plain_step(ms(plain_ms));
            }
        }
        drafted
    }

    #[test]
    fn drafts_that_pay_are_used_every_step() {
        let mut p = Pacer::default();
        // 20 ms for 3 tokens against 10 ms for one.
        assert_eq!(run(&mut p, 100, 10.0, 20.0, 3), 100 - WARMUP);
        // The first step after the plain ones is not judged: it may have
        // paid for the draft model's reading the prompt.
        let mut p = Pacer::default();
        assert!(!p.draft_now() && !p.draft_now() && p.draft_now());
        p.plain_step(ms(10.0));
        p.spec_step(ms(500.0), 1);
        assert!(p.draft_now());
    }

    #[test]
    fn drafts_that_lose_are_paused_for_longer_each_time() {
        let mut p = Pacer::default();
        // 25 ms for 2 tokens against 10 ms for one.
        let drafted = run(&mut p, 1000, 10.0, 25.0, 2);
        // Four tries at first (one unmeasured), then three after pauses of
        // 8, 16, 32, 64, then 128 steps.
        assert!((25..=40).contains(&drafted), "{drafted}");
        // When drafts start paying again, they are used again.
        let mut p = Pacer::default();
        run(&mut p, 40, 10.0, 25.0, 2);
        let drafted = run(&mut p, 200, 10.0, 12.0, 2);
        assert!(drafted > 150, "{drafted}");
    }
}
