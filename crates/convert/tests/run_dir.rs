//! A checkpoint directory converted in memory (what `edgellama run -m DIR`
//! loads) is the file `convert` writes, and generates the same greedy text.

mod common;

use std::sync::Arc;

use common::*;
use edgellama_backend::CpuBackend;
use edgellama_convert::{Converter, OutType};
use edgellama_engine::{generate, GenerateParams};
use edgellama_gguf::GgufFile;
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::Tokenizer;

fn greedy(file: GgufFile, prompt: &str) -> (Vec<u32>, String) {
    let file = Arc::new(file);
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let backend = Arc::new(CpuBackend::new(2).unwrap());
    let model = edgellama_models::load_model(file, backend).unwrap();
    let mut state = model.new_state(256).unwrap();
    let params = GenerateParams {
        max_tokens: Some(24),
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        special: false,
        prompt_progress: None,
    };
    let ids = tok.encode(prompt, tok.adds_bos(), true);
    let stats = generate(&*model, &mut state, &tok, &ids, &params, |_| true).unwrap();
    (stats.tokens, stats.text)
}

#[test]
fn in_memory_conversion_equals_the_written_file() {
    for (name, ..) in VARIANTS {
        let dir = tiny_checkpoints().join(name);
        let conv = Converter::open(&dir, OutType::Auto).unwrap();
        let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}.gguf", std::process::id()));
        let written = conv.write_to_path(&out).unwrap();
        let on_disk = std::fs::read(&out).unwrap();
        assert_eq!(written, on_disk.len() as u64);
        let in_memory = conv.to_gguf().unwrap();
        assert_eq!(in_memory.bytes(), &on_disk[..], "{name}");
        assert!(!out
            .with_file_name(format!("{name}-{}.gguf.partial", std::process::id()))
            .exists());

        let from_file = GgufFile::open(&out).unwrap();
        let a = greedy(in_memory, "The capital of France is");
        let b = greedy(from_file, "The capital of France is");
        assert_eq!(a.0.len(), 24, "{name}: generation stopped early");
        assert_eq!(a, b, "{name}");
        let _ = std::fs::remove_file(&out);
    }
}
