//! Our downloads leave the very cache huggingface_hub leaves for the same
//! files (recorded by `golden/hf_cache_layout.py`), so each reuses the
//! other's downloads.

mod common;

use edgellama_hub::stand_in::{StandIn, StandInFile, StandInRepo};
use edgellama_hub::{Hub, RepoSpec};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

fn golden() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/hf_cache_layout.json");
    serde_json::from_str(&fs::read_to_string(path).expect("golden file")).unwrap()
}

/// The script's `content(n, seed)`.
fn content(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

/// Every entry under `root` as the script records them.
fn tree(root: &Path) -> Vec<serde_json::Value> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<serde_json::Value>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap().to_string_lossy().into_owned();
                out.push(serde_json::json!({"path": rel, "kind": "symlink", "target": t}));
            } else if meta.is_dir() {
                out.push(serde_json::json!({"path": rel, "kind": "dir"}));
                walk(root, &p, out);
            } else {
                let b = fs::read(&p).unwrap();
                let mut v = serde_json::json!({"path": rel, "kind": "file"});
                if format!("/{rel}").contains("/refs/") {
                    v["text"] = String::from_utf8(b).unwrap().into();
                } else if !rel.ends_with(".lock") {
                    let h: String = Sha256::digest(&b)
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect();
                    v["sha256"] = h.into();
                }
                out.push(v);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    out
}

#[test]
fn the_cache_matches_huggingface_hub() {
    let g = golden();
    let repo = g["repo"].as_str().unwrap();
    let commit = g["commit"].as_str().unwrap();
    let files: Vec<StandInFile> = g["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap();
            let data = content(
                f["size"].as_u64().unwrap() as usize,
                f["seed"].as_u64().unwrap() as usize,
            );
            if f["lfs"].as_bool().unwrap() {
                StandInFile::lfs(path, data)
            } else {
                StandInFile::plain(path, data)
            }
        })
        .collect();
    let names: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let server = StandIn::start(vec![StandInRepo::new(repo, commit, files)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::new(common::config(server.endpoint(), tmp.path()));
    let spec: RepoSpec = repo.parse().unwrap();
    for name in &names {
        let got = hub.fetch(&spec, Some(name)).unwrap();
        let rel = got.path().strip_prefix(tmp.path()).unwrap();
        assert_eq!(
            rel.to_string_lossy(),
            g["returned"][name.as_str()].as_str().unwrap(),
            "the path handed back for {name}"
        );
    }

    let ours = tree(tmp.path());
    let theirs: Vec<serde_json::Value> = g["tree"].as_array().unwrap().clone();
    // CACHEDIR.TAG says who wrote it: compare its presence and signature.
    let tag = fs::read_to_string(tmp.path().join("CACHEDIR.TAG")).unwrap();
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"));
    let strip = |v: &[serde_json::Value]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|e| {
                if e["path"] == "CACHEDIR.TAG" {
                    serde_json::json!({"path": "CACHEDIR.TAG", "kind": "file"})
                } else {
                    e.clone()
                }
            })
            .collect()
    };
    assert_eq!(
        serde_json::Value::Array(strip(&ours)),
        serde_json::Value::Array(strip(&theirs))
    );
}

/// The other way: a cache as huggingface_hub left it (rebuilt from the
/// golden) serves our offline lookups.
#[test]
fn a_huggingface_hub_cache_is_read_offline() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<(String, Vec<u8>)> = g["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                content(
                    f["size"].as_u64().unwrap() as usize,
                    f["seed"].as_u64().unwrap() as usize,
                ),
            )
        })
        .collect();
    for e in g["tree"].as_array().unwrap() {
        let p = tmp.path().join(e["path"].as_str().unwrap());
        match e["kind"].as_str().unwrap() {
            "dir" => fs::create_dir_all(&p).unwrap(),
            "symlink" => {
                #[cfg(unix)]
                std::os::unix::fs::symlink(e["target"].as_str().unwrap(), &p).unwrap();
            }
            _ => {
                let bytes = if let Some(t) = e["text"].as_str() {
                    t.as_bytes().to_vec()
                } else if let Some(h) = e["sha256"].as_str() {
                    data.iter()
                        .map(|(_, d)| d.clone())
                        .find(|d| {
                            let x: String = Sha256::digest(d)
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            x == h
                        })
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                fs::write(&p, bytes).unwrap();
            }
        }
    }
    let mut config = common::config("http://127.0.0.1:9", tmp.path());
    config.offline = true;
    let hub = Hub::new(config);
    let spec: RepoSpec = g["repo"].as_str().unwrap().parse().unwrap();
    for (name, bytes) in &data {
        let got = hub.fetch(&spec, Some(name)).unwrap();
        assert_eq!(&fs::read(got.path()).unwrap(), bytes, "{name}");
    }
    // And by quant: Q8_0 lives in a sub-folder.
    let q8 = hub
        .fetch(&format!("{}:Q8_0", spec.repo).parse().unwrap(), None)
        .unwrap();
    assert_eq!(q8.files, vec!["sub/nested-Q8_0.gguf"]);
}
