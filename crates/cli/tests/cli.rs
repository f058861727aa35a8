//! The `edgellama` binary as a user runs it: flags, outputs, and clear
//! errors on bad input.

mod common;

use common::*;

#[test]
fn tokenize_vocab_only_file_matches_llama_cpp_vectors() {
    // llama.cpp's own test vectors: inputs split by a marker line, one line of
    // ids per input, tokenized without BOS.
    let vocab = testdata("ggml-vocab-llama-bpe.gguf");
    let inp = std::fs::read_to_string(testdata("ggml-vocab-llama-bpe.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(testdata("ggml-vocab-llama-bpe.gguf.out")).unwrap();
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<&str> = out.lines().collect();
    let mut checked = 0;
    for (text, ids) in inputs.iter().zip(&expected) {
        // Leading dashes would read as flags; those inputs are covered by the
        // tokenizer crate's tests.
        if text.is_empty() || text.starts_with('-') {
            continue;
        }
        let o = edgellama(&[
            "tokenize",
            "-m",
            vocab.to_str().unwrap(),
            "--ids",
            "--no-bos",
            "-p",
            text,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let want: Vec<&str> = ids.split_whitespace().collect();
        let got = String::from_utf8(o.stdout).unwrap();
        assert_eq!(
            got.trim_end(),
            format!("[{}]", want.join(", ")),
            "input {text:?}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} vectors checked");
}

#[test]
fn tokenize_adds_bos_like_llama_tokenize() {
    let vocab = testdata("ggml-vocab-llama-bpe.gguf");
    let o = edgellama(&[
        "tokenize",
        "-m",
        vocab.to_str().unwrap(),
        "--ids",
        "Hello world",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // llama-tokenize -m ggml-vocab-llama-bpe.gguf -p "Hello world" --ids
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "[128000, 9906, 1917]\n"
    );
}

#[test]
fn unknown_flag_is_a_clear_error() {
    let o = edgellama(&["run", "--no-such-flag"]);
    assert_clean_failure(&o, "--no-such-flag");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bad_values_are_rejected_before_loading() {
    let o = edgellama(&[
        "run",
        "-m",
        "/nonexistent.gguf",
        "-p",
        "x",
        "--top-p",
        "1.5",
    ]);
    assert_clean_failure(&o, "top-p");
    let o = edgellama(&["run", "-m", "/nonexistent.gguf", "-p", "x", "-t", "0"]);
    assert_clean_failure(&o, "-t");
}

#[test]
fn missing_and_truncated_models_are_clear_errors() {
    let o = edgellama(&["run", "-m", "/nonexistent/model.gguf", "-p", "x"]);
    assert_clean_failure(&o, "/nonexistent/model.gguf");

    let full = std::fs::read(testdata("ggml-vocab-llama-bpe.gguf")).unwrap();
    let dir = std::env::temp_dir().join(format!("edgellama-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cut in [3usize, 24, 1000, full.len() / 2] {
        let p = dir.join(format!("cut-{cut}.gguf"));
        std::fs::write(&p, &full[..cut]).unwrap();
        let o = edgellama(&["tokenize", "-m", p.to_str().unwrap(), "hi"]);
        assert_clean_failure(&o, "cannot load model");
        let o = edgellama(&["inspect", p.to_str().unwrap()]);
        assert_clean_failure(&o, "cannot load model");
    }
    // A vocabulary is not a model: running it names what is missing.
    let o = edgellama(&[
        "run",
        "-m",
        testdata("ggml-vocab-llama-bpe.gguf").to_str().unwrap(),
        "-p",
        "x",
    ]);
    assert_clean_failure(&o, "cannot load model");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inspect_prints_metadata_and_tensors() {
    let m = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let o = edgellama(&["inspect", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("general.architecture = \"llama\""));
    assert!(out.contains("llama.block_count = 30"));
    assert!(out.contains("token_embd.weight"));
    assert!(out.contains("272 tensors"));
}

#[test]
fn greedy_run_is_the_same_at_any_thread_count() {
    let m = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let run = |t: &str| {
        let o = edgellama(&[
            "run",
            "-m",
            m.to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "16",
            "--temp",
            "0",
            "-t",
            t,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("tokens/s"));
        String::from_utf8(o.stdout).unwrap()
    };
    let one = run("1");
    assert!(one.starts_with(" Paris."), "{one:?}");
    assert_eq!(one, run("2"));
    assert_eq!(one, run("3"));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let m = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let run = |seed: &str, t: &str| {
        let o = edgellama(&[
            "run",
            "-m",
            m.to_str().unwrap(),
            "-p",
            "Once upon a time",
            "-n",
            "16",
            "-s",
            seed,
            "-t",
            t,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(run("42", "1"), run("42", "2"));
}

#[test]
fn perplexity_on_too_short_text_says_how_much_is_needed() {
    let m = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let dir = std::env::temp_dir().join(format!("edgellama-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("short.txt");
    std::fs::write(&f, "Too short to score.").unwrap();
    let o = edgellama(&[
        "perplexity",
        "-m",
        m.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
        "-c",
        "128",
    ]);
    assert_clean_failure(&o, "at least 256");
    std::fs::remove_dir_all(&dir).ok();
}

/// The arguments that start each command that runs a model on the test
/// model (`perplexity` with the test text), with the paths they name.
fn model_commands() -> Vec<Vec<String>> {
    let smol = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let smol = smol.to_str().expect("utf-8");
    let text = testdata("shakespeare-hamlet.txt");
    let text = text.to_str().expect("utf-8");
    [
        vec!["run", "-m", smol, "-p", "x"],
        vec!["chat", "-m", smol],
        vec!["serve", "-m", smol],
        vec!["bench", "-m", smol],
        vec!["perplexity", "-m", smol, "-f", text],
        vec!["guard", "-m", smol, "-p", "x"],
    ]
    .map(|a| a.iter().map(|s| s.to_string()).collect())
    .to_vec()
}

#[test]
fn every_model_command_checks_threads_the_same_way() {
    for args in model_commands() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for t in ["0", "2000"] {
            let mut a = args.clone();
            a.extend(["-t", t]);
            assert_clean_failure(&edgellama(&a), "-t must be between 1 and 1024");
        }
    }
}

#[test]
fn cache_types_are_taken_by_llama_cpp_names_on_every_model_command() {
    for args in model_commands().into_iter().filter(|a| a[0] != "guard") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for flag in ["-ctk", "-ctv", "--cache-type-k"] {
            let mut a = args.clone();
            a.extend([flag, "q3_k"]);
            assert_clean_failure(&edgellama(&a), "unknown KV cache type 'q3_k'");
        }
    }
    // A quantized cache answers, greedy, deterministically.
    let smol = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let smol = smol.to_str().expect("utf-8");
    let run = |k: &str, v: &str| {
        let o = edgellama(&[
            "run",
            "-m",
            smol,
            "-p",
            "The capital of France is",
            "-n",
            "8",
            "--temp",
            "0",
            "-ctk",
            k,
            "-ctv",
            v,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let q8 = run("q8_0", "q8_0");
    assert!(q8.contains("Paris"), "{q8}");
    assert_eq!(q8, run("q8_0", "q8_0"));
    let o = edgellama(&[
        "bench", "-m", smol, "-p", "16", "-n", "4", "-d", "40", "-r", "1", "-ctk", "q4_0", "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v[0]["n_depth"], 40);
    assert_eq!(v[0]["type_k"], "q4_0");
    assert_eq!(v[0]["type_v"], "f16");
}
