//! Shared test code: locating test data, loading goldens and tokenizers once.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgellama_gguf::GgufFile;
use edgellama_tokenizer::Tokenizer;
use serde_json::Value;

pub fn testdata_dir() -> PathBuf {
    match std::env::var_os("EDGELLAMA_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"),
    }
}

/// Path of a test data file; fails the test when it is missing.
pub fn testdata(name: &str) -> PathBuf {
    let p = testdata_dir().join(name);
    assert!(
        p.is_file(),
        "test data {} is missing: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

pub fn golden(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("cannot read golden {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad golden {}: {e}", p.display()))
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

pub fn corpus() -> &'static [String] {
    static C: OnceLock<Vec<String>> = OnceLock::new();
    C.get_or_init(|| strings(&golden("corpus.json")))
}

pub fn parse_ids(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .map(|x| x.parse().expect("id"))
        .collect()
}

/// The `plain` and `special` id lists of an ids golden.
pub fn golden_ids(name: &str) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let g = golden(name);
    let get = |k: &str| {
        strings(&g[k])
            .iter()
            .map(|s| parse_ids(s))
            .collect::<Vec<_>>()
    };
    (get("plain"), get("special"))
}

pub fn llama32() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_hf_json(testdata("llama3.2-tokenizer.json"))
            .expect("load llama3.2 tokenizer.json")
    })
}

pub fn from_gguf(name: &str) -> Tokenizer {
    let file = GgufFile::open(testdata(name)).expect("open gguf");
    Tokenizer::from_gguf(&file).expect("tokenizer from gguf")
}

pub fn smollm2() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf"))
}

pub fn llama_bpe_gguf() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| from_gguf("ggml-vocab-llama-bpe.gguf"))
}

pub fn gpt2_gguf() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| from_gguf("ggml-vocab-gpt-2.gguf"))
}

/// Compares encodings of the whole corpus with a golden, reporting the first
/// few differences with their text.
pub fn check_corpus(tok: &Tokenizer, golden_name: &str) {
    let (plain, special) = golden_ids(golden_name);
    let texts = corpus();
    assert_eq!(plain.len(), texts.len());
    let mut failures = Vec::new();
    for (i, s) in texts.iter().enumerate() {
        for (parse_special, want) in [(false, &plain[i]), (true, &special[i])] {
            let got = tok.encode(s, false, parse_special);
            if &got != want {
                failures.push(format!(
                    "#{i} parse_special={parse_special} {s:?}\n   got  {got:?}\n   want {want:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} encodings differ from {golden_name}:\n{}",
        failures.len(),
        2 * texts.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
