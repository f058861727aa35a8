//! Corrupt, truncated and hostile files: each gives the specific error, never a
//! panic or an allocation sized by the file.

mod common;

use common::{golden_dir, Bytes};
use edgellama_gguf::{GgmlType, GgufError, GgufFile, ValueType};

fn parse(b: &Bytes) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(b.build())
}

fn err(b: &Bytes) -> GgufError {
    match parse(b) {
        Ok(f) => panic!("accepted a bad file: {f:?}"),
        Err(e) => e,
    }
}

/// A valid file with one F32 tensor of 4 elements, to be corrupted field by field.
fn one_tensor(dims: &[u64], ty: u32, offset: u64, data: usize) -> Bytes {
    let mut b = Bytes::header(3, 1, 1);
    b.kv_str("general.architecture", "llama")
        .tensor("w", dims, ty, offset)
        .pad_and_data(32, data);
    b
}

#[test]
fn baseline_is_valid() {
    let f = parse(&one_tensor(&[4], 0, 0, 16)).expect("valid");
    assert_eq!(f.tensor("w").map(|t| t.n_bytes()), Some(16));
    assert_eq!(
        f.tensor_bytes("w").expect("w").1,
        &(0..16).collect::<Vec<u8>>()[..]
    );
}

#[test]
fn wrong_magic() {
    let mut b = one_tensor(&[4], 0, 0, 16);
    b.0[..4].copy_from_slice(b"GGML");
    assert!(matches!(err(&b), GgufError::BadMagic { found } if &found == b"GGML"));
}

#[test]
fn empty_file_is_truncated() {
    assert!(matches!(
        GgufFile::from_bytes(Vec::new()),
        Err(GgufError::Truncated {
            offset: 0,
            needed: 4,
            available: 0,
            ..
        })
    ));
}

#[test]
fn version_1_is_unsupported() {
    assert!(matches!(
        err(&Bytes::header(1, 0, 0)),
        GgufError::UnsupportedVersion { version: 1 }
    ));
    assert!(matches!(
        err(&Bytes::header(4, 0, 0)),
        GgufError::UnsupportedVersion { version: 4 }
    ));
    assert!(matches!(
        err(&Bytes::header(0, 0, 0)),
        GgufError::UnsupportedVersion { version: 0 }
    ));
}

#[test]
fn big_endian_file_is_recognised() {
    let mut b = Bytes::default();
    b.raw(b"GGUF")
        .raw(&3u32.to_be_bytes())
        .raw(&0u64.to_be_bytes())
        .raw(&0u64.to_be_bytes());
    assert!(matches!(err(&b), GgufError::BigEndian { version: 3 }));
}

#[test]
fn version_2_and_3_are_accepted() {
    for v in [2, 3] {
        let mut b = Bytes::header(v, 0, 1);
        b.kv_u32("k", 1);
        assert_eq!(parse(&b).expect("valid").version(), v);
    }
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let path = golden_dir().join("all_types.gguf");
    let full = std::fs::read(&path).expect("golden file");
    let f = GgufFile::from_bytes(full.clone()).expect("full file parses");
    // The spec requires padding between tensors, not after the last one
    // (llama.cpp's loader accepts such files too), so only cutting into data fails.
    let data_end = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes())
        .max()
        .expect("tensors") as usize;
    assert!(data_end < full.len());
    for len in 0..data_end {
        let r = GgufFile::from_bytes(full[..len].to_vec());
        assert!(
            matches!(
                r,
                Err(GgufError::Truncated { .. }
                    | GgufError::StringTooLong { .. }
                    | GgufError::ArrayTooLarge { .. }
                    | GgufError::TooManyKeys { .. }
                    | GgufError::TooManyTensors { .. }
                    | GgufError::TensorOutOfBounds { .. })
            ),
            "prefix of {len} bytes: {r:?}"
        );
    }
    for len in data_end..full.len() {
        let g = GgufFile::from_bytes(full[..len].to_vec()).expect("only padding missing");
        assert_eq!(g.tensors(), f.tensors());
    }
}

#[test]
fn absurd_tensor_count() {
    for count in [u64::MAX, 1 << 40, 1000] {
        let mut b = Bytes::header(3, count, 0);
        b.raw(&[0; 64]);
        assert!(
            matches!(err(&b), GgufError::TooManyTensors { count: c, remaining: 64 } if c == count),
            "{count}"
        );
    }
}

