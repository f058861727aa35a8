//! `edgellama bench`: prompt-processing and generation speed, measured the
//! way llama-bench measures them, with its output field names.

use crate::load;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use edgellama_models::{CausalLm, Logits};
use serde_json::json;
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Md,
    Json,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: load::ModelArgs,
    /// Prompt tokens processed as one batch (0: skip the prompt test).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens generated one at a time (0: skip the generation test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Threads (default: one per physical core).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Md)]
    pub output: OutputFormat,
}

struct TestResult {
    n_prompt: usize,
    n_gen: usize,
    samples_ns: Vec<u128>,
}

impl TestResult {
    fn n_tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    fn samples_ts(&self) -> Vec<f64> {
        let n = self.n_tokens() as f64;
        self.samples_ns
            .iter()
            .map(|&ns| n * 1e9 / ns as f64)
            .collect()
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Token ids for the tests: deterministic, spread over the vocabulary, as
/// llama-bench feeds arbitrary tokens (the speed does not depend on them).
fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % n_vocab) as u32).collect()
}

fn run_test(
    model: &dyn CausalLm,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
) -> Result<TestResult> {
    let n_vocab = model.info().n_vocab;
    let mut state = model.new_state(n_prompt.max(n_gen).max(1) + 1)?;
    let prompt = tokens(n_prompt, n_vocab);
    let gen = tokens(n_gen, n_vocab);
    let once = |state: &mut edgellama_models::SeqState| -> Result<()> {
        state.truncate(0);
        if n_prompt > 0 {
            model.forward(state, &prompt, Logits::Last)?;
        }
        for &t in &gen {
            model.forward(state, &[t], Logits::Last)?;
        }
        Ok(())
    };
    // One warm-up run, as llama-bench does, so page faults of the mapped
    // weights are not timed.
    once(&mut state)?;
    let mut samples_ns = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        once(&mut state)?;
        samples_ns.push(t0.elapsed().as_nanos());
    }
    Ok(TestResult {
        n_prompt,
        n_gen,
        samples_ns,
    })
}

pub fn run(a: BenchArgs) -> Result<()> {
    let threads = a.threads.unwrap_or_else(load::default_threads);
    if threads == 0 || threads > 1024 {
        bail!("-t must be between 1 and 1024, got {threads}");
    }
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    if a.n_prompt == 0 && a.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }
    let path = a.model.resolve()?;
    let file = load::open_gguf(&path, a.model.load.mode())?;
    let model = load::model(&file, &path, threads)?;
    if a.n_prompt.max(a.n_gen) > model.info().n_ctx_train.max(1 << 20) {
        bail!("test sizes exceed what the model can hold");
    }
    let mut results = Vec::new();
    if a.n_prompt > 0 {
        results.push(run_test(&*model, a.n_prompt, 0, a.reps).context("prompt test failed")?);
    }
    if a.n_gen > 0 {
        results.push(run_test(&*model, 0, a.n_gen, a.reps).context("generation test failed")?);
    }
    let info = model.info();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match a.output {
        OutputFormat::Json => {
            let list: Vec<_> = results
                .iter()
                .map(|r| {
                    let ts = r.samples_ts();
                    let (avg_ts, stddev_ts) = mean_sd(&ts);
                    let ns: Vec<f64> = r.samples_ns.iter().map(|&v| v as f64).collect();
                    let (avg_ns, stddev_ns) = mean_sd(&ns);
                    json!({
                        "build_commit": env!("CARGO_PKG_VERSION"),
                        "cpu_info": edgellama_kernels::kernels().name(),
                        "backend": "CPU",
                        "model_filename": name,
                        "model_type": info.architecture,
                        "model_size": info.weight_bytes,
                        "model_n_params": info.n_params,
                        "n_threads": threads,
                        "n_prompt": r.n_prompt,
                        "n_gen": r.n_gen,
                        "avg_ns": avg_ns as u64,
                        "stddev_ns": stddev_ns as u64,
                        "avg_ts": avg_ts,
                        "stddev_ts": stddev_ts,
                        "samples_ns": r.samples_ns.iter().map(|&v| v as u64).collect::<Vec<_>>(),
                        "samples_ts": ts,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        OutputFormat::Md => {
            println!("| model | size | params | backend | threads | test | t/s |");
            println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
            for r in &results {
                let (avg, sd) = mean_sd(&r.samples_ts());
                let test = if r.n_prompt > 0 {
                    format!("pp{}", r.n_prompt)
                } else {
                    format!("tg{}", r.n_gen)
                };
                println!(
                    "| {} | {:.2} MiB | {:.2} M | CPU ({}) | {} | {} | {:.2} ± {:.2} |",
                    name,
                    info.weight_bytes as f64 / (1024.0 * 1024.0),
                    info.n_params as f64 / 1e6,
                    edgellama_kernels::kernels().name(),
                    threads,
                    test,
                    avg,
                    sd
                );
            }
        }
    }
    Ok(())
}
