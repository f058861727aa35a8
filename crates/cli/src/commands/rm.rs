//! `edgellama rm`: remove cached models, a whole repository, one quant or
//! one file, with the blobs nothing else refers to.

use anyhow::Result;
use clap::Args;
use edgellama_hub::{HubCache, HubConfig, RemoveTarget};

#[derive(Args, Debug)]
pub struct RmArgs {
    /// ORG/NAME (the whole repository), ORG/NAME:QUANT (its files of that
    /// quant) or ORG/NAME/FILE (one file); several may be given.
    #[arg(value_name = "ORG/NAME[:QUANT|/FILE]", required = true)]
    pub targets: Vec<String>,
}

pub fn run(a: RmArgs) -> Result<()> {
    // Every target is checked before anything is removed.
    let targets = a
        .targets
        .iter()
        .map(|t| t.parse::<RemoveTarget>())
        .collect::<Result<Vec<_>, _>>()?;
    let cache = HubCache::new(HubConfig::from_env()?.cache_dir);
    for t in &targets {
        let removed = cache.remove(t)?;
        match t {
            RemoveTarget::Repo(_) => eprintln!(
                "removed {t} (the whole repository), {} freed",
                indicatif::HumanBytes(removed.bytes)
            ),
            _ => eprintln!(
                "removed {} of {t}, {} freed",
                match removed.entries.len() {
                    1 => "1 file".to_string(),
                    n => format!("{n} files"),
                },
                indicatif::HumanBytes(removed.bytes)
            ),
        }
    }
    Ok(())
}
