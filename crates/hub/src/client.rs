//! Talking to the hub: its model API for the file list, `HEAD` on
//! `/{repo}/resolve/{rev}/{file}` for the commit and the content hash, and a
//! resumable `GET` that follows the redirect to the CDN.

use crate::cache::HubCache;
use crate::config::HubConfig;
use crate::repo::{encode_path, is_commit, validate_file_path, validate_repo_id, RepoSpec};
use crate::select;
use crate::HubError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Redirect hops followed before giving up (the hub uses one or two).
const MAX_REDIRECTS: usize = 10;
/// Bytes of an error answer read for its message.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Bytes of a model-info answer accepted (large repositories list
/// thousands of files).
const MAX_API_BODY: u64 = 64 * 1024 * 1024;

/// A client for one endpoint and one cache.
pub struct Hub {
    config: HubConfig,
    cache: HubCache,
    agent: ureq::Agent,
}

/// Where the files of a [`Fetched`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// At least one file was downloaded now.
    Downloaded,
    /// The hub was asked and the cache already held the current files.
    Cache,
    /// `HF_HUB_OFFLINE`: the cache, without asking the hub.
    Offline,
    /// The hub could not be reached (the message says why); the cache had
    /// the files.
    CacheAfterNetworkError(String),
}

/// A model resolved to files in the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub repo: String,
    pub commit: String,
    /// Paths inside the repository, the first (or only) part first.
    pub files: Vec<String>,
    /// The snapshot paths of `files`, in the same order.
    pub paths: Vec<PathBuf>,
    pub source: Source,
}

impl Fetched {
    /// The file to open: the only file, or the first part of a split model.
    pub fn path(&self) -> &Path {
        self.paths.first().map_or(Path::new(""), PathBuf::as_path)
    }
}

/// What `HEAD /{repo}/resolve/{rev}/{file}` tells about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMetadata {
    /// `X-Repo-Commit`.
    pub commit: String,
    /// `X-Linked-Etag` (LFS: the sha256) or `ETag` (git's blob sha1),
    /// unquoted: also the blob's name in the cache.
    pub etag: String,
    /// `X-Linked-Size`, or the `Content-Length` of a direct answer.
    pub size: Option<u64>,
}

/// A file present in the cache after [`Hub::download_file`].
#[derive(Clone, Debug)]
pub struct DownloadedFile {
    pub path: PathBuf,
    pub meta: FileMetadata,
    /// False when the blob was already in the cache.
    pub downloaded: bool,
}

/// `GET /api/models/{repo}`: the commit `main` points to and every file.
#[derive(Clone, Debug, Default)]
pub struct RepoListing {
    pub commit: Option<String>,
    pub files: Vec<String>,
}

/// A request's target, for error messages.
struct Ctx<'a> {
    repo: &'a str,
    file: Option<&'a str>,
    revision: &'a str,
}

