//! The cache alone: with HF_HUB_OFFLINE, and when the hub cannot be reached.

mod common;

use common::{data, hub, COMMIT};
use edgellama_hub::stand_in::{StandIn, StandInFile, StandInRepo};
use edgellama_hub::{Hub, HubConfig, HubError, RepoSpec, Source};
use std::fs;

fn repo() -> StandInRepo {
    StandInRepo::new(
        "org/m-GGUF",
        COMMIT,
        vec![
            StandInFile::lfs("m-Q4_K_M.gguf", data(20_000, 30)),
            StandInFile::lfs("m-Q8_0.gguf", data(30_000, 31)),
        ],
    )
}

#[test]
fn offline_use_of_the_cache_with_the_hub_gone() {
    let mut server = StandIn::start(vec![repo()]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let spec: RepoSpec = "org/m-GGUF:Q8_0".parse().unwrap();
    let first = hub(server.endpoint(), tmp.path())
        .fetch(&spec, None)
        .unwrap();
    let endpoint = server.endpoint().to_string();
    server.stop();

    // HF_HUB_OFFLINE=1 as the environment gives it.
    let cache = tmp.path().to_string_lossy().into_owned();
    let config = HubConfig::from_vars(|k| match k {
        "HF_HUB_OFFLINE" => Some("1".into()),
        "HF_HUB_CACHE" => Some(cache.clone()),
        "HF_ENDPOINT" => Some(endpoint.clone()),
        _ => None,
    })
    .unwrap();
    assert!(config.offline);
    let offline = Hub::new(config);
    let got = offline.fetch(&spec, None).unwrap();
    assert_eq!(got.source, Source::Offline);
    assert_eq!(got.path(), first.path());
    assert_eq!(got.commit, COMMIT);
    assert_eq!(fs::read(got.path()).unwrap(), data(30_000, 31));
    // By file name too, and the default quant.
    let by_name = offline.fetch(&"org/m-GGUF".parse().unwrap(), Some("m-Q8_0.gguf"));
    assert_eq!(by_name.unwrap().path(), first.path());
    // Q4_K_M was never downloaded: the default pick falls back to Q8_0 as
    // llama.cpp's does among cached files.
    let default = offline.fetch(&"org/m-GGUF".parse().unwrap(), None).unwrap();
    assert_eq!(default.files, vec!["m-Q8_0.gguf"]);

    let err = offline
        .fetch(&"org/m-GGUF".parse().unwrap(), Some("m-Q4_K_M.gguf"))
        .unwrap_err();
    assert!(
        matches!(err, HubError::NotCached { offline: true, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unset HF_HUB_OFFLINE"), "{err}");
    let err = offline
        .fetch(&"org/other".parse().unwrap(), None)
        .unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
}

#[test]
fn without_a_network_the_cache_answers_and_says_why() {
    let mut server = StandIn::start(vec![repo()]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let spec: RepoSpec = "org/m-GGUF".parse().unwrap();
    let first = hub(server.endpoint(), tmp.path())
        .fetch(&spec, None)
        .unwrap();
    assert_eq!(first.files, vec!["m-Q4_K_M.gguf"]);
    let endpoint = server.endpoint().to_string();
    server.stop();

    let got = hub(&endpoint, tmp.path()).fetch(&spec, None).unwrap();
    assert_eq!(got.path(), first.path());
    match &got.source {
        Source::CacheAfterNetworkError(why) => {
            assert!(why.contains(&format!("cannot reach {endpoint}")), "{why}")
        }
        s => panic!("expected the cache after a network error, got {s:?}"),
    }
}
