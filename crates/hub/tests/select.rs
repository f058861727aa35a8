//! `-hf ORG/NAME[:QUANT]` picks the file llama.cpp picks.

mod common;

use common::{data, hub, COMMIT};
use edgellama_hub::select::{available_quants, best_model, split_info, split_parts};
use edgellama_hub::stand_in::{StandIn, StandInFile, StandInRepo};
use edgellama_hub::{Hub, HubError, RepoSpec};
use std::fs;
use std::path::Path;

/// Recorded from llama.cpp by `golden/llama_cpp_pick.py`.
fn golden() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/llama_cpp_pick.json");
    let text = fs::read_to_string(&path).expect("golden file");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn picks_match_llama_cpp() {
    let cases = golden();
    assert!(cases.len() >= 20);
    for case in cases {
        let files = strings(&case["files"]);
        let quant = case["quant"].as_str();
        let picked = case["picked"].as_str();
        if case["hf_file"].is_null() {
            assert_eq!(best_model(&files, quant), picked, "{case}");
        }
    }
}

/// The same cases through the offline path: a cache laid out as llama.cpp
/// read it, answered from the cache alone.
#[test]
fn offline_picks_from_a_cache_match_llama_cpp() {
    for case in golden() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--m");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), commit).unwrap();
        let snap = repo.join("snapshots").join(commit);
        for f in strings(&case["files"]) {
            let p = snap.join(&f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"not a model\n").unwrap();
        }
        let mut config = common::config("http://127.0.0.1:9", tmp.path());
        config.offline = true;
        let spec = RepoSpec {
            repo: "org/m".into(),
            quant: case["quant"].as_str().map(str::to_string),
        };
        let got = Hub::new(config).fetch(&spec, case["hf_file"].as_str());
        match case["picked"].as_str() {
            Some(p) => {
                let got = got.unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(got.path(), snap.join(p), "{case}");
            }
            None => assert!(
                matches!(got, Err(HubError::NotCached { .. })),
                "{case}: {got:?}"
            ),
        }
    }
}

#[test]
fn split_names_and_tags() {
    let s = split_info("dir/Llama-3.2-1B-Q4_K_M-00002-of-00003.gguf").unwrap();
    assert_eq!(s.prefix, "dir/Llama-3.2-1B-Q4_K_M");
    assert_eq!(s.tag, "Q4_K_M");
    assert_eq!((s.index, s.count), (2, 3));
    assert_eq!(split_info("SmolLM2.Q4_1.gguf").unwrap().tag, "Q4_1");
    assert_eq!(split_info("model.gguf").unwrap().tag, "");
    assert_eq!(split_info("README.md"), None);
    let files: Vec<String> = [
        "x-Q8_0-00002-of-00002.gguf",
        "x-Q8_0-00001-of-00002.gguf",
        "x-F16.gguf",
        "mmproj-x-F16.gguf",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        split_parts(&files, "x-Q8_0-00001-of-00002.gguf"),
        vec!["x-Q8_0-00001-of-00002.gguf", "x-Q8_0-00002-of-00002.gguf"]
    );
    assert_eq!(available_quants(&files), vec!["Q8_0", "F16"]);
}

#[test]
fn hf_repo_quant_downloads_that_file_only() {
    let files = vec![
        StandInFile::lfs("Llama-3.2-1B-Instruct-Q4_K_M.gguf", data(9_000, 40)),
        StandInFile::lfs("Llama-3.2-1B-Instruct-Q6_K.gguf", data(9_000, 41)),
        StandInFile::lfs("Llama-3.2-1B-Instruct-Q8_0.gguf", data(9_000, 42)),
        StandInFile::lfs("Llama-3.2-1B-Instruct-f16.gguf", data(9_000, 43)),
        StandInFile::plain("README.md", b"# model\n".to_vec()),
    ];
    let server = StandIn::start(vec![StandInRepo::new("org/Llama-GGUF", COMMIT, files)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let got = hub(server.endpoint(), tmp.path())
        .fetch(&"org/Llama-GGUF:Q8_0".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(got.files, vec!["Llama-3.2-1B-Instruct-Q8_0.gguf"]);
    assert_eq!(fs::read(got.path()).unwrap(), data(9_000, 42));
    let heads: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        heads,
        vec!["/org/Llama-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q8_0.gguf"]
    );
}

#[test]
fn a_split_model_comes_whole_from_one_commit() {
    let parts = [data(7_000, 50), data(7_000, 51), data(3_000, 52)];
    let names = [
        "big-Q4_K_M-00001-of-00003.gguf",
        "big-Q4_K_M-00002-of-00003.gguf",
        "big-Q4_K_M-00003-of-00003.gguf",
    ];
    // Listed out of order, as nothing promises an order.
    let files = vec![
        StandInFile::lfs(names[2], parts[2].clone()),
        StandInFile::lfs(names[0], parts[0].clone()),
        StandInFile::lfs(names[1], parts[1].clone()),
    ];
    let server = StandIn::start(vec![StandInRepo::new("org/big", COMMIT, files)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let got = hub(server.endpoint(), tmp.path())
        .fetch(&"org/big".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(got.files, names);
    for (p, d) in got.paths.iter().zip(&parts) {
        assert_eq!(&fs::read(p).unwrap(), d);
    }
    let heads: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        heads,
        vec![
            format!("/org/big/resolve/main/{}", names[0]),
            format!("/org/big/resolve/{COMMIT}/{}", names[1]),
            format!("/org/big/resolve/{COMMIT}/{}", names[2]),
        ]
    );
    // Naming any part with --hf-file brings every part.
    let tmp2 = tempfile::tempdir().unwrap();
    let got = hub(server.endpoint(), tmp2.path())
        .fetch(&"org/big".parse::<RepoSpec>().unwrap(), Some(names[1]))
        .unwrap();
    assert_eq!(got.files, names);
}
