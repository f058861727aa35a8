//! Repository ids, quant tags and file paths: checked before any of them
//! becomes part of a URL or a path in the cache.

use crate::HubError;
use std::fmt;
use std::str::FromStr;

/// `ORG/NAME[:QUANT]`, llama.cpp's `-hf` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoSpec {
    pub repo: String,
    /// The quant tag as written (matched case-insensitively).
    pub quant: Option<String>,
}

impl FromStr for RepoSpec {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self, HubError> {
        let (repo, quant) = match s.split_once(':') {
            Some((r, q)) => (r, Some(q)),
            None => (s, None),
        };
        validate_repo_id(repo)?;
        let quant = quant.map(validate_quant).transpose()?;
        Ok(RepoSpec {
            repo: repo.to_string(),
            quant,
        })
    }
}

impl fmt::Display for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.quant {
            Some(q) => write!(f, "{}:{q}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

fn validate_quant(q: &str) -> Result<String, HubError> {
    let ok = !q.is_empty()
        && q.len() <= 64
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(q.to_string())
    } else {
        Err(HubError::InvalidQuant(q.to_string()))
    }
}

/// The hub's rule, as llama.cpp's `is_valid_repo_id` applies it: letters,
/// digits and `_`, with `/ . -` only between them, exactly one `/`.
pub fn validate_repo_id(repo: &str) -> Result<(), HubError> {
    let bad = || HubError::InvalidRepo(repo.to_string());
    if repo.is_empty() || repo.len() > 256 {
        return Err(bad());
    }
    let mut slashes = 0;
    let mut after_special = true;
    for c in repo.bytes() {
        if c.is_ascii_alphanumeric() || c == b'_' {
            after_special = false;
        } else if matches!(c, b'/' | b'.' | b'-') {
            if after_special {
                return Err(bad());
            }
            slashes += usize::from(c == b'/');
            after_special = true;
        } else {
            return Err(bad());
        }
    }
    if after_special || slashes != 1 {
        return Err(bad());
    }
    Ok(())
}

/// A path inside a repository: relative, `/`-separated, no `.` or `..`
/// parts, so that it can never name a place outside its snapshot folder.
pub fn validate_file_path(path: &str) -> Result<(), HubError> {
    let bad = || HubError::InvalidFile(path.to_string());
    if path.is_empty() || path.len() > 1024 || path.contains(['\\', '\0']) {
        return Err(bad());
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad());
        }
    }
    Ok(())
}

/// `models--ORG--NAME`, the hub cache's folder for a model repository.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The inverse of [`repo_folder`], for folders that name a valid repository.
pub fn folder_repo(folder: &str) -> Option<String> {
    let rest = folder.strip_prefix("models--")?;
    let repo = rest.replace("--", "/");
    validate_repo_id(&repo).ok()?;
    Some(repo)
}

/// Percent-encodes each part of a `/`-separated path (RFC 3986 unreserved
/// characters stay as they are), as the hub's client libraries quote file
/// names in resolve URLs.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, part) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// A 40-digit hex commit hash.
pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s: RepoSpec = "bartowski/Llama-3.2-1B-Instruct-GGUF:q8_0".parse().unwrap();
        assert_eq!(s.repo, "bartowski/Llama-3.2-1B-Instruct-GGUF");
        assert_eq!(s.quant.as_deref(), Some("q8_0"));
        let s: RepoSpec = "org/name".parse().unwrap();
        assert_eq!(s.quant, None);
        let s: RepoSpec = "unsloth/x-GGUF:UD-Q4_K_XL".parse().unwrap();
        assert_eq!(s.quant.as_deref(), Some("UD-Q4_K_XL"));
        for bad in [
            "", "name", "a/b/c", "/b", "a/", "a//b", "a/-b", "a/b:", "a/b:Q4:K", "a/b:Q4 K",
            "a b/c", "../x", "a/..",
        ] {
            assert!(bad.parse::<RepoSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_paths() {
        for ok in ["a.gguf", "sub/dir/a.gguf", "Q4_K_M/x-00001-of-00002.gguf"] {
            validate_file_path(ok).unwrap();
        }
        for bad in ["", "/a", "a/../b", "./a", "..", "a//b", "a/", "a\\b"] {
            assert!(validate_file_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn folders() {
        assert_eq!(repo_folder("org/na-me"), "models--org--na-me");
        assert_eq!(
            folder_repo("models--org--na-me").as_deref(),
            Some("org/na-me")
        );
        assert_eq!(folder_repo("datasets--org--x"), None);
        assert_eq!(folder_repo("models--a--b--c"), None);
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_path("dir/a b+c.gguf"), "dir/a%20b%2Bc.gguf");
        assert_eq!(encode_path("é"), "%C3%A9");
    }
}
