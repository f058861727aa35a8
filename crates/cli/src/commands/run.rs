//! `edgellama run`: continue a prompt, or with `--tools`, answer it as a
//! chat message that may call tools and print the parsed reply as JSON.

use crate::commands::chat::load_template;
use crate::{images, load, spec};
use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_engine::{
    generate, generate_speculative, FinishReason, GenerateParams, GenerationStats,
};
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::chat::tools::{parse_reply_with, ToolParseOptions};
use edgellama_tokenizer::chat::{ChatMessage, RenderRequest};
use edgellama_tokenizer::Tokenizer;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Sampling and stop flags, named as llama.cpp names them; shared by `run`
/// and `chat`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Random seed (-1: a random one).
    #[arg(short = 's', long = "seed", default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
    /// Temperature (0: greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1.0: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0.0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Locally typical sampling (1.0: off).
    #[arg(long = "typical", default_value_t = 1.0)]
    pub typical: f32,
    /// Last tokens the penalties consider (0: off, -1: the whole context).
    #[arg(
        long = "repeat-last-n",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub repeat_last_n: i64,
    /// Repetition penalty (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Presence penalty (0.0: off).
    #[arg(
        long = "presence-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub presence_penalty: f32,
    /// Frequency penalty (0.0: off).
    #[arg(
        long = "frequency-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub frequency_penalty: f32,
    /// Token bias, TOKEN_ID+BIAS or TOKEN_ID-BIAS (`15043-inf` bans the
    /// token); repeat for several.
    #[arg(short = 'l', long = "logit-bias", allow_hyphen_values = true)]
    pub logit_bias: Vec<String>,
    /// Stop when the output contains this text (not printed); repeat for
    /// several.
    #[arg(long = "stop", visible_alias = "reverse-prompt", short = 'r')]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// Checks every value; token ids are checked against the vocabulary
    /// later, by [`check_logit_bias`].
    pub fn params(&self) -> Result<SamplingParams> {
        let seed = match self.seed {
            -1 => random_seed(),
            s if s >= 0 => s as u64,
            s => bail!("-s must be -1 or a non-negative seed, got {s}"),
        };
        let penalty_last_n = match self.repeat_last_n {
            // The context never holds more than its size: "all" is exact.
            -1 => usize::MAX,
            n if n >= 0 => n as usize,
            n => bail!("--repeat-last-n must be -1 or a non-negative count, got {n}"),
        };
        let logit_bias = self
            .logit_bias
            .iter()
            .map(|s| parse_logit_bias(s))
            .collect::<Result<Vec<_>>>()?;
        let sampling = SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical,
            penalty_last_n,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias,
            seed,
        };
        sampling.validate()?;
        if self.stop.iter().any(String::is_empty) {
            bail!("--stop needs a non-empty text");
        }
        Ok(sampling)
    }
}

/// `ID+BIAS`, `ID-BIAS` (llama.cpp's form) or `ID=BIAS`; BIAS may be `inf`.
fn parse_logit_bias(s: &str) -> Result<(u32, f32)> {
    let bad = || format!("--logit-bias expects TOKEN_ID+BIAS or TOKEN_ID-BIAS, got {s:?}");
    let at = s.find(['+', '-', '=']).with_context(bad)?;
    let id: u32 = s[..at].trim().parse().ok().with_context(bad)?;
    let sign = if &s[at..at + 1] == "-" { -1.0 } else { 1.0 };
    let bias: f32 = s[at + 1..].trim().parse().ok().with_context(bad)?;
    if bias.is_nan() || bias < 0.0 {
        bail!(bad());
    }
    Ok((id, sign * bias))
}

/// Rejects biases on tokens the vocabulary does not have.
pub fn check_logit_bias(sampling: &SamplingParams, tok: &Tokenizer) -> Result<()> {
    for &(id, _) in &sampling.logit_bias {
        if id as usize >= tok.vocab_size() {
            bail!(
                "--logit-bias: token {id} is outside the vocabulary of {} tokens",
                tok.vocab_size()
            );
        }
    }
    Ok(())
}

