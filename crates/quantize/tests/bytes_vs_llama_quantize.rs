//! Our files against llama-quantize's, byte for byte, for SmolLM2-135M.
//!
//! The F16 source is made here from the Q4_1 test model (dequantizing Q4_1 and
//! Q8_0 to F16 is exact), and must itself equal llama-quantize's F16 file.
//! Each type is then written into a hashing sink and compared with the sha256
//! of llama-quantize's whole file; on a mismatch the failing tensors are named
//! from the per-tensor hashes. Needs no llama.cpp: the hashes are in the golden.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{ggml_type, golden, sha256_hex, strings, testdata, threads, HashSink};
use edgellama_gguf::GgufFile;
use edgellama_quantize::{
    convert_tensor, plan_file, quantize_file, write_quantized, FileType, NoProgress, PlanOptions,
    QuantizeOptions,
};

/// The F16 SmolLM2, made once per test run by our own quantizer.
fn f16_source() -> &'static GgufFile {
    static SOURCE: OnceLock<GgufFile> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let g = &golden()["smollm2"];
        let input = testdata(g["source"].as_str().unwrap());
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quantize-smollm2-f16.gguf");
        let mut opts = QuantizeOptions::new(FileType::F16);
        opts.threads = threads();
        opts.allow_requantize = true;
        let report = quantize_file(&input, &out, &opts, &NoProgress).unwrap();
        let file = GgufFile::open(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(report.file_len, file.file_len());
        file
    })
}

/// Names the tensors whose bytes differ from llama-quantize's.
fn differing_tensors(file: &GgufFile, expected: &serde_json::Value) -> Vec<String> {
    let g = &golden()["smollm2"];
    let names = strings(&g["tensor_names"]);
    let types = strings(&expected["tensor_types"]);
    let hashes = strings(&expected["tensor_hashes"]);
    let mut wrong = Vec::new();
    for ((name, ty), want) in names.iter().zip(&types).zip(&hashes) {
        let (info, data) = file.tensor_bytes(name).unwrap();
        let to = ggml_type(ty);
        let bytes = if info.ggml_type == to {
            data.to_vec()
        } else {
            convert_tensor(data, info.ggml_type, to, info.dims[0] as usize, threads()).unwrap()
        };
        let got = &sha256_hex(&bytes)[..16];
        if got != want {
            wrong.push(format!("{name} ({ty}): {got}, llama-quantize {want}"));
        }
    }
    wrong
}

#[test]
fn f16_source_is_llama_quantizes_file() {
    let file = f16_source();
    let expected = &golden()["smollm2"]["f16"];
    let hash = sha256_hex(file.bytes());
    if hash != expected["sha256"].as_str().unwrap() {
        // Our F16 tensors are plain copies of the file's; compare them directly.
        let hashes = strings(&expected["tensor_hashes"]);
        let names = strings(&golden()["smollm2"]["tensor_names"]);
        let wrong: Vec<&String> = names
            .iter()
            .zip(&hashes)
            .filter(|(n, h)| &sha256_hex(file.tensor_bytes(n).unwrap().1)[..16] != h.as_str())
            .map(|(n, _)| n)
            .collect();
        panic!("F16 file differs from llama-quantize's; tensors: {wrong:?}");
    }
    assert_eq!(file.file_len(), expected["size"].as_u64().unwrap());
}

/// Writes `qtype` from the F16 source and compares the whole file.
fn check_type(qtype: &str) {
    let expected = &golden()["smollm2"]["types"][qtype];
    let file = f16_source();
    let ftype = FileType::parse(qtype).unwrap();
    let plan = plan_file(file, ftype, &PlanOptions::default()).unwrap();
    let mut sink = HashSink::default();
    let written = write_quantized(file, &plan, threads(), &mut sink, &NoProgress).unwrap();
    assert_eq!(written, sink.len);
    let size = sink.len;
    let hash = sink.hex();
    if hash != expected["sha256"].as_str().unwrap() {
        let wrong = differing_tensors(file, expected);
        panic!(
            "{qtype}: file sha256 {hash} differs from llama-quantize's; tensors:\n{}",
            if wrong.is_empty() {
                "none (the header differs)".to_owned()
            } else {
                wrong.join("\n")
            }
        );
    }
    assert_eq!(size, expected["size"].as_u64().unwrap(), "{qtype}: size");
}

macro_rules! whole_file_tests {
    ($($name:ident => $qtype:literal,)*) => {
        $(
            #[test]
            fn $name() {
                check_type($qtype);
            }
        )*

        #[test]
        fn every_golden_type_has_a_test() {
            let mut tested = vec![$($qtype),*];
            let mut golden_types: Vec<&str> = golden()["smollm2"]["types"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            tested.sort_unstable();
            golden_types.sort_unstable();
            assert_eq!(tested, golden_types);
        }
    };
}

whole_file_tests! {
    q4_0_file_is_identical => "Q4_0",
    q4_1_file_is_identical => "Q4_1",
    q5_0_file_is_identical => "Q5_0",
    q5_1_file_is_identical => "Q5_1",
    q8_0_file_is_identical => "Q8_0",
    q2_k_file_is_identical => "Q2_K",
    q3_k_s_file_is_identical => "Q3_K_S",
    q3_k_m_file_is_identical => "Q3_K_M",
    q3_k_l_file_is_identical => "Q3_K_L",
    q4_k_s_file_is_identical => "Q4_K_S",
    q4_k_m_file_is_identical => "Q4_K_M",
    q5_k_s_file_is_identical => "Q5_K_S",
    q5_k_m_file_is_identical => "Q5_K_M",
    q6_k_file_is_identical => "Q6_K",
    f16_file_is_identical => "F16",
    bf16_file_is_identical => "BF16",
    f32_file_is_identical => "F32",
}

#[test]
fn thread_count_does_not_change_the_blocks() {
    // One 1536-wide tensor per K type, converted on 1 and 3 threads, against
    // llama-quantize's hashes (whatever it used, rows are independent).
    let g = &golden()["smollm2"];
    let names = strings(&g["tensor_names"]);
    let file = f16_source();
    for (qtype, tensor) in [
        ("Q4_K_M", "blk.3.ffn_down.weight"),
        ("Q3_K_M", "blk.0.ffn_down.weight"),
    ] {
        let expected = &g["types"][qtype];
        let i = names.iter().position(|n| n == tensor).unwrap();
        let to = ggml_type(&strings(&expected["tensor_types"])[i]);
        let want = &strings(&expected["tensor_hashes"])[i];
        let (info, data) = file.tensor_bytes(tensor).unwrap();
        for n in [1, 3] {
            let out = convert_tensor(data, info.ggml_type, to, 1536, n).unwrap();
            assert_eq!(
                &sha256_hex(&out)[..16],
                want,
                "{tensor} to {to} on {n} threads"
            );
        }
    }
}
