//! Read-then-write reproduces files byte for byte; written files read back unchanged.

mod common;

use std::borrow::Cow;
use std::io::{self, Write};

use common::testdata;
use edgellama_gguf::{
    ArrayValues, GgmlType, GgufError, GgufFile, GgufWriter, MetadataArray, MetadataValue, ValueType,
};

/// A `Write` that compares the stream with the expected bytes instead of storing it,
/// so a 100 MB model is checked without a second copy in memory.
struct CompareWriter<'a> {
    expected: &'a [u8],
    pos: usize,
    first_mismatch: Option<usize>,
}

impl Write for CompareWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos + buf.len();
        match self.expected.get(self.pos..end) {
            Some(want) if want == buf => {}
            Some(want) if self.first_mismatch.is_none() => {
                let i = want.iter().zip(buf).position(|(a, b)| a != b).unwrap_or(0);
                self.first_mismatch = Some(self.pos + i);
            }
            Some(_) => {}
            None if self.first_mismatch.is_none() => {
                self.first_mismatch = Some(self.expected.len().min(self.pos));
            }
            None => {}
        }
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn assert_rewrites_identically(name: &str) {
    let file = GgufFile::open(testdata(name)).expect("open");
    let mut cmp = CompareWriter {
        expected: file.bytes(),
        pos: 0,
        first_mismatch: None,
    };
    let n = GgufWriter::from_file(&file)
        .write_to(&mut cmp)
        .expect("write");
    assert_eq!(n, file.file_len(), "{name}: written length");
    assert_eq!(cmp.pos as u64, file.file_len());
    assert_eq!(cmp.first_mismatch, None, "{name}: first differing byte");
}

#[test]
fn smollm2_model_rewrites_byte_for_byte() {
    assert_rewrites_identically("SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn llama_bpe_vocab_rewrites_byte_for_byte() {
    // No tensors, and the file ends right after the metadata without padding.
    let file = GgufFile::open(testdata("ggml-vocab-llama-bpe.gguf")).expect("open");
    assert!(file.tensors().is_empty());
    assert_eq!(file.header_len(), file.file_len());
    assert_eq!(
        file.get_array("tokenizer.ggml.tokens")
            .map(MetadataArray::len)
            .ok(),
        Some(128256)
    );
    assert_eq!(
        file.get_array("tokenizer.ggml.merges")
            .map(MetadataArray::len)
            .ok(),
        Some(280147)
    );
    drop(file);
    assert_rewrites_identically("ggml-vocab-llama-bpe.gguf");
}

#[test]
fn gpt2_vocab_rewrites_byte_for_byte() {
    assert_rewrites_identically("ggml-vocab-gpt-2.gguf");
}

/// One value of every type, arrays of every type, empty arrays (which gguf-py's
/// writer cannot produce) and nested arrays including empty inner arrays.
fn every_value() -> Vec<(String, MetadataValue)> {
    let mut kv: Vec<(String, MetadataValue)> = vec![
        ("u8".into(), 255u8.into()),
        ("i8".into(), (-128i8).into()),
        ("u16".into(), 65535u16.into()),
        ("i16".into(), (-32768i16).into()),
        ("u32".into(), u32::MAX.into()),
        ("i32".into(), i32::MIN.into()),
        (
            "f32".into(),
            MetadataValue::F32(f32::from_bits(0x7fc0_1234)),
        ),
        ("bool".into(), true.into()),
        ("string".into(), "\u{1f999} llama".into()),
        ("u64".into(), u64::MAX.into()),
        ("i64".into(), i64::MIN.into()),
        ("f64".into(), MetadataValue::F64(-0.0)),
    ];
    for t in (0..=12).filter_map(ValueType::from_u32) {
        kv.push((format!("empty.{t}"), MetadataArray::empty(t).into()));
    }
    kv.push(("arr.u8".into(), vec![1u8, 2].into()));
    kv.push(("arr.i8".into(), vec![-1i8].into()));
    kv.push(("arr.u16".into(), vec![7u16].into()));
    kv.push(("arr.i16".into(), vec![-7i16].into()));
    kv.push(("arr.u32".into(), vec![1u32, 2, 3].into()));
    kv.push(("arr.i32".into(), vec![-1i32, 0, 1].into()));
    kv.push(("arr.f32".into(), vec![0.5f32, -0.0].into()));
    kv.push(("arr.bool".into(), vec![false, true].into()));
    kv.push(("arr.string".into(), vec!["", "x", "\u{e9}"].into()));
    kv.push(("arr.u64".into(), vec![u64::MAX].into()));
    kv.push(("arr.i64".into(), vec![i64::MIN].into()));
    kv.push(("arr.f64".into(), vec![1e-300f64].into()));
    let nested = MetadataArray::from(vec![
        MetadataArray::from(vec!["a", "b"]),
        MetadataArray::empty(ValueType::U64),
        MetadataArray::from(vec![MetadataArray::from(vec![1u8])]),
        MetadataArray::empty(ValueType::Array),
    ]);
    kv.push(("arr.nested".into(), nested.into()));
    kv
}

fn sample_writer() -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama").expect("arch");
    for (k, v) in every_value() {
        w.set(k, v).expect("metadata");
    }
    w.add_tensor("a", vec![3], GgmlType::F32, vec![1u8; 12])
        .expect("a");
    w.add_tensor("b", vec![32, 2], GgmlType::Q8_0, vec![2u8; 68])
        .expect("b");
    w.add_tensor("c", vec![256, 1, 1, 2], GgmlType::Q4_K, vec![3u8; 288])
        .expect("c");
    w
}

