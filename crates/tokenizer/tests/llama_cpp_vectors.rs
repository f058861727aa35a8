//! llama.cpp's own tokenizer test vectors (models/ggml-vocab-*.gguf.inp/.out),
//! tokenized as tests/test-tokenizer-0.cpp does: add_special = false,
//! parse_special = false.

mod common;
use common::*;

fn run(vocab: &str) {
    let tok = from_gguf(vocab);
    let inp = std::fs::read_to_string(testdata(&format!("{vocab}.inp"))).unwrap();
    let out = std::fs::read_to_string(testdata(&format!("{vocab}.out"))).unwrap();
    // Inputs are separated by "\n__ggml_vocab_test__\n"; the file ends with one.
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs: Vec<&str> = inp.split(sep).collect();
    if inputs.last() == Some(&"") {
        inputs.pop();
    }
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(inputs.len(), outputs.len());
    assert!(inputs.len() > 30);
    for (text, want) in inputs.iter().zip(&outputs) {
        let want = parse_ids(want);
        let got = tok.encode(text, false, false);
        assert_eq!(got, want, "{vocab}: {text:?}");
        assert_eq!(
            tok.decode(&got, true),
            *text,
            "{vocab} round trip: {text:?}"
        );
    }
}

#[test]
fn llama_bpe_vectors() {
    run("ggml-vocab-llama-bpe.gguf");
}

#[test]
fn gpt2_vectors() {
    run("ggml-vocab-gpt-2.gguf");
}
