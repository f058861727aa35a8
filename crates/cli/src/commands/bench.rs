//! `edgellama bench`: prompt-processing and generation speed, measured the
//! way llama-bench measures them, with its output field names; with
//! `--image`, the time to encode one image with a vision model's tower and
//! projector instead.

use crate::{images, load, spec};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use edgellama_backend::CpuBackend;
use edgellama_engine::batch::SPEC_MAX_ROWS;
use edgellama_engine::spec::{Drafter, SpecParams, SpecStats};
use edgellama_engine::{generate, generate_speculative, GenerateParams};
use edgellama_gguf::{GgmlType, GgufFile};
use edgellama_models::mllama::preprocess::{self, ImageLimits};
use edgellama_models::mllama::Mllama;
use edgellama_models::{CausalLm, Logits};
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::Tokenizer;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Tokens already in the cache when each test starts (filled once,
    /// untimed, as llama-bench's -d).
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    pub n_depth: usize,
    #[command(flatten)]
    pub threads: load::ThreadsArgs,
    #[command(flatten)]
    pub kv: load::KvArgs,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Md)]
    pub output: OutputFormat,
    /// Measure image encoding instead (a vision model such as Llama 3.2
    /// Vision): the image is decoded and prepared once, then the vision
    /// tower and projector run on it once to warm up and -r times timed;
    /// no text is processed (-p and -n do not apply).
    #[arg(long = "image", value_name = "FILE", conflicts_with_all = ["n_prompt", "n_gen"])]
    pub image: Option<PathBuf>,
    /// With --image: write the projected image features of the warm-up
    /// encode to FILE, a NumPy .npy array of little-endian f32
    /// `[tiles, tokens per tile, text width]`.
    #[arg(long = "dump-features", value_name = "FILE", requires = "image")]
    pub dump_features: Option<PathBuf>,
    /// With drafting flags (-md, --spec-type): two more generation tests
    /// of -n tokens, greedy, after this text instead of arbitrary tokens:
    /// without drafts and with them (llama-bench has no such test)
    #[arg(long = "spec-prompt", value_name = "TEXT", default_value = SPEC_PROMPT)]
    pub spec_prompt: String,
    #[command(flatten)]
    pub spec: spec::SpecArgs,
}

/// A text whose continuation copies much of it, as rewriting does.
const SPEC_PROMPT: &str = "Rewrite the following text with the spelling corrected.\n\nText: The old \
lighthouse stood at the edge of the cliff for more than two hundred years. Every night the keeper \
climbed the narow stairs to light the lamp, and every morning he wrote in his log book about the ships \
that had passed.\n\nCorrected text: The old lighthouse";