#[test]
fn written_file_reads_back_and_rewrites_identically() {
    let bytes = sample_writer().to_bytes().expect("write");
    let f = GgufFile::from_bytes(bytes.clone()).expect("parse");
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    let expected = every_value();
    assert_eq!(f.metadata().len(), expected.len() + 1);
    for ((k, v), (ek, ev)) in f.metadata()[1..].iter().zip(&expected) {
        assert_eq!(k, ek);
        match (v, ev) {
            (MetadataValue::F32(a), MetadataValue::F32(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            (MetadataValue::F64(a), MetadataValue::F64(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            (MetadataValue::Array(a), MetadataValue::Array(b)) if k == "arr.f32" => {
                let bits = |a: &MetadataArray| match a.values() {
                    ArrayValues::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    _ => panic!("not f32"),
                };
                assert_eq!(bits(a), bits(b));
            }
            _ => assert_eq!(v, ev, "{k}"),
        }
    }
    for t in (0..=12).filter_map(ValueType::from_u32) {
        let a = f.get_array(&format!("empty.{t}")).expect("empty array");
        assert_eq!(a.element_type(), t);
        assert!(a.is_empty());
    }
    // Offsets: each tensor at the next multiple of 32 after the previous one.
    let offsets: Vec<u64> = f.tensors().iter().map(|t| t.offset).collect();
    assert_eq!(offsets, vec![0, 32, 128]);
    assert_eq!(f.tensor_bytes("b").expect("b").1, &[2u8; 68][..]);
    assert_eq!(f.file_len(), f.data_offset() + 128 + 288);
    assert_eq!(f.file_len() % 32, 0);

    let again = GgufWriter::from_file(&f).to_bytes().expect("rewrite");
    assert_eq!(again, bytes);
}

#[test]
fn version_2_is_written_and_read() {
    let mut w = sample_writer();
    w.set_version(2).expect("v2");
    let f = GgufFile::from_bytes(w.to_bytes().expect("write")).expect("parse");
    assert_eq!(f.version(), 2);
    assert!(matches!(
        w.set_version(1),
        Err(GgufError::UnsupportedVersion { version: 1 })
    ));
}

#[test]
fn custom_alignment_places_data_and_tensors_on_multiples() {
    let mut w = sample_writer();
    w.set_alignment(256).expect("alignment");
    let f = GgufFile::from_bytes(w.to_bytes().expect("write")).expect("parse");
    assert_eq!(f.alignment(), 256);
    assert_eq!(f.get_u32("general.alignment").expect("key"), 256);
    assert_eq!(f.data_offset() % 256, 0);
    let offsets: Vec<u64> = f.tensors().iter().map(|t| t.offset).collect();
    assert_eq!(offsets, vec![0, 256, 512]);
    assert!(matches!(
        w.set_alignment(48),
        Err(GgufError::InvalidAlignment { value: 48 })
    ));
    assert!(matches!(
        w.set("general.alignment", 64u64),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn explicit_offsets_and_file_length_are_kept() {
    let mut w = GgufWriter::new();
    let data = [9u8; 8];
    // Data order differs from index order, with a gap.
    w.add_tensor_at("late", vec![2], GgmlType::F32, &data[..], 128)
        .expect("late");
    w.add_tensor_at("early", vec![4], GgmlType::F16, Cow::Borrowed(&data[..]), 0)
        .expect("early");
    w.set_file_len(Some(1000));
    let bytes = w.to_bytes().expect("write");
    assert_eq!(bytes.len(), 1000);
    let f = GgufFile::from_bytes(bytes.clone()).expect("parse");
    assert_eq!(f.tensor("late").map(|t| t.offset), Some(128));
    assert_eq!(f.tensor("early").map(|t| t.offset), Some(0));
    assert_eq!(f.tensor_bytes("late").expect("late").1, &data[..]);
    assert_eq!(
        GgufWriter::from_file(&f).to_bytes().expect("rewrite"),
        bytes
    );

    w.set_file_len(Some(10));
    assert!(matches!(
        w.to_bytes(),
        Err(GgufError::FileLenTooSmall { requested: 10, .. })
    ));
}

#[test]
fn writer_rejects_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    assert!(matches!(
        w.add_tensor("x", vec![4], GgmlType::F32, vec![0u8; 15]),
        Err(GgufError::TensorSizeMismatch {
            expected: 16,
            actual: 15,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("x", vec![16], GgmlType::Q4_0, vec![0u8; 9]),
        Err(GgufError::RowNotBlockAligned { .. })
    ));
    w.add_tensor("x", vec![4], GgmlType::F32, vec![0u8; 16])
        .expect("x");
    assert!(matches!(
        w.add_tensor("x", vec![4], GgmlType::F32, vec![0u8; 16]),
        Err(GgufError::DuplicateTensor { name }) if name == "x"
    ));
    w.add_tensor_at("y", vec![4], GgmlType::F32, vec![0u8; 16], 8)
        .expect("y");
    assert!(matches!(
        w.to_bytes(),
        Err(GgufError::MisalignedTensor { offset: 8, .. })
    ));
    let mut w = GgufWriter::new();
    w.add_tensor_at("p", vec![16], GgmlType::F32, vec![0u8; 64], 0)
        .expect("p");
    w.add_tensor_at("q", vec![4], GgmlType::F32, vec![0u8; 16], 32)
        .expect("q");
    assert!(matches!(
        w.to_bytes(),
        Err(GgufError::OverlappingTensors { .. })
    ));
    assert!(matches!(w.set("", 1u8), Err(GgufError::EmptyKeyNotAllowed)));
}

#[test]
fn write_to_path_then_open() {
    let dir = std::env::temp_dir().join(format!("edgellama-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("sample.gguf");
    let w = sample_writer();
    let n = w.write_to_path(&path).expect("write");
    let f = GgufFile::open(&path).expect("open");
    assert_eq!(f.file_len(), n);
    assert_eq!(f.bytes(), &w.to_bytes().expect("bytes")[..]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn tensorless_file_is_padded_by_default() {
    let mut w = GgufWriter::new();
    w.set("k", "v").expect("k");
    let bytes = w.to_bytes().expect("write");
    assert_eq!(bytes.len() % 32, 0);
    let f = GgufFile::from_bytes(bytes).expect("parse");
    assert_eq!(f.data_offset(), f.file_len());
}
