//! Each failure gives its own error, with a message that says what to do.

mod common;

use common::{data, hub, COMMIT};
use edgellama_hub::stand_in::{Access, StandIn, StandInFile, StandInRepo, TOKEN_NOT_GRANTED};
use edgellama_hub::{Hub, HubError, RepoSpec};
use std::fs;

fn repos() -> Vec<StandInRepo> {
    vec![
        StandInRepo::new(
            "org/public",
            COMMIT,
            vec![
                StandInFile::lfs("p-Q4_K_M.gguf", data(10_000, 20)),
                StandInFile::lfs("p-Q8_0.gguf", data(10_000, 21)),
                StandInFile::plain("README.md", b"# p\n".to_vec()),
            ],
        ),
        StandInRepo::new(
            "org/gated",
            COMMIT,
            vec![StandInFile::lfs("g-Q4_K_M.gguf", data(10_000, 22))],
        )
        .with_access(Access::Gated),
        StandInRepo::new(
            "org/bad-bytes",
            COMMIT,
            vec![StandInFile::lfs("b-Q4_K_M.gguf", data(50_000, 23)).corrupted()],
        ),
    ]
}

fn with_token(server: &StandIn, dir: &std::path::Path, token: &str) -> Hub {
    let mut c = common::config(server.endpoint(), dir);
    c.token = Some(token.to_string());
    Hub::new(c)
}

fn spec(s: &str) -> RepoSpec {
    s.parse().unwrap()
}

#[test]
fn corrupted_bytes_are_rejected_and_deleted() {
    let server = StandIn::start(repos()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = hub(server.endpoint(), tmp.path())
        .fetch(&spec("org/bad-bytes"), None)
        .unwrap_err();
    let HubError::Checksum {
        algorithm,
        expected,
        actual,
        ..
    } = &err
    else {
        panic!("expected a checksum error, got {err}");
    };
    assert_eq!(*algorithm, "sha256");
    assert_eq!(
        *expected,
        StandInFile::lfs("x", data(50_000, 23)).sha256(),
        "the hub's hash"
    );
    assert_ne!(actual, expected);
    assert!(err.to_string().contains("run the command again"));
    let repo = tmp.path().join("models--org--bad-bytes");
    let blobs: Vec<_> = fs::read_dir(repo.join("blobs")).unwrap().collect();
    assert!(
        blobs.is_empty(),
        "neither the blob nor the partial file stays"
    );
    assert!(!repo.join("snapshots").join(COMMIT).exists());
}

#[test]
fn a_missing_file_is_a_404_that_lists_the_gguf_files() {
    let server = StandIn::start(repos()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = hub(server.endpoint(), tmp.path())
        .fetch(&spec("org/public"), Some("p-Q5_K_M.gguf"))
        .unwrap_err();
    let HubError::FileNotFound {
        file, available, ..
    } = &err
    else {
        panic!("expected file-not-found, got {err}");
    };
    assert_eq!(file, "p-Q5_K_M.gguf");
    assert_eq!(available, &["p-Q4_K_M.gguf", "p-Q8_0.gguf"]);
    let msg = err.to_string();
    assert!(
        msg.contains("(404)") && msg.contains("p-Q8_0.gguf"),
        "{msg}"
    );
}

#[test]
fn a_missing_repository_reads_401_without_a_token_and_404_with_one() {
    let server = StandIn::start(repos()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = hub(server.endpoint(), tmp.path())
        .fetch(&spec("org/nope"), None)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            HubError::Unauthorized {
                token_sent: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("set HF_TOKEN"), "{err}");

    let err = with_token(&server, tmp.path(), TOKEN_NOT_GRANTED)
        .fetch(&spec("org/nope"), None)
        .unwrap_err();
    assert!(matches!(&err, HubError::RepoNotFound { .. }), "{err}");
    assert!(err.to_string().contains("(404)"), "{err}");
}

#[test]
fn a_rejected_token_is_named_as_such() {
    let server = StandIn::start(repos()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = with_token(&server, tmp.path(), "hf_wrong")
        .fetch(&spec("org/public"), Some("p-Q8_0.gguf"))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            HubError::Unauthorized {
                token_sent: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("rejected the access token"),
        "{err}"
    );
}

#[test]
fn a_gated_repository_says_how_to_get_access() {
    let server = StandIn::start(repos()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = hub(server.endpoint(), tmp.path())
        .fetch(&spec("org/gated"), None)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            HubError::Gated {
                token_sent: false,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("accept its conditions")
            && msg.contains(&format!("{}/org/gated", server.endpoint())),
        "{msg}"
    );

    let err = with_token(&server, tmp.path(), TOKEN_NOT_GRANTED)
        .fetch(&spec("org/gated"), None)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            HubError::Gated {
                token_sent: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no access yet"), "{err}");

    let ok = with_token(&server, tmp.path(), edgellama_hub::stand_in::TOKEN)
        .fetch(&spec("org/gated"), None)
        .unwrap();
    assert_eq!(fs::read(ok.path()).unwrap(), data(10_000, 22));
}

#[test]
fn an_unknown_quant_lists_the_available_ones() {
    let server = StandIn::start(repos()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = hub(server.endpoint(), tmp.path())
        .fetch(&spec("org/public:Q6_K"), None)
        .unwrap_err();
    assert!(matches!(&err, HubError::NoMatchingFile { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("quant Q6_K") && msg.contains("available quants: Q4_K_M, Q8_0"),
        "{msg}"
    );
}

#[test]
fn no_network_and_no_cache_says_so() {
    let mut server = StandIn::start(repos()).unwrap();
    let endpoint = server.endpoint().to_string();
    server.stop();
    let tmp = tempfile::tempdir().unwrap();
    let err = hub(&endpoint, tmp.path())
        .fetch(&spec("org/public"), None)
        .unwrap_err();
    assert!(err.is_network(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot reach {endpoint}")) && msg.contains("HF_HUB_OFFLINE=1"),
        "{msg}"
    );
}

#[test]
fn an_endpoint_that_is_not_a_hub_is_named() {
    // A server that answers but sends none of the hub's headers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let tmp = tempfile::tempdir().unwrap();
    let err = hub(&endpoint, tmp.path())
        .fetch(&spec("org/public"), Some("x.gguf"))
        .unwrap_err();
    t.join().unwrap();
    assert!(matches!(&err, HubError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("X-Repo-Commit"), "{err}");
}
