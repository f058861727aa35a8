//! Drafting by lookup (llama.cpp's `ngram-simple`): where the last `n`
//! tokens occurred before, the tokens that followed them then are proposed
//! now. Summaries, rewrites and code edits copy long runs of their input,
//! and this finds them at no cost but a scan.

use super::{Draft, Drafter};
use crate::EngineError;

/// The lookup drafter. Its drafts start at [`START`] tokens, double after
/// a draft kept whole and shrink to what was kept (at least [`START`] / 2)
/// after one that was not: checking a long draft costs several decoding
/// steps on a CPU, so long drafts are made only while the text is being
/// copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgramSimple {
    /// Tokens matched (`--spec-ngram-simple-size-n`).
    pub size_n: usize,
    /// Tokens proposed at most (`--spec-ngram-simple-size-m`).
    pub size_m: usize,
    /// The current draft length.
    limit: usize,
}

/// The first draft's length at most.
pub const START: usize = 8;

impl Default for NgramSimple {
    /// Shorter than llama.cpp's 12 and 48: checking a draft that fails
    /// costs little once drafts shrink, and on SmolLM2 F16 rewriting a
    /// paragraph 4 and 16 generated 251 tokens/s where 12 and 48 gave 175
    /// (plain decoding: 88).
    fn default() -> Self {
        NgramSimple::new(4, 16)
    }
}

impl NgramSimple {
    pub fn new(size_n: usize, size_m: usize) -> NgramSimple {
        NgramSimple {
            size_n,
            size_m,
            limit: START,
        }
    }

    /// The tokens that followed the latest earlier occurrence of the last
    /// `size_n` tokens of `history`, at most `n_max` of them.
    pub fn lookup<'a>(&self, history: &'a [u32], n_max: usize) -> &'a [u32] {
        let n = self.size_n.max(1);
        let len = history.len();
        if len <= n {
            return &[];
        }
        let pattern = &history[len - n..];
        // The latest occurrence that has at least one token after it and
        // is not the pattern itself.
        let Some(start) = (0..len - n).rev().find(|&j| &history[j..j + n] == pattern) else {
            return &[];
        };
        let from = start + n;
        let count = self.size_m.min(n_max).min(len - from);
        &history[from..from + count]
    }
}

impl Drafter for NgramSimple {
    fn draft(&mut self, history: &[u32], n_max: usize) -> Result<Draft, EngineError> {
        Ok(Draft {
            tokens: self.lookup(history, n_max.min(self.limit)).to_vec(),
            dists: Vec::new(),
        })
    }

    fn feedback(&mut self, n_drafted: usize, n_accepted: usize) {
        self.limit = if n_accepted == n_drafted {
            (2 * self.limit).min(self.size_m.max(1))
        } else {
            n_accepted.max(START / 2)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ngram(n: usize, m: usize) -> NgramSimple {
        NgramSimple::new(n, m)
    }

    #[test]
    fn the_latest_earlier_occurrence_is_continued() {
        //        0  1  2  3  4  5  6  7  8  9 10
        let h = [1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2];
        // "1 2" occurred at 4 (latest) and 0: continue from 6.
        assert_eq!(ngram(2, 3).lookup(&h, 10), [3, 7, 8]);
        assert_eq!(ngram(2, 3).lookup(&h, 2), [3, 7]);
        // Capped by what the history holds.
        assert_eq!(ngram(2, 48).lookup(&h, 48), [3, 7, 8, 1, 2]);
        // "8 1 2" never occurred before.
        assert!(ngram(3, 3).lookup(&h, 3).is_empty());
        assert!(ngram(2, 3).lookup(&[1, 2], 3).is_empty());
        assert!(ngram(2, 3).lookup(&[], 3).is_empty());
    }

    #[test]
    fn a_pattern_overlapping_itself_is_found() {
        // "5 5" ends the history and occurs at 1: propose the 5 after it.
        let h = [4, 5, 5, 5];
        assert_eq!(ngram(2, 4).lookup(&h, 4), [5]);
    }

    #[test]
    fn drafts_grow_while_kept_whole_and_shrink_when_not() {
        let h: Vec<u32> = (0..100).chain(0..100).collect();
        let mut d = ngram(2, 48);
        let len = |d: &mut NgramSimple| d.draft(&h[..150], 64).unwrap().tokens.len();
        assert_eq!(len(&mut d), START);
        d.feedback(8, 8);
        assert_eq!(len(&mut d), 16);
        d.feedback(16, 16);
        d.feedback(32, 32);
        assert_eq!(len(&mut d), 48);
        d.feedback(48, 10);
        assert_eq!(len(&mut d), 10);
        d.feedback(10, 0);
        assert_eq!(len(&mut d), START / 2);
    }
}
