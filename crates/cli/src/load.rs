//! Opening a model file and building what the commands need from it.

use anyhow::{Context, Result};
use edgellama_backend::{CpuBackend, KvType};
use edgellama_gguf::{GgufFile, LoadMode};
use edgellama_models::{CausalLm, SeqState};
use edgellama_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The thread count for inference when `-t` is not given: one per
/// physical core (see [`edgellama_backend::default_threads`]).
pub fn default_threads() -> usize {
    edgellama_backend::default_threads()
}

/// The thread count for converting and quantizing when `-t` is not given:
/// every available CPU, since their blocks are independent and long.
pub fn all_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `-m PATH`, or the default model, fetched into the cache on first use.
pub fn resolve_model(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) => Ok(p.to_path_buf()),
        None => crate::fetch::default_model(),
    }
}

/// Where the model comes from, with llama.cpp's flags: a file (`-m`) or a
/// Hugging Face repository (`-hf ORG/NAME[:QUANT]`, `-hff FILE`). Commands
/// that load a model flatten this into their arguments.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Model file (GGUF). Without it or --hf-repo, the default model is
    /// fetched once into the cache.
    #[arg(short = 'm', long = "model", conflicts_with = "hf_repo")]
    pub model: Option<PathBuf>,
    /// Hugging Face repository (also -hf, -hfr): its GGUF file for QUANT
    /// (case-insensitive; default Q4_K_M, else Q8_0, else the first one) is
    /// downloaded into the Hugging Face cache on first use.
    #[arg(long = "hf-repo", value_name = "ORG/NAME[:QUANT]")]
    pub hf_repo: Option<String>,
    /// A file of the --hf-repo repository (also -hff); overrides QUANT.
    #[arg(long = "hf-file", value_name = "FILE", requires = "hf_repo")]
    pub hf_file: Option<String>,
    /// Hugging Face access token (also -hft; default: HF_TOKEN).
    #[arg(long = "hf-token", value_name = "TOKEN")]
    pub hf_token: Option<String>,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `-t`: the inference threads, one definition and one check for every
/// command that runs a model.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct ThreadsArgs {
    /// Threads (default: one per physical core).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

impl ThreadsArgs {
    /// The thread count, checked.
    pub fn resolve(&self) -> Result<usize> {
        let threads = self.threads.unwrap_or_else(default_threads);
        if threads == 0 || threads > 1024 {
            anyhow::bail!("-t must be between 1 and 1024, got {threads}");
        }
        Ok(threads)
    }
}

/// `-ctk`/`-ctv`: the types keys and values are cached in, with llama.cpp's
/// names, for every command that runs a model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct KvArgs {
    /// KV cache type for keys (-ctk): f32, f16, bf16, q8_0, q4_0, q4_1,
    /// iq4_nl, q5_0, q5_1
    #[arg(long = "cache-type-k", default_value = "f16")]
    pub type_k: KvType,
    /// KV cache type for values (-ctv), as for keys
    #[arg(long = "cache-type-v", default_value = "f16")]
    pub type_v: KvType,
}

impl Default for KvArgs {
    fn default() -> Self {
        KvArgs {
            type_k: KvType::F16,
            type_v: KvType::F16,
        }
    }
}

impl KvArgs {
    /// A fresh sequence of up to `n_ctx` positions in these cache types.
    pub fn new_state(&self, model: &dyn CausalLm, n_ctx: usize) -> Result<SeqState> {
        model
            .new_state_typed(n_ctx, self.type_k, self.type_v)
            .with_context(|| format!("cannot make a KV cache of {n_ctx} positions"))
    }

    pub fn types(&self) -> (KvType, KvType) {
        (self.type_k, self.type_v)
    }
}

/// How a model for inference is held in memory (llama.cpp's flag names).
/// By default the file is read into memory backed by transparent huge pages
/// where the system grants them, and memory-mapped elsewhere.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct LoadArgs {
    /// Memory-map the model file: instant start, the page cache's copy
    /// shared, slower generation (the weights stream through 4 KiB pages)
    #[arg(long = "mmap", overrides_with = "no_mmap")]
    pub mmap: bool,
    /// Read the model file into memory (huge pages where the system grants
    /// them): about a second per GB to start, faster generation
    #[arg(long = "no-mmap", overrides_with = "mmap")]
    pub no_mmap: bool,
}

