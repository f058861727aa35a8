//! Llama 3.2 Vision against transformers 5.25.0 (with Meta's two rules
//! patched in: see the golden script's header) on tiny random checkpoints:
//! the vision tower's output before and after the projector, the logits of
//! every prompt row and the greedy continuation, for one and several images,
//! adjacent images, text-only prompts and the 90B layer pattern. The
//! checkpoints are converted to GGUF in memory (F32, so the only differences
//! are the order of floating-point operations).
//! Goldens: tests/golden/mllama/, made by make_goldens.py there.

mod common;

use common::{golden, sha256_file};
use edgellama_backend::CpuBackend;
use edgellama_convert::{Converter, OutType};
use edgellama_gguf::formats::safetensors::SafetensorsFile;
use edgellama_models::mllama::preprocess::{self, ImageLimits, PreparedImage};
use edgellama_models::mllama::Mllama;
use edgellama_models::{CausalLm, Input, Logits};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    model: String,
    model_sha256: String,
    tokens: Vec<u32>,
    #[serde(default)]
    images: Vec<CaseImage>,
    greedy: Vec<u32>,
    #[serde(default)]
    same_as: Option<String>,
    #[serde(default)]
    inputs_from: Option<String>,
}

#[derive(Deserialize, Clone)]
struct CaseImage {
    file: String,
    aspect_ratio_id: usize,
    tiles: usize,
    tile_rows: usize,
    tile_cols: usize,
}

