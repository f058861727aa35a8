use crate::decode::{prime_penalties, ReplyText};
use crate::spec::{Draft, Drafter, Pacer, SpecParams, SpecStats};
use crate::{EngineError, FinishReason};
use edgellama_models::{CausalLm, Logits, SeqState};
use edgellama_sampler::{Sampler, SamplingParams};
use edgellama_tokenizer::Tokenizer;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    /// Stop after this many new tokens (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Texts that end generation; they are never passed to the callback,
    /// not even in part.
    pub stop: Vec<String>,
    /// Pass control tokens (such as `<|python_tag|>`) to the callback as
    /// their text; end-of-generation tokens never are.
    pub special: bool,
    /// Called with (tokens evaluated, prompt tokens) after each
    /// [`PROMPT_CHUNK`] of a prompt longer than one.
    pub prompt_progress: Option<fn(usize, usize)>,
}

/// Prompt tokens evaluated per forward call of [`generate`]: a whole
/// number of the models' micro-batches, so chunking changes no result.
pub const PROMPT_CHUNK: usize = 8 * edgellama_models::layers::head::UBATCH;

#[derive(Debug, Clone)]
pub struct GenerationStats {
    /// Tokens evaluated before the first one was generated.
    pub n_prompt: usize,
    pub prompt_time: Duration,
    pub n_generated: usize,
    pub gen_time: Duration,
    pub stop: FinishReason,
    /// The generated tokens (end-of-generation tokens excluded). The last
    /// one is not in the state when generation was cancelled or the
    /// context filled: [`SeqState::n_past`] says how far the state goes.
    pub tokens: Vec<u32>,
    /// The text passed to the callback, all of it.
    pub text: String,
    /// Drafts checked and kept (all 0 without speculative decoding).
    pub spec: SpecStats,
}

