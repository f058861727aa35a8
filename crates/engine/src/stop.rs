//! Stop strings on streamed text.
//!
//! Generated text arrives in pieces (one per token, or fewer when a token
//! ends inside a UTF-8 character), and a stop string may span several of
//! them. [`StopStrings`] holds back any tail of the text that could still
//! grow into a stop string, so no part of a stop string is ever printed,
//! and releases it as soon as it cannot.

/// What one piece of text gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Text that is certainly not part of a stop string: print it.
    pub text: String,
    /// The index (in the list given to [`StopStrings::new`]) of the stop
    /// string found; the text before it is in `text`, the rest is dropped.
    pub stop: Option<usize>,
}

/// A set of stop strings and the text held back while a match is possible.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopStrings {
    /// Empty stop strings are ignored (they would match before any text);
    /// the indices reported refer to the list as given.
    pub fn new<I, S>(stops: I) -> StopStrings
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopStrings {
            stops: stops.into_iter().map(Into::into).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.iter().all(|s| s.is_empty())
    }

    /// Text held back because it may be the start of a stop string.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Whether a stop string was found; later pieces are dropped.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds the next piece of generated text.
    pub fn push(&mut self, piece: &str) -> Released {
        if self.stopped {
            return Released::default();
        }
        if self.is_empty() {
            return Released {
                text: piece.to_string(),
                stop: None,
            };
        }
        self.held.push_str(piece);
        // The earliest match wins; at the same position, the first listed.
        // Nothing held before this piece matched, so searching all of
        // `held` finds only matches that end in the new piece.
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, i)) = found {
            self.held.truncate(at);
            self.stopped = true;
            return Released {
                text: std::mem::take(&mut self.held),
                stop: Some(i),
            };
        }
        let keep_from = self.partial_match_start();
        let text = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        Released { text, stop: None }
    }

    /// The end of the text: whatever is held back can no longer become a
    /// stop string and is released.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Start of the longest tail of `held` that is a proper prefix of some
    /// stop string (`held.len()` when there is none). Such a tail starts
    /// on a character boundary, since stop strings are whole UTF-8.
    fn partial_match_start(&self) -> usize {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let first = self.held.len().saturating_sub(longest.saturating_sub(1));
        (first..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the pieces; returns everything released and the stop found.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut s = StopStrings::new(stops.iter().copied());
        let mut out = String::new();
        for p in pieces {
            let r = s.push(p);
            out.push_str(&r.text);
            if r.stop.is_some() {
                return (out, r.stop);
            }
        }
        out.push_str(&s.finish());
        (out, None)
    }

    #[test]
    fn stop_string_across_pieces_is_never_printed() {
        let mut s = StopStrings::new(["User:"]);
        let mut printed = Vec::new();
        for p in ["Hello", " there.", "\nUs", "er", ":", " more"] {
            printed.push(s.push(p));
        }
        let texts: Vec<&str> = printed.iter().map(|r| r.text.as_str()).collect();
        // "Us" and "er" are held; ":" completes the stop string.
        assert_eq!(texts, ["Hello", " there.", "\n", "", "", ""]);
        assert_eq!(printed[4].stop, Some(0));
        assert!(s.stopped());
    }

    #[test]
    fn held_text_is_released_when_it_cannot_match() {
        let mut s = StopStrings::new(["###"]);
        assert_eq!(s.push("a #").text, "a ");
        assert_eq!(s.held(), "#");
        assert_eq!(s.push("#").text, "");
        assert_eq!(s.held(), "##");
        // "##x" cannot start "###": all of it goes out.
        assert_eq!(s.push("x").text, "##x");
        assert_eq!(s.held(), "");
        assert_eq!(s.push("#").text, "");
        assert_eq!(s.finish(), "#");
    }

    #[test]
    fn partial_match_restarts_inside_held_text() {
        // "aab" inside "aaab": after "aaa" only the last "aa" may still
        // start the stop string, so one "a" is released.
        let mut s = StopStrings::new(["aab"]);
        assert_eq!(s.push("a").text, "");
        assert_eq!(s.push("a").text, "");
        assert_eq!(s.push("a").text, "a");
        let r = s.push("b");
        assert_eq!((r.text.as_str(), r.stop), ("", Some(0)));
    }

    #[test]
    fn overlapping_stop_strings_earliest_wins() {
        // Both could match; "bcd" ends first but "abc" starts first.
        assert_eq!(
            run(&["bcd", "abc"], &["xa", "b", "cd"]),
            ("x".into(), Some(1))
        );
        // One stop string is a prefix of the other: the shorter one is
        // complete as soon as it appears.
        assert_eq!(
            run(&["END", "EN"], &["ok E", "N", "D"]),
            ("ok ".into(), Some(1))
        );
        // Same start: the first listed is reported.
        assert_eq!(run(&["ab", "abc"], &["zabc"]), ("z".into(), Some(0)));
        // A held prefix of one stop string completes another.
        assert_eq!(
            run(&["<|end|>", "<|e"], &["hi <", "|", "e"]),
            ("hi ".into(), Some(1))
        );
    }

    #[test]
    fn stop_string_at_the_very_start() {
        assert_eq!(run(&["\n\n"], &["\n", "\nHello"]), ("".into(), Some(0)));
        assert_eq!(run(&["Q:"], &["Q:"]), ("".into(), Some(0)));
    }

    #[test]
    fn multibyte_stop_strings() {
        // Thai and emoji stop strings arriving in pieces: never split, never
        // printed.
        assert_eq!(
            run(&["ครับ"], &["สวัสดี", "คร", "ั", "บ", " ok"]),
            ("สวัสดี".into(), Some(0))
        );
        assert_eq!(
            run(&["👋 bye"], &["hi 👋", " b", "ye!"]),
            ("hi ".into(), Some(0))
        );
        // A prefix that shares the first bytes of a character but not the
        // character: 😀 (F0 9F 98 80) vs 😁 (F0 9F 98 81).
        assert_eq!(run(&["😁"], &["a😀", "b"]), ("a😀b".into(), None));
    }

    #[test]
    fn no_stop_strings_pass_text_through() {
        let mut s = StopStrings::new(Vec::<String>::new());
        assert!(s.is_empty());
        assert_eq!(s.push("abc").text, "abc");
        let mut s = StopStrings::new([""]);
        assert!(s.is_empty());
        assert_eq!(s.push("abc").text, "abc");
        assert_eq!(run(&["", "c"], &["ab", "cd"]), ("ab".into(), Some(1)));
    }

    #[test]
    fn nothing_after_a_stop() {
        let mut s = StopStrings::new(["x"]);
        assert_eq!(s.push("axb").stop, Some(0));
        assert_eq!(s.push("more"), Released::default());
        assert_eq!(s.finish(), "");
    }
}
