//! Drafting by lookup (llama.cpp's `ngram-simple`): where the last `n`
//! tokens occurred before, the tokens that followed them then are proposed
//! now. Summaries, rewrites and code edits copy long runs of their input,
//! and this finds them at no cost but a scan.

use super::{Draft, Drafter};
use crate::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgramSimple {
    /// Tokens matched (`--spec-ngram-simple-size-n`).
    pub size_n: usize,
    /// Tokens proposed at most (`--spec-ngram-simple-size-m`).
    pub size_m: usize,
}

impl Default for NgramSimple {
    /// llama.cpp's defaults.
    fn default() -> Self {
        NgramSimple {
            size_n: 12,
            size_m: 48,
        }
    }
}

impl NgramSimple {
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
            tokens: self.lookup(history, n_max).to_vec(),
            dists: Vec::new(),
        })
    }

    fn name(&self) -> &'static str {
        "ngram-simple"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ngram(n: usize, m: usize) -> NgramSimple {
        NgramSimple {
            size_n: n,
            size_m: m,
        }
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
}
