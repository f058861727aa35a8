//! Chat special tokens: ids with parse_special, plain text without; control
//! tokens decode to text only when asked.

mod common;
use common::*;
use edgellama_tokenizer::{SpecToken, SpecialIds, TokenType, Tokenizer, TokenizerSpec};

const CHAT: &str = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>";

#[test]
fn chat_tokens_parse_only_when_asked() {
    for tok in [llama32(), llama_bpe_gguf()] {
        // Ids from Meta's vocabulary: user=882, "\n\n"=271, Hello=9906.
        assert_eq!(
            tok.encode(CHAT, false, true),
            [128_000, 128_006, 882, 128_007, 271, 9906, 128_009]
        );
        let plain = tok.encode(CHAT, false, false);
        assert!(plain.iter().all(|&id| id < 128_000), "{plain:?}");
        assert_eq!(tok.decode(&plain, false), CHAT);
        // BOS is added once, in front, with add_special.
        assert_eq!(tok.encode("Hello", true, true), [128_000, 9906]);
    }
}

#[test]
fn chat_token_ids_by_name() {
    let tok = llama32();
    let names = [
        ("<|begin_of_text|>", 128_000),
        ("<|end_of_text|>", 128_001),
        ("<|start_header_id|>", 128_006),
        ("<|end_header_id|>", 128_007),
        ("<|eom_id|>", 128_008),
        ("<|eot_id|>", 128_009),
        ("<|python_tag|>", 128_010),
    ];
    for (name, id) in names {
        assert_eq!(tok.token_id(name), Some(id), "{name}");
        assert!(tok.is_control(id));
        assert_eq!(tok.token_to_piece(id), name.as_bytes());
        assert_eq!(tok.encode(name, false, true), [id]);
    }
}

#[test]
fn control_tokens_decode_only_with_special() {
    let tok = llama32();
    let ids = tok.encode(CHAT, false, true);
    assert_eq!(tok.decode(&ids, true), CHAT);
    assert_eq!(tok.decode(&ids, false), "user\n\nHello");
    let mut dec = tok.stream_decoder(false);
    let streamed: String = ids.iter().filter_map(|&id| dec.push(id)).collect();
    assert_eq!(streamed, "user\n\nHello");
    // Out-of-range ids decode to nothing instead of failing.
    assert_eq!(tok.decode(&[9906, u32::MAX, 200_000], false), "Hello");
    assert!(tok.token_to_piece(u32::MAX).is_empty());
}

#[test]
fn smollm2_chat_tokens() {
    let tok = smollm2();
    let text = "<|im_start|>user\nHi<|im_end|>\n";
    let ids = tok.encode(text, false, true);
    assert_eq!(ids.first(), Some(&1));
    assert!(ids.contains(&2));
    assert_eq!(tok.decode(&ids, true), text);
    assert_eq!(tok.decode(&ids, false), "user\nHi\n");
    assert!(!tok.encode(text, false, false).contains(&1));
}

fn tiny(extra: Vec<SpecToken>) -> Tokenizer {
    let mut tokens: Vec<SpecToken> = ["a", "b", "Ġ"]
        .iter()
        .map(|t| SpecToken::new(*t, TokenType::Normal))
        .collect();
    tokens.extend(extra);
    Tokenizer::from_spec(TokenizerSpec {
        tokens,
        merges: vec![],
        pre: edgellama_tokenizer::PreTokenizer::Gpt2,
        ignore_merges: false,
        special: SpecialIds::default(),
        add_bos: true,
        add_eos: false,
    })
    .unwrap()
}

#[test]
fn user_defined_tokens_always_match() {
    let tok = tiny(vec![
        SpecToken::new("<tool>", TokenType::UserDefined),
        SpecToken::new("<ctl>", TokenType::Control),
    ]);
    assert_eq!(tok.encode("a<tool>b", false, false), [0, 3, 1]);
    assert_eq!(tok.encode("a<tool>b", false, true), [0, 3, 1]);
    // Control text without parse_special: its bytes have no tokens here and
    // are dropped, never a panic.
    assert_eq!(tok.encode("a<ctl>", false, false), [0]);
    assert_eq!(tok.encode("a<ctl>", false, true), [0, 4]);
    assert_eq!(tok.decode(&[3, 4], false), "<tool>");
    // add_special without a BOS id adds nothing.
    assert_eq!(tok.encode("a", true, false), [0]);
}

#[test]
fn lstrip_rstrip_swallow_whitespace() {
    let mut t = SpecToken::new("<m>", TokenType::Control);
    t.lstrip = true;
    t.rstrip = true;
    let tok = tiny(vec![t]);
    assert_eq!(tok.encode("a  <m>  b", false, true), [0, 3, 1]);
    assert_eq!(tok.encode("a <m>", false, true), [0, 3]);
}