#[test]
fn tensor_count_checked_again_after_metadata() {
    // 2 tensors * 24 bytes fit after the header, but not after the metadata.
    let mut b = Bytes::header(3, 2, 1);
    b.kv_str("k", &"x".repeat(40));
    assert!(matches!(
        err(&b),
        GgufError::TooManyTensors { count: 2, .. }
    ));
}

#[test]
fn absurd_kv_count() {
    for count in [u64::MAX, 1 << 60, 5] {
        let mut b = Bytes::header(3, 0, count);
        b.raw(&[0; 64]);
        assert!(
            matches!(err(&b), GgufError::TooManyKeys { count: c, remaining: 64 } if c == count),
            "{count}"
        );
    }
}

#[test]
fn huge_key_length() {
    let mut b = Bytes::header(3, 0, 1);
    b.u64(1 << 60).raw(&[b'a'; 32]);
    assert!(matches!(
        err(&b),
        GgufError::StringTooLong { len, offset: 24, remaining: 32, ref what }
            if len == 1 << 60 && what.contains("metadata entry #0")
    ));
}

#[test]
fn huge_string_value_length() {
    let mut b = Bytes::header(3, 0, 1);
    b.str("general.name")
        .u32(ValueType::String as u32)
        .u64(u64::MAX)
        .raw(b"abc");
    assert!(matches!(
        err(&b),
        GgufError::StringTooLong { len: u64::MAX, ref what, .. } if what.contains("general.name")
    ));
}

#[test]
fn huge_array_count() {
    for (elem, count) in [
        (ValueType::String, 1u64 << 60),
        (ValueType::U8, 1 << 60),
        (ValueType::U64, u64::MAX / 4),
        (ValueType::Array, 1 << 40),
        (ValueType::U32, 5),
    ] {
        let mut b = Bytes::header(3, 0, 1);
        b.str("tokenizer.ggml.tokens")
            .u32(ValueType::Array as u32)
            .u32(elem as u32)
            .u64(count)
            .raw(&[0; 16]);
        assert!(
            matches!(
                err(&b),
                GgufError::ArrayTooLarge { ref key, element_type, count: c, remaining: 16, .. }
                    if key == "tokenizer.ggml.tokens" && element_type == elem && c == count
            ),
            "{elem} x {count}"
        );
    }
}

#[test]
fn array_of_strings_with_a_huge_element() {
    let mut b = Bytes::header(3, 0, 1);
    b.str("t")
        .u32(ValueType::Array as u32)
        .u32(ValueType::String as u32)
        .u64(2)
        .str("ok")
        .u64(1 << 50)
        .raw(&[0; 16]);
    assert!(matches!(err(&b), GgufError::StringTooLong { len, .. } if len == 1 << 50));
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut b = Bytes::header(3, 0, 1);
    b.str("deep").u32(ValueType::Array as u32);
    for _ in 0..100 {
        b.u32(ValueType::Array as u32).u64(1);
    }
    b.u32(ValueType::U8 as u32).u64(0);
    assert!(matches!(
        err(&b),
        GgufError::NestingTooDeep { ref key, max: 32 } if key == "deep"
    ));
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    let mut b = Bytes::header(3, 0, 1);
    b.str("deep").u32(ValueType::Array as u32);
    for _ in 0..31 {
        b.u32(ValueType::Array as u32).u64(1);
    }
    b.u32(ValueType::U8 as u32).u64(1).u8(7);
    let f = parse(&b).expect("32 levels");
    let mut a = f.get_array("deep").expect("array");
    for _ in 0..31 {
        a = &a.arrays().expect("nested")[0];
    }
    assert_eq!(a.as_u32_vec(), Some(vec![7]));
}

#[test]
fn n_dims_5() {
    let b = one_tensor(&[4, 1, 1, 1, 1], 0, 0, 16);
    assert!(matches!(
        err(&b),
        GgufError::TooManyDims { ref tensor, n_dims: 5, max: 4 } if tensor == "w"
    ));
}

