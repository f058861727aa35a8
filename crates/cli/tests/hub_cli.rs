//! `pull`, `list`, `rm` and the `-hf`/`--hf-repo`/`--hf-file` flags as a user
//! runs them, against a hub stand-in on 127.0.0.1 (HF_ENDPOINT) with a
//! temporary HF_HOME.

use edgellama_hub::stand_in::{Access, StandIn, StandInFile, StandInRepo};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COMMIT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";

fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

/// The binary with a clean Hugging Face environment.
fn edgellama(home: &Path, endpoint: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgellama"));
    for k in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_TOKEN_PATH",
    ] {
        c.env_remove(k);
    }
    c.env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .args(args)
        .output()
        .expect("run edgellama")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", text(&o.stderr));
    text(&o.stdout)
}

fn fails_with(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected a failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn small_repos() -> Vec<StandInRepo> {
    vec![
        StandInRepo::new(
            "org/tiny-GGUF",
            COMMIT,
            vec![
                StandInFile::lfs("tiny-Q4_K_M.gguf", vec![1; 4096]),
                StandInFile::lfs("tiny-Q8_0.gguf", vec![2; 8192]),
                StandInFile::plain("README.md", b"# tiny\n".to_vec()),
            ],
        ),
        StandInRepo::new(
            "org/gated",
            COMMIT,
            vec![StandInFile::lfs("g-Q4_K_M.gguf", vec![3; 100])],
        )
        .with_access(Access::Gated),
    ]
}

#[test]
fn pull_list_rm() {
    let server = StandIn::start(small_repos()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let e = server.endpoint();
    let h = home.path();

    let out = ok(&edgellama(h, e, &["pull", "org/tiny-GGUF:q8_0"]));
    let path = PathBuf::from(out.trim());
    assert_eq!(
        path,
        h.join("hub/models--org--tiny-GGUF/snapshots")
            .join(COMMIT)
            .join("tiny-Q8_0.gguf")
    );
    assert_eq!(fs::read(&path).unwrap(), vec![2; 8192]);
    // llama.cpp's spelling works too, and a second pull finds the cache.
    let o = edgellama(
        h,
        e,
        &["pull", "-hf", "org/tiny-GGUF", "-hff", "tiny-Q8_0.gguf"],
    );
    assert_eq!(PathBuf::from(ok(&o).trim()), path);
    assert!(text(&o.stderr).contains("already in the cache"));
    ok(&edgellama(h, e, &["pull", "org/tiny-GGUF"]));

    let list = ok(&edgellama(h, e, &["list"]));
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let short = &COMMIT[..12];
    assert_eq!(
        rows,
        vec![
            vec!["REPO", "FILE", "SIZE", "REVISION"],
            vec![
                "org/tiny-GGUF",
                "tiny-Q4_K_M.gguf",
                "4.00",
                "KiB",
                short,
                "(main)"
            ],
            vec![
                "org/tiny-GGUF",
                "tiny-Q8_0.gguf",
                "8.00",
                "KiB",
                short,
                "(main)"
            ],
        ]
    );

    let o = edgellama(h, e, &["rm", "org/tiny-GGUF:Q8_0"]);
    ok(&o);
    assert!(text(&o.stderr).contains("removed 1 file of org/tiny-GGUF:Q8_0, 8.00 KiB freed"));
    assert!(!path.exists());
    let list = ok(&edgellama(h, e, &["list"]));
    assert_eq!(list.lines().count(), 2);
    fails_with(
        &edgellama(h, e, &["rm", "org/tiny-GGUF:Q8_0"]),
        "nothing in the cache matches org/tiny-GGUF:Q8_0",
    );
    ok(&edgellama(h, e, &["rm", "org/tiny-GGUF"]));
    assert!(!h.join("hub/models--org--tiny-GGUF").exists());
    let o = edgellama(h, e, &["list"]);
    assert_eq!(ok(&o), "");
    assert!(text(&o.stderr).contains("no models in the cache"));
}

#[test]
fn clear_errors() {
    let server = StandIn::start(small_repos()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let (h, e) = (home.path(), server.endpoint());
    fails_with(
        &edgellama(h, e, &["pull", "org/tiny-GGUF:Q6_K"]),
        "available quants: Q4_K_M, Q8_0",
    );
    fails_with(
        &edgellama(h, e, &["pull", "org/tiny-GGUF", "--hf-file", "nope.gguf"]),
        "has no file nope.gguf",
    );
    fails_with(
        &edgellama(h, e, &["pull", "org/missing"]),
        "not found, or it is private",
    );
    fails_with(
        &edgellama(h, e, &["pull", "org/gated"]),
        "is a gated repository",
    );
    fails_with(
        &edgellama(h, e, &["pull", "org/gated", "-hft", "hf_bad"]),
        "rejected the access token",
    );
    fails_with(
        &edgellama(h, e, &["pull", "not-a-repo"]),
        "invalid repository",
    );
    fails_with(
        &edgellama(
            h,
            e,
            &["run", "-m", "x.gguf", "-hf", "org/tiny-GGUF", "-p", "hi"],
        ),
        "cannot be used with",
    );
    let gone = "http://127.0.0.1:9";
    fails_with(
        &edgellama(h, gone, &["pull", "org/tiny-GGUF"]),
        "set HF_HUB_OFFLINE=1",
    );
}

/// Greedy text from `run -hf` equals the text from `run -m` on the same
/// file, downloaded and then offline with the hub gone; `bench` takes the
/// flags too.
#[test]
fn run_and_bench_take_hf_flags() {
    let model = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let bytes = fs::read(&model).unwrap();
    let mut server = StandIn::start(vec![StandInRepo::new(
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        COMMIT,
        vec![
            StandInFile::lfs("SmolLM2-135M-Instruct.Q4_1.gguf", bytes),
            StandInFile::lfs("SmolLM2-135M-Instruct.Q8_0.gguf", vec![0; 10]),
        ],
    )])
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let (h, e) = (home.path(), server.endpoint().to_string());
    let gen = [
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "2",
    ];
    let reference = ok(&edgellama(
        h,
        &e,
        &[&["run", "-m", model.to_str().unwrap()][..], &gen].concat(),
    ));
    assert!(!reference.trim().is_empty());
    let hf = [
        "run",
        "-hf",
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1",
    ];
    let o = edgellama(h, &e, &[&hf[..], &gen].concat());
    assert_eq!(ok(&o), reference);
    assert!(text(&o.stderr).contains("downloaded HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"));

    let o = edgellama(
        h,
        &e,
        &[
            "bench",
            "--hf-repo",
            "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
            "--hf-file",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "-p",
            "0",
            "-n",
            "2",
            "-r",
            "1",
            "-t",
            "2",
        ],
    );
    let table = ok(&o);
    assert!(
        table.contains("| SmolLM2-135M-Instruct.Q4_1.gguf |") && table.contains("| tg2 |"),
        "{table}"
    );

    server.stop();
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgellama"));
    let offline = c
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", h)
        .env("HF_ENDPOINT", &e)
        .env("HF_HUB_OFFLINE", "1")
        .args([&hf[..], &gen].concat())
        .output()
        .unwrap();
    assert_eq!(ok(&offline), reference);
    // Without HF_HUB_OFFLINE, the cache stands in for the unreachable hub.
    let o = edgellama(h, &e, &[&hf[..], &gen].concat());
    assert_eq!(ok(&o), reference);
    assert!(text(&o.stderr).contains("using the copy in the cache"));
}

#[test]
fn every_model_command_takes_the_hf_flags() {
    for cmd in ["run", "chat", "serve", "bench"] {
        let o = Command::new(env!("CARGO_BIN_EXE_edgellama"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let help = ok(&o);
        for flag in ["--hf-repo", "--hf-file", "--hf-token", "--model"] {
            assert!(help.contains(flag), "{cmd} lacks {flag}");
        }
    }
}
