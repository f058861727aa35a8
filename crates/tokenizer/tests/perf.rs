//! Load and encode times, with loose bounds that only catch pathological
//! slowdowns (e.g. quadratic merging); run with --nocapture to see them.

mod common;
use common::*;
use edgellama_tokenizer::Tokenizer;
use std::time::{Duration, Instant};

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    let d = t.elapsed();
    println!("{what}: {:.1} ms", d.as_secs_f64() * 1e3);
    (v, d)
}

#[test]
fn load_and_encode_speed() {
    let path = testdata("llama3.2-tokenizer.json");
    let (tok, load) = timed("load llama3.2 tokenizer.json (128K)", || {
        Tokenizer::from_hf_json(&path).unwrap()
    });
    assert!(load < Duration::from_secs(10), "load took {load:?}");
    timed("load SmolLM2 from GGUF (49K)", || {
        from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    });

    let once: String = corpus().iter().map(|s| format!("{s}\n")).collect();
    let (_, cold) = timed(
        &format!("encode corpus once, cold cache ({} bytes)", once.len()),
        || tok.encode(&once, false, false),
    );
    println!("  {:.2} MB/s", once.len() as f64 / cold.as_secs_f64() / 1e6);

    let mut text = String::new();
    while text.len() < 1 << 20 {
        for s in corpus() {
            text.push_str(s);
            text.push('\n');
        }
    }
    let (ids, enc) = timed(&format!("encode {} bytes", text.len()), || {
        tok.encode(&text, false, false)
    });
    println!(
        "  {} tokens, {:.2} MB/s",
        ids.len(),
        text.len() as f64 / enc.as_secs_f64() / 1e6
    );
    assert!(enc < Duration::from_secs(30), "encode took {enc:?}");
    let (_, dec) = timed("decode them", || tok.decode(&ids, true));
    assert!(dec < Duration::from_secs(10));

    // Long single words must not merge in quadratic time.
    for (name, unit) in [
        ("letters", "a"),
        ("digits", "7"),
        ("spaces", " "),
        ("'<'", "<"),
        ("Thai", "ก"),
    ] {
        let s = unit.repeat(200_000);
        let (ids, d) = timed(&format!("encode 200k x {name}"), || {
            tok.encode(&s, false, true)
        });
        assert!(!ids.is_empty());
        assert!(d < Duration::from_secs(20), "{name}: {d:?}");
        assert_eq!(tok.decode(&ids, true), s);
    }
}

/// Regression: `\p{N}{1,3}` once rescanned the whole digit run for every
/// 3-digit word, so long numbers took quadratic time.
#[test]
fn long_digit_run_splits_in_linear_time() {
    let tok = llama32();
    let s = "7".repeat(1_000_000);
    let t = Instant::now();
    let ids = tok.encode(&s, false, false);
    let d = t.elapsed();
    assert_eq!(ids.len(), 333_334);
    assert!(d < Duration::from_secs(5), "1M digits took {d:?}");
}