#[test]
fn n_dims_huge_does_not_allocate() {
    let mut b = Bytes::header(3, 1, 0);
    b.str("w").u32(u32::MAX).raw(&[0; 64]);
    assert!(matches!(
        err(&b),
        GgufError::TooManyDims {
            n_dims: u32::MAX,
            ..
        }
    ));
}

#[test]
fn dim_zero() {
    let b = one_tensor(&[4, 0], 0, 0, 16);
    assert!(matches!(
        err(&b),
        GgufError::ZeroDim { ref tensor, index: 1 } if tensor == "w"
    ));
}

#[test]
fn dims_whose_product_overflows() {
    let b = one_tensor(&[1 << 32, 1 << 32, 2], 0, 0, 16);
    assert!(matches!(
        err(&b),
        GgufError::ShapeOverflow { ref tensor, ref dims } if tensor == "w" && dims.len() == 3
    ));
    // Elements fit in u64 but not in ggml's signed i64.
    let b = one_tensor(&[1 << 63], 1, 0, 16);
    assert!(matches!(err(&b), GgufError::ShapeOverflow { .. }));
    // Elements fit, bytes do not.
    let b = one_tensor(&[1 << 62], 0, 0, 16);
    assert!(matches!(err(&b), GgufError::ShapeOverflow { .. }));
}

#[test]
fn row_not_multiple_of_block() {
    let b = one_tensor(&[48, 2], GgmlType::Q4_K as u32, 0, 16);
    assert!(matches!(
        err(&b),
        GgufError::RowNotBlockAligned { ref tensor, ggml_type: GgmlType::Q4_K, row_len: 48, block_size: 256 }
            if tensor == "w"
    ));
}

#[test]
fn unknown_tensor_type() {
    for type_id in [4, 5, 16, 28, 39, 99, u32::MAX] {
        let b = one_tensor(&[4], type_id, 0, 16);
        assert!(
            matches!(
                err(&b),
                GgufError::UnknownTensorType { ref tensor, type_id: t } if tensor == "w" && t == type_id
            ),
            "{type_id}"
        );
    }
}

/// Type 20, ggml's iq4_nl (a KV-cache type): 32 elements in 18 bytes.
#[test]
fn iq4_nl_tensor_is_accepted() {
    let f = parse(&one_tensor(&[64, 2], 20, 0, 72)).expect("valid");
    let t = f.tensor("w").expect("w");
    assert_eq!(t.ggml_type, GgmlType::IQ4_NL);
    assert_eq!(t.n_bytes(), 72);
    assert!(matches!(
        err(&one_tensor(&[48], 20, 0, 18)),
        GgufError::RowNotBlockAligned {
            ggml_type: GgmlType::IQ4_NL,
            row_len: 48,
            block_size: 32,
            ..
        }
    ));
}

#[test]
fn unknown_metadata_value_type() {
    let mut b = Bytes::header(3, 0, 1);
    b.str("general.x").u32(13).u32(0);
    assert!(matches!(
        err(&b),
        GgufError::UnknownValueType { ref key, type_id: 13, offset: 41 } if key == "general.x"
    ));
    // As an array element type.
    let mut b = Bytes::header(3, 0, 1);
    b.str("general.x")
        .u32(ValueType::Array as u32)
        .u32(0xdead)
        .u64(0);
    assert!(matches!(
        err(&b),
        GgufError::UnknownValueType {
            type_id: 0xdead,
            ..
        }
    ));
}

#[test]
fn offset_past_the_end() {
    let b = one_tensor(&[4], 0, 32, 16);
    assert!(matches!(
        err(&b),
        GgufError::TensorOutOfBounds { ref tensor, offset: 32, n_bytes: 16, data_len: 16 }
            if tensor == "w"
    ));
    // Data cut short by one byte.
    let b = one_tensor(&[4], 0, 0, 15);
    assert!(matches!(
        err(&b),
        GgufError::TensorOutOfBounds { data_len: 15, .. }
    ));
    // offset + size overflows u64.
    let b = one_tensor(&[4], 0, u64::MAX - 31, 16);
    assert!(matches!(err(&b), GgufError::TensorOutOfBounds { .. }));
}

