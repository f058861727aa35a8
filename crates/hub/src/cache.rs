//! The Hugging Face hub cache, laid out exactly as `huggingface_hub` lays it
//! out, so that either side reuses what the other downloaded:
//!
//! ```text
//! {cache}/models--ORG--NAME/
//!     blobs/{etag}                    the bytes, named by sha256 (LFS) or git sha1
//!     blobs/{etag}.incomplete         a download in progress, resumable
//!     refs/main                       the commit hash `main` pointed to
//!     snapshots/{commit}/{file}       a relative symlink to ../../blobs/{etag}
//! {cache}/.locks/models--ORG--NAME/{etag}.lock
//! ```

use crate::repo::{folder_repo, is_commit, repo_folder, validate_file_path, RepoSpec};
use crate::select::split_info;
use crate::HubError;
use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Clone, Debug)]
pub struct HubCache {
    root: PathBuf,
}

/// One file of one snapshot in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFile {
    pub repo: String,
    /// The path inside the repository, `/`-separated.
    pub file: String,
    /// The snapshot's commit.
    pub commit: String,
    /// The refs (`main`, ...) that point at this commit.
    pub refs: Vec<String>,
    /// The snapshot entry (usually a symlink into `blobs/`).
    pub path: PathBuf,
    /// `None` when the entry is a dangling link.
    pub size: Option<u64>,
}

/// What `edgellama rm` removes: a whole repository, the files of one quant
/// tag, or one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoveTarget {
    Repo(String),
    Quant { repo: String, quant: String },
    File { repo: String, file: String },
}

impl FromStr for RemoveTarget {
    type Err = HubError;

    /// `ORG/NAME`, `ORG/NAME:QUANT` or `ORG/NAME/PATH/IN/REPO`.
    fn from_str(s: &str) -> Result<Self, HubError> {
        if s.contains(':') {
            let spec: RepoSpec = s.parse()?;
            return Ok(match spec.quant {
                Some(quant) => RemoveTarget::Quant {
                    repo: spec.repo,
                    quant,
                },
                None => RemoveTarget::Repo(spec.repo),
            });
        }
        let mut parts = s.splitn(3, '/');
        let (org, name, file) = (parts.next(), parts.next(), parts.next());
        match (org, name, file) {
            (Some(o), Some(n), Some(f)) => {
                let repo = format!("{o}/{n}");
                crate::repo::validate_repo_id(&repo)?;
                validate_file_path(f)?;
                Ok(RemoveTarget::File {
                    repo,
                    file: f.to_string(),
                })
            }
            _ => {
                crate::repo::validate_repo_id(s)?;
                Ok(RemoveTarget::Repo(s.to_string()))
            }
        }
    }
}

impl std::fmt::Display for RemoveTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoveTarget::Repo(r) => f.write_str(r),
            RemoveTarget::Quant { repo, quant } => write!(f, "{repo}:{quant}"),
            RemoveTarget::File { repo, file } => write!(f, "{repo}/{file}"),
        }
    }
}

/// What a removal took away.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    /// Snapshot entries (or the repository folder, for a whole repository).
    pub entries: Vec<PathBuf>,
    /// Blobs no snapshot refers to any more, deleted with them.
    pub blobs: Vec<PathBuf>,
    /// Bytes freed on disk.
    pub bytes: u64,
}

