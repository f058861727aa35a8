use std::path::PathBuf;

/// Everything that can go wrong between a repository name and a usable file.
/// Each message says what to do next, since most of these reach a person
/// at a terminal.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid repository {0:?}: expected ORG/NAME[:QUANT], for example bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")]
    InvalidRepo(String),

    #[error("invalid quant tag {0:?}: expected letters, digits, '_' or '-', for example Q4_K_M")]
    InvalidQuant(String),

    #[error("invalid file name {0:?}: expected a relative path inside the repository, for example model-Q4_K_M.gguf")]
    InvalidFile(String),

    #[error("invalid HF_ENDPOINT {0:?}: expected an http:// or https:// address")]
    InvalidEndpoint(String),

    #[error("cannot find the Hugging Face cache folder: set HF_HOME (or HF_HUB_CACHE, or HOME)")]
    NoCacheDir,

    #[error("{}", unauthorized(repo, *token_sent))]
    Unauthorized { repo: String, token_sent: bool },

    #[error("repository {repo} does not exist on {endpoint} (404): check the name, ORG/NAME as shown on the repository's page")]
    RepoNotFound { repo: String, endpoint: String },

    #[error("repository {repo} has no revision {revision:?} (404)")]
    RevisionNotFound { repo: String, revision: String },

    #[error("{}", file_not_found(repo, file, revision, available))]
    FileNotFound {
        repo: String,
        file: String,
        revision: String,
        /// The repository's GGUF files, when they could be listed.
        available: Vec<String>,
    },

    #[error("{}", gated(repo, endpoint, *token_sent))]
    Gated {
        repo: String,
        endpoint: String,
        token_sent: bool,
    },

    #[error("the hub refused access to {url} (403: {message}): check that the token in HF_TOKEN has read permission for this repository")]
    Forbidden { url: String, message: String },

    #[error("{url}: the hub answered {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },

    #[error("cannot reach {endpoint}: {message}. Check the network connection (and HTTPS_PROXY if you go through a proxy), or set HF_HUB_OFFLINE=1 to use only files already in the cache")]
    Network { endpoint: String, message: String },

    #[error("download of {file} stopped after {got} of {} bytes ({message}); the part already received is kept in the cache, run the command again to resume", total.map_or("?".to_string(), |t| t.to_string()))]
    Interrupted {
        file: String,
        got: u64,
        total: Option<u64>,
        message: String,
    },

    #[error("{file}: the downloaded bytes do not match the hub's checksum ({algorithm} {expected} expected, {actual} received); the download was deleted, run the command again to fetch it afresh")]
    Checksum {
        file: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },

    #[error("{file}: the download holds {got} bytes but the hub announced {expected}; the download was deleted, run the command again to fetch it afresh")]
    SizeMismatch {
        file: String,
        expected: u64,
        got: u64,
    },

    #[error("{url}: unexpected answer from the hub: {message}")]
    Protocol { url: String, message: String },

    #[error("{}", not_cached(repo, what, cache, *offline))]
    NotCached {
        repo: String,
        what: String,
        cache: PathBuf,
        offline: bool,
    },

    #[error("{}", no_match(repo, quant.as_deref(), available))]
    NoMatchingFile {
        repo: String,
        quant: Option<String>,
        /// Every GGUF file of the repository.
        available: Vec<String>,
    },

    #[error("nothing in the cache matches {target} (see `edgellama list`)")]
    NothingToRemove { target: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }

    /// True for failures to talk to the hub at all, where a cached copy
    /// may stand in.
    pub fn is_network(&self) -> bool {
        matches!(self, HubError::Network { .. })
    }
}

fn unauthorized(repo: &str, token_sent: bool) -> String {
    if token_sent {
        format!(
            "the hub rejected the access token for {repo} (401): check that HF_TOKEN holds a valid token \
             with read access (https://huggingface.co/settings/tokens), or unset it for public repositories"
        )
    } else {
        format!(
            "repository {repo} was not found, or it is private (401): check the name; if it is private, \
             set HF_TOKEN to an access token that can read it (https://huggingface.co/settings/tokens)"
        )
    }
}

fn gated(repo: &str, endpoint: &str, token_sent: bool) -> String {
    let mut s = format!(
        "{repo} is a gated repository: open {endpoint}/{repo} while logged in, accept its conditions, \
         then set HF_TOKEN to an access token of that account (https://huggingface.co/settings/tokens)"
    );
    if token_sent {
        s.push_str(
            "; a token was sent, but its account has no access yet (the request may still be pending)",
        );
    }
    s
}

fn file_not_found(repo: &str, file: &str, revision: &str, available: &[String]) -> String {
    let mut s = format!("{repo} has no file {file} at revision {revision} (404)");
    if available.is_empty() {
        s.push_str(": check the file name");
    } else {
        s.push_str("; its GGUF files are: ");
        s.push_str(&available.join(", "));
    }
    s
}

fn not_cached(repo: &str, what: &str, cache: &std::path::Path, offline: bool) -> String {
    if offline {
        format!(
            "HF_HUB_OFFLINE is set and {what} of {repo} is not in the cache {}: unset HF_HUB_OFFLINE to download it",
            cache.display()
        )
    } else {
        format!("{what} of {repo} is not in the cache {}", cache.display())
    }
}

fn no_match(repo: &str, quant: Option<&str>, available: &[String]) -> String {
    let quants = crate::select::available_quants(available);
    if available.is_empty() {
        return format!("{repo} holds no GGUF model file");
    }
    let head = match quant {
        Some(q) => format!("{repo} has no GGUF file for quant {q}"),
        None => format!("{repo} has no GGUF model file to pick"),
    };
    format!(
        "{head}; available quants: {} (files: {}). Pick one with {repo}:QUANT, or name a file with --hf-file",
        if quants.is_empty() {
            "none recognised".to_string()
        } else {
            quants.join(", ")
        },
        available.join(", ")
    )
}
