//! Bad input and bad output: each is refused with an error that says what is
//! wrong, before anything is written, and no partial output is left behind.

mod common;

use std::path::{Path, PathBuf};

use common::testdata;
use edgellama_gguf::{GgmlType, GgufError, GgufFile, GgufWriter};
use edgellama_quantize::{
    plan_file, quantize_file, write_quantized, FileType, NoProgress, PlanOptions, QuantizeError,
    QuantizeOptions,
};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quantize-errors");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn quantize(input: &Path, output: &Path, ftype: FileType) -> Result<(), QuantizeError> {
    quantize_file(input, output, &QuantizeOptions::new(ftype), &NoProgress).map(|_| ())
}

/// Nothing of `output` exists, not even the temporary file beside it.
fn assert_nothing_written(output: &Path) {
    assert!(!output.exists(), "{} was created", output.display());
    let dir = output.parent().unwrap();
    let stem = output.file_name().unwrap().to_str().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_str().unwrap();
        assert!(
            !name.contains(&format!("{stem}.partial")),
            "left {name} behind"
        );
    }
}

/// A one-block llama model with F32 weights holding `values` (repeated).
fn small_model(values: &[f32], extra: &[(&str, u32)]) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama").unwrap();
    w.set("llama.block_count", 1u32).unwrap();
    for &(k, v) in extra {
        w.set(k, v).unwrap();
    }
    let data: Vec<u8> = values
        .iter()
        .cycle()
        .take(64 * 4)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    w.add_tensor("blk.0.attn_q.weight", vec![64, 4], GgmlType::F32, data)
        .unwrap();
    w.to_bytes().unwrap()
}

