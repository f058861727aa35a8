//! Opening a model file and building what the commands need from it.

use anyhow::{Context, Result};
use edgellama_backend::CpuBackend;
use edgellama_gguf::GgufFile;
use edgellama_models::CausalLm;
use edgellama_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The thread count used when `-t` is not given: one per available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `-m PATH`, or the default model, fetched into the cache on first use.
pub fn resolve_model(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) => Ok(p.to_path_buf()),
        None => crate::fetch::default_model(),
    }
}

pub fn open_gguf(path: &Path) -> Result<Arc<GgufFile>> {
    let file =
        GgufFile::open(path).with_context(|| format!("cannot load model {}", path.display()))?;
    Ok(Arc::new(file))
}

pub fn tokenizer(file: &GgufFile, path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_gguf(file)
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))
}

pub fn model(file: &Arc<GgufFile>, path: &Path, threads: usize) -> Result<Box<dyn CausalLm>> {
    let backend = Arc::new(CpuBackend::new(threads).context("cannot start the CPU backend")?);
    edgellama_models::load_model(file.clone(), backend)
        .with_context(|| format!("cannot load model {}", path.display()))
}
