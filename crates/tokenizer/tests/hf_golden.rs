//! Meta's Llama 3.2 tokenizer.json against Hugging Face `tokenizers`.

mod common;
use common::*;

#[test]
fn llama32_corpus_matches_hf() {
    check_corpus(llama32(), "llama32_hf.json");
}

#[test]
fn llama32_decode_matches_hf() {
    let tok = llama32();
    let g = golden("llama32_hf.json");
    let ids = strings(&g["special"]);
    let with = strings(&g["decode_special"]);
    let skip = strings(&g["decode_skip_special"]);
    for i in 0..ids.len() {
        let ids = parse_ids(&ids[i]);
        assert_eq!(tok.decode(&ids, true), with[i], "decode special #{i}");
        assert_eq!(
            tok.decode(&ids, false),
            skip[i],
            "decode skipping special #{i}"
        );
    }
}

#[test]
fn llama32_vocab_and_special_ids() {
    let tok = llama32();
    assert_eq!(tok.vocab_size(), 128_257);
    assert_eq!(tok.token_id("<|image|>"), Some(128_256));
    assert_eq!(tok.bos_id(), Some(128_000));
    assert!(
        tok.adds_bos(),
        "the post-processor template prepends <|begin_of_text|>"
    );
    assert_eq!(tok.eos_id(), Some(128_001));
    assert_eq!(tok.eot_id(), Some(128_009));
    assert_eq!(tok.eom_id(), Some(128_008));
    // llama.cpp's rule: <|end_of_text|>, <|eom_id|>, <|eot_id|>.
    assert_eq!(tok.eog_ids(), [128_001, 128_008, 128_009]);
    assert!(tok.is_control(128_006));
    assert!(!tok.is_control(9906));
}

#[test]
fn llama32_with_config_reads_special_tokens() {
    let tok = edgellama_tokenizer::Tokenizer::from_hf_json_with_config(
        testdata("llama3.2-tokenizer.json"),
        testdata("llama3.2-tokenizer_config.json"),
    )
    .unwrap();
    assert_eq!(tok.bos_id(), Some(128_000));
    assert_eq!(tok.eos_id(), Some(128_001));
    assert_eq!(tok.pad_id(), tok.token_id("<|finetune_right_pad_id|>"));
    assert_eq!(tok.encode("Hi", true, false), [128_000, 13347]);
}
