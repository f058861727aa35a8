//! Speculative decoding on tiny models whose distributions are known
//! exactly: a first-order Markov chain over four letters, each row of a
//! forward pass giving the logits of the chain's row for the token fed
//! there. The target's distribution over replies is then a product of
//! table entries, and the replies drawn with drafts are compared against it.

use edgellama_backend::KvLayout;
use edgellama_engine::spec::{DraftModel, Drafter, NgramSimple, SpecParams};
use edgellama_engine::{generate_after, generate_speculative, FinishReason, GenerateParams};
use edgellama_models::{CausalLm, Logits, ModelError, ModelInfo, SeqState};
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::{
    PreTokenizer, SpecToken, SpecialIds, TokenType, Tokenizer, TokenizerSpec,
};
use std::sync::Arc;

const V: usize = 5;
const EOS: u32 = 4;

/// Letters a..d and an end token.
fn tokenizer() -> Tokenizer {
    let mut tokens: Vec<SpecToken> = ["a", "b", "c", "d"]
        .iter()
        .map(|t| SpecToken::new(*t, TokenType::Normal))
        .collect();
    tokens.push(SpecToken::new("</s>", TokenType::Control));
    Tokenizer::from_spec(TokenizerSpec {
        tokens,
        merges: Vec::new(),
        pre: PreTokenizer::Gpt2,
        ignore_merges: false,
        special: SpecialIds {
            eos: Some(EOS),
            ..Default::default()
        },
        add_bos: false,
        add_eos: false,
    })
    .unwrap()
}

/// Next-token probabilities given the current token.
struct Markov {
    info: ModelInfo,
    table: [[f32; V]; V],
}

impl Markov {
    fn new(table: [[f32; V]; V]) -> Markov {
        Markov {
            info: ModelInfo {
                architecture: "markov".into(),
                n_vocab: V,
                n_ctx_train: 1 << 12,
                n_embd: 1,
                n_layer: 1,
                n_params: 0,
                weight_bytes: 0,
                image_token: None,
                preprocess: None,
            },
            table,
        }
    }

    fn p(&self, from: u32, to: u32) -> f64 {
        self.table[from as usize][to as usize] as f64
    }
}

impl CausalLm for Markov {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn kv_layout(&self) -> KvLayout {
        KvLayout {
            n_layer: 1,
            n_head_kv: 1,
            head_dim: 1,
        }
    }

    fn forward(
        &self,
        state: &mut SeqState,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        // An image token stands for an image: one the prompt brings comes
        // with it, one among drafted tokens (after the first of a later
        // step, the token sampled last) has none.
        if let Some(img) = self.info.image_token {
            if tokens.iter().skip(1).any(|&t| t == img) && tokens.len() > 1 && state.n_past > 0 {
                return Err(ModelError::Config("an image token was drafted".into()));
            }
        }
        state.reserve(tokens.len())?;
        state.n_past += tokens.len();
        let mut out = Vec::new();
        for &t in &tokens[which.first_row(tokens.len())..] {
            out.extend(self.table[t as usize].iter().map(|p| p.ln()));
        }
        Ok(out)
    }
}

/// The target: every letter may follow every letter; the end is rare.
const TARGET: [[f32; V]; V] = [
    [0.10, 0.50, 0.20, 0.15, 0.05],
    [0.30, 0.10, 0.40, 0.15, 0.05],
    [0.25, 0.25, 0.10, 0.35, 0.05],
    [0.40, 0.20, 0.20, 0.15, 0.05],
    [0.25, 0.25, 0.25, 0.20, 0.05],
];

/// A draft that agrees with the target only roughly, and never ends.
const DRAFT: [[f32; V]; V] = [
    [0.05, 0.70, 0.10, 0.15, 0.0],
    [0.20, 0.10, 0.60, 0.10, 0.0],
    [0.50, 0.10, 0.10, 0.30, 0.0],
    [0.60, 0.10, 0.20, 0.10, 0.0],
    [0.25, 0.25, 0.25, 0.25, 0.0],
];

fn sampling(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..Default::default()
    }
}

struct Reply {
    tokens: Vec<u32>,
    stop: FinishReason,
    n_past: usize,
    n_drafted: usize,
    n_accepted: usize,
}

fn generate(
    target: &Markov,
    params: &GenerateParams,
    prompt: &[u32],
    n_ctx: usize,
    drafter: Option<&mut dyn Drafter>,
) -> Reply {
    generate_paced(target, params, prompt, n_ctx, drafter, false)
}

