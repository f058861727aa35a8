//! Speculative decoding on real models: greedy replies are the replies
//! without drafts, token for token, because a verification batch computes
//! every position exactly as decoding one token at a time does.

#[path = "common/perplexity.rs"]
mod perplexity;

use edgellama_backend::CpuBackend;
use edgellama_engine::spec::{check_vocab, DraftModel, Drafter, NgramSimple, SpecParams};
use edgellama_engine::{generate, generate_speculative, GenerateParams, GenerationStats};
use edgellama_gguf::GgufFile;
use edgellama_models::CausalLm;
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::Tokenizer;
use perplexity::testdata;
use std::sync::Arc;

fn load(name: &str, backend: &Arc<CpuBackend>) -> (Arc<dyn CausalLm>, Tokenizer) {
    let file = Arc::new(GgufFile::open(testdata(name)).expect("open"));
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let model = edgellama_models::load_model(file, backend.clone()).expect("load");
    (Arc::from(model), tok)
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(n),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    }
}

fn plain(
    model: &dyn CausalLm,
    tok: &Tokenizer,
    prompt: &[u32],
    p: &GenerateParams,
) -> (GenerationStats, usize) {
    let mut state = model.new_state(1024).unwrap();
    let stats = generate(model, &mut state, tok, prompt, p, |_| true).unwrap();
    (stats, state.n_past)
}

fn speculative(
    model: &dyn CausalLm,
    tok: &Tokenizer,
    prompt: &[u32],
    p: &GenerateParams,
    drafter: &mut dyn Drafter,
) -> (GenerationStats, usize) {
    let mut state = model.new_state(1024).unwrap();
    let stats = generate_speculative(
        model,
        &mut state,
        tok,
        &[],
        prompt,
        p,
        drafter,
        // Every step drafts: the tests count on drafts being checked.
        SpecParams {
            paced: false,
            ..SpecParams::default()
        },
        |_| true,
    )
    .unwrap();
    (stats, state.n_past)
}

/// A rewrite copies its input: the lookup drafts long runs of it, and the
/// reply is the one without drafts.
#[test]
fn smollm2_lookup_drafts_change_no_token() {
    let backend = Arc::new(CpuBackend::new(2).unwrap());
    let (model, tok) = load("SmolLM2-135M-Instruct.Q4_1.gguf", &backend);
    let text = "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun \
                while the fox runs through the forest, looking for something to eat.";
    let prompt = tok.encode(
        &format!("Text: {text}\nThe same text again, word for word:\nText: {text}\nText:"),
        tok.adds_bos(),
        false,
    );
    let p = greedy(48);
    let (want, want_past) = plain(&*model, &tok, &prompt, &p);
    for size_n in [2, 4, 12] {
        let mut ngram = NgramSimple::new(size_n, 48);
        let (got, past) = speculative(&*model, &tok, &prompt, &p, &mut ngram);
        assert_eq!(got.text, want.text, "size_n {size_n}");
        assert_eq!(got.tokens, want.tokens, "size_n {size_n}");
        assert_eq!((got.stop, past), (want.stop, want_past));
        assert!(
            got.spec.n_accepted >= 16,
            "size_n {size_n}: {:?} for {:?}",
            got.spec,
            want.text
        );
    }
}

/// A Q8_0 copy of a small random Llama 3.2 drafts for its F32 original:
/// the two disagree now and then, and the reply is the original's.
#[test]
fn a_quantized_draft_model_changes_no_token() {
    let backend = Arc::new(CpuBackend::new(2).unwrap());
    let (target, tok) = load("tiny-llama32-f32.gguf", &backend);
    let (draft, draft_tok) = load("tiny-llama32-q8_0.gguf", &backend);
    check_vocab(&tok, &draft_tok).unwrap();
    let prompt = tok.encode("Once upon a time, in a land far away,", true, false);
    let p = greedy(96);
    let (want, want_past) = plain(&*target, &tok, &prompt, &p);
    for n_max in [1, 3, 16] {
        let state = draft.new_state(1024).unwrap();
        let mut d = DraftModel::new(draft.clone(), state, n_max, 0.0).unwrap();
        let (got, past) = speculative(&*target, &tok, &prompt, &p, &mut d);
        assert_eq!(got.tokens, want.tokens, "n_max {n_max}");
        assert_eq!((got.stop, past), (want.stop, want_past), "n_max {n_max}");
        assert!(
            got.spec.n_drafted > 0 && got.spec.n_accepted > 0,
            "{:?}",
            got.spec
        );
    }
}

#[test]
fn a_draft_with_another_vocabulary_is_refused() {
    let backend = Arc::new(CpuBackend::new(1).unwrap());
    let (_, llama) = load("tiny-llama32-f32.gguf", &backend);
    let (_, smol) = load("SmolLM2-135M-Instruct.Q4_1.gguf", &backend);
    let err = check_vocab(&llama, &smol).unwrap_err().to_string();
    assert!(
        err.contains("49152 tokens in the draft, 128256 in the target"),
        "{err}"
    );
}