impl GenerationStats {
    pub fn prompt_tps(&self) -> f64 {
        self.n_prompt as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    pub fn gen_tps(&self) -> f64 {
        self.n_generated as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// Evaluates `prompt` and generates until a stop condition, calling
/// `on_text` with each piece of decoded text as soon as it is whole UTF-8
/// and cannot be part of a stop string. `on_text` returns `false` to stop
/// early.
pub fn generate(
    model: &dyn CausalLm,
    state: &mut SeqState,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: impl FnMut(&str) -> bool,
) -> Result<GenerationStats, EngineError> {
    run(model, state, tokenizer, &[], prompt, params, None, on_text)
}

/// [`generate`] on a state that already holds `cached` (the tokens before
/// `prompt`): only `prompt` is evaluated, and the penalties' history
/// starts from the end of `cached` followed by `prompt`, as if the whole
/// text had been given at once.
pub fn generate_after(
    model: &dyn CausalLm,
    state: &mut SeqState,
    tokenizer: &Tokenizer,
    cached: &[u32],
    prompt: &[u32],
    params: &GenerateParams,
    on_text: impl FnMut(&str) -> bool,
) -> Result<GenerationStats, EngineError> {
    run(
        model, state, tokenizer, cached, prompt, params, None, on_text,
    )
}

/// [`generate_after`] with speculative decoding: `drafter` proposes tokens,
/// the model checks them in one batched forward pass per step. The output is
/// the one [`generate_after`] gives: for greedy decoding token for token,
/// for sampling in distribution (see [`crate::spec`]).
#[allow(clippy::too_many_arguments)]
pub fn generate_speculative(
    model: &dyn CausalLm,
    state: &mut SeqState,
    tokenizer: &Tokenizer,
    cached: &[u32],
    prompt: &[u32],
    params: &GenerateParams,
    drafter: &mut dyn Drafter,
    spec: SpecParams,
    on_text: impl FnMut(&str) -> bool,
) -> Result<GenerationStats, EngineError> {
    run(
        model,
        state,
        tokenizer,
        cached,
        prompt,
        params,
        Some((drafter, spec)),
        on_text,
    )
}

/// The reply so far and where it goes.
struct Output<'t, F> {
    tokenizer: &'t Tokenizer,
    reply: ReplyText<&'t Tokenizer>,
    text: String,
    tokens: Vec<u32>,
    on_text: F,
    n_ctx: usize,
}

impl<F: FnMut(&str) -> bool> Output<'_, F> {
    /// Takes the token generated for position `pos`; the reason to stop,
    /// if it ends the reply.
    fn take(&mut self, id: u32, pos: usize) -> Option<FinishReason> {
        if self.tokenizer.is_eog(id) {
            return Some(FinishReason::EndOfGeneration);
        }
        self.tokens.push(id);
        let r = self.reply.push(id);
        if !self.emit(&r.text) {
            return Some(FinishReason::Cancelled);
        }
        if let Some(i) = r.stop {
            return Some(FinishReason::StopString(i));
        }
        if pos >= self.n_ctx {
            return Some(FinishReason::ContextFull);
        }
        None
    }

    /// Passes released text on; false when the caller wants no more.
    fn emit(&mut self, piece: &str) -> bool {
        if piece.is_empty() {
            return true;
        }
        self.text.push_str(piece);
        (self.on_text)(piece)
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: &dyn CausalLm,
    state: &mut SeqState,
    tokenizer: &Tokenizer,
    cached: &[u32],
    prompt: &[u32],
    params: &GenerateParams,
    mut drafter: Option<(&mut dyn Drafter, SpecParams)>,
    on_text: impl FnMut(&str) -> bool,
) -> Result<GenerationStats, EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if state.n_past + prompt.len() > state.n_ctx() {
        return Err(EngineError::PromptTooLong {
            n_prompt: state.n_past + prompt.len(),
            n_ctx: state.n_ctx(),
        });
    }
    let mut sampler = Sampler::new(&params.sampling)?;
    prime_penalties(&mut sampler, params.sampling.penalty_last_n, cached, prompt);
    let n_ctx = state.n_ctx();
    let mut out = Output {
        tokenizer,
        reply: ReplyText::new(tokenizer, params.special, params.stop.iter().cloned()),
        text: String::new(),
        tokens: Vec::new(),
        on_text,
        n_ctx,
    };

    let t0 = Instant::now();
    let mut logits = Vec::new();
    let mut done = 0;
    for chunk in prompt.chunks(PROMPT_CHUNK) {
        done += chunk.len();
        let which = if done == prompt.len() {
            Logits::Last
        } else {
            Logits::From(chunk.len())
        };
        logits = model.forward(state, chunk, which)?;
        if let Some(progress) = params
            .prompt_progress
            .filter(|_| prompt.len() > PROMPT_CHUNK)
        {
            progress(done, prompt.len());
        }
    }
    let prompt_time = t0.elapsed();

    let t1 = Instant::now();
    let n_vocab = model.info().n_vocab;
    let mut spec = SpecStats::default();
    let mut pacer = Pacer::default();
    // Every token of the sequence, for the drafter.
    let mut history = Vec::new();
    if drafter.is_some() {
        history.extend_from_slice(cached);
        history.extend_from_slice(prompt);
    }
    // Each turn of 'gen starts with `logits` for the position after every
    // token generated so far, all of them in the state.
    let stop = 'gen: loop {
        if params.max_tokens.is_some_and(|m| out.tokens.len() >= m) {
            break FinishReason::MaxTokens;
        }
        let id = sampler.sample(&logits)?;
        if let Some(reason) = out.take(id, state.n_past) {
            break reason;
        }
        // A token generated but not yet evaluated, at position n_past.
        let mut pending = id;
        loop {
            let step = Instant::now();
            let mut consulted = false;
            let draft = match drafter.as_mut() {
                Some((d, sp)) => {
                    history.push(pending);
                    let room = (n_ctx - state.n_past - 1).min(
                        params
                            .max_tokens
                            .map_or(usize::MAX, |m| m - out.tokens.len()),
                    );
                    if room > 0 && (!sp.paced || pacer.draft_now()) {
                        consulted = true;
                        d.draft(&history, room)?
                            .fit(room, sp.n_min, model.info().image_token)
                    } else {
                        Draft::default()
                    }
                }
                None => Draft::default(),
            };
            if draft.is_empty() {
                logits = model.forward(state, &[pending], Logits::Last)?;
                if consulted {
                    pacer.spec_step(step.elapsed(), 1);
                } else {
                    pacer.plain_step(step.elapsed());
                }
                continue 'gen;
            }
            // The drafts fit the context and the token budget (see `room`),
            // so only a token's own verdict can end the reply below.
            let base = state.n_past;
            let k = draft.tokens.len();
            let mut batch = Vec::with_capacity(k + 1);
            batch.push(pending);
            batch.extend_from_slice(&draft.tokens);
            let rows = model.forward(state, &batch, Logits::All)?;
            spec.n_steps += 1;
            spec.n_drafted += k;
            let mut kept_all = true;
            let accepted_before = spec.n_accepted;
            for (j, row) in rows.chunks_exact(n_vocab).take(k).enumerate() {
                let v = sampler.verify(row, draft.tokens[j], draft.dist(j))?;
                let pos = base + 1 + j;
                if let Some(reason) = out.take(v.token, pos) {
                    state.truncate(pos);
                    break 'gen reason;
                }
                if !v.accepted {
                    // Nothing of the rejected drafts stays: the state ends
                    // before the replacement, which is evaluated next.
                    state.truncate(pos);
                    pending = v.token;
                    kept_all = false;
                    break;
                }
                history.push(v.token);
                spec.n_accepted += 1;
            }
            let kept = spec.n_accepted - accepted_before;
            if let Some((d, _)) = drafter.as_mut() {
                d.feedback(k, kept);
            }
            pacer.spec_step(step.elapsed(), 1 + kept);
            if kept_all {
                logits = rows[k * n_vocab..(k + 1) * n_vocab].to_vec();
                continue 'gen;
            }
        }
    };
    let (tail, mut stop) = out.reply.end(stop);
    if !out.emit(&tail) {
        stop = FinishReason::Cancelled;
    }
    Ok(GenerationStats {
        n_prompt: prompt.len(),
        prompt_time,
        n_generated: out.tokens.len(),
        gen_time: t1.elapsed(),
        stop,
        tokens: out.tokens,
        text: out.text,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellama_backend::KvLayout;
    use edgellama_models::{ModelError, ModelInfo};
    use std::path::PathBuf;
    use std::sync::OnceLock;

    fn testdata(name: &str) -> PathBuf {
        let dir = std::env::var_os("EDGELLAMA_TESTDATA").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"),
            PathBuf::from,
        );
        let p = dir.join(name);
        assert!(
            p.is_file(),
            "{} is missing: run scripts/fetch-testdata.sh",
            p.display()
        );
        p
    }

    /// Meta's Llama 3.2 tokenizer: its byte-level BPE splits Thai and emoji
    /// across tokens, which is what the UTF-8 tests need.
    fn llama3() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            Tokenizer::from_hf_json_with_config(
                testdata("llama3.2-tokenizer.json"),
                testdata("llama3.2-tokenizer_config.json"),
            )
            .unwrap()
        })
    }

    const EOT: u32 = 128009;
    const EOM: u32 = 128008;
    const END_OF_TEXT: u32 = 128001;
    const PYTHON_TAG: u32 = 128010;

    /// A model that plays back a script: after `prompt_len` positions, the
    /// next token is `script[n_past - prompt_len]`, by a wide margin; past
    /// the script's end it says "!" forever. With `flat`, it instead gives
    /// every token of `flat` the logits listed, for penalty tests.
    struct Scripted {
        info: ModelInfo,
        prompt_len: usize,
        script: Vec<u32>,
        flat: Vec<(u32, f32)>,
    }

    impl Scripted {
        fn new(prompt_len: usize, script: Vec<u32>) -> Scripted {
            Scripted {
                info: ModelInfo {
                    architecture: "scripted".into(),
                    n_vocab: 128256,
                    n_ctx_train: 1 << 16,
                    n_embd: 1,
                    n_layer: 1,
                    n_params: 0,
                    weight_bytes: 0,
                    image_token: None,
                    preprocess: None,
                },
                prompt_len,
                script,
                flat: Vec::new(),
            }
        }
    }

    impl CausalLm for Scripted {
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
            if state.n_past + tokens.len() > state.n_ctx() {
                return Err(ModelError::ContextFull {
                    n_past: state.n_past,
                    n_new: tokens.len(),
                    n_ctx: state.n_ctx(),
                });
            }
            state.n_past += tokens.len();
            if which != Logits::Last {
                assert_eq!(
                    which,
                    Logits::From(tokens.len()),
                    "only the last row is read"
                );
                return Ok(Vec::new());
            }
            let mut logits = vec![0.0f32; self.info.n_vocab];
            if !self.flat.is_empty() {
                for &(id, l) in &self.flat {
                    logits[id as usize] = l;
                }
                return Ok(logits);
            }
            let step = state.n_past - self.prompt_len;
            let next = self.script.get(step).copied().unwrap_or(0);
            logits[next as usize] = 20.0;
            Ok(logits)
        }
    }

    struct Outcome {
        pieces: Vec<String>,
        stats: GenerationStats,
        n_past: usize,
    }

    fn play(script: Vec<u32>, params: &GenerateParams, n_ctx: usize) -> Outcome {
        let prompt = [128000u32, 9906];
        let model = Scripted::new(prompt.len(), script);
        let mut state = model.new_state(n_ctx).unwrap();
        let mut pieces = Vec::new();
        let stats = generate(&model, &mut state, llama3(), &prompt, params, |t| {
            pieces.push(t.to_string());
            true
        })
        .unwrap();
        assert_eq!(pieces.concat(), stats.text);
        Outcome {
            pieces,
            stats,
            n_past: state.n_past,
        }
    }

    fn greedy() -> GenerateParams {
        GenerateParams {
            sampling: SamplingParams::greedy(),
            ..Default::default()
        }
    }

    fn with_stop(stop: &[&str]) -> GenerateParams {
        GenerateParams {
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..greedy()
        }
    }

    fn encode(text: &str) -> Vec<u32> {
        llama3().encode(text, false, false)
    }

    /// Tokens whose bytes are not whole UTF-8 on their own.
    fn split_tokens(ids: &[u32]) -> usize {
        ids.iter()
            .filter(|&&id| std::str::from_utf8(llama3().piece(id, false)).is_err())
            .count()
    }

    #[test]
    fn every_end_of_generation_token_stops() {
        let mut eog = llama3().eog_ids().to_vec();
        eog.sort();
        assert!(
            [END_OF_TEXT, EOM, EOT].iter().all(|t| eog.contains(t)),
            "{eog:?}"
        );
        for end in [EOT, EOM, END_OF_TEXT] {
            let mut script = encode("Hi there");
            script.push(end);
            script.extend(encode(" never shown"));
            let o = play(script, &greedy(), 64);
            assert_eq!(o.stats.stop, FinishReason::EndOfGeneration);
            assert_eq!(o.stats.text, "Hi there");
            assert_eq!(o.stats.tokens, encode("Hi there"));
        }
    }

    #[test]
    fn stop_string_spanning_tokens_is_never_passed_on() {
        let script = encode("Hello there.\nUser: more text");
        let o = play(script, &with_stop(&["User:"]), 64);
        assert_eq!(o.stats.stop, FinishReason::StopString(0));
        assert_eq!(o.stats.text, "Hello there.\n");
        assert!(o.pieces.iter().all(|p| !p.contains('U')), "{:?}", o.pieces);
        // Generation ended at the token that completed the stop string.
        assert_eq!(o.stats.tokens, encode("Hello there.\nUser:"));
    }

    #[test]
    fn stop_string_at_the_very_start() {
        let o = play(encode("\n\nHello"), &with_stop(&["\n\n"]), 64);
        assert_eq!(o.stats.stop, FinishReason::StopString(0));
        assert_eq!(o.stats.text, "");
        assert!(o.pieces.is_empty());
    }

    #[test]
    fn overlapping_stop_strings() {
        // Llama 3 tokens: "x", " =", " ", "1", " ###", " END", " ###".
        let script = encode("x = 1 ### END ###");
        // Both complete with " END": the one that starts first wins.
        let o = play(script.clone(), &with_stop(&["### END", "# E"]), 64);
        assert_eq!(o.stats.text, "x = 1 ");
        assert_eq!(o.stats.stop, FinishReason::StopString(0));
        // "D" completes a token before "END ###" could.
        let o = play(script.clone(), &with_stop(&["END ###", "D"]), 64);
        assert_eq!(o.stats.text, "x = 1 ### EN");
        assert_eq!(o.stats.stop, FinishReason::StopString(1));
        // A stop string that never completes leaves the held text to be
        // released at the end.
        let mut s = script;
        s.push(EOT);
        let o = play(s, &with_stop(&["### ENDS"]), 64);
        assert_eq!(o.stats.text, "x = 1 ### END ###");
        assert_eq!(o.stats.stop, FinishReason::EndOfGeneration);
    }

    #[test]
    fn multibyte_text_split_across_tokens() {
        let text = "สวัสดีครับ 😀👋 ok";
        let mut script = encode(text);
        assert!(
            split_tokens(&script) >= 2,
            "the test needs split characters"
        );
        script.push(EOT);
        let o = play(script.clone(), &greedy(), 64);
        assert_eq!(o.stats.text, text);
        assert!(!o.stats.text.contains('\u{FFFD}'));
        // Stop strings made of split characters.
        for (stop, before) in [("😀", "สวัสดีครับ "), ("ครับ", "สวัสดี"), ("👋 ok", "สวัสดีครับ 😀")]
        {
            let o = play(script.clone(), &with_stop(&[stop]), 64);
            assert_eq!(o.stats.stop, FinishReason::StopString(0), "{stop}");
            assert_eq!(o.stats.text, before, "{stop}");
        }
    }

    #[test]
    fn unfinished_character_at_max_tokens_is_flushed() {
        // Stopping in the middle of an emoji's bytes prints U+FFFD, as a
        // lossy decode of the same tokens would.
        let script = encode("a😀");
        let split_at = (1..script.len())
            .find(|&n| llama3().decode(&script[..n], false).contains('\u{FFFD}'))
            .expect("an emoji split across tokens");
        let params = GenerateParams {
            max_tokens: Some(split_at),
            ..greedy()
        };
        let o = play(script.clone(), &params, 64);
        assert_eq!(o.stats.stop, FinishReason::MaxTokens);
        assert_eq!(o.stats.text, llama3().decode(&script[..split_at], false));
    }

    #[test]
    fn max_tokens() {
        let params = GenerateParams {
            max_tokens: Some(3),
            ..greedy()
        };
        let script = encode("one two three four five");
        let o = play(script.clone(), &params, 64);
        assert_eq!(o.stats.stop, FinishReason::MaxTokens);
        assert_eq!(o.stats.tokens, script[..3]);
        assert_eq!(o.n_past, 2 + 3);
        let o = play(
            script,
            &GenerateParams {
                max_tokens: Some(0),
                ..greedy()
            },
            64,
        );
        assert_eq!(
            (o.stats.stop, o.stats.text.as_str()),
            (FinishReason::MaxTokens, "")
        );
    }

    #[test]
    fn full_context_is_a_stop_reason_not_a_cut() {
        // Prompt of 2 in a context of 5: tokens 1-3 are evaluated, the 4th
        // is printed but finds no room.
        let script = encode(" a b c d e f g h");
        let o = play(script.clone(), &greedy(), 5);
        assert_eq!(o.stats.stop, FinishReason::ContextFull);
        assert_eq!(o.stats.tokens, script[..4]);
        assert_eq!(o.n_past, 5);
        assert_eq!(o.stats.text, " a b c d");

        let model = Scripted::new(2, script);
        let mut state = model.new_state(4).unwrap();
        let err = generate(
            &model,
            &mut state,
            llama3(),
            &[1, 2, 3, 4, 5],
            &greedy(),
            |_| true,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            EngineError::PromptTooLong {
                n_prompt: 5,
                n_ctx: 4
            }
        ));
        assert!(err.to_string().contains("-c"), "{err}");
    }

    #[test]
    fn callback_can_cancel() {
        let script = encode(" one two three four");
        let model = Scripted::new(2, script);
        let mut state = model.new_state(64).unwrap();
        let mut n = 0;
        let stats = generate(&model, &mut state, llama3(), &[1, 2], &greedy(), |_| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert_eq!(stats.stop, FinishReason::Cancelled);
        assert_eq!(stats.text, " one two");
        // The token whose text was refused is not in the state.
        assert_eq!(state.n_past, 2 + 1);
    }

    #[test]
    fn control_tokens_printed_only_when_asked() {
        let mut script = vec![PYTHON_TAG];
        script.extend(encode("print(1)"));
        script.push(EOM);
        let o = play(script.clone(), &greedy(), 64);
        assert_eq!(o.stats.text, "print(1)");
        let o = play(
            script,
            &GenerateParams {
                special: true,
                ..greedy()
            },
            64,
        );
        assert_eq!(o.stats.text, "<|python_tag|>print(1)");
    }

    #[test]
    fn penalties_see_the_cached_tokens() {
        // Token 100 leads 101 by 1.0 vs 0.9; a repeat penalty of 2 halves
        // 100's logit when it is among the recent tokens, cached or new.
        let mut model = Scripted::new(0, Vec::new());
        model.flat = vec![(100, 1.0), (101, 0.9)];
        let params = GenerateParams {
            max_tokens: Some(1),
            sampling: SamplingParams {
                repeat_penalty: 2.0,
                ..SamplingParams::greedy()
            },
            ..Default::default()
        };
        let first = |cached: &[u32], prompt: &[u32]| {
            let mut state = model.new_state(128).unwrap();
            state.n_past = cached.len();
            generate_after(
                &model,
                &mut state,
                llama3(),
                cached,
                prompt,
                &params,
                |_| true,
            )
            .unwrap()
            .tokens[0]
        };
        assert_eq!(first(&[], &[5]), 100);
        assert_eq!(first(&[100], &[5]), 101);
        assert_eq!(first(&[], &[100, 5]), 101);
        // Beyond the last 64 tokens it is forgotten.
        let mut long = vec![100u32];
        long.extend([5u32; 64]);
        assert_eq!(first(&long, &[5]), 100);
    }

    #[test]
    fn a_long_prompt_is_evaluated_in_chunks_with_progress() {
        static SEEN: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());
        fn record(done: usize, total: usize) {
            SEEN.lock().unwrap().push((done, total));
        }
        let n = 2 * PROMPT_CHUNK + 5;
        let prompt = vec![9906u32; n];
        let model = Scripted::new(n, vec![1, 2, EOT]);
        let mut state = model.new_state(n + 8).unwrap();
        let params = GenerateParams {
            prompt_progress: Some(record),
            ..greedy()
        };
        let stats = generate(&model, &mut state, llama3(), &prompt, &params, |_| true).unwrap();
        assert_eq!(stats.tokens, [1, 2]);
        assert_eq!(stats.n_prompt, n);
        let want = [PROMPT_CHUNK, 2 * PROMPT_CHUNK, n].map(|d| (d, n));
        assert_eq!(*SEEN.lock().unwrap(), want);
    }
}
