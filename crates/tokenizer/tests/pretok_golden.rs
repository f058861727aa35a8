//! Our pre-tokenizer state machines against Hugging Face's regex splitting
//! on random strings of awkward characters and on the corpus.

mod common;
use common::*;
use edgellama_tokenizer::PreTokenizer;

fn check(pre: PreTokenizer, key: &str) {
    let g = golden("pretok.json");
    let texts = strings(&g["strings"]);
    let want = g[key].as_array().unwrap();
    let mut failures = Vec::new();
    for (i, s) in texts.iter().enumerate() {
        let want = strings(&want[i]);
        let got = pre.split(s);
        if got != want {
            failures.push(format!("{s:?}\n   got  {got:?}\n   want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{key}: {} of {} splits differ:\n{}",
        failures.len(),
        texts.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn llama3_splits_match_hf() {
    check(PreTokenizer::Llama3, "llama3");
}

#[test]
fn gpt2_splits_match_hf() {
    check(PreTokenizer::Gpt2, "gpt2");
}

#[test]
fn smollm_splits_match_hf() {
    check(PreTokenizer::Smollm, "smollm");
}

#[test]
fn default_splits_match_regex_sequence() {
    check(PreTokenizer::Default, "default");
}