/// `-n`, checked: `None` for -1.
pub fn max_tokens(n: i64) -> Result<Option<usize>> {
    match n {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(n as usize)),
        n => bail!("-n must be -1 or a non-negative count, got {n}"),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: load::ModelArgs,
    /// Prompt text (with --tools: the user's message).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: String,
    /// Tokens to generate (-1: until the model stops or the context is full).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Context size in tokens (0: the model's training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    #[command(flatten)]
    pub threads: load::ThreadsArgs,
    #[command(flatten)]
    pub kv: load::KvArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: spec::SpecArgs,
    /// Tool definitions (a JSON list of function schemas): the prompt goes
    /// through the chat template as a user message offering these tools,
    /// and the reply is printed as JSON {"content", "tool_calls"}.
    #[arg(long = "tools")]
    pub tools: Option<PathBuf>,
    /// Use this Jinja chat template instead of the model's (with --tools).
    #[arg(long = "chat-template-file", requires = "tools")]
    pub chat_template_file: Option<PathBuf>,
    /// Print the prompt, as the model receives it, to stderr first.
    #[arg(long = "verbose-prompt")]
    pub verbose_prompt: bool,
    /// An image for a vision model (PNG, JPEG, WebP, GIF); repeat for
    /// several. Each goes where the prompt has `<|image|>`, or, when it has
    /// none, all go before the text.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
}

/// A validated run: every flag checked before anything is loaded.
struct RunConfig {
    max_tokens: Option<usize>,
    threads: usize,
    sampling: SamplingParams,
    tools: Option<Vec<Value>>,
    template_source: Option<String>,
    images: Vec<images::ImageFile>,
    spec: Option<spec::SpecPlan>,
}

fn validate(a: &RunArgs) -> Result<RunConfig> {
    let max_tokens = max_tokens(a.n_predict)?;
    let threads = a.threads.resolve()?;
    let sampling = a.sampling.params()?;
    let tools = a.tools.as_deref().map(read_tools).transpose()?;
    let template_source = a
        .chat_template_file
        .as_deref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the chat template {}", p.display()))
        })
        .transpose()?;
    let images = images::read(&a.images)?;
    let spec = a.spec.plan()?;
    Ok(RunConfig {
        max_tokens,
        threads,
        sampling,
        tools,
        template_source,
        images,
        spec,
    })
}

/// A tools file: a JSON list of function definitions.
fn read_tools(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tools file {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    match v {
        Value::Array(tools) => Ok(tools),
        _ => bail!(
            "{}: tools must be a JSON list of function definitions",
            path.display()
        ),
    }
}

/// The names the tools file offers, in OpenAI's shape
/// (`{"type": "function", "function": {"name": ...}}`) or bare
/// (`{"name": ...}`).
fn tool_names(tools: &[Value]) -> Vec<String> {
    tools
        .iter()
        .filter_map(|t| {
            t.pointer("/function/name")
                .or_else(|| t.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// The reply as `run --tools` prints it.
fn tool_reply_json(reply: &str, tools: &[Value]) -> Value {
    let names = tool_names(tools);
    let opts = ToolParseOptions {
        known_tools: (!names.is_empty()).then_some(names),
    };
    let parsed = parse_reply_with(reply, &opts);
    let calls: Vec<Value> = parsed
        .tool_calls
        .into_iter()
        .map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments}))
        .collect();
    serde_json::json!({"content": parsed.content, "tool_calls": calls})
}

fn random_seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (std::process::id() as u64).rotate_left(32)
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = validate(&a)?;
    let path = a.model.resolve()?;
    let file = load::open_gguf(&path, a.model.load.mode())?;
    let tok = load::tokenizer(&file, &path)?;
    check_logit_bias(&cfg.sampling, &tok)?;
    let prompt = match &cfg.tools {
        None => tok.encode(&a.prompt, tok.adds_bos(), true),
        Some(tools) => {
            let template = load_template(&file, &path, cfg.template_source.as_deref())?;
            let req = RenderRequest::new(vec![ChatMessage::user(a.prompt.clone())])
                .with_tools(tools.clone())
                .with_generation_prompt(true);
            let text = template
                .render(&req)
                .context("cannot render the prompt with the chat template")?;
            template.encode(&tok, &text)
        }
    };
    let backend = load::backend(cfg.threads)?;
    let model = load::model_on(&file, &path, backend.clone())?;
    if !cfg.images.is_empty() {
        images::preprocess_config(model.info())?;
    }
    let prompt = match model.info().image_token {
        Some(id) => images::place(prompt, id, cfg.images.len(), tok.bos_id())?,
        None => prompt,
    };
    if a.verbose_prompt {
        eprintln!("prompt ({} tokens):", prompt.len());
        eprintln!("{}", tok.decode(&prompt, true));
    }
    let n_ctx = match a.ctx_size {
        0 => model.info().n_ctx_train,
        n => n,
    };
    let mut state = a.kv.new_state(&*model, n_ctx)?;
    images::attach(&*model, &mut state, &cfg.images)?;
    let params = GenerateParams {
        max_tokens: cfg.max_tokens,
        sampling: cfg.sampling,
        stop: a.sampling.stop.clone(),
        // Tool calls may start with <|python_tag|>, which the parser needs.
        special: cfg.tools.is_some(),
        prompt_progress: Some(prompt_progress),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_err = None;
    let streaming = cfg.tools.is_none();
    let mut drafter = match &cfg.spec {
        Some(plan) => {
            Some(
                a.spec
                    .drafter(plan, &tok, n_ctx, &backend, a.model.hf_token.as_deref())?,
            )
        }
        None => None,
    };
    let on_text = |text: &str| {
        if !streaming {
            return true;
        }
        match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        }
    };
    let stats = match (&mut drafter, &cfg.spec) {
        (Some(d), Some(plan)) => generate_speculative(
            &*model,
            &mut state,
            &tok,
            &[],
            &prompt,
            &params,
            &mut **d,
            plan.params,
            on_text,
        ),
        _ => generate(&*model, &mut state, &tok, &prompt, &params, on_text),
    }
    .context("generation failed")?;
    if let Some(tools) = &cfg.tools {
        let json = tool_reply_json(&stats.text, tools);
        if let Err(e) = writeln!(out, "{json}").and_then(|_| out.flush()) {
            write_err = Some(e);
        }
    }
    if let Some(e) = write_err {
        // A closed pipe (`| head`) ends the run quietly, like other tools.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write to stdout");
        }
    }
    if streaming {
        let _ = writeln!(out);
    }
    report(&stats, n_ctx);
    if cfg.spec.is_some() {
        eprintln!("{}", spec::describe(&stats.spec));
    }
    Ok(())
}