impl HubCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HubCache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(repo_folder(repo))
    }

    pub fn blob_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// `blobs/{etag}.incomplete`, the name `huggingface_hub` resumes from too.
    pub fn incomplete_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    pub fn lock_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(repo_folder(repo))
            .join(format!("{etag}.lock"))
    }

    pub fn snapshot_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        let mut p = self.repo_dir(repo).join("snapshots").join(commit);
        p.extend(file.split('/'));
        p
    }

    /// Marks the cache for backup tools (the Cache Directory Tagging
    /// Standard), as huggingface_hub does; best effort.
    pub fn tag_cache_dir(&self) {
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() && fs::create_dir_all(&self.root).is_ok() {
            let _ = fs::write(
                tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n\
                 # This file is a cache directory tag (Hugging Face hub cache, written by edgellama).\n\
                 # For information about cache directory tags, see:\n\
                 #\thttps://bford.info/cachedir/\n",
            );
        }
    }

    /// The commit a ref (`main`) points to, if the cache records a valid one.
    pub fn read_ref(&self, repo: &str, name: &str) -> Option<String> {
        let s = fs::read_to_string(self.repo_dir(repo).join("refs").join(name)).ok()?;
        let s = s.trim();
        is_commit(s).then(|| s.to_string())
    }

    pub fn write_ref(&self, repo: &str, name: &str, commit: &str) -> Result<(), HubError> {
        if self.read_ref(repo, name).as_deref() == Some(commit) {
            return Ok(());
        }
        let dir = self.repo_dir(repo).join("refs");
        fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        fs::write(&tmp, commit).map_err(|e| HubError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| HubError::io(&path, e))
    }

    /// The commit the cache would serve for `repo`: `refs/main`, else the
    /// first other valid ref (llama.cpp's `get_cached_ref`).
    pub fn current_commit(&self, repo: &str) -> Option<String> {
        if let Some(c) = self.read_ref(repo, "main") {
            return Some(c);
        }
        self.refs(repo).into_iter().next().map(|(_, c)| c)
    }

    /// Every `refs/...` file with a valid commit, as (name, commit), sorted.
    fn refs(&self, repo: &str) -> Vec<(String, String)> {
        let dir = self.repo_dir(repo).join("refs");
        let mut out = Vec::new();
        for rel in walk_files(&dir) {
            // Skips half-written `.{name}.tmp` files.
            if rel.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if let Some(c) = self.read_ref(repo, &rel) {
                out.push((rel, c));
            }
        }
        out.sort();
        out
    }

    /// The snapshot entry for `file` at `revision` (a commit, or a ref name),
    /// if it is there and not a dangling link.
    pub fn cached_file(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        let commit = if is_commit(revision) {
            revision.to_string()
        } else {
            self.read_ref(repo, revision)?
        };
        let p = self.snapshot_path(repo, &commit, file);
        p.is_file().then_some(p)
    }

    /// The files of one snapshot, `/`-separated, sorted.
    pub fn snapshot_files(&self, repo: &str, commit: &str) -> Vec<String> {
        walk_files(&self.repo_dir(repo).join("snapshots").join(commit))
    }

    /// Points `snapshots/{commit}/{file}` at `blobs/{etag}` with a relative
    /// symlink (a copy where links cannot be made).
    pub fn link_snapshot(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        etag: &str,
    ) -> Result<PathBuf, HubError> {
        let blob = self.blob_path(repo, etag);
        let entry = self.snapshot_path(repo, commit, file);
        if let Some(parent) = entry.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let mut target = PathBuf::new();
        for _ in 0..2 + file.matches('/').count() {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if let Ok(meta) = fs::symlink_metadata(&entry) {
            if meta.file_type().is_symlink() && fs::read_link(&entry).ok().as_ref() == Some(&target)
            {
                return Ok(entry);
            }
            fs::remove_file(&entry).map_err(|e| HubError::io(&entry, e))?;
        }
        #[cfg(unix)]
        let linked = std::os::unix::fs::symlink(&target, &entry).is_ok();
        #[cfg(not(unix))]
        let linked = false;
        if !linked {
            // Where symlinks are refused, huggingface_hub copies too.
            fs::copy(&blob, &entry).map_err(|e| HubError::io(&entry, e))?;
        }
        Ok(entry)
    }

    /// Every file of every snapshot of every model repository, sorted by
    /// repository, commit and path.
    pub fn list(&self) -> Result<Vec<CachedFile>, HubError> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(HubError::io(&self.root, e)),
        };
        let mut repos: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| folder_repo(&e.file_name().to_string_lossy()))
            .collect();
        repos.sort();
        for repo in repos {
            out.extend(self.repo_files(&repo));
        }
        Ok(out)
    }

    /// [`HubCache::list`] for one repository.
    pub fn repo_files(&self, repo: &str) -> Vec<CachedFile> {
        let mut by_commit: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, commit) in self.refs(repo) {
            by_commit.entry(commit).or_default().push(name);
        }
        let snaps = self.repo_dir(repo).join("snapshots");
        let mut commits: Vec<String> = fs::read_dir(&snaps)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        commits.sort();
        let mut out = Vec::new();
        for commit in commits {
            for file in self.snapshot_files(repo, &commit) {
                let path = self.snapshot_path(repo, &commit, &file);
                out.push(CachedFile {
                    repo: repo.to_string(),
                    size: fs::metadata(&path).ok().map(|m| m.len()),
                    refs: by_commit.get(&commit).cloned().unwrap_or_default(),
                    commit: commit.clone(),
                    file,
                    path,
                });
            }
        }
        out
    }

    /// Removes what `target` names. Blobs go with the last snapshot entry
    /// that refers to them (llama.cpp's `common_download_remove`, over every
    /// snapshot rather than only the current one).
    pub fn remove(&self, target: &RemoveTarget) -> Result<Removed, HubError> {
        let nothing = || HubError::NothingToRemove {
            target: target.to_string(),
        };
        let (repo, matches): (&str, FileFilter) = match target {
            RemoveTarget::Repo(repo) => return self.remove_repo(repo)?.ok_or_else(nothing),
            RemoveTarget::Quant { repo, quant } => {
                let q = quant.to_ascii_uppercase();
                (
                    repo,
                    Box::new(move |f: &str| split_info(f).is_some_and(|s| s.tag == q)),
                )
            }
            RemoveTarget::File { repo, file } => {
                let file = file.clone();
                (repo, Box::new(move |f: &str| f == file))
            }
        };
        let files = self.repo_files(repo);
        let doomed: Vec<&CachedFile> = files.iter().filter(|f| matches(&f.file)).collect();
        if doomed.is_empty() {
            return Err(nothing());
        }
        let mut removed = Removed::default();
        let mut blobs = Vec::new();
        for f in &doomed {
            if let Some(b) = link_target(&f.path) {
                blobs.push(b);
            } else if let Some(s) = f.size {
                removed.bytes += s;
            }
            fs::remove_file(&f.path).map_err(|e| HubError::io(&f.path, e))?;
            removed.entries.push(f.path.clone());
            let top = self.repo_dir(repo).join("snapshots");
            remove_empty_parents(&f.path, &top);
        }
        let still: Vec<PathBuf> = self
            .repo_files(repo)
            .iter()
            .filter_map(|f| link_target(&f.path))
            .collect();
        blobs.sort();
        blobs.dedup();
        for b in blobs {
            if still.contains(&b) {
                continue;
            }
            if let Ok(m) = fs::metadata(&b) {
                removed.bytes += m.len();
                fs::remove_file(&b).map_err(|e| HubError::io(&b, e))?;
                removed.blobs.push(b);
            }
        }
        Ok(removed)
    }

    fn remove_repo(&self, repo: &str) -> Result<Option<Removed>, HubError> {
        let dir = self.repo_dir(repo);
        if !dir.is_dir() {
            return Ok(None);
        }
        let bytes = walk_files(&dir.join("blobs"))
            .iter()
            .filter_map(|b| fs::metadata(dir.join("blobs").join(b)).ok())
            .map(|m| m.len())
            .sum();
        fs::remove_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let _ = fs::remove_dir_all(self.root.join(".locks").join(repo_folder(repo)));
        Ok(Some(Removed {
            entries: vec![dir],
            blobs: Vec::new(),
            bytes,
        }))
    }
}

