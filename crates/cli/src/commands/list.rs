//! `edgellama list`: the models in the Hugging Face cache, whichever tool
//! downloaded them.

use anyhow::Result;
use clap::Args;
use edgellama_hub::{HubCache, HubConfig};

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Every cached file, not only GGUF files.
    #[arg(long = "all")]
    pub all: bool,
}

pub fn run(a: ListArgs) -> Result<()> {
    let cache = HubCache::new(HubConfig::from_env()?.cache_dir);
    let files: Vec<_> = cache
        .list()?
        .into_iter()
        .filter(|f| a.all || f.file.ends_with(".gguf"))
        .collect();
    if files.is_empty() {
        eprintln!(
            "no models in the cache {} (get one with: edgellama pull ORG/NAME[:QUANT])",
            cache.root().display()
        );
        return Ok(());
    }
    let rows: Vec<[String; 4]> = files
        .iter()
        .map(|f| {
            let size = f.size.map_or("missing".to_string(), |s| {
                indicatif::HumanBytes(s).to_string()
            });
            let mut rev = super::pull::short(&f.commit).to_string();
            if !f.refs.is_empty() {
                rev.push_str(&format!(" ({})", f.refs.join(", ")));
            }
            [f.repo.clone(), f.file.clone(), size, rev]
        })
        .collect();
    let header = ["REPO", "FILE", "SIZE", "REVISION"].map(String::from);
    let mut widths = [0usize; 4];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:>w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        println!("{}", line.trim_end());
    }
    eprintln!("cache: {}", cache.root().display());
    Ok(())
}
