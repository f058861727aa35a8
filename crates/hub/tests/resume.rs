//! Interrupted downloads resume from the `.incomplete` file with a `Range`
//! request, within one run (retries) and across runs.

mod common;

use common::{data, hub, COMMIT};
use edgellama_hub::stand_in::{StandIn, StandInFile, StandInRepo};
use edgellama_hub::{HubError, RepoSpec, Source};
use std::fs;

const CUT: usize = 123_457;

fn cdn_gets(server: &StandIn) -> Vec<Option<String>> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/cdn/"))
        .map(|r| r.range)
        .collect()
}

#[test]
fn a_cut_connection_is_resumed_by_the_retry() {
    let model = data(400_000, 10);
    let file = StandInFile::lfs("m-Q4_K_M.gguf", model.clone()).cut_first_after(CUT);
    let server = StandIn::start(vec![StandInRepo::new("org/m", COMMIT, vec![file])]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let got = hub(server.endpoint(), tmp.path())
        .fetch(&"org/m".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(got.source, Source::Downloaded);
    assert_eq!(fs::read(got.path()).unwrap(), model);
    assert_eq!(
        cdn_gets(&server),
        vec![None, Some(format!("bytes={CUT}-"))],
        "the second request asks for the rest only"
    );
}

#[test]
fn a_later_run_resumes_what_an_earlier_one_left() {
    let model = data(400_000, 11);
    let file = StandInFile::lfs("m-Q4_K_M.gguf", model.clone()).cut_first_after(CUT);
    let etag = file.sha256();
    let server = StandIn::start(vec![StandInRepo::new("org/m", COMMIT, vec![file])]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::config(server.endpoint(), tmp.path());
    config.attempts = 1;
    let hub = edgellama_hub::Hub::new(config);
    let spec: RepoSpec = "org/m".parse().unwrap();

    let err = hub.fetch(&spec, None).unwrap_err();
    match &err {
        HubError::Interrupted { got, total, .. } => {
            assert_eq!(*got, CUT as u64);
            assert_eq!(*total, Some(model.len() as u64));
        }
        e => panic!("expected an interrupted download, got {e}"),
    }
    assert!(err.to_string().contains("run the command again to resume"));
    let part = tmp
        .path()
        .join("models--org--m/blobs")
        .join(format!("{etag}.incomplete"));
    assert_eq!(fs::read(&part).unwrap(), model[..CUT]);
    assert!(!tmp.path().join("models--org--m/blobs").join(&etag).exists());

    let got = hub.fetch(&spec, None).unwrap();
    assert_eq!(fs::read(got.path()).unwrap(), model);
    assert!(!part.exists());
    assert_eq!(cdn_gets(&server), vec![None, Some(format!("bytes={CUT}-"))]);
}

/// A partial file left by another program (huggingface_hub uses the same
/// `.incomplete` name) is resumed too.
#[test]
fn a_partial_file_from_another_tool_is_resumed() {
    let model = data(200_000, 12);
    let file = StandInFile::lfs("m-Q8_0.gguf", model.clone());
    let etag = file.sha256();
    let server = StandIn::start(vec![StandInRepo::new("org/m", COMMIT, vec![file])]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("models--org--m/blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(format!("{etag}.incomplete")), &model[..77_777]).unwrap();
    let got = hub(server.endpoint(), tmp.path())
        .fetch(&"org/m:Q8_0".parse::<RepoSpec>().unwrap(), None)
        .unwrap();
    assert_eq!(fs::read(got.path()).unwrap(), model);
    assert_eq!(cdn_gets(&server), vec![Some("bytes=77777-".to_string())]);
}