type FileFilter = Box<dyn Fn(&str) -> bool>;

/// The blob a snapshot symlink points to, resolved and normalised.
fn link_target(entry: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(entry).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let t = fs::read_link(entry).ok()?;
    let joined = entry.parent()?.join(t);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Removes the now-empty folders between `path` and `top` (`top` kept).
fn remove_empty_parents(path: &Path, top: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == top || !d.starts_with(top) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Files and symlinks under `dir`, as sorted `/`-separated relative paths;
/// linked folders are not followed.
fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(t) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if t.is_dir() {
                stack.push((e.path(), r));
            } else {
                out.push(r);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_targets() {
        assert_eq!(
            "a/b".parse::<RemoveTarget>().unwrap(),
            RemoveTarget::Repo("a/b".into())
        );
        assert_eq!(
            "a/b:q8_0".parse::<RemoveTarget>().unwrap(),
            RemoveTarget::Quant {
                repo: "a/b".into(),
                quant: "q8_0".into()
            }
        );
        assert_eq!(
            "a/b/sub/x.gguf".parse::<RemoveTarget>().unwrap(),
            RemoveTarget::File {
                repo: "a/b".into(),
                file: "sub/x.gguf".into()
            }
        );
        for bad in ["a", "a/b/../c", "a/b/", "a/b:", "../b"] {
            assert!(bad.parse::<RemoveTarget>().is_err(), "{bad:?}");
        }
    }
}
