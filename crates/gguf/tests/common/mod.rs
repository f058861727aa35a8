//! Shared by the integration tests: test data location, golden JSON decoding and
//! a byte builder for hand-made GGUF files (independent of the crate's writer).

#![allow(dead_code)]

use std::path::PathBuf;

use edgellama_gguf::{ArrayValues, MetadataArray, MetadataValue, ValueType};
use serde_json::Value;

/// A file from the test data directory; fails loudly when it is missing.
pub fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test data file {} is missing: run scripts/fetch-testdata.sh",
        path.display()
    );
    path
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn golden_json(name: &str) -> Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

pub fn value_type(name: &str) -> ValueType {
    (0..=12)
        .filter_map(ValueType::from_u32)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown value type {name}"))
}

fn num<T>(v: &Value, conv: impl Fn(&Value) -> Option<T>) -> T {
    conv(v).unwrap_or_else(|| panic!("bad number {v}"))
}

fn int<T: TryFrom<i128>>(v: &Value) -> T {
    let wide = v
        .as_u64()
        .map(i128::from)
        .or_else(|| v.as_i64().map(i128::from))
        .unwrap_or_else(|| panic!("not an integer: {v}"));
    T::try_from(wide).unwrap_or_else(|_| panic!("{v} out of range"))
}

/// Decodes a scalar of the given type as gguf-py's golden wrote it.
pub fn scalar_from_json(ty: ValueType, v: &Value) -> MetadataValue {
    match ty {
        ValueType::U8 => MetadataValue::U8(int(v)),
        ValueType::I8 => MetadataValue::I8(int(v)),
        ValueType::U16 => MetadataValue::U16(int(v)),
        ValueType::I16 => MetadataValue::I16(int(v)),
        ValueType::U32 => MetadataValue::U32(int(v)),
        ValueType::I32 => MetadataValue::I32(int(v)),
        ValueType::U64 => MetadataValue::U64(int(v)),
        ValueType::I64 => MetadataValue::I64(int(v)),
        ValueType::F32 => MetadataValue::F32(num(v, Value::as_f64) as f32),
        ValueType::F64 => MetadataValue::F64(num(v, Value::as_f64)),
        ValueType::Bool => MetadataValue::Bool(num(v, Value::as_bool)),
        ValueType::String => MetadataValue::String(
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_owned(),
        ),
        ValueType::Array => panic!("arrays are not scalars"),
    }
}

/// `{"type": T, "value": x}` or `{"type": "ARRAY", "element_type": E, "values": [...]}`.
pub fn typed_from_json(v: &Value) -> MetadataValue {
    let ty = value_type(v["type"].as_str().expect("type"));
    if ty == ValueType::Array {
        MetadataValue::Array(array_from_json(v))
    } else {
        scalar_from_json(ty, &v["value"])
    }
}

fn array_from_json(v: &Value) -> MetadataArray {
    let elem = value_type(v["element_type"].as_str().expect("element_type"));
    let items = v["values"].as_array().expect("values");
    macro_rules! vec_of {
        ($variant:ident) => {
            ArrayValues::$variant(
                items
                    .iter()
                    .map(|x| match scalar_from_json(elem, x) {
                        MetadataValue::$variant(y) => y,
                        other => panic!("unexpected {other:?}"),
                    })
                    .collect(),
            )
        };
    }
    MetadataArray::new(match elem {
        ValueType::U8 => vec_of!(U8),
        ValueType::I8 => vec_of!(I8),
        ValueType::U16 => vec_of!(U16),
        ValueType::I16 => vec_of!(I16),
        ValueType::U32 => vec_of!(U32),
        ValueType::I32 => vec_of!(I32),
        ValueType::F32 => vec_of!(F32),
        ValueType::Bool => vec_of!(Bool),
        ValueType::String => vec_of!(String),
        ValueType::U64 => vec_of!(U64),
        ValueType::I64 => vec_of!(I64),
        ValueType::F64 => vec_of!(F64),
        ValueType::Array => ArrayValues::Array(items.iter().map(array_from_json).collect()),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Little-endian GGUF byte builder.
#[derive(Default, Clone)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Magic, version, tensor count, metadata count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Bytes {
        let mut b = Bytes::default();
        b.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.raw(&[v])
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A metadata entry holding a u32.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(ValueType::U32 as u32).u32(v)
    }
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key).u32(ValueType::String as u32).str(v)
    }
    /// A tensor index entry.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `align`, then `n` data bytes.
    pub fn pad_and_data(&mut self, align: usize, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self.0.extend((0..n).map(|i| i as u8));
        self
    }
    pub fn build(&self) -> Vec<u8> {
        self.0.clone()
    }
}