#[test]
fn missing_padding_before_data() {
    let mut b = Bytes::header(3, 1, 0);
    b.tensor("w", &[4], 0, 0);
    assert_ne!(b.0.len() % 32, 0);
    assert!(matches!(err(&b), GgufError::Truncated { ref what, .. } if what.contains("padding")));
}

#[test]
fn misaligned_offset() {
    let b = one_tensor(&[4], 0, 16, 64);
    assert!(matches!(
        err(&b),
        GgufError::MisalignedTensor { ref tensor, offset: 16, alignment: 32 } if tensor == "w"
    ));
}

#[test]
fn overlapping_tensors() {
    let mut b = Bytes::header(3, 2, 0);
    b.tensor("a", &[16], 0, 0)
        .tensor("b", &[4], 0, 32)
        .pad_and_data(32, 64);
    assert!(matches!(
        err(&b),
        GgufError::OverlappingTensors { ref first, ref second } if first == "a" && second == "b"
    ));
}

#[test]
fn duplicate_tensor_name() {
    let mut b = Bytes::header(3, 2, 0);
    b.tensor("a", &[4], 0, 0)
        .tensor("a", &[4], 0, 32)
        .pad_and_data(32, 64);
    assert!(matches!(err(&b), GgufError::DuplicateTensor { ref name } if name == "a"));
}

#[test]
fn duplicate_key() {
    let mut b = Bytes::header(3, 0, 2);
    b.kv_u32("llama.block_count", 1)
        .kv_u32("llama.block_count", 2);
    assert!(matches!(
        err(&b),
        GgufError::DuplicateKey { ref key } if key == "llama.block_count"
    ));
}

#[test]
fn empty_key() {
    let mut b = Bytes::header(3, 0, 1);
    b.kv_u32("", 1);
    assert!(matches!(
        err(&b),
        GgufError::EmptyKey {
            index: 0,
            offset: 24
        }
    ));
}

#[test]
fn invalid_utf8_in_key_value_and_tensor_name() {
    let bad = [b'a', 0xff, b'b'];
    let mut b = Bytes::header(3, 0, 1);
    b.u64(3).raw(&bad).u32(ValueType::U8 as u32).u8(0);
    assert!(matches!(
        err(&b),
        GgufError::InvalidUtf8 { ref what, offset: 33 } if what.contains("key")
    ));

    let mut b = Bytes::header(3, 0, 1);
    b.str("general.name")
        .u32(ValueType::String as u32)
        .u64(3)
        .raw(&bad);
    assert!(matches!(
        err(&b),
        GgufError::InvalidUtf8 { ref what, .. } if what.contains("general.name")
    ));

    let mut b = Bytes::header(3, 0, 1);
    b.str("tokens")
        .u32(ValueType::Array as u32)
        .u32(ValueType::String as u32)
        .u64(1)
        .u64(2)
        .raw(&[0xc3, 0x28]);
    assert!(matches!(err(&b), GgufError::InvalidUtf8 { .. }));

    let mut b = Bytes::header(3, 1, 0);
    b.u64(3)
        .raw(&bad)
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .pad_and_data(32, 16);
    assert!(matches!(
        err(&b),
        GgufError::InvalidUtf8 { ref what, .. } if what.contains("tensor #0")
    ));
}

#[test]
fn invalid_bool() {
    let mut b = Bytes::header(3, 0, 1);
    b.str("flag").u32(ValueType::Bool as u32).u8(2);
    assert!(matches!(
        err(&b),
        GgufError::InvalidBool { ref key, value: 2, offset: 40 } if key == "flag"
    ));
}

#[test]
fn bad_alignment_value() {
    for value in [0u32, 3, 48, u32::MAX] {
        let mut b = Bytes::header(3, 0, 1);
        b.kv_u32("general.alignment", value);
        assert!(
            matches!(err(&b), GgufError::InvalidAlignment { value: v } if v == u64::from(value)),
            "{value}"
        );
    }
    let mut b = Bytes::header(3, 0, 1);
    b.str("general.alignment")
        .u32(ValueType::U64 as u32)
        .u64(32);
    assert!(matches!(
        err(&b),
        GgufError::WrongType { ref key, expected: "UINT32", found: ValueType::U64 }
            if key == "general.alignment"
    ));
}