/// How a download attempt ended when it did not finish.
enum Attempt {
    /// The connection failed or was cut: worth another try, with what was
    /// received kept.
    Retry(String),
    Fatal(HubError),
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        let mut builder = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(config.connect_timeout)
            .timeout_read(config.read_timeout)
            .user_agent(&format!("edgellama/{}", env!("CARGO_PKG_VERSION")));
        // ureq ignores NO_PROXY: never send loopback traffic to a proxy.
        if !is_loopback(&config.endpoint) {
            builder = builder.try_proxy_from_env(true);
        }
        Hub {
            cache: HubCache::new(config.cache_dir.clone()),
            agent: builder.build(),
            config,
        }
    }

    pub fn from_env() -> Result<Self, HubError> {
        Ok(Hub::new(HubConfig::from_env()?))
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    pub fn cache(&self) -> &HubCache {
        &self.cache
    }

    /// The model `spec` names (and `file`, when given, overrides its quant
    /// tag, as llama.cpp's `--hf-file` does), every part of a split model
    /// included, downloaded into the cache if needed. Offline, or when the
    /// hub cannot be reached, the cache answers alone.
    pub fn fetch(&self, spec: &RepoSpec, file: Option<&str>) -> Result<Fetched, HubError> {
        validate_repo_id(&spec.repo)?;
        if let Some(f) = file {
            validate_file_path(f)?;
        }
        if self.config.offline {
            return self
                .cached(spec, file, Source::Offline)
                .ok_or_else(|| self.not_cached(spec, file, true));
        }
        match self.fetch_online(spec, file) {
            Err(HubError::Network { endpoint, message }) => {
                let why = format!("cannot reach {endpoint}: {message}");
                self.cached(spec, file, Source::CacheAfterNetworkError(why))
                    .ok_or(HubError::Network { endpoint, message })
            }
            other => other,
        }
    }

    fn not_cached(&self, spec: &RepoSpec, file: Option<&str>, offline: bool) -> HubError {
        let what = match (file, &spec.quant) {
            (Some(f), _) => f.to_string(),
            (None, Some(q)) => format!("a GGUF file for quant {q}"),
            (None, None) => "a GGUF model file".to_string(),
        };
        HubError::NotCached {
            repo: spec.repo.clone(),
            what,
            cache: self.cache.root().to_path_buf(),
            offline,
        }
    }

    /// The cache's answer for `spec` at the commit `refs/main` records.
    fn cached(&self, spec: &RepoSpec, file: Option<&str>, source: Source) -> Option<Fetched> {
        let commit = self.cache.current_commit(&spec.repo)?;
        let files = match file {
            Some(f) => select::all_part_names(f),
            None => {
                let all = self.cache.snapshot_files(&spec.repo, &commit);
                let primary = select::best_model(&all, spec.quant.as_deref())?;
                select::split_parts(&all, primary)
            }
        };
        let paths = files
            .iter()
            .map(|f| self.cache.cached_file(&spec.repo, &commit, f))
            .collect::<Option<Vec<_>>>()?;
        Some(Fetched {
            repo: spec.repo.clone(),
            commit,
            files,
            paths,
            source,
        })
    }

    fn fetch_online(&self, spec: &RepoSpec, file: Option<&str>) -> Result<Fetched, HubError> {
        let repo = spec.repo.as_str();
        let files = match file {
            Some(f) => select::all_part_names(f),
            None => {
                let listing = self.list_repo(repo)?;
                let Some(primary) = select::best_model(&listing.files, spec.quant.as_deref())
                else {
                    return Err(HubError::NoMatchingFile {
                        repo: repo.to_string(),
                        quant: spec.quant.clone(),
                        available: ggufs(&listing.files),
                    });
                };
                select::split_parts(&listing.files, primary)
            }
        };
        let mut revision = "main".to_string();
        let mut paths = Vec::with_capacity(files.len());
        let mut downloaded = false;
        for f in &files {
            let got = match self.download_file(repo, &revision, f) {
                Err(HubError::FileNotFound {
                    repo,
                    file,
                    revision,
                    ..
                }) => {
                    // Best effort: the list only makes the message better.
                    let available = self
                        .list_repo(&repo)
                        .map(|l| ggufs(&l.files))
                        .unwrap_or_default();
                    return Err(HubError::FileNotFound {
                        repo,
                        file,
                        revision,
                        available,
                    });
                }
                other => other?,
            };
            // Later parts come from the same commit as the first.
            revision = got.meta.commit.clone();
            downloaded |= got.downloaded;
            paths.push(got.path);
        }
        Ok(Fetched {
            repo: repo.to_string(),
            commit: revision,
            files,
            paths,
            source: if downloaded {
                Source::Downloaded
            } else {
                Source::Cache
            },
        })
    }

    /// `GET /api/models/{repo}`.
    pub fn list_repo(&self, repo: &str) -> Result<RepoListing, HubError> {
        validate_repo_id(repo)?;
        let url = format!("{}/api/models/{repo}", self.config.endpoint);
        let ctx = Ctx {
            repo,
            file: None,
            revision: "main",
        };
        let resp = self.follow("GET", &url, &[("Accept", "application/json")], &ctx, true)?;
        let final_url = resp.get_url().to_string();
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_API_BODY)
            .read_to_end(&mut body)
            .map_err(|e| self.network(&e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| HubError::Protocol {
                url: final_url.clone(),
                message: format!("the model information is not JSON: {e}"),
            })?;
        let commit = json
            .get("sha")
            .and_then(|v| v.as_str())
            .filter(|s| is_commit(s))
            .map(str::to_string);
        let siblings = json
            .get("siblings")
            .and_then(|v| v.as_array())
            .ok_or_else(|| HubError::Protocol {
                url: final_url,
                message: "the model information has no file list (\"siblings\")".into(),
            })?;
        let files = siblings
            .iter()
            .filter_map(|s| s.get("rfilename")?.as_str())
            .filter(|f| validate_file_path(f).is_ok())
            .map(str::to_string)
            .collect();
        Ok(RepoListing { commit, files })
    }

    /// `HEAD /{repo}/resolve/{revision}/{file}`, without following the
    /// redirect to the CDN: the hub puts the LFS hash and size on the
    /// redirect itself.
    pub fn file_metadata(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<FileMetadata, HubError> {
        validate_repo_id(repo)?;
        validate_file_path(file)?;
        let url = self.resolve_url(repo, revision, file);
        let ctx = Ctx {
            repo,
            file: Some(file),
            revision,
        };
        let resp = self.follow(
            "HEAD",
            &url,
            &[("Accept-Encoding", "identity")],
            &ctx,
            false,
        )?;
        let at = resp.get_url().to_string();
        let protocol = |message: String| HubError::Protocol {
            url: at.clone(),
            message,
        };
        let commit = resp
            .header("X-Repo-Commit")
            .map(str::trim)
            .filter(|c| is_commit(c))
            .ok_or_else(|| {
                protocol(format!(
                    "no X-Repo-Commit header: is {} a Hugging Face hub?",
                    self.config.endpoint
                ))
            })?
            .to_ascii_lowercase();
        let raw_etag = resp
            .header("X-Linked-Etag")
            .or_else(|| resp.header("ETag"))
            .ok_or_else(|| protocol("no ETag header".into()))?;
        let etag = normalize_etag(raw_etag)
            .ok_or_else(|| protocol(format!("unusable ETag {raw_etag:?}")))?;
        let direct = (200..300).contains(&resp.status());
        let size = resp
            .header("X-Linked-Size")
            .or_else(|| direct.then(|| resp.header("Content-Length")).flatten())
            .and_then(|s| s.trim().parse().ok());
        Ok(FileMetadata { commit, etag, size })
    }

    /// One file at `revision` into the cache (`huggingface_hub`'s
    /// `hf_hub_download`): the blob is fetched unless already there, the
    /// snapshot entry linked to it, and `refs/{revision}` updated.
    pub fn download_file(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<DownloadedFile, HubError> {
        let meta = self.file_metadata(repo, revision, file)?;
        self.cache.tag_cache_dir();
        if revision != meta.commit {
            self.cache.write_ref(repo, revision, &meta.commit)?;
        }
        let blob = self.cache.blob_path(repo, &meta.etag);
        let mut downloaded = false;
        if !blob.is_file() {
            // The commit pins the content even if `main` moves meanwhile.
            let url = self.resolve_url(repo, &meta.commit, file);
            downloaded = self.download_blob(repo, file, &url, &meta)?;
        }
        let path = self
            .cache
            .link_snapshot(repo, &meta.commit, file, &meta.etag)?;
        Ok(DownloadedFile {
            path,
            meta,
            downloaded,
        })
    }

    fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.config.endpoint,
            encode_path(revision),
            encode_path(file)
        )
    }

    /// Fetches into `blobs/{etag}.incomplete`, resuming from what it holds,
    /// checks size and hash, then moves it to `blobs/{etag}`. Returns false
    /// when another process finished the same blob first.
    fn download_blob(
        &self,
        repo: &str,
        file: &str,
        url: &str,
        meta: &FileMetadata,
    ) -> Result<bool, HubError> {
        let blob = self.cache.blob_path(repo, &meta.etag);
        let part = self.cache.incomplete_path(repo, &meta.etag);
        let lock_path = self.cache.lock_path(repo, &meta.etag);
        for dir in [part.parent(), lock_path.parent()].into_iter().flatten() {
            fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        }
        // The same lock file huggingface_hub takes, so two programs never
        // append to one `.incomplete` at once.
        let lock = File::create(&lock_path).map_err(|e| HubError::io(&lock_path, e))?;
        fs4::fs_std::FileExt::lock_exclusive(&lock).map_err(|e| HubError::io(&lock_path, e))?;
        if blob.is_file() {
            return Ok(false);
        }

        let bar = self.progress_bar(file, meta.size);
        let attempts = self.config.attempts.max(1);
        let mut last = String::new();
        let mut done = false;
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(self.config.retry_delay * (1 << (attempt - 1).min(4)));
            }
            match self.try_download(repo, file, url, &part, meta, &bar) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(Attempt::Retry(why)) => last = why,
                Err(Attempt::Fatal(e)) => {
                    bar.abandon();
                    return Err(e);
                }
            }
        }
        bar.finish_and_clear();
        if !done {
            return Err(HubError::Interrupted {
                file: file.to_string(),
                got: fs::metadata(&part).map_or(0, |m| m.len()),
                total: meta.size,
                message: last,
            });
        }
        if let Err(e) = verify(&part, file, meta) {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        fs::rename(&part, &blob).map_err(|e| HubError::io(&blob, e))?;
        drop(lock);
        Ok(true)
    }

    fn progress_bar(&self, file: &str, size: Option<u64>) -> ProgressBar {
        if !self.config.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(file.rsplit('/').next().unwrap_or(file).to_string());
        bar
    }

    /// One `GET`, appending to `part` from its current length.
    fn try_download(
        &self,
        repo: &str,
        file: &str,
        url: &str,
        part: &Path,
        meta: &FileMetadata,
        bar: &ProgressBar,
    ) -> Result<(), Attempt> {
        let io = |e: std::io::Error| Attempt::Fatal(HubError::io(part, e));
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(io)?;
        let mut have = out.metadata().map_err(io)?.len();
        if let Some(total) = meta.size {
            if have == total {
                return Ok(());
            }
            if have > total {
                out.set_len(0).map_err(io)?;
                have = 0;
            }
        }
        let range = format!("bytes={have}-");
        let mut headers = vec![("Accept-Encoding", "identity")];
        if have > 0 {
            headers.push(("Range", range.as_str()));
        }
        let ctx = Ctx {
            repo,
            file: Some(file),
            revision: &meta.commit,
        };
        let resp = match self.follow("GET", url, &headers, &ctx, false) {
            Ok(r) => r,
            Err(HubError::Network { message, .. }) => return Err(Attempt::Retry(message)),
            Err(HubError::Http {
                status, message, ..
            }) if status >= 500 => return Err(Attempt::Retry(format!("{status}: {message}"))),
            Err(HubError::Http { status: 416, .. }) => {
                // The partial file does not fit the server's copy: start over.
                out.set_len(0).map_err(io)?;
                return Err(Attempt::Retry(
                    "the server refused to resume (416); starting over".into(),
                ));
            }
            Err(e) => return Err(Attempt::Fatal(e)),
        };
        match resp.status() {
            206 => {
                let start = resp.header("Content-Range").and_then(content_range_start);
                if start != Some(have) {
                    out.set_len(0).map_err(io)?;
                    return Err(Attempt::Retry(format!(
                        "the server resumed at {start:?} instead of byte {have}; starting over"
                    )));
                }
            }
            200 => {
                // No range support: the whole file comes again.
                out.set_len(0).map_err(io)?;
                have = 0;
            }
            s => {
                return Err(Attempt::Fatal(HubError::Protocol {
                    url: resp.get_url().to_string(),
                    message: format!("unexpected status {s} for a download"),
                }))
            }
        }
        out.seek(SeekFrom::End(0)).map_err(io)?;
        bar.set_position(have);
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    out.flush().map_err(io)?;
                    return Err(Attempt::Retry(e.to_string()));
                }
            };
            have += n as u64;
            if meta.size.is_some_and(|t| have > t) {
                out.set_len(0).map_err(io)?;
                return Err(Attempt::Fatal(HubError::Protocol {
                    url: url.to_string(),
                    message: format!(
                        "the server sent more than the {} bytes it announced",
                        meta.size.unwrap_or(0)
                    ),
                }));
            }
            out.write_all(&buf[..n]).map_err(io)?;
            bar.inc(n as u64);
        }
        out.flush().map_err(io)?;
        match meta.size {
            Some(t) if have < t => Err(Attempt::Retry(format!(
                "the connection closed after {have} of {t} bytes"
            ))),
            _ => Ok(()),
        }
    }

    /// Sends a request, following redirects (only relative ones when
    /// `all_redirects` is false, as `huggingface_hub` does for `HEAD`, so
    /// that the hub's own redirect to the CDN is seen, not followed). The
    /// token goes to the endpoint's origin only.
    fn follow(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        ctx: &Ctx,
        all_redirects: bool,
    ) -> Result<ureq::Response, HubError> {
        let follow_all = all_redirects || method == "GET";
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(t) = &self.config.token {
                if origin(&url) == origin(&self.config.endpoint) {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => return Err(self.status_error(r, ctx)),
                Err(ureq::Error::Transport(t)) => return Err(self.network(&t.to_string())),
            };
            if !(300..400).contains(&resp.status()) {
                return Ok(resp);
            }
            let Some(loc) = resp.header("Location") else {
                return Ok(resp);
            };
            let relative = !loc.contains("://") && !loc.starts_with("//");
            if !follow_all && !relative {
                return Ok(resp);
            }
            url = join_url(&url, loc);
        }
        Err(HubError::Protocol {
            url,
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    fn network(&self, message: &str) -> HubError {
        HubError::Network {
            endpoint: self.config.endpoint.clone(),
            message: message.to_string(),
        }
    }

    /// Turns an error answer into the error a person can act on, reading
    /// the hub's `X-Error-Code` and its message.
    fn status_error(&self, resp: ureq::Response, ctx: &Ctx) -> HubError {
        let status = resp.status();
        let url = resp.get_url().to_string();
        let code = resp.header("X-Error-Code").unwrap_or("").to_string();
        let header_msg = resp.header("X-Error-Message").map(str::to_string);
        let mut body = Vec::new();
        let _ = resp
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut body);
        let message = header_msg
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()?
                    .get("error")?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| {
                let s = String::from_utf8_lossy(&body);
                s.trim().chars().take(300).collect()
            });
        let token_sent = self.config.token.is_some();
        let repo = ctx.repo.to_string();
        let lower = message.to_ascii_lowercase();
        let gated = code == "GatedRepo"
            || (matches!(status, 401 | 403)
                && (lower.contains("gated") || lower.contains("is restricted")));
        if gated && !repo.is_empty() {
            return HubError::Gated {
                repo,
                endpoint: self.config.endpoint.clone(),
                token_sent,
            };
        }
        let file_nf = |file: &str| HubError::FileNotFound {
            repo: repo.clone(),
            file: file.to_string(),
            revision: ctx.revision.to_string(),
            available: Vec::new(),
        };
        match (status, code.as_str(), ctx.file) {
            (_, "RevisionNotFound", _) if !repo.is_empty() => HubError::RevisionNotFound {
                repo,
                revision: ctx.revision.to_string(),
            },
            (_, "EntryNotFound", Some(f)) => file_nf(f),
            (401, _, _) if !repo.is_empty() => HubError::Unauthorized { repo, token_sent },
            (404, "RepoNotFound", _) if !repo.is_empty() => HubError::RepoNotFound {
                repo,
                endpoint: self.config.endpoint.clone(),
            },
            (404, _, Some(f)) => file_nf(f),
            (404, _, None) if !repo.is_empty() => HubError::RepoNotFound {
                repo,
                endpoint: self.config.endpoint.clone(),
            },
            (403, _, _) => HubError::Forbidden { url, message },
            _ => HubError::Http {
                url,
                status,
                message,
            },
        }
    }
}

