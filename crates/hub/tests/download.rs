//! A fresh download through the stand-in: the bytes, the cache layout
//! huggingface_hub uses, and the cache being reused afterwards.

mod common;

use common::{data, hub, COMMIT};
use edgellama_hub::stand_in::{StandIn, StandInFile, StandInRepo};
use edgellama_hub::{RepoSpec, Source};
use sha2::{Digest, Sha256};
use std::fs;

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn fresh_download_lays_out_the_hub_cache() {
    let model = data(300_000, 1);
    let config = br#"{"architectures":["LlamaForCausalLM"]}"#.to_vec();
    let server = StandIn::start(vec![StandInRepo::new(
        "org/tiny-GGUF",
        COMMIT,
        vec![
            StandInFile::lfs("tiny-Q4_K_M.gguf", model.clone()),
            StandInFile::plain("config.json", config.clone()),
        ],
    )])
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let hub = hub(server.endpoint(), &cache);

    let got = hub
        .fetch(&"org/tiny-GGUF".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(got.source, Source::Downloaded);
    assert_eq!(got.commit, COMMIT);
    assert_eq!(got.files, vec!["tiny-Q4_K_M.gguf"]);
    assert_eq!(fs::read(got.path()).unwrap(), model);

    // The layout, piece by piece, named by an independent sha256.
    let repo = cache.join("models--org--tiny-GGUF");
    let sha = sha256_hex(&model);
    assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    assert_eq!(fs::read(repo.join("blobs").join(&sha)).unwrap(), model);
    let entry = repo.join("snapshots").join(COMMIT).join("tiny-Q4_K_M.gguf");
    assert_eq!(got.path(), entry);
    assert_eq!(
        fs::read_link(&entry).unwrap(),
        std::path::Path::new("../../blobs").join(&sha)
    );
    let blobs: Vec<String> = fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs, vec![sha.clone()], "no .incomplete left behind");
    assert!(cache
        .join(".locks/models--org--tiny-GGUF")
        .join(format!("{sha}.lock"))
        .exists());

    // The hub's redirect to its CDN was followed for the bytes only.
    let reqs = server.requests();
    let methods: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let cdn = format!("/cdn/{sha}");
    assert_eq!(
        methods,
        vec![
            ("GET", "/api/models/org/tiny-GGUF"),
            ("HEAD", "/org/tiny-GGUF/resolve/main/tiny-Q4_K_M.gguf"),
            (
                "GET",
                &*format!("/org/tiny-GGUF/resolve/{COMMIT}/tiny-Q4_K_M.gguf")
            ),
            ("GET", &*cdn),
        ]
    );

    // A non-LFS file: its blob is named by git's sha1 of the bytes
    // (`git hash-object` of this content, computed by git itself below).
    let cfg = hub
        .fetch(
            &"org/tiny-GGUF".parse::<RepoSpec>().unwrap(),
            Some("config.json"),
        )
        .unwrap();
    assert_eq!(fs::read(cfg.path()).unwrap(), config);
    let git_sha1 = git_hash_object(&config);
    assert!(repo.join("blobs").join(&git_sha1).is_file());

    // Again: the hub is asked for the commit, the bytes come from the cache.
    let before = server.requests().len();
    let again = hub
        .fetch(&"org/tiny-GGUF:q4_k_m".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(again.source, Source::Cache);
    assert_eq!(again.path(), entry);
    let after: Vec<_> = server.requests()[before..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(after, vec!["GET", "HEAD"], "listing and HEAD, no download");
}

/// git's own blob id for `bytes`, or the known value when git is absent.
fn git_hash_object(bytes: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("git")
        .args(["hash-object", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = child.expect("git is needed for this test (git hash-object)");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn token_unlocks_private_repos_and_stays_off_the_cdn() {
    let model = data(5000, 2);
    let server = StandIn::start(vec![StandInRepo::new(
        "org/private",
        COMMIT,
        vec![StandInFile::lfs("p-Q8_0.gguf", model.clone())],
    )
    .with_access(edgellama_hub::stand_in::Access::Private)])
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::config(server.endpoint(), tmp.path());
    config.token = Some(edgellama_hub::stand_in::TOKEN.to_string());
    let hub = edgellama_hub::Hub::new(config);
    let got = hub
        .fetch(&"org/private:Q8_0".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(fs::read(got.path()).unwrap(), model);
    let bearer = format!("Bearer {}", edgellama_hub::stand_in::TOKEN);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    for r in reqs {
        let expected = if r.path.starts_with("/cdn/") {
            None
        } else {
            Some(bearer.as_str())
        };
        assert_eq!(r.authorization.as_deref(), expected, "{r:?}");
    }
}

#[test]
fn nested_paths_link_back_to_the_blobs() {
    let model = data(1000, 3);
    let server = StandIn::start(vec![StandInRepo::new(
        "org/nested",
        COMMIT,
        vec![StandInFile::lfs("Q4_K_M/n-Q4_K_M.gguf", model.clone())],
    )])
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(server.endpoint(), tmp.path());
    let got = hub
        .fetch(&"org/nested".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(fs::read(got.path()).unwrap(), model);
    assert_eq!(
        fs::read_link(got.path()).unwrap(),
        std::path::Path::new("../../../blobs").join(sha256_hex(&model))
    );
}
