//! `edgellama run --image` and chat's `/image` through the built binary,
//! on the tiny random Llama 3.2 Vision checkpoint (run as a directory,
//! converted in memory), and their errors.

mod common;

use common::*;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn vision_model() -> String {
    testdata("tiny-mllama").to_string_lossy().into_owned()
}

fn image(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/golden/mllama")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Case a of the transformers goldens (crates/models/tests/golden/mllama):
/// the prompt without its BOS, which `run` adds.
const PROMPT_A: &str = "<|start_header_id|>user<|end_header_id|>\n\n<|image|>Describe this.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

/// Case a's 8 greedy tokens from transformers, decoded with Hugging Face
/// `tokenizers` 0.23.3 and Meta's Llama 3.2 tokenizer.json.
const REPLY_A: &str =
    " weap Src weap Src(Action Trader/***************************************************************************\n malicious";

#[test]
fn run_with_an_image_continues_as_transformers_does() {
    let img = image("img-a-40x30.png");
    let o = edgellama(&[
        "run",
        "-m",
        &vision_model(),
        "--image",
        &img,
        "-p",
        PROMPT_A,
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{REPLY_A}\n"));
    assert!(stderr(&o).contains("encoding image 1/1 (img-a-40x30.png, 1 tile)"));
}

#[test]
fn images_without_tokens_go_before_the_text() {
    // "Describe this." with no <|image|>: the image goes right after BOS.
    let img = image("img-a-40x30.png");
    let o = edgellama(&[
        "run",
        "-m",
        &vision_model(),
        "--image",
        &img,
        "-p",
        "Describe this.",
        "-n",
        "2",
        "--temp",
        "0",
        "--verbose-prompt",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("<|begin_of_text|><|image|>Describe this."),
        "{}",
        stderr(&o)
    );
}

#[test]
fn image_errors_are_clear() {
    let img = image("img-a-40x30.png");
    let m = vision_model();
    // More images than tokens.
    let o = edgellama(&[
        "run",
        "-m",
        &m,
        "--image",
        &img,
        "--image",
        &img,
        "-p",
        "<|image|>Hi",
        "-n",
        "1",
    ]);
    assert_clean_failure(&o, "1 <|image|> tokens for 2 images");
    // A file that is not there, and one that is not an image.
    let o = edgellama(&[
        "run",
        "-m",
        &m,
        "--image",
        "/nonexistent.png",
        "-p",
        "Hi",
        "-n",
        "1",
    ]);
    assert_clean_failure(&o, "cannot read the image /nonexistent.png");
    let dir = std::env::temp_dir().join(format!("edgellama-vision-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png").expect("write");
    let o = edgellama(&[
        "run",
        "-m",
        &m,
        "--image",
        bad.to_str().unwrap(),
        "-p",
        "Hi",
        "-n",
        "1",
    ]);
    assert_clean_failure(&o, "cannot use the image");
    // A text-only model.
    let smol = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let o = edgellama(&[
        "run",
        "-m",
        smol.to_str().unwrap(),
        "--image",
        &img,
        "-p",
        "Hi",
        "-n",
        "1",
    ]);
    assert_clean_failure(&o, "takes no images");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chat_attaches_images_to_the_next_message() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgellama"))
        .args([
            "chat",
            "-m",
            &vision_model(),
            "-n",
            "4",
            "--temp",
            "0",
            "-t",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat");
    let script = format!(
        "/image {}\nDescribe this.\n/image /nonexistent.png\n/image {}\nAnd this?\nNo image now.\n",
        image("img-a-40x30.png"),
        image("img-c2-50x150.png")
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    let o = child.wait_with_output().expect("chat");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        out.matches("(1 image(s) attached to the next message)")
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("error: cannot read the image /nonexistent.png"),
        "{out}"
    );
    assert!(!out.contains("the conversation has"), "{out}");
    assert!(!stderr(&o).contains("panicked"));
}