#[test]
fn large_power_of_two_alignment_is_honoured() {
    let mut b = Bytes::header(3, 1, 1);
    b.kv_u32("general.alignment", 1 << 31)
        .tensor("w", &[4], 0, 0);
    // The data would start at 2 GiB: far past this small file.
    b.raw(&[0; 64]);
    assert!(matches!(err(&b), GgufError::Truncated { ref what, .. } if what.contains("padding")));
}

#[test]
fn truncated_in_each_field_names_the_field() {
    let mut b = Bytes::header(3, 1, 1);
    b.kv_u32("llama.block_count", 30).tensor("w", &[4], 0, 0);
    let full = b.build();
    // 24 header + 33 metadata entry + 33 tensor entry.
    assert_eq!(full.len(), 90);
    let what_at = |len: usize| match GgufFile::from_bytes(full[..len].to_vec()) {
        Err(GgufError::Truncated { what, .. }) => what,
        Err(GgufError::StringTooLong { what, .. }) => what,
        other => panic!("{len}: {other:?}"),
    };
    assert!(what_at(2).contains("magic"));
    assert!(what_at(6).contains("version"));
    assert!(what_at(10).contains("tensor count"));
    assert!(what_at(20).contains("metadata count"));
    // Without tensors, so that the declared tensor count does not fail first.
    let mut m = Bytes::header(3, 0, 1);
    m.kv_u32("llama.block_count", 30);
    let meta_only = m.build();
    let meta_what_at = |len: usize| match GgufFile::from_bytes(meta_only[..len].to_vec()) {
        Err(GgufError::Truncated { what, .. }) => what,
        Err(GgufError::StringTooLong { what, .. }) => what,
        other => panic!("{len}: {other:?}"),
    };
    assert!(meta_what_at(40).contains("key of metadata entry #0"));
    assert!(meta_what_at(52).contains("value of metadata key 'llama.block_count'"));
    assert!(meta_what_at(55).contains("value of metadata key 'llama.block_count'"));
    assert!(what_at(81).contains("type of tensor 'w'"));
    assert!(what_at(89).contains("offset of tensor 'w'"));
    // Shorter prefixes fail earlier: the declared counts no longer fit.
    assert!(matches!(
        GgufFile::from_bytes(full[..30].to_vec()),
        Err(GgufError::TooManyKeys {
            count: 1,
            remaining: 6
        })
    ));
    assert!(matches!(
        GgufFile::from_bytes(full[..70].to_vec()),
        Err(GgufError::TooManyTensors {
            count: 1,
            remaining: 13
        })
    ));
}

#[test]
fn foreign_tensor_info_gives_an_empty_slice() {
    let f = parse(&one_tensor(&[4], 0, 0, 16)).expect("valid");
    let mut t = f.tensor("w").expect("w").clone();
    t.offset = 1 << 40;
    assert!(f.tensor_data(&t).is_empty());
    t.offset = 0;
    t.dims = vec![u64::MAX, u64::MAX];
    assert!(f.tensor_data(&t).is_empty());
}

/// A file read into memory is validated exactly as a mapped one: the same
/// bytes and tensors when whole, the same error when cut short.
#[test]
fn read_into_memory_matches_the_map() {
    use edgellama_gguf::LoadMode;
    let dir = std::env::temp_dir().join(format!("edgellama-gguf-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let whole = one_tensor(&[4], 0, 0, 16).build();
    let path = dir.join("whole.gguf");
    std::fs::write(&path, &whole).expect("write");
    let (m, r) = (
        GgufFile::open_with(&path, LoadMode::Map).expect("map"),
        GgufFile::open_with(&path, LoadMode::Read).expect("read"),
    );
    assert_eq!(m.bytes(), r.bytes());
    assert_eq!(r.bytes(), &whole[..]);
    assert_eq!(
        r.tensor_bytes("w").expect("w").1,
        &(0..16).collect::<Vec<u8>>()[..]
    );
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &whole[..whole.len() - 5]).expect("write");
    let (em, er) = (
        GgufFile::open_with(&cut, LoadMode::Map).expect_err("map"),
        GgufFile::open_with(&cut, LoadMode::Read).expect_err("read"),
    );
    assert_eq!(em.to_string(), er.to_string());
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").expect("write");
    assert!(GgufFile::open_with(&empty, LoadMode::Read).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