#[test]
fn text_file_is_not_gguf() {
    let out = scratch("text.gguf");
    let err = quantize(&testdata("shakespeare-hamlet.txt"), &out, FileType::Q4_0).unwrap_err();
    assert!(
        matches!(err, QuantizeError::Gguf(GgufError::BadMagic { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn vocabulary_file_is_not_a_model() {
    let out = scratch("vocab.gguf");
    let err = quantize(&testdata("ggml-vocab-llama-bpe.gguf"), &out, FileType::Q8_0).unwrap_err();
    assert!(matches!(err, QuantizeError::NotAModel { .. }), "{err:?}");
    assert!(err.to_string().contains("no tensors"), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn gguf_without_architecture_is_not_a_model() {
    let mut w = GgufWriter::new();
    w.add_tensor("x.weight", vec![32, 2], GgmlType::F32, vec![0u8; 256])
        .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let err = plan_file(&file, FileType::Q4_0, &PlanOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("general.architecture is missing"),
        "{err}"
    );
}

#[test]
fn truncated_file_is_refused() {
    let input = scratch("truncated-in.gguf");
    let bytes = std::fs::read(testdata("tiny-llama32-q8_0.gguf")).unwrap();
    std::fs::write(&input, &bytes[..bytes.len() / 2]).unwrap();
    let out = scratch("truncated-out.gguf");
    let err = quantize(&input, &out, FileType::Q8_0).unwrap_err();
    assert!(
        matches!(
            err,
            QuantizeError::Gguf(GgufError::TensorOutOfBounds { .. })
        ),
        "{err:?}"
    );
    assert_nothing_written(&out);
}

#[test]
fn unwritable_output_names_the_path() {
    let input = scratch("writable-in.gguf");
    std::fs::write(&input, small_model(&[0.5, -1.0], &[])).unwrap();
    let out = scratch("no-such-dir").join("out.gguf");
    let err = quantize(&input, &out, FileType::Q4_0).unwrap_err();
    assert!(matches!(err, QuantizeError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn requantizing_needs_permission() {
    let out = scratch("requant.gguf");
    let input = testdata("tiny-llama32-q8_0.gguf");
    let err = quantize(&input, &out, FileType::Q4_0).unwrap_err();
    match &err {
        // The first tensor written that would be converted: the tied
        // embeddings, which the mix puts at Q6_K.
        QuantizeError::RequantizeDisabled { tensor, from, to } => {
            assert_eq!(
                (tensor.as_str(), *from, *to),
                ("token_embd.weight", GgmlType::Q8_0, GgmlType::Q6_K)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("--allow-requantize"), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn same_type_copies_quantized_tensors_without_permission() {
    // Q8_0 to Q8_0 converts nothing, so it needs no --allow-requantize, and
    // every tensor is the input's bytes.
    let input = GgufFile::open(testdata("tiny-llama32-q8_0.gguf")).unwrap();
    let plan = plan_file(&input, FileType::Q8_0, &PlanOptions::default()).unwrap();
    assert!(plan.tensors.iter().all(|t| !t.converts()));
    let mut out = Vec::new();
    write_quantized(&input, &plan, 2, &mut out, &NoProgress).unwrap();
    let out = GgufFile::from_bytes(out).unwrap();
    for t in input.tensors() {
        let (o, data) = out.tensor_bytes(&t.name).unwrap();
        assert_eq!(o.ggml_type, t.ggml_type, "{}", t.name);
        assert!(data == input.tensor_data(t), "{} changed", t.name);
    }
    assert_eq!(out.get_u32("general.file_type").unwrap(), 7);
}

#[test]
fn infinite_weights_are_refused_and_leave_no_file() {
    // An infinity makes the block scale infinite. (A NaN does not: the
    // reference quantizers' max search skips it, and llama-quantize, like
    // this crate, writes such a file.)
    let input = scratch("inf-in.gguf");
    std::fs::write(&input, small_model(&[0.5, f32::INFINITY, 1.0], &[])).unwrap();
    let out = scratch("inf-out.gguf");
    let err = quantize(&input, &out, FileType::Q4_0).unwrap_err();
    assert!(
        matches!(&err, QuantizeError::NonFinite { tensor, ty: GgmlType::Q4_0 } if tensor == "blk.0.attn_q.weight"),
        "{err:?}"
    );
    assert_nothing_written(&out);
}

#[test]
fn split_files_are_refused() {
    let file =
        GgufFile::from_bytes(small_model(&[1.0], &[("split.count", 2), ("split.no", 1)])).unwrap();
    let err = plan_file(&file, FileType::Q4_0, &PlanOptions::default()).unwrap_err();
    assert!(
        matches!(err, QuantizeError::SplitModel { part: 2, count: 2 }),
        "{err:?}"
    );
}

#[test]
fn output_may_replace_the_input() {
    // The output goes to a temporary file renamed at the end, so the mapped
    // input stays intact while it is read.
    let path = scratch("in-place.gguf");
    std::fs::write(&path, small_model(&[0.25, -0.5, 0.75], &[])).unwrap();
    quantize(&path, &path, FileType::Q8_0).unwrap();
    let out = GgufFile::open(&path).unwrap();
    let (t, data) = out.tensor_bytes("blk.0.attn_q.weight").unwrap();
    assert_eq!(t.ggml_type, GgmlType::Q8_0);
    let back = edgellama_kernels::dequantize_tensor(GgmlType::Q8_0, data, 256).unwrap();
    // Q8_0 of blocks whose largest magnitude is 0.75: d = 0.75/127.
    for (i, v) in back.iter().enumerate() {
        let want = [0.25f32, -0.5, 0.75][i % 3];
        assert!((v - want).abs() <= 0.75 / 127.0, "{i}: {v} vs {want}");
    }
}

#[test]
fn declared_alignment_is_kept() {
    let path = scratch("align64-in.gguf");
    std::fs::write(
        &path,
        small_model(&[1.0, 2.0], &[("general.alignment", 64)]),
    )
    .unwrap();
    let out = scratch("align64-out.gguf");
    quantize(&path, &out, FileType::Q4_0).unwrap();
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_offset() % 64, 0);
    assert_eq!(file.file_len() % 64, 0);
    assert_eq!(
        file.tensor("blk.0.attn_q.weight").unwrap().ggml_type,
        GgmlType::Q4_0
    );
}
