//! Incremental decoding for printing tokens as they are generated.

use crate::Tokenizer;

/// Turns a stream of token ids into text without ever emitting part of a
/// UTF-8 character: bytes of an unfinished character are held back until the
/// token that completes it arrives. Bytes that can never become valid UTF-8
/// come out as U+FFFD, so the concatenated output equals
/// [`Tokenizer::decode`] of all ids.
///
/// Works with `&Tokenizer`, `Arc<Tokenizer>` or an owned `Tokenizer`.
#[derive(Debug)]
pub struct StreamDecoder<T: AsRef<Tokenizer>> {
    tokenizer: T,
    special: bool,
    pending: Vec<u8>,
}

impl<T: AsRef<Tokenizer>> StreamDecoder<T> {
    /// `special`: whether control tokens are printed as their text.
    pub fn new(tokenizer: T, special: bool) -> Self {
        StreamDecoder {
            tokenizer,
            special,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text that is now complete, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        let piece = self.tokenizer.as_ref().piece(id, self.special);
        self.pending.extend_from_slice(piece);
        self.take_complete()
    }

    /// Ends the stream: returns whatever is held back, with U+FFFD for an
    /// unfinished character.
    pub fn flush(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(s)
    }

    /// Forgets held-back bytes (for a new sequence).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    fn take_complete(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            let rest = &self.pending[consumed..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // Safe split: `good` bytes were just validated.
                    out.push_str(&String::from_utf8_lossy(&rest[..good]));
                    match e.error_len() {
                        // Invalid for good: replace it, as from_utf8_lossy does.
                        Some(bad) => {
                            out.push('\u{fffd}');
                            consumed += good + bad;
                        }
                        // An unfinished character at the end: wait for more.
                        None => {
                            consumed += good;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        (!out.is_empty()).then_some(out)
    }
}
