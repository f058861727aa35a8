//! `edgellama pull ORG/NAME[:QUANT]`: download a model from the Hugging Face
//! hub into its cache (shared with the hub's own tools), or find it there.

use anyhow::{bail, Result};
use clap::Args;
use edgellama_hub::{Fetched, Hub, HubConfig, RepoSpec, Source};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Hugging Face repository: its GGUF file for QUANT (case-insensitive;
    /// default Q4_K_M, else Q8_0, else the first one) is downloaded.
    #[arg(value_name = "ORG/NAME[:QUANT]", required_unless_present = "hf_repo")]
    pub repo: Option<String>,
    /// The repository, as `run` takes it (also -hf).
    #[arg(
        long = "hf-repo",
        value_name = "ORG/NAME[:QUANT]",
        conflicts_with = "repo"
    )]
    pub hf_repo: Option<String>,
    /// Download this file of the repository instead (also -hff); every part
    /// of a split model comes with its first.
    #[arg(long = "hf-file", value_name = "FILE")]
    pub hf_file: Option<String>,
    /// Hugging Face access token (also -hft; default: HF_TOKEN).
    #[arg(long = "hf-token", value_name = "TOKEN")]
    pub hf_token: Option<String>,
}

/// Settings from the environment (`HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`,
/// `HF_TOKEN`, `HF_HUB_OFFLINE`), with `--hf-token` over `HF_TOKEN`.
pub fn hub(token: Option<&str>) -> Result<Hub> {
    let mut config = HubConfig::from_env()?;
    if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
        config.token = Some(t.to_string());
    }
    Ok(Hub::new(config))
}

fn fetch(repo: &str, file: Option<&str>, token: Option<&str>) -> Result<Fetched> {
    let spec: RepoSpec = repo.parse()?;
    let hub = hub(token)?;
    let got = hub.fetch(&spec, file)?;
    if let Source::CacheAfterNetworkError(why) = &got.source {
        eprintln!("warning: {why}; using the copy in the cache");
    }
    Ok(got)
}

/// `--hf-repo`/`--hf-file` of the model-loading commands: the path to load.
pub fn fetch_model(repo: &str, file: Option<&str>, token: Option<&str>) -> Result<PathBuf> {
    let got = fetch(repo, file, token)?;
    if got.source == Source::Downloaded {
        eprintln!("downloaded {} into {}", got.repo, got.path().display());
    }
    Ok(got.path().to_path_buf())
}

pub fn run(a: PullArgs) -> Result<()> {
    let Some(repo) = a.repo.as_deref().or(a.hf_repo.as_deref()) else {
        bail!("name a repository: edgellama pull ORG/NAME[:QUANT]");
    };
    let got = fetch(repo, a.hf_file.as_deref(), a.hf_token.as_deref())?;
    let size: u64 = got
        .paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let how = match got.source {
        Source::Downloaded => "downloaded",
        _ => "already in the cache",
    };
    eprintln!(
        "{}: {} ({}, revision {}), {how}",
        got.repo,
        got.files.join(", "),
        indicatif::HumanBytes(size),
        short(&got.commit)
    );
    // The paths alone on stdout, the first one for -m.
    for p in &got.paths {
        println!("{}", p.display());
    }
    Ok(())
}

/// A commit as `git log --oneline` shortens it.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