/// [`generate`], drafting only while drafts pay when `paced`.
fn generate_paced(
    target: &Markov,
    params: &GenerateParams,
    prompt: &[u32],
    n_ctx: usize,
    drafter: Option<&mut dyn Drafter>,
    paced: bool,
) -> Reply {
    let tok = tokenizer();
    let mut state = target.new_state(n_ctx).unwrap();
    let stats = match drafter {
        None => generate_after(target, &mut state, &tok, &[], prompt, params, |_| true),
        Some(d) => generate_speculative(
            target,
            &mut state,
            &tok,
            &[],
            prompt,
            params,
            d,
            SpecParams {
                paced,
                ..SpecParams::default()
            },
            |_| true,
        ),
    }
    .unwrap();
    Reply {
        tokens: stats.tokens,
        stop: stats.stop,
        n_past: state.n_past,
        n_drafted: stats.spec.n_drafted,
        n_accepted: stats.spec.n_accepted,
    }
}

fn draft_model(n_max: usize) -> DraftModel {
    let model = Arc::new(Markov::new(DRAFT));
    let state = model.new_state(1 << 10).unwrap();
    DraftModel::new(model, state, n_max, 0.0).unwrap()
}

/// Counts of each three-letter reply over many seeds, against the exact
/// probabilities of the target chain, within 4.5 standard deviations.
fn assert_target_distribution(mut drafter_for: impl FnMut(&SamplingParams) -> Box<dyn Drafter>) {
    let target = Markov::new(TARGET);
    // "a b c d a": earlier text for lookups, ending with "a".
    let prompt = [0u32, 1, 2, 3, 0];
    let n = 20_000;
    let mut counts = vec![0usize; V * V * V];
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..n {
        let params = GenerateParams {
            max_tokens: Some(3),
            sampling: sampling(seed as u64),
            ..Default::default()
        };
        let mut d = drafter_for(&params.sampling);
        let r = generate(&target, &params, &prompt, 64, Some(&mut *d));
        drafted += r.n_drafted;
        accepted += r.n_accepted;
        // An end token ends the reply early; it is counted as the end
        // token followed by nothing.
        let mut key = 0;
        for i in 0..3 {
            let t = r.tokens.get(i).copied().unwrap_or(EOS) as usize;
            key = key * V + t;
        }
        if r.tokens.len() < 3 {
            assert_eq!(r.stop, FinishReason::EndOfGeneration);
        }
        counts[key] += 1;
    }
    assert!(drafted > n, "drafts were checked: {drafted}");
    assert!(accepted > 0 && accepted < drafted, "{accepted}/{drafted}");
    let mut total = 0.0;
    for x1 in 0..V as u32 {
        for x2 in 0..V as u32 {
            for x3 in 0..V as u32 {
                // Sequences that end are only counted once, at the end.
                let want = if x1 == EOS {
                    if x2 != EOS || x3 != EOS {
                        continue;
                    }
                    target.p(0, EOS)
                } else if x2 == EOS {
                    if x3 != EOS {
                        continue;
                    }
                    target.p(0, x1) * target.p(x1, EOS)
                } else {
                    target.p(0, x1) * target.p(x1, x2) * target.p(x2, x3)
                };
                total += want;
                let key = ((x1 as usize) * V + x2 as usize) * V + x3 as usize;
                let got = counts[key] as f64 / n as f64;
                let tol = 4.5 * (want * (1.0 - want) / n as f64).sqrt() + 1e-9;
                assert!(
                    (got - want).abs() <= tol,
                    "{x1} {x2} {x3}: {got} vs {want} (tolerance {tol})"
                );
            }
        }
    }
    assert!((total - 1.0).abs() < 1e-6, "{total}");
}

#[test]
fn sampled_drafts_leave_the_targets_distribution() {
    assert_target_distribution(|s| Box::new(draft_model(3).sampled(s).unwrap()));
}

#[test]
fn lookup_drafts_leave_the_targets_distribution() {
    let size = NgramSimple::new(1, 3);
    assert_target_distribution(|_| Box::new(size));
}

#[test]
fn greedy_drafts_leave_the_targets_distribution() {
    assert_target_distribution(|_| Box::new(draft_model(2)));
}

/// A point draft (an n-gram lookup, a greedy draft model) is checked by
/// drawing from the target and comparing, so with the same seed the reply
/// is the one decoding without drafts gives, token for token.
#[test]
fn point_drafts_with_a_seed_give_the_same_reply() {
    let target = Markov::new(TARGET);
    let mut drafted = 0;
    for seed in 0..200u64 {
        let params = GenerateParams {
            max_tokens: Some(24),
            sampling: sampling(seed),
            ..Default::default()
        };
        let plain = generate(&target, &params, &[0, 1, 2, 3, 0, 1], 64, None);
        let mut ngram = NgramSimple::new(1, 4);
        let spec = generate(&target, &params, &[0, 1, 2, 3, 0, 1], 64, Some(&mut ngram));
        assert_eq!(spec.tokens, plain.tokens, "seed {seed}");
        assert_eq!((spec.stop, spec.n_past), (plain.stop, plain.n_past));
        let mut greedy_drafts = draft_model(3);
        let spec = generate(
            &target,
            &params,
            &[0, 1, 2, 3, 0, 1],
            64,
            Some(&mut greedy_drafts),
        );
        assert_eq!(spec.tokens, plain.tokens, "seed {seed}");
        drafted += spec.n_drafted;
    }
    assert!(drafted > 1000, "{drafted}");
}

