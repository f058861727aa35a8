//! `edgellama convert`: a Hugging Face checkpoint directory (safetensors) to
//! a GGUF file, as llama.cpp's convert_hf_to_gguf.py writes it.

use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_convert::{Converter, OutType, PlannedTensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Checkpoint directory: config.json, tokenizer.json,
    /// tokenizer_config.json and model*.safetensors (sharded ones with
    /// model.safetensors.index.json), as the Hugging Face hub serves them.
    pub dir: PathBuf,
    /// Where to write the GGUF file (replaced if it exists).
    #[arg(short = 'o', long = "outfile", visible_alias = "output")]
    pub outfile: PathBuf,
    /// Type of the 2-D weights: auto (BF16 or F16 as the checkpoint stores
    /// them, else F16), f32, f16, bf16 or q8_0. 1-D and norm tensors stay F32.
    #[arg(long = "outtype", default_value = "auto")]
    pub outtype: String,
    /// Threads converting rows (default: every available CPU).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let outtype: OutType = a.outtype.parse()?;
    let threads = a.threads.unwrap_or_else(crate::load::all_cpus);
    if threads == 0 || threads > 1024 {
        bail!("-t must be between 1 and 1024, got {threads}");
    }
    if !a.dir.is_dir() {
        bail!(
            "{} is not a directory: convert reads a Hugging Face checkpoint directory",
            a.dir.display()
        );
    }
    if a.outfile.is_dir() {
        bail!(
            "-o {} is a directory; give a file name",
            a.outfile.display()
        );
    }

    let start = Instant::now();
    let mut conv = Converter::open(&a.dir, outtype)
        .with_context(|| format!("cannot convert {}", a.dir.display()))?;
    conv.set_threads(threads);
    let total: u64 = conv.tensors().iter().map(PlannedTensor::n_elements).sum();
    eprintln!(
        "{}: {} tensors, {} parameters, output type {}",
        a.dir.display(),
        conv.tensors().len(),
        total,
        conv.outtype()
    );

    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {wide_msg}",
        )
        .context("progress bar template")?,
    );
    let result = conv.write_to_path_with_progress(&a.outfile, &mut |_, t| {
        bar.set_message(format!("{} {}", t.name, t.ggml_type));
        bar.inc(t.n_elements());
    });
    bar.finish_and_clear();
    let bytes = result.with_context(|| format!("cannot write {}", a.outfile.display()))?;
    eprintln!(
        "wrote {:.2} MiB in {:.1} s",
        bytes as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64()
    );
    println!("{}", a.outfile.display());
    Ok(())
}