/// Checks the finished download against the size and the hash the hub
/// announced: the etag is the sha256 of an LFS file and the git blob sha1
/// of any other.
fn verify(part: &Path, file: &str, meta: &FileMetadata) -> Result<(), HubError> {
    let len = fs::metadata(part).map_err(|e| HubError::io(part, e))?.len();
    if let Some(expected) = meta.size {
        if len != expected {
            return Err(HubError::SizeMismatch {
                file: file.to_string(),
                expected,
                got: len,
            });
        }
    }
    let hex = meta.etag.bytes().all(|b| b.is_ascii_hexdigit());
    let (algorithm, actual) = match meta.etag.len() {
        64 if hex => ("sha256", hash_file::<Sha256>(part, None)?),
        40 if hex => ("git-sha1", hash_file::<Sha1>(part, Some(len))?),
        // Not a content hash (not the hub, or a mirror of it): the size
        // check above is all there is.
        _ => return Ok(()),
    };
    if !actual.eq_ignore_ascii_case(&meta.etag) {
        return Err(HubError::Checksum {
            file: file.to_string(),
            algorithm,
            expected: meta.etag.clone(),
            actual,
        });
    }
    Ok(())
}

/// Hex digest of a file; with `git_len`, of git's blob form
/// (`blob {len}\0` then the bytes).
fn hash_file<D: Digest>(path: &Path, git_len: Option<u64>) -> Result<String, HubError> {
    let mut f = File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut h = D::new();
    if let Some(n) = git_len {
        h.update(format!("blob {n}\0").as_bytes());
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| HubError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `W/"abc"` → `abc`; `None` unless what is left can name a file.
fn normalize_etag(raw: &str) -> Option<String> {
    let e = raw.trim();
    let e = e.strip_prefix("W/").unwrap_or(e).trim_matches('"');
    let ok = !e.is_empty()
        && e.len() <= 128
        && !e.starts_with('.')
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| e.to_string())
}

/// `bytes START-END/TOTAL` → START.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

/// `scheme://host[:port]`, lower-cased.
fn origin(url: &str) -> String {
    let Some(at) = url.find("://") else {
        return String::new();
    };
    let rest = &url[at + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    url[..at + 3 + end].to_ascii_lowercase()
}

/// A `Location` header resolved against the URL that sent it.
fn join_url(base: &str, loc: &str) -> String {
    if loc.contains("://") {
        return loc.to_string();
    }
    if let Some(rest) = loc.strip_prefix("//") {
        let scheme = base.split("://").next().unwrap_or("https");
        return format!("{scheme}://{rest}");
    }
    let o = origin(base);
    if loc.starts_with('/') {
        return format!("{o}{loc}");
    }
    let path = &base[o.len()..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("", |i| &path[..=i]);
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{o}{dir}{loc}")
}

fn is_loopback(url: &str) -> bool {
    let o = origin(url);
    let host = o.split("://").nth(1).unwrap_or("");
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn ggufs(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| f.ends_with(".gguf"))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert_eq!(normalize_etag("\"abc123\"").as_deref(), Some("abc123"));
        assert_eq!(normalize_etag("W/\"abc-1\"").as_deref(), Some("abc-1"));
        for bad in ["\"\"", "\"../x\"", "\"a/b\"", "\".hidden\"", "a b"] {
            assert_eq!(normalize_etag(bad), None, "{bad}");
        }
    }

    #[test]
    fn origins_and_redirects() {
        assert_eq!(origin("https://HF.co/a/b?x"), "https://hf.co");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_ne!(
            origin("https://huggingface.co/x"),
            origin("https://cdn-lfs.huggingface.co/x")
        );
        assert_eq!(
            join_url("http://h:1/a/resolve/main/f", "/b/resolve/main/f"),
            "http://h:1/b/resolve/main/f"
        );
        assert_eq!(join_url("http://h/a/b?q", "c"), "http://h/a/c");
        assert_eq!(join_url("https://h/a", "//cdn/x"), "https://cdn/x");
        assert_eq!(join_url("http://h/a", "https://cdn/x"), "https://cdn/x");
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("http://127.0.0.1:1234"));
        assert!(is_loopback("http://localhost"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(!is_loopback("https://huggingface.co"));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
    }
}