/// Greedy decoding with drafts that are often wrong gives the reply
/// without drafts, and leaves the state where it would be, for every way a
/// reply ends.
#[test]
fn greedy_with_drafts_is_greedy_without() {
    // The target's argmax chain: a -> b -> c -> d -> a ...; the draft's
    // a -> b -> c -> a: it is wrong at every d.
    let target = Markov::new(TARGET);
    let greedy = |max_tokens, stop: &[&str], penalty: f32| GenerateParams {
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        sampling: SamplingParams {
            repeat_penalty: penalty,
            ..SamplingParams::greedy()
        },
        ..Default::default()
    };
    let cases = [
        (greedy(Some(1), &[], 1.0), 64),
        (greedy(Some(7), &[], 1.0), 64),
        (greedy(Some(40), &[], 1.0), 64),
        // The context fills.
        (greedy(None, &[], 1.0), 13),
        // A stop string inside a run of kept drafts.
        (greedy(Some(40), &["cda"], 1.0), 64),
        // Repeat penalties: the history must hold kept tokens only.
        (greedy(Some(40), &[], 1.6), 64),
    ];
    for (i, (params, n_ctx)) in cases.iter().enumerate() {
        let plain = generate(&target, params, &[0], *n_ctx, None);
        for n_max in [1, 3, 8] {
            let mut d = draft_model(n_max);
            let spec = generate(&target, params, &[0], *n_ctx, Some(&mut d));
            assert_eq!(spec.tokens, plain.tokens, "case {i}, n_max {n_max}");
            assert_eq!(spec.stop, plain.stop, "case {i}, n_max {n_max}");
            assert_eq!(spec.n_past, plain.n_past, "case {i}, n_max {n_max}");
            if plain.tokens.len() > 2 {
                assert!(spec.n_drafted > 0, "case {i}");
            }
            // Pausing drafts where they lose changes no token either.
            let mut d = draft_model(n_max);
            let paced = generate_paced(&target, params, &[0], *n_ctx, Some(&mut d), true);
            assert_eq!(paced.tokens, plain.tokens, "case {i}, n_max {n_max}");
            assert_eq!(paced.n_past, plain.n_past, "case {i}, n_max {n_max}");
        }
    }
}

/// A prompt longer than the draft model's catch-up window: the draft reads
/// only its end, and the reply is still the target's.
#[test]
fn a_long_prompt_is_drafted_from_its_end() {
    let target = Markov::new(TARGET);
    let prompt: Vec<u32> = (0..700u32).map(|i| (i * 7 + i / 3) % 4).collect();
    let params = GenerateParams {
        max_tokens: Some(300),
        sampling: SamplingParams {
            repeat_penalty: 1.3,
            ..SamplingParams::greedy()
        },
        ..Default::default()
    };
    let plain = generate(&target, &params, &prompt, 1024, None);
    // A draft context of 300: the window, then the text it grows by,
    // starts over more than once.
    let model = Arc::new(Markov::new(DRAFT));
    let mut d = DraftModel::new(model.clone(), model.new_state(300).unwrap(), 4, 0.0).unwrap();
    let spec = generate(&target, &params, &prompt, 1024, Some(&mut d));
    assert_eq!(spec.tokens, plain.tokens);
    assert_eq!(spec.n_past, plain.n_past);
    assert!(spec.n_drafted > 100, "{}", spec.n_drafted);
}

/// A lookup that would copy a vision model's image token from the prompt
/// stops before it: the model could not take it without its image.
#[test]
fn lookups_never_propose_the_image_token() {
    let mut target = Markov::new(TARGET);
    // 'd' stands for the image token here. Greedy decoding generates it
    // (the argmax chain is a b c d a ...); this stand-in takes it as the
    // token sampled last, fed first, but not as a draft.
    target.info.image_token = Some(3);
    let params = GenerateParams {
        max_tokens: Some(40),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let prompt = [0u32, 1, 2, 3, 0, 1, 2, 3, 0];
    let plain = generate(&target, &params, &prompt, 128, None);
    let mut ngram = NgramSimple::new(1, 8);
    let spec = generate(&target, &params, &prompt, 128, Some(&mut ngram));
    assert_eq!(spec.tokens, plain.tokens);
    assert!(spec.n_drafted > 0);
}
