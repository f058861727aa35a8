//! Parses arbitrary bytes as GGUF. Any accepted file must expose consistent
//! tensor data and must survive a write-back: the header, metadata and tensor
//! index come back byte for byte and the result parses again.
//!
//! Seed corpus: small valid files, e.g. crates/gguf/tests/golden/all_types.gguf
//! and the first kilobytes of a vocab-only GGUF.

#![no_main]

use edgellama_gguf::{ArrayValues, GgufFile, GgufWriter, MetadataArray, MetadataValue};
use libfuzzer_sys::fuzz_target;

fn touch_array(a: &MetadataArray) -> usize {
    match a.values() {
        ArrayValues::String(v) => v.iter().map(String::len).sum(),
        ArrayValues::Array(v) => v.iter().map(touch_array).sum(),
        _ => a.len() + a.as_f32_vec().map_or(0, |v| v.len()),
    }
}

fn touch_value(v: &MetadataValue) -> usize {
    let mut n = usize::from(v.as_u32().is_some())
        + usize::from(v.as_i64().is_some())
        + usize::from(v.as_f32().is_some())
        + usize::from(v.as_bool().is_some());
    n += v.as_str().map_or(0, str::len);
    n += v.as_array().map_or(0, touch_array);
    n
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let mut sink = 0usize;
    for (key, value) in file.metadata() {
        assert!(file.get(key).is_some());
        sink = sink.wrapping_add(touch_value(value));
    }
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes());
        assert_eq!(file.tensor(&t.name), Some(t));
        assert_eq!(t.offset % file.alignment(), 0);
        sink = sink.wrapping_add(bytes.iter().map(|&b| usize::from(b)).sum::<usize>());
    }
    std::hint::black_box(sink);

    let written = GgufWriter::from_file(&file)
        .to_bytes()
        .expect("an accepted file must be writable");
    assert_eq!(written.len(), data.len());
    let header_len = file.header_len() as usize;
    assert_eq!(&written[..header_len], &data[..header_len]);
    let again = GgufFile::from_bytes(written).expect("a written file must parse");
    assert_eq!(again.tensors(), file.tensors());
    for t in file.tensors() {
        assert_eq!(again.tensor_data(t), file.tensor_data(t));
    }
});
