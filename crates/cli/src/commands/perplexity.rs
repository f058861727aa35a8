use crate::load;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    /// Model file (GGUF).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Score at most this many chunks (-1: all).
    #[arg(long = "chunks", default_value_t = -1, allow_negative_numbers = true)]
    pub chunks: i64,
    #[command(flatten)]
    pub threads: load::ThreadsArgs,
    #[command(flatten)]
    pub kv: load::KvArgs,
    #[command(flatten)]
    pub load: load::LoadArgs,
}

pub fn run(a: PerplexityArgs) -> Result<()> {
    let threads = a.threads.resolve()?;
    let chunks = match a.chunks {
        -1 => None,
        n if n > 0 => Some(n as usize),
        n => bail!("--chunks must be -1 or positive, got {n}"),
    };
    if a.ctx_size < 4 {
        bail!("-c must be at least 4, got {}", a.ctx_size);
    }
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let path = load::resolve_model(a.model.as_deref())?;
    let file = load::open_gguf(&path, a.load.mode())?;
    let tok = load::tokenizer(&file, &path)?;
    let model = load::model(&file, &path, threads)?;
    let tokens = tok.encode(&text, tok.adds_bos(), false);
    let bos = if tok.adds_bos() { tok.bos_id() } else { None };
    eprintln!(
        "perplexity: {} tokens, {} per chunk",
        tokens.len(),
        a.ctx_size
    );
    let result = edgellama_engine::perplexity(
        &*model,
        &tokens,
        a.ctx_size,
        a.kv.types(),
        chunks,
        bos,
        |i, est| {
            eprint!("[{}]{est:.4},", i + 1);
        },
    )?;
    eprintln!();
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        result.ppl, result.ppl_err
    );
    Ok(())
}
