//! What every decoding path shares, the one-shot generation loop and the
//! batching scheduler alike: the penalties' view of the prompt, and a
//! reply's text as it is released (whole UTF-8, stop strings held back,
//! flushed at the end).

use crate::stop::{Released, StopStrings};
use crate::FinishReason;
use edgellama_sampler::Sampler;
use edgellama_tokenizer::{StreamDecoder, Tokenizer};

/// Gives the sampler's penalties the last `history` tokens before the
/// first generated one: the end of `cached` (tokens already in the
/// sequence) followed by `prompt`, as if the whole text had been given at
/// once.
pub fn prime_penalties(sampler: &mut Sampler, history: usize, cached: &[u32], prompt: &[u32]) {
    let skip_prompt = prompt.len().saturating_sub(history);
    let from_cached = history.saturating_sub(prompt.len()).min(cached.len());
    for &t in cached[cached.len() - from_cached..]
        .iter()
        .chain(&prompt[skip_prompt..])
    {
        sampler.accept(t);
    }
}

/// A reply's text, token by token.
pub struct ReplyText<T: AsRef<Tokenizer>> {
    decoder: StreamDecoder<T>,
    stops: StopStrings,
}

impl<T: AsRef<Tokenizer>> ReplyText<T> {
    /// `special`: control tokens come out as their text.
    pub fn new<I, S>(tokenizer: T, special: bool, stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ReplyText {
            decoder: StreamDecoder::new(tokenizer, special),
            stops: StopStrings::new(stops),
        }
    }

    /// The text token `id` releases (empty while held back) and the stop
    /// string it completed, if any.
    pub fn push(&mut self, id: u32) -> Released {
        match self.decoder.push(id) {
            Some(piece) => self.stops.push(&piece),
            None => Released::default(),
        }
    }

    /// The reply ended for `reason`: the text still held back, and the
    /// reason, which becomes a stop string if the flushed bytes complete
    /// one. After a stop string, a cancellation or a guard's stop nothing
    /// more is released; otherwise an unfinished character comes out as
    /// U+FFFD and held-back text can no longer become a stop string.
    pub fn end(&mut self, reason: FinishReason) -> (String, FinishReason) {
        if matches!(
            reason,
            FinishReason::StopString(_) | FinishReason::Cancelled | FinishReason::ContentFilter
        ) {
            return (String::new(), reason);
        }
        let mut reason = reason;
        let mut tail = String::new();
        if let Some(rest) = self.decoder.flush() {
            let r = self.stops.push(&rest);
            tail = r.text;
            if let Some(i) = r.stop {
                reason = FinishReason::StopString(i);
            }
        }
        tail.push_str(&self.stops.finish());
        (tail, reason)
    }
}
