//! GGUF vocabularies against Hugging Face `tokenizers` models rebuilt from
//! the same GGUF data (see golden/make_golden.py).

mod common;
use common::*;

#[test]
fn smollm2_corpus_matches_hf() {
    check_corpus(smollm2(), "smollm2_gguf.json");
}

#[test]
fn llama_bpe_corpus_matches_hf() {
    check_corpus(llama_bpe_gguf(), "llama_bpe_gguf.json");
}

#[test]
fn gpt2_corpus_matches_hf() {
    check_corpus(gpt2_gguf(), "gpt2_gguf.json");
}

#[test]
fn smollm2_metadata() {
    let tok = smollm2();
    assert_eq!(tok.vocab_size(), 49_152);
    assert_eq!(
        tok.pre_tokenizer(),
        edgellama_tokenizer::PreTokenizer::Smollm
    );
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.pad_id(), Some(2));
    assert!(!tok.adds_bos(), "add_bos_token is false in the file");
    assert_eq!(
        tok.encode("Hi", true, false),
        tok.encode("Hi", false, false)
    );
    // llama.cpp: <|endoftext|> and <|im_end|> by text, <reponame> as the FIM
    // repository token, and eos (= <|im_end|>).
    assert_eq!(tok.eog_ids(), [0, 2, 4]);
    assert_eq!(tok.eot_id(), Some(2));
}

#[test]
fn llama_bpe_metadata() {
    let tok = llama_bpe_gguf();
    assert_eq!(tok.vocab_size(), 128_256);
    assert_eq!(tok.bos_id(), Some(128_000));
    assert_eq!(tok.eos_id(), Some(128_001));
    assert!(tok.adds_bos(), "llama-bpe adds BOS by default");
    assert_eq!(tok.encode("Hi", true, false), [128_000, 13347]);
    assert_eq!(tok.eog_ids(), [128_001, 128_009]);
}