struct TestResult {
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    samples_ns: Vec<u128>,
    /// For the text tests: `text` or `text+spec`, and the drafts.
    text: Option<(&'static str, SpecStats)>,
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

/// One test: `n_prompt` tokens as one batch or `n_gen` one at a time, after
/// `n_depth` tokens already in the cache.
struct Test {
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
}

/// Tokens per forward when the cache is filled to its depth (llama-bench's
/// default micro-batch).
const DEPTH_BATCH: usize = 512;

fn run_test(model: &dyn CausalLm, kv: &load::KvArgs, t: Test, reps: usize) -> Result<TestResult> {
    let Test {
        n_prompt,
        n_gen,
        n_depth,
    } = t;
    let n_vocab = model.info().n_vocab;
    let mut state = kv.new_state(model, n_depth + n_prompt.max(n_gen).max(1) + 1)?;
    let prompt = tokens(n_prompt, n_vocab);
    let gen = tokens(n_gen, n_vocab);
    // The depth is filled once; each run then starts from it.
    for chunk in tokens(n_depth, n_vocab).chunks(DEPTH_BATCH) {
        model.forward(&mut state, chunk, Logits::Last)?;
    }
    let once = |state: &mut edgellama_models::SeqState| -> Result<()> {
        state.truncate(n_depth);
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
        n_depth,
        samples_ns,
        text: None,
    })
}

/// Makes a fresh drafter for each run of a text test.
type MakeDrafter<'a> = dyn FnMut() -> Result<Box<dyn Drafter>> + 'a;

/// `n_gen` tokens generated greedily after `prompt` (end-of-generation
/// banned, so every run makes them all), with a fresh drafter from
/// `drafter()` each run when given; the time of generation alone.
fn run_text_test(
    model: &dyn CausalLm,
    tok: &Tokenizer,
    kv: &load::KvArgs,
    prompt: &[u32],
    n_gen: usize,
    reps: usize,
    mut drafter: Option<(&mut MakeDrafter<'_>, SpecParams)>,
) -> Result<TestResult> {
    let params = GenerateParams {
        max_tokens: Some(n_gen),
        sampling: SamplingParams {
            logit_bias: tok
                .eog_ids()
                .iter()
                .map(|&id| (id, f32::NEG_INFINITY))
                .collect(),
            ..SamplingParams::greedy()
        },
        ..Default::default()
    };
    let mut samples_ns = Vec::with_capacity(reps);
    let mut total = SpecStats::default();
    // One warm-up run, untimed.
    for rep in 0..=reps {
        let mut state = kv.new_state(model, prompt.len() + n_gen + 1)?;
        let stats = match drafter.as_mut() {
            Some((make, sp)) => {
                let mut d = make()?;
                generate_speculative(
                    model,
                    &mut state,
                    tok,
                    &[],
                    prompt,
                    &params,
                    &mut *d,
                    *sp,
                    |_| true,
                )?
            }
            None => generate(model, &mut state, tok, prompt, &params, |_| true)?,
        };
        if stats.n_generated != n_gen {
            bail!(
                "the text test generated {} tokens of {n_gen}",
                stats.n_generated
            );
        }
        if rep > 0 {
            samples_ns.push(stats.gen_time.as_nanos());
            total.n_steps += stats.spec.n_steps;
            total.n_drafted += stats.spec.n_drafted;
            total.n_accepted += stats.spec.n_accepted;
        }
    }
    Ok(TestResult {
        n_prompt: 0,
        n_gen,
        n_depth: 0,
        samples_ns,
        text: Some((
            if drafter.is_some() {
                "text+spec"
            } else {
                "text"
            },
            total,
        )),
    })
}

pub fn run(a: BenchArgs) -> Result<()> {
    let threads = a.threads.resolve()?;
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    if let Some(image) = &a.image {
        return run_image(&a, image, threads);
    }
    if a.n_prompt == 0 && a.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }
    let plan = a.spec.plan()?;
    let path = a.model.resolve()?;
    let file = load::open_gguf(&path, a.model.load.mode())?;
    let backend = load::backend(threads)?;
    let model = load::model_on(&file, &path, backend.clone())?;
    if a.n_depth + a.n_prompt.max(a.n_gen) > model.info().n_ctx_train.max(1 << 20) {
        bail!("test sizes exceed what the model can hold");
    }
    let mut results = Vec::new();
    let test = |n_prompt, n_gen| Test {
        n_prompt,
        n_gen,
        n_depth: a.n_depth,
    };
    if a.n_prompt > 0 {
        results.push(
            run_test(&*model, &a.kv, test(a.n_prompt, 0), a.reps).context("prompt test failed")?,
        );
    }
    if a.n_gen > 0 {
        results.push(
            run_test(&*model, &a.kv, test(0, a.n_gen), a.reps).context("generation test failed")?,
        );
    }
    if let (Some(plan), true) = (&plan, a.n_gen > 0) {
        let tok = load::tokenizer(&file, &path)?;
        let prompt = tok.encode(&a.spec_prompt, tok.adds_bos(), true);
        if prompt.is_empty() {
            bail!("--spec-prompt is empty");
        }
        results.push(
            run_text_test(&*model, &tok, &a.kv, &prompt, a.n_gen, a.reps, None)
                .context("text generation test failed")?,
        );
        let n_ctx = prompt.len() + a.n_gen + 1;
        // The draft model is loaded once; each run gets a fresh sequence.
        let draft = a
            .spec
            .draft_model(plan, &tok, &backend, a.model.hf_token.as_deref())?;
        let config = a.spec.config(plan, draft.map(|d| d.1), SPEC_MAX_ROWS);
        let mut make = || spec::sequence_drafter(&config, n_ctx);
        results.push(
            run_text_test(
                &*model,
                &tok,
                &a.kv,
                &prompt,
                a.n_gen,
                a.reps,
                Some((&mut make, plan.params)),
            )
            .context("speculative generation test failed")?,
        );
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
                        "type_k": a.kv.type_k.name(),
                        "type_v": a.kv.type_v.name(),
                        "n_prompt": r.n_prompt,
                        "n_gen": r.n_gen,
                        "n_depth": r.n_depth,
                        "avg_ns": avg_ns as u64,
                        "stddev_ns": stddev_ns as u64,
                        "avg_ts": avg_ts,
                        "stddev_ts": stddev_ts,
                        "samples_ns": r.samples_ns.iter().map(|&v| v as u64).collect::<Vec<_>>(),
                        "samples_ts": ts,
                        "test": r.text.map(|t| t.0),
                        "spec_drafted": r.text.map(|t| t.1.n_drafted),
                        "spec_accepted": r.text.map(|t| t.1.n_accepted),
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
                let mut test = if r.n_prompt > 0 {
                    format!("pp{}", r.n_prompt)
                } else {
                    format!("tg{}", r.n_gen)
                };
                if r.n_depth > 0 {
                    test += &format!(" @ d{}", r.n_depth);
                }
                if let Some((kind, st)) = r.text {
                    test += &format!(" {kind}");
                    if st.n_drafted > 0 {
                        test += &format!(" ({:.0}% kept)", 100.0 * st.acceptance());
                    }
                }
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

/// Weights of the vision tower and projector (`v.*`, `mm.*`): their bytes,
/// element count, and the type holding most bytes of their matrices (the
/// layers' and the projector's; the position tables stay F32).
fn vision_weights(file: &GgufFile) -> (u64, u64, Option<GgmlType>) {
    let mut by_type: Vec<(GgmlType, u64)> = Vec::new();
    let (mut bytes, mut params) = (0u64, 0u64);
    for t in file.tensors() {
        if !(t.name.starts_with("v.") || t.name.starts_with("mm.")) {
            continue;
        }
        bytes += t.n_bytes();
        params += t.n_elements();
        let matrix = t.dims.len() == 2 && (t.name.contains("blk.") || t.name.starts_with("mm."));
        if !matrix {
            continue;
        }
        match by_type.iter_mut().find(|(ty, _)| *ty == t.ggml_type) {
            Some((_, b)) => *b += t.n_bytes(),
            None => by_type.push((t.ggml_type, t.n_bytes())),
        }
    }
    let main = by_type.iter().max_by_key(|(_, b)| *b).map(|(ty, _)| *ty);
    (bytes, params, main)
}

/// `values` as a NumPy .npy file (format 1.0, little-endian f32, C order),
/// written through a small buffer (no copy of the values is held).
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to
    // a multiple of 64 and ended by a newline.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let len = u16::try_from(header.len()).context("npy header too long")?;
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        f.write_all(b"\x93NUMPY\x01\x00")?;
        f.write_all(&len.to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        for v in values {
            f.write_all(&v.to_le_bytes())?;
        }
        f.flush()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// `bench --image`: prepares the image once, then times the vision tower
/// and projector on it (one warm-up, then `reps` encodes).
fn run_image(a: &BenchArgs, image: &Path, threads: usize) -> Result<()> {
    let file_bytes = images::read(std::slice::from_ref(&image.to_path_buf()))?
        .pop()
        .map(|f| f.bytes)
        .unwrap_or_default();
    let path = a.model.resolve()?;
    let file = load::open_gguf(&path, a.model.load.mode())?;
    let arch = file
        .architecture()
        .with_context(|| format!("cannot load model {}", path.display()))?
        .to_string();
    if arch != "mllama" {
        bail!(
            "this model ({arch}) takes no images; bench --image needs a vision model such as Llama 3.2 Vision"
        );
    }
    let backend = Arc::new(CpuBackend::new(threads).context("cannot start the CPU backend")?);
    let model = Mllama::load(Arc::clone(&file), backend)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    let cfg = model.config().vision.preprocess();
    let image_name = image.display().to_string();

    let t0 = Instant::now();
    let decoded = preprocess::decode(&file_bytes, &ImageLimits::default())
        .with_context(|| format!("cannot use the image {image_name}"))?;
    let prepared = preprocess::preprocess(&decoded, &cfg)
        .with_context(|| format!("cannot use the image {image_name}"))?;
    let prepare_ns = t0.elapsed().as_nanos();

    // The warm-up encode: page faults of the weights and first-touch of the
    // buffers are not timed.
    let t0 = Instant::now();
    let out = model
        .encode_image(&prepared)
        .with_context(|| format!("cannot encode the image {image_name}"))?;
    let warmup_ns = t0.elapsed().as_nanos();
    let text_embd = model.info().n_embd;
    let n_tokens = out.projected.len() / text_embd.max(1);
    if let Some(dump) = &a.dump_features {
        let per_tile = n_tokens / prepared.n_tiles.max(1);
        write_npy(
            dump,
            &[prepared.n_tiles, per_tile, text_embd],
            &out.projected,
        )?;
    }
    drop(out);
    let mut samples_ns = Vec::with_capacity(a.reps);
    for _ in 0..a.reps {
        let t0 = Instant::now();
        let out = model
            .encode_image(&prepared)
            .with_context(|| format!("cannot encode the image {image_name}"))?;
        samples_ns.push(t0.elapsed().as_nanos());
        drop(out);
    }

    let info = model.info();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (vision_bytes, vision_params, vision_type) = vision_weights(&file);
    let vision_type = vision_type.map_or_else(|| "-".to_string(), |t| t.to_string());
    let ns: Vec<f64> = samples_ns.iter().map(|&v| v as f64).collect();
    let (avg_ns, stddev_ns) = mean_sd(&ns);
    let v = &model.config().vision;
    match a.output {
        OutputFormat::Json => {
            let list = [json!({
                "build_commit": env!("CARGO_PKG_VERSION"),
                "cpu_info": edgellama_kernels::kernels().name(),
                "backend": "CPU",
                "model_filename": name,
                "model_type": info.architecture,
                "model_size": info.weight_bytes,
                "model_n_params": info.n_params,
                "vision_size": vision_bytes,
                "vision_n_params": vision_params,
                "vision_type": vision_type,
                "vision_n_embd": v.n_embd,
                "vision_n_layer": v.n_layer,
                "vision_n_global": v.n_global,
                "n_threads": threads,
                "test": "image",
                "image": image_name,
                "image_width": decoded.width,
                "image_height": decoded.height,
                "n_tiles": prepared.n_tiles,
                "max_num_tiles": prepared.max_num_tiles,
                "tile_size": prepared.tile_size,
                "n_image_tokens": n_tokens,
                "prepare_ns": prepare_ns as u64,
                "warmup_ns": warmup_ns as u64,
                "avg_ns": avg_ns as u64,
                "stddev_ns": stddev_ns as u64,
                "samples_ns": samples_ns.iter().map(|&v| v as u64).collect::<Vec<_>>(),
            })];
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        OutputFormat::Md => {
            println!("| model | vision | backend | threads | test | ms/image |");
            println!("| --- | ---: | --- | ---: | --- | ---: |");
            println!(
                "| {} | {:.2} MiB {} | CPU ({}) | {} | image {}x{} ({} tile{}) | {:.1} ± {:.1} |",
                name,
                vision_bytes as f64 / (1024.0 * 1024.0),
                vision_type,
                edgellama_kernels::kernels().name(),
                threads,
                decoded.width,
                decoded.height,
                prepared.n_tiles,
                if prepared.n_tiles == 1 { "" } else { "s" },
                avg_ns / 1e6,
                stddev_ns / 1e6
            );
        }
    }
    Ok(())
}
