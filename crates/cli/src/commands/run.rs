use crate::load;
use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_engine::{generate, GenerateParams, StopReason};
use edgellama_sampler::SamplingParams;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model file (GGUF). Without it, the default model is fetched once into the cache.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: String,
    /// Tokens to generate (-1: until the model stops or the context is full).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Context size in tokens (0: the model's training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
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
}

/// A validated run: every flag checked before anything is loaded.
struct RunConfig {
    max_tokens: Option<usize>,
    threads: usize,
    sampling: SamplingParams,
}

fn validate(a: &RunArgs) -> Result<RunConfig> {
    let max_tokens = match a.n_predict {
        -1 => None,
        n if n >= 0 => Some(n as usize),
        n => bail!("-n must be -1 or a non-negative count, got {n}"),
    };
    let threads = a.threads.unwrap_or_else(load::default_threads);
    if threads == 0 || threads > 1024 {
        bail!("-t must be between 1 and 1024, got {threads}");
    }
    let seed = match a.seed {
        -1 => random_seed(),
        s if s >= 0 => s as u64,
        s => bail!("-s must be -1 or a non-negative seed, got {s}"),
    };
    let sampling = SamplingParams {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        seed,
        ..Default::default()
    };
    sampling.validate()?;
    Ok(RunConfig {
        max_tokens,
        threads,
        sampling,
    })
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
    let path = load::resolve_model(a.model.as_deref())?;
    let file = load::open_gguf(&path)?;
    let tok = load::tokenizer(&file, &path)?;
    let model = load::model(&file, &path, cfg.threads)?;
    let n_ctx = match a.ctx_size {
        0 => model.info().n_ctx_train,
        n => n,
    };
    let prompt = tok.encode(&a.prompt, tok.adds_bos(), true);
    let mut state = model.new_state(n_ctx)?;
    let params = GenerateParams {
        max_tokens: cfg.max_tokens,
        sampling: cfg.sampling,
        ..Default::default()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_err = None;
    let stats = generate(
        &*model,
        &mut state,
        &tok,
        &prompt,
        &params,
        |text| match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        },
    )
    .context("generation failed")?;
    if let Some(e) = write_err {
        // A closed pipe (`| head`) ends the run quietly, like other tools.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write to stdout");
        }
    }
    let _ = writeln!(out);
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
    if stats.stop == StopReason::ContextFull {
        eprintln!("stopped: the context of {n_ctx} tokens is full (raise it with -c)");
    }
    Ok(())
}
