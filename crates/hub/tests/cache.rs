//! Listing and removing cached models; where the cache and the settings
//! come from.

mod common;

use common::{data, hub, COMMIT};
use edgellama_hub::stand_in::{StandIn, StandInFile, StandInRepo};
use edgellama_hub::{HubCache, HubConfig, HubError, RemoveTarget, RepoSpec};
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

fn filled_cache() -> (tempfile::TempDir, HubCache) {
    let server = StandIn::start(vec![
        StandInRepo::new(
            "org/a-GGUF",
            COMMIT,
            vec![
                StandInFile::lfs("a-Q4_K_M.gguf", data(1000, 60)),
                StandInFile::lfs("a-Q8_0-00001-of-00002.gguf", data(2000, 61)),
                StandInFile::lfs("a-Q8_0-00002-of-00002.gguf", data(500, 62)),
                // Same bytes as the Q4_K_M file: one blob, two entries.
                StandInFile::lfs("copy/a-Q4_K_M.gguf", data(1000, 60)),
            ],
        ),
        StandInRepo::new(
            "org/b",
            COMMIT,
            vec![StandInFile::lfs("b-F16.gguf", data(300, 63))],
        ),
    ])
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(server.endpoint(), tmp.path());
    for (spec, file) in [
        ("org/a-GGUF", None),
        ("org/a-GGUF:Q8_0", None),
        ("org/a-GGUF", Some("copy/a-Q4_K_M.gguf")),
        ("org/b:F16", None),
    ] {
        hub.fetch(&spec.parse::<RepoSpec>().unwrap(), file).unwrap();
    }
    let cache = hub.cache().clone();
    (tmp, cache)
}

#[test]
fn list_shows_every_cached_file() {
    let (_tmp, cache) = filled_cache();
    type Row = (String, String, Option<u64>, String, Vec<String>);
    let rows: Vec<Row> = cache
        .list()
        .unwrap()
        .into_iter()
        .map(|f| (f.repo, f.file, f.size, f.commit, f.refs))
        .collect();
    let main = vec!["main".to_string()];
    let row = |r: &str, f: &str, s: u64| (r.into(), f.into(), Some(s), COMMIT.into(), main.clone());
    assert_eq!(
        rows,
        vec![
            row("org/a-GGUF", "a-Q4_K_M.gguf", 1000),
            row("org/a-GGUF", "a-Q8_0-00001-of-00002.gguf", 2000),
            row("org/a-GGUF", "a-Q8_0-00002-of-00002.gguf", 500),
            row("org/a-GGUF", "copy/a-Q4_K_M.gguf", 1000),
            row("org/b", "b-F16.gguf", 300),
        ]
    );
}

fn blobs(cache: &HubCache, repo: &str) -> usize {
    fs::read_dir(cache.repo_dir(repo).join("blobs"))
        .unwrap()
        .count()
}

#[test]
fn rm_by_quant_keeps_blobs_still_referenced() {
    let (_tmp, cache) = filled_cache();
    assert_eq!(blobs(&cache, "org/a-GGUF"), 3);
    let r = cache
        .remove(&"org/a-GGUF:q8_0".parse::<RemoveTarget>().unwrap())
        .unwrap();
    assert_eq!(r.entries.len(), 2);
    assert_eq!(r.blobs.len(), 2);
    assert_eq!(r.bytes, 2500);
    assert_eq!(blobs(&cache, "org/a-GGUF"), 1);

    // Two entries share the Q4_K_M blob: it goes with the last of them.
    let r = cache
        .remove(&"org/a-GGUF/a-Q4_K_M.gguf".parse().unwrap())
        .unwrap();
    assert_eq!((r.entries.len(), r.blobs.len(), r.bytes), (1, 0, 0));
    let r = cache.remove(&"org/a-GGUF:Q4_K_M".parse().unwrap()).unwrap();
    assert_eq!((r.entries.len(), r.blobs.len(), r.bytes), (1, 1, 1000));
    assert_eq!(blobs(&cache, "org/a-GGUF"), 0);
    // Emptied folders go too.
    assert!(!cache
        .repo_dir("org/a-GGUF")
        .join("snapshots")
        .join(COMMIT)
        .exists());

    let err = cache
        .remove(&"org/a-GGUF:Q4_K_M".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, HubError::NothingToRemove { .. }), "{err}");
}

#[test]
fn rm_of_a_repository_takes_all_of_it() {
    let (tmp, cache) = filled_cache();
    let r = cache.remove(&"org/b".parse().unwrap()).unwrap();
    assert_eq!(r.bytes, 300);
    assert!(!cache.repo_dir("org/b").exists());
    assert!(!tmp.path().join(".locks/models--org--b").exists());
    assert!(cache.repo_dir("org/a-GGUF").exists());
    assert!(cache.remove(&"org/b".parse().unwrap()).is_err());
}

#[test]
fn settings_come_from_the_hub_variables() {
    let vars = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let load = |m: HashMap<String, String>| HubConfig::from_vars(move |k| m.get(k).cloned());

    let c = load(vars(&[("HOME", "/home/u")])).unwrap();
    assert_eq!(c.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
    assert_eq!(c.endpoint, "https://huggingface.co");
    assert_eq!(c.token, None);
    assert!(!c.offline && c.progress);

    let c = load(vars(&[
        ("HOME", "/home/u"),
        ("XDG_CACHE_HOME", "/x"),
        ("HF_ENDPOINT", "https://mirror.example/"),
        ("HF_TOKEN", " hf_abc \n"),
        ("HF_HUB_OFFLINE", "true"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ]))
    .unwrap();
    assert_eq!(c.cache_dir, PathBuf::from("/x/huggingface/hub"));
    assert_eq!(c.endpoint, "https://mirror.example");
    assert_eq!(c.token.as_deref(), Some("hf_abc"));
    assert!(c.offline && !c.progress);

    let c = load(vars(&[("HOME", "/home/u"), ("HF_HOME", "~/hf")])).unwrap();
    assert_eq!(c.cache_dir, PathBuf::from("/home/u/hf/hub"));
    let c = load(vars(&[
        ("HF_HOME", "/hf"),
        ("HF_HUB_CACHE", "/cache"),
        ("HF_HUB_OFFLINE", "0"),
    ]))
    .unwrap();
    assert_eq!(c.cache_dir, PathBuf::from("/cache"));
    assert!(!c.offline);

    // The token `hf auth login` saved.
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("token"), "hf_saved\n").unwrap();
    let home = tmp.path().to_string_lossy().into_owned();
    let c = load(vars(&[("HF_HOME", &home)])).unwrap();
    assert_eq!(c.token.as_deref(), Some("hf_saved"));
    let c = load(vars(&[("HF_HOME", &home), ("HF_TOKEN", "hf_env")])).unwrap();
    assert_eq!(c.token.as_deref(), Some("hf_env"));

    assert!(matches!(load(vars(&[])), Err(HubError::NoCacheDir)));
    assert!(matches!(
        load(vars(&[("HOME", "/h"), ("HF_ENDPOINT", "ftp://x")])),
        Err(HubError::InvalidEndpoint(_))
    ));
}