impl LoadArgs {
    pub fn mode(&self) -> LoadMode {
        if self.mmap {
            LoadMode::Map
        } else if self.no_mmap {
            LoadMode::Read
        } else {
            LoadMode::fastest()
        }
    }
}

impl ModelArgs {
    /// The model file's path, downloading it first when it comes from the
    /// hub and the cache lacks it.
    pub fn resolve(&self) -> Result<PathBuf> {
        match &self.hf_repo {
            Some(repo) => crate::commands::pull::fetch_model(
                repo,
                self.hf_file.as_deref(),
                self.hf_token.as_deref(),
            ),
            None => resolve_model(self.model.as_deref()),
        }
    }
}

/// llama.cpp's multi-letter short flags (`-hf`, `-hfr`, `-hff`, `-hft`,
/// `-ctk`, `-ctv`, `-md`, `-hfd`), which clap cannot declare, spelled as their long forms.
/// Arguments after `--` are left alone.
pub fn expand_shorthands(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for a in args {
        let long = match a.to_str() {
            _ if rest => None,
            Some("--") => {
                rest = true;
                None
            }
            Some(s) => {
                let (flag, value) = match s.split_once('=') {
                    Some((f, v)) => (f, Some(v)),
                    None => (s, None),
                };
                let long = match flag {
                    "-hf" | "-hfr" => Some("--hf-repo"),
                    "-hff" => Some("--hf-file"),
                    "-hft" => Some("--hf-token"),
                    "-ctk" => Some("--cache-type-k"),
                    "-ctv" => Some("--cache-type-v"),
                    "-md" => Some("--model-draft"),
                    "-hfd" | "-hfrd" => Some("--hf-repo-draft"),
                    _ => None,
                };
                long.map(|l| match value {
                    Some(v) => format!("{l}={v}"),
                    None => l.to_string(),
                })
            }
            None => None,
        };
        out.push(long.map_or(a, std::ffi::OsString::from));
    }
    out
}

/// A GGUF file held as `mode` says (commands that only read metadata map
/// it), or a Hugging Face checkpoint directory converted in memory (no file
/// is written; the weights keep the checkpoint's BF16/F16, as `edgellama
/// convert` does by default).
pub fn open_gguf(path: &Path, mode: LoadMode) -> Result<Arc<GgufFile>> {
    if path.is_dir() {
        let conv = edgellama_convert::Converter::open(path, edgellama_convert::OutType::Auto)
            .with_context(|| format!("cannot convert the checkpoint {}", path.display()))?;
        let file = conv
            .to_gguf()
            .with_context(|| format!("cannot convert the checkpoint {}", path.display()))?;
        return Ok(Arc::new(file));
    }
    let file = GgufFile::open_with(path, mode)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    Ok(Arc::new(file))
}

pub fn tokenizer(file: &GgufFile, path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_gguf(file)
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))
}

pub fn model(file: &Arc<GgufFile>, path: &Path, threads: usize) -> Result<Box<dyn CausalLm>> {
    model_on(file, path, backend(threads)?)
}

/// A CPU backend with its pool of `threads` threads.
pub fn backend(threads: usize) -> Result<Arc<CpuBackend>> {
    Ok(Arc::new(
        CpuBackend::new(threads).context("cannot start the CPU backend")?,
    ))
}

/// A model on a given backend: several models of one process share its
/// thread pool (one parallel job at a time) instead of each oversubscribing
/// the cores.
pub fn model_on(
    file: &Arc<GgufFile>,
    path: &Path,
    backend: Arc<CpuBackend>,
) -> Result<Box<dyn CausalLm>> {
    if let Some(w) = edgellama_models::layers::rope::missing_freqs_warning(file) {
        eprintln!("warning: {}: {w}", path.display());
    }
    edgellama_models::load_model(file.clone(), backend)
        .with_context(|| format!("cannot load model {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn mode(args: &[&str]) -> LoadMode {
        let argv = std::iter::once("x").chain(args.iter().copied());
        Cmd::try_parse_from(argv).expect("parse").load.mode()
    }

    #[test]
    fn mmap_flags_choose_the_load_mode_the_last_one_winning() {
        assert_eq!(mode(&["--mmap"]), LoadMode::Map);
        assert_eq!(mode(&["--no-mmap"]), LoadMode::Read);
        assert_eq!(mode(&["--no-mmap", "--mmap"]), LoadMode::Map);
        assert_eq!(mode(&["--mmap", "--no-mmap"]), LoadMode::Read);
        assert_eq!(mode(&[]), LoadMode::fastest());
    }
}