fn testdata_dir(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let p = dir.join(name);
    assert!(
        p.join("model.safetensors").is_file(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

struct Golden {
    cases: Vec<Case>,
    expected: SafetensorsFile,
}

fn load_golden() -> Golden {
    let dir = golden("mllama");
    let cases: Cases =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).expect("cases.json"))
            .expect("parse cases.json");
    let expected = SafetensorsFile::open(dir.join("expected.safetensors")).expect("expected");
    Golden {
        cases: cases.cases,
        expected,
    }
}

impl Golden {
    fn f32s(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.expected.tensor(name)?;
        let v = self.expected.view(t);
        assert_eq!(format!("{:?}", v.dtype), "F32", "{name}");
        Some(
            v.data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    fn i64s(&self, name: &str) -> Option<Vec<i64>> {
        let t = self.expected.tensor(name)?;
        let v = self.expected.view(t);
        Some(
            v.data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        )
    }

    fn case(&self, name: &str) -> &Case {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"))
    }
}

fn load_model(dir_name: &str, want_sha: &str) -> Mllama {
    let dir = testdata_dir(dir_name);
    assert_eq!(
        sha256_file(&dir.join("model.safetensors")),
        want_sha,
        "{dir_name} is not the checkpoint the goldens were made from"
    );
    let gguf = Converter::open(&dir, OutType::F32)
        .expect("plan conversion")
        .to_gguf()
        .expect("convert");
    let backend = Arc::new(CpuBackend::new(2).expect("backend"));
    Mllama::load(Arc::new(gguf), backend).expect("load mllama")
}

/// The case's images as the reference's processor prepared them.
fn reference_images(g: &Golden, case: &Case) -> Vec<PreparedImage> {
    let px = g
        .f32s(&format!("{}.pixel_values", case.name))
        .unwrap_or_default();
    let per = px.len() / case.images.len().max(1);
    case.images
        .iter()
        .enumerate()
        .map(|(i, im)| PreparedImage {
            pixels: px[i * per..(i + 1) * per].to_vec(),
            n_tiles: im.tiles,
            aspect_ratio: (im.tile_rows, im.tile_cols),
            aspect_ratio_id: im.aspect_ratio_id,
            tile_size: 56,
            max_num_tiles: 4,
            hash: {
                let mut h = [0u8; 32];
                h[0] = i as u8 + 1;
                h[1..1 + case.name.len()].copy_from_slice(case.name.as_bytes());
                h
            },
        })
        .collect()
}

/// The prompt as token runs and images, split at the image tokens.
fn inputs(tokens: &[u32], images: &[PreparedImage], image_token: u32) -> Vec<Input> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    let mut imgs = images.iter();
    for &t in tokens {
        if t == image_token {
            if !run.is_empty() {
                out.push(Input::Tokens(std::mem::take(&mut run)));
            }
            out.push(Input::Image(Arc::new(
                imgs.next().expect("an image per image token").clone(),
            )));
        } else {
            run.push(t);
        }
    }
    if !run.is_empty() {
        out.push(Input::Tokens(run));
    }
    out
}

/// Largest |a - b| relative to the largest |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The tower runs in f32 in another operation order than torch: it agrees
/// to about 1e-6 of its output's scale; 1e-4 leaves room and still fails on
/// any wrong step (a wrong mask, gate or layer moves it by 1e-1 and more).
const TOL: f32 = 1e-4;

/// The decoder keeps its self-attention keys and values in F16 and attends
/// with llama.cpp's F16 arithmetic (as it does for Llama), which the f32
/// reference does not: about 1e-3 of the logits' scale, the same with and
/// without images (case e has none). A wrong cross-attention step moves
/// the image cases by 1e-1 and more.
const TOL_LOGITS: f32 = 3e-3;

fn check_case(g: &Golden, name: &str) {
    let case = g.case(name);
    // Cases that repeat another's inputs store them once, under its name.
    let source = case
        .inputs_from
        .as_deref()
        .or(case.same_as.as_deref())
        .unwrap_or(name);
    let model = load_model(&case.model, &case.model_sha256);
    let image_token = model.info().image_token.expect("vision model");
    let src_case = g.case(source);
    let images = reference_images(g, src_case);

    // The tower, image by image.
    let vis = source == name;
    if let (true, Some(want_feat), Some(want_proj)) = (
        vis,
        g.f32s(&format!("{name}.vision_out")),
        g.f32s(&format!("{name}.projected")),
    ) {
        let (per_feat, per_proj) = (
            want_feat.len() / images.len(),
            want_proj.len() / images.len(),
        );
        for (i, img) in images.iter().enumerate() {
            let out = model.encode_image(img).expect("encode");
            let d = rel_diff(&out.features, &want_feat[i * per_feat..(i + 1) * per_feat]);
            assert!(
                d < TOL,
                "case {name} image {i}: vision features differ by {d}"
            );
            // Only the real tiles reach the text model.
            let n = out.projected.len();
            let d = rel_diff(&out.projected, &want_proj[i * per_proj..i * per_proj + n]);
            assert!(
                d < TOL,
                "case {name} image {i}: projected features differ by {d}"
            );
            eprintln!("case {name} image {i}: tower within {d:e}");
        }
    }

    // Every prompt row's logits, at the recorded columns.
    let key = case.same_as.as_deref().unwrap_or(name);
    let cols = g.i64s(&format!("{key}.logit_columns")).expect("columns");
    let want = g.f32s(&format!("{key}.logits")).expect("logits");
    let mut state = model.new_state(64).expect("state");
    let logits = model
        .forward_inputs(
            &mut state,
            &inputs(&src_case.tokens, &images, image_token),
            Logits::All,
        )
        .expect("forward");
    let n_vocab = model.info().n_vocab;
    assert_eq!(logits.len(), src_case.tokens.len() * n_vocab);
    let got: Vec<f32> = logits
        .chunks_exact(n_vocab)
        .flat_map(|row| cols.iter().map(move |&c| row[c as usize]))
        .collect();
    let d = rel_diff(&got, &want);
    assert!(
        d < TOL_LOGITS,
        "case {name}: logits differ by {d} (relative)"
    );
    eprintln!("case {name}: logits within {d:e}");

    // Greedy continuation, one token at a time through the cache.
    let mut next = argmax(&logits[logits.len() - n_vocab..]);
    let mut greedy = Vec::new();
    for _ in 0..case.greedy.len() {
        greedy.push(next);
        let l = model
            .forward(&mut state, &[next], Logits::Last)
            .expect("step");
        next = argmax(&l);
    }
    assert_eq!(greedy, case.greedy, "case {name}: greedy tokens");
}

#[test]
fn one_image() {
    check_case(&load_golden(), "a");
}

#[test]
fn wide_image() {
    check_case(&load_golden(), "b");
}

#[test]
fn two_images_apart() {
    check_case(&load_golden(), "c");
}

#[test]
fn two_adjacent_images() {
    check_case(&load_golden(), "d");
}

#[test]
fn text_only_prompt() {
    check_case(&load_golden(), "e");
}

#[test]
fn transparent_image() {
    check_case(&load_golden(), "f");
}

#[test]
fn ninety_b_layer_pattern() {
    check_case(&load_golden(), "g");
}

#[test]
fn in_memory_checkpoint_layout() {
    check_case(&load_golden(), "h");
}

/// Our own preprocessing of the committed image files gives the reference's
/// pixels (exactly for PNG; JPEG decoders differ by a few levels).
#[test]
fn preprocessing_matches_reference_pixels() {
    let g = load_golden();
    for case in g
        .cases
        .iter()
        .filter(|c| c.inputs_from.is_none() && c.same_as.is_none())
    {
        let refs = reference_images(&g, case);
        for (im, want) in case.images.iter().zip(&refs) {
            let bytes = std::fs::read(golden("mllama").join(&im.file)).expect("image");
            let cfg = preprocess::PreprocessConfig {
                tile_size: 56,
                ..Default::default()
            };
            let got = preprocess::prepare(&bytes, &ImageLimits::default(), &cfg).expect("prepare");
            assert_eq!(got.aspect_ratio_id, want.aspect_ratio_id, "{}", im.file);
            assert_eq!(got.n_tiles, want.n_tiles, "{}", im.file);
            let worst = got
                .pixels
                .iter()
                .zip(&want.pixels)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // One level of 255 is about 0.015 after normalisation.
            let tol = if im.file.ends_with(".jpg") { 0.1 } else { 0.0 };
            assert!(worst <= tol, "{}: pixels differ by {worst}", im.file);
        }
    }
}

/// The same image attached to two sequences is encoded once.
#[test]
fn repeated_image_reuses_its_encoding() {
    let g = load_golden();
    let case = g.case("a");
    let model = load_model(&case.model, &case.model_sha256);
    let img = &reference_images(&g, case)[0];
    let a = model.image_kv(img).expect("first");
    let b = model.image_kv(img).expect("second");
    assert!(Arc::ptr_eq(&a, &b));
    let mut other = img.clone();
    other.hash[31] ^= 1;
    let c = model.image_kv(&other).expect("other");
    assert!(!Arc::ptr_eq(&a, &c));
}

/// Image tokens without images, and images without tokens, are errors.
#[test]
fn image_count_mismatch_is_an_error() {
    let g = load_golden();
    let case = g.case("a");
    let model = load_model(&case.model, &case.model_sha256);
    let image_token = model.info().image_token.expect("vision model");
    let mut state = model.new_state(64).expect("state");
    let err = model
        .forward(&mut state, &[128000, image_token, 13], Logits::Last)
        .expect_err("an image token with no image");
    assert!(err.to_string().contains("image"), "{err}");
    let err = model
        .forward_inputs(
            &mut state,
            &[Input::Tokens(vec![128000, image_token])],
            Logits::Last,
        )
        .expect_err("an image token inside a token run");
    assert!(err.to_string().contains("image"), "{err}");
}

/// ollama's converter writes the same tensors and `mllama.*` keys but not
/// edgellama's `mllama.vision.image_mean`/`image_std`/`mllama.image_token_id`,
/// and its metadata in sorted key order: such a file loads with CLIP's
/// normalisation and image token 128256 and gives the same logits.
#[test]
fn file_without_edgellama_keys_loads_as_ollama_writes_it() {
    use edgellama_gguf::{GgufFile, GgufWriter};
    let g = load_golden();
    let case = g.case("a");
    let dir = testdata_dir(&case.model);
    let ours = Converter::open(&dir, OutType::F32)
        .expect("plan")
        .to_gguf()
        .expect("convert");
    let mut w = GgufWriter::from_file(&ours);
    for k in [
        "mllama.vision.image_mean",
        "mllama.vision.image_std",
        "mllama.image_token_id",
    ] {
        assert!(w.remove(k).is_some(), "{k} was written");
    }
    let mut meta = w.metadata().to_vec();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, _) in &meta {
        w.remove(k);
    }
    for (k, v) in meta {
        w.set(&k, v).expect("set");
    }
    w.set_file_len(None);
    let bytes = w.to_bytes().expect("write");
    let theirs = GgufFile::from_bytes(bytes).expect("read back");
    let backend = Arc::new(CpuBackend::new(2).expect("backend"));
    let a = Mllama::load(Arc::new(ours), backend.clone()).expect("ours");
    let b = Mllama::load(Arc::new(theirs), backend).expect("without our keys");
    assert_eq!(b.info().image_token, Some(128256));
    assert_eq!(
        b.info()
            .preprocess
            .as_ref()
            .map(|p| (p.image_mean, p.image_std)),
        a.info()
            .preprocess
            .as_ref()
            .map(|p| (p.image_mean, p.image_std))
    );
    let images = reference_images(&g, case);
    let run = |m: &Mllama| {
        let mut state = m.new_state(64).expect("state");
        m.forward_inputs(
            &mut state,
            &inputs(&case.tokens, &images, 128256),
            Logits::All,
        )
        .expect("forward")
    };
    assert_eq!(run(&a), run(&b));
}
