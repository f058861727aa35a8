//! decode(encode(s)) == s, and the streaming decoder's text equals it without
//! ever printing a broken character.

mod common;
use common::*;
use edgellama_tokenizer::Tokenizer;

fn roundtrip_all(tok: &Tokenizer, name: &str) {
    for (i, s) in corpus().iter().enumerate() {
        for parse_special in [false, true] {
            let ids = tok.encode(s, false, parse_special);
            assert_eq!(
                &tok.decode(&ids, true),
                s,
                "{name} #{i} parse_special={parse_special}"
            );
        }
    }
}

#[test]
fn llama32_roundtrip() {
    roundtrip_all(llama32(), "llama3.2");
}

#[test]
fn smollm2_roundtrip() {
    roundtrip_all(smollm2(), "smollm2");
}

#[test]
fn gpt2_roundtrip() {
    roundtrip_all(gpt2_gguf(), "gpt2");
}

/// Streams every corpus string; returns how many tokens had to be held back.
fn stream_all(tok: &Tokenizer) -> usize {
    let mut held = 0;
    for s in corpus() {
        let ids = tok.encode(s, false, false);
        let mut dec = tok.stream_decoder(true);
        let mut text = String::new();
        for &id in &ids {
            match dec.push(id) {
                Some(part) => {
                    assert!(
                        !part.contains('\u{fffd}') || s.contains('\u{fffd}'),
                        "{s:?}: {part:?}"
                    );
                    text.push_str(&part);
                }
                None => held += usize::from(!dec.pending_bytes().is_empty()),
            }
        }
        assert_eq!(dec.flush(), None, "{s:?}: nothing may be left over");
        assert_eq!(&text, s);
    }
    held
}

#[test]
fn stream_decoder_matches_text_on_corpus() {
    let held = stream_all(llama32());
    // Thai, Hindi and emoji produce tokens that end inside a character.
    assert!(held > 100, "only {held} tokens split a character");
    assert!(stream_all(smollm2()) > 100);
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let tok = llama32();
    // Thai and Hindi with characters that Llama 3 splits into byte tokens.
    for s in ["ฤๅษี ฃ ฅ", "ऋषि ऐश्वर्य ॐ", "👨‍👩‍👧‍👦", "🇹🇭👍🏿", "ข้าวผัด ऑक्सीजन 🫠"]
    {
        let ids = tok.encode(s, false, false);
        // Every token's bytes, to see which ones are not whole characters.
        let broken = ids
            .iter()
            .filter(|&&id| std::str::from_utf8(&tok.token_to_piece(id)).is_err())
            .count();
        assert!(broken > 0, "{s:?} has no token that splits a character");
        let mut dec = tok.stream_decoder(false);
        let mut out = Vec::new();
        for &id in &ids {
            out.extend(dec.push(id));
        }
        out.extend(dec.flush());
        assert_eq!(out.concat(), s);
        for part in &out {
            assert!(!part.contains('\u{fffd}'));
        }
    }
}

#[test]
fn stream_decoder_replaces_bytes_that_never_complete() {
    let tok = llama32();
    // Byte tokens: 'ð' is 0xF0 (a 4-byte lead), 'Ġ' a space.
    let lead = tok.token_id("ð").unwrap();
    let space = tok.token_id("Ġ").unwrap();
    let a = tok.token_id("a").unwrap();
    let ids = [a, lead, space, lead];
    let mut dec = tok.stream_decoder(false);
    assert_eq!(dec.push(a).as_deref(), Some("a"));
    assert_eq!(dec.push(lead), None);
    assert_eq!(dec.pending_bytes(), [0xF0]);
    assert_eq!(dec.push(space).as_deref(), Some("\u{fffd} "));
    assert_eq!(dec.push(lead), None);
    assert_eq!(dec.flush().as_deref(), Some("\u{fffd}"));
    assert_eq!(tok.decode(&ids, false), "a\u{fffd} \u{fffd}");
}

#[test]
fn stream_decoder_works_through_arc() {
    let tok = std::sync::Arc::new(from_gguf("ggml-vocab-gpt-2.gguf"));
    let mut dec = edgellama_tokenizer::StreamDecoder::new(tok.clone(), false);
    let ids = tok.encode("héllo 👍", false, false);
    let text: String = ids.iter().filter_map(|&id| dec.push(id)).collect();
    assert_eq!(text, "héllo 👍");
}
