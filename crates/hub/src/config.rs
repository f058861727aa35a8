//! Settings read from the environment variables the Hugging Face tools
//! share, with the precedence `huggingface_hub` gives them.

use crate::HubError;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Base address without a trailing `/` (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` to the endpoint's host only.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: never touch the network, use the cache alone.
    pub offline: bool,
    /// The hub cache folder (the one holding `models--ORG--NAME`).
    pub cache_dir: PathBuf,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Tries per file before a cut download is given up (kept for a later
    /// resume); at least 1.
    pub attempts: u32,
    /// Wait before the second try; doubled for each further one.
    pub retry_delay: Duration,
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer.
    pub read_timeout: Duration,
}

impl HubConfig {
    /// Settings for a given cache and endpoint, nothing read from the
    /// environment.
    pub fn new(endpoint: &str, cache_dir: PathBuf) -> Result<Self, HubError> {
        Ok(HubConfig {
            endpoint: normalize_endpoint(endpoint)?,
            token: None,
            offline: false,
            cache_dir,
            progress: true,
            attempts: 3,
            retry_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
        })
    }

    pub fn from_env() -> Result<Self, HubError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`HubConfig::from_env`] with the variables looked up through `var`.
    ///
    /// - cache: `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`,
    ///   `XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`;
    /// - token: `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, then the file that
    ///   `hf auth login` writes (`HF_TOKEN_PATH`, default `HF_HOME/token`);
    /// - `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_PROGRESS_BARS`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, HubError> {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from);
        let expand = |v: String| -> PathBuf {
            match (v.strip_prefix("~/"), &home) {
                (Some(rest), Some(h)) => h.join(rest),
                _ => PathBuf::from(v),
            }
        };
        let hf_home = var("HF_HOME").map(expand).or_else(|| {
            var("XDG_CACHE_HOME")
                .map(|x| expand(x).join("huggingface"))
                .or_else(|| home.as_ref().map(|h| h.join(".cache").join("huggingface")))
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            .ok_or(HubError::NoCacheDir)?;
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand)
                    .or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let mut c = HubConfig::new(
            var("HF_ENDPOINT").as_deref().unwrap_or(DEFAULT_ENDPOINT),
            cache_dir,
        )?;
        c.token = token;
        c.offline = var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v));
        c.progress = !var("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v));
        Ok(c)
    }
}

/// `huggingface_hub`'s reading of boolean variables.
fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

fn normalize_endpoint(e: &str) -> Result<String, HubError> {
    let e = e.trim().trim_end_matches('/');
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(e.to_string()),
        _ => Err(HubError::InvalidEndpoint(e.to_string())),
    }
}