fn report(stats: &GenerationStats, n_ctx: usize) {
    eprintln!();
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.2} tokens/s)",
        stats.n_prompt,
        stats.prompt_time.as_secs_f64(),
        stats.prompt_tps()
    );
    eprintln!(
        "generation: {} tokens in {:.2} s ({:.2} tokens/s)",
        stats.n_generated,
        stats.gen_time.as_secs_f64(),
        stats.gen_tps()
    );
    if stats.stop == FinishReason::ContextFull {
        eprintln!("stopped: the context of {n_ctx} tokens is full (raise it with -c)");
    }
}

/// A line on stderr, rewritten in place, while a long prompt is evaluated.
pub fn prompt_progress(done: usize, total: usize) {
    eprint!(
        "\rprompt: {done} / {total} tokens ({:.0}%){}",
        100.0 * done as f64 / total.max(1) as f64,
        if done == total { "\n" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn logit_bias_forms() {
        assert_eq!(parse_logit_bias("15043+1").unwrap(), (15043, 1.0));
        assert_eq!(parse_logit_bias("15043-0.5").unwrap(), (15043, -0.5));
        assert_eq!(parse_logit_bias("7=2").unwrap(), (7, 2.0));
        assert_eq!(parse_logit_bias("2-inf").unwrap(), (2, f32::NEG_INFINITY));
        for bad in ["", "+1", "x+1", "3", "3+", "3+nan", "-3+1", "3+-1"] {
            assert!(parse_logit_bias(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tool_names_in_both_shapes() {
        let tools = vec![
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {}}}),
            json!({"name": "get_time"}),
            json!({"type": "function"}),
        ];
        assert_eq!(tool_names(&tools), ["get_weather", "get_time"]);
    }

    #[test]
    fn tool_reply_json_shapes() {
        let tools = vec![json!({"type": "function", "function": {"name": "get_weather"}})];
        assert_eq!(
            tool_reply_json(
                r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#,
                &tools
            ),
            json!({"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})
        );
        assert_eq!(
            tool_reply_json("[get_weather(city='Paris')]", &tools),
            json!({"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})
        );
        assert_eq!(
            tool_reply_json("<|python_tag|>print(2 + 2)", &tools),
            json!({"content": "", "tool_calls": [{"name": "code_interpreter", "arguments": {"code": "print(2 + 2)"}}]})
        );
        // A call to a tool that was not offered stays text.
        let other = r#"{"name": "launch", "parameters": {}}"#;
        assert_eq!(
            tool_reply_json(other, &tools),
            json!({"content": other, "tool_calls": []})
        );
        assert_eq!(
            tool_reply_json("It is sunny.", &tools),
            json!({"content": "It is sunny.", "tool_calls": []})
        );
    }
}
