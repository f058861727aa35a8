//! safetensors files, read through a memory map.
//!
//! Layout: a `u64` little-endian header length N, N bytes of UTF-8 JSON (may be
//! padded with spaces), then the data section. The JSON maps each tensor name to
//! `{"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}`, the
//! offsets relative to the data section, row-major (the last dimension is
//! contiguous); an optional `"__metadata__"` maps strings to strings.
//!
//! [`SafetensorsFile`] checks every entry before anything reads tensor data: a
//! known dtype, a shape whose byte count fits in 64 bits and equals
//! `end - begin`, offsets inside the data section, no two tensors sharing
//! bytes, no name given twice. The header is refused above [`MAX_HEADER_LEN`]
//! (the limit of the reference implementation) before it is parsed.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::FormatError;

/// Largest header accepted (100 MB, as the `safetensors` crate and Python package).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Element types of the safetensors format (the byte-sized ones; sub-byte
/// float formats are reported as unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    const ALL: [Dtype; 15] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8E5M2,
        Dtype::F8E4M3,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// The name used in the header.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One validated header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    /// Row-major: the last dimension is contiguous (the reverse of ggml's order).
    pub shape: Vec<u64>,
    /// Byte range in the data section.
    pub begin: u64,
    pub end: u64,
}

impl TensorEntry {
    /// Number of elements (1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        // Validated when the file was opened: cannot overflow.
        self.shape.iter().product()
    }
}

/// A tensor and its bytes, borrowed from the file.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [u64],
    /// `n_elements * dtype.size()` bytes, little-endian; not necessarily aligned.
    pub data: &'a [u8],
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A parsed, validated safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    backing: Backing,
    data_offset: usize,
    /// Sorted by name, as the reference implementation lists them.
    tensors: Vec<TensorEntry>,
    metadata: Vec<(String, String)>,
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("data_offset", &self.data_offset)
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Maps the file read-only and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, FormatError> {
        let path = path.as_ref();
        let io_err = |source| FormatError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let backing = if len == 0 {
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: read-only private map; as with every mmap-based loader we
            // rely on the file not being truncated while it is open.
            Backing::Mmap(unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?)
        };
        SafetensorsFile::parse(path.to_owned(), backing)
    }

    /// Validates a file held in memory; `path` only names it in errors.
    pub fn from_bytes(
        bytes: Vec<u8>,
        path: impl Into<PathBuf>,
    ) -> Result<SafetensorsFile, FormatError> {
        SafetensorsFile::parse(path.into(), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<SafetensorsFile, FormatError> {
        let bytes = backing.bytes();
        let file_len = bytes.len() as u64;
        let Some(len_bytes) = bytes.get(..8) else {
            return Err(FormatError::TooShort {
                path,
                len: file_len,
            });
        };
        let mut n = [0u8; 8];
        n.copy_from_slice(len_bytes);
        let header_len = u64::from_le_bytes(n);
        if header_len > MAX_HEADER_LEN {
            return Err(FormatError::HeaderTooLarge {
                path,
                header_len,
                max: MAX_HEADER_LEN,
            });
        }
        if header_len > file_len - 8 {
            return Err(FormatError::HeaderPastEnd {
                path,
                header_len,
                file_len,
            });
        }
        // Both fit in usize: header_len <= 100 MB, and the file is in memory.
        let data_offset = 8 + header_len as usize;
        let header = &bytes[8..data_offset];
        let (tensors, metadata) = parse_header(&path, header, file_len - 8 - header_len)?;
        Ok(SafetensorsFile {
            path,
            backing,
            data_offset,
            tensors,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors, sorted by name.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }

    /// The `__metadata__` entries, in file order.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The bytes of a tensor of this file.
    pub fn view<'a>(&'a self, t: &'a TensorEntry) -> TensorView<'a> {
        let start = self.data_offset + t.begin as usize;
        let end = self.data_offset + t.end as usize;
        TensorView {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            // Offsets were checked against the data section when parsing; a
            // descriptor from another file may not match: fall back to empty.
            data: self.backing.bytes().get(start..end).unwrap_or(&[]),
        }
    }
}

/// A header entry as written, before validation.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

enum RawItem {
    Tensor(String, RawEntry),
    Metadata(Vec<(String, String)>),
}

/// The header object, keeping order and refusing repeated names.
struct RawHeader {
    items: Vec<RawItem>,
    duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut seen = HashSet::new();
                let mut items = Vec::new();
                let mut duplicate = None;
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        duplicate.get_or_insert(key);
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    if key == "__metadata__" {
                        let m: Option<MetaMap> = map.next_value()?;
                        items.push(RawItem::Metadata(m.map(|m| m.0).unwrap_or_default()));
                    } else {
                        let e: RawEntry = map
                            .next_value()
                            .map_err(|e| de::Error::custom(format_args!("tensor '{key}': {e}")))?;
                        items.push(RawItem::Tensor(key, e));
                    }
                }
                Ok(RawHeader { items, duplicate })
            }
        }
        d.deserialize_map(V)
    }
}

/// `__metadata__`: string values only, order kept.
struct MetaMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for MetaMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(MetaMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

type Parsed = (Vec<TensorEntry>, Vec<(String, String)>);

fn parse_header(path: &Path, header: &[u8], data_len: u64) -> Result<Parsed, FormatError> {
    let bad = |message: String| FormatError::BadHeader {
        path: path.to_owned(),
        message,
    };
    let text = std::str::from_utf8(header).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
    let raw: RawHeader = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if let Some(tensor) = raw.duplicate {
        return Err(FormatError::DuplicateTensor {
            path: path.to_owned(),
            tensor,
        });
    }
    let mut tensors = Vec::new();
    let mut metadata = Vec::new();
    for item in raw.items {
        let (name, e) = match item {
            RawItem::Metadata(m) => {
                metadata = m;
                continue;
            }
            RawItem::Tensor(name, e) => (name, e),
        };
        let Some(dtype) = Dtype::from_name(&e.dtype) else {
            return Err(FormatError::UnknownDtype {
                path: path.to_owned(),
                tensor: name,
                dtype: e.dtype,
            });
        };
        let expected = e
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size() as u64));
        let Some(expected) = expected else {
            return Err(FormatError::ShapeOverflow {
                path: path.to_owned(),
                tensor: name,
                shape: e.shape,
            });
        };
        let [begin, end] = e.data_offsets;
        if end < begin || end - begin != expected {
            return Err(FormatError::SizeMismatch {
                path: path.to_owned(),
                tensor: name,
                dtype,
                shape: e.shape,
                begin,
                end,
                expected,
            });
        }
        if end > data_len {
            return Err(FormatError::OutOfBounds {
                path: path.to_owned(),
                tensor: name,
                end,
                data_len,
            });
        }
        tensors.push(TensorEntry {
            name,
            dtype,
            shape: e.shape,
            begin,
            end,
        });
    }
    check_overlap(path, &tensors)?;
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, metadata))
}

fn check_overlap(path: &Path, tensors: &[TensorEntry]) -> Result<(), FormatError> {
    let mut ranges: Vec<&TensorEntry> = tensors.iter().filter(|t| t.end > t.begin).collect();
    ranges.sort_by_key(|t| (t.begin, t.end));
    for w in ranges.windows(2) {
        if w[1].begin < w[0].end {
            return Err(FormatError::Overlap {
                path: path.to_owned(),
                first: w[0].name.clone(),
                second: w[1].name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file from a header text and a data section.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn open(bytes: Vec<u8>) -> Result<SafetensorsFile, FormatError> {
        SafetensorsFile::from_bytes(bytes, "test.safetensors")
    }

    #[test]
    fn reads_tensors_sorted_by_name_with_their_bytes() {
        let h = r#"{"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},
            "__metadata__":{"format":"pt"},
            "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
            "s":{"dtype":"I64","shape":[],"data_offsets":[12,20]},
            "e":{"dtype":"BF16","shape":[0,3],"data_offsets":[20,20]}}  "#;
        let mut data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        data.extend_from_slice(&[0x00, 0x3c, 0x00, 0xc0]);
        data.extend_from_slice(&7i64.to_le_bytes());
        let f = open(file(h, &data)).unwrap();
        let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "e", "s"]);
        assert_eq!(f.metadata(), [("format".to_string(), "pt".to_string())]);
        let a = f.view(f.tensor("a").unwrap());
        assert_eq!(a.dtype, Dtype::F32);
        assert_eq!(a.data, &data[0..8]);
        let b = f.view(f.tensor("b").unwrap());
        assert_eq!(
            (b.dtype, b.shape, b.data),
            (Dtype::F16, &[2u64][..], &data[8..12])
        );
        let s = f.tensor("s").unwrap();
        assert_eq!((s.n_elements(), s.shape.len()), (1, 0));
        assert_eq!(f.view(f.tensor("e").unwrap()).data.len(), 0);
        assert!(f.tensor("z").is_none());
    }

    #[test]
    fn hostile_headers_are_typed_errors() {
        let one = |dtype: &str, shape: &str, offs: &str| {
            format!(r#"{{"t":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offs}}}}}"#)
        };
        type Check = fn(&FormatError) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (vec![1, 2, 3], |e| {
                matches!(e, FormatError::TooShort { len: 3, .. })
            }),
            (u64::MAX.to_le_bytes().to_vec(), |e| {
                matches!(e, FormatError::HeaderTooLarge { .. })
            }),
            (1000u64.to_le_bytes().to_vec(), |e| {
                matches!(
                    e,
                    FormatError::HeaderPastEnd {
                        header_len: 1000,
                        ..
                    }
                )
            }),
            (file("not json", &[]), |e| {
                matches!(e, FormatError::BadHeader { .. })
            }),
            (file("[1,2]", &[]), |e| {
                matches!(e, FormatError::BadHeader { .. })
            }),
            (file(r#"{"t":{"dtype":"F32"}}"#, &[]), |e| {
                matches!(e, FormatError::BadHeader { .. })
            }),
            (file(&one("F32", "[-1]", "[0,4]"), &[0; 4]), |e| {
                matches!(e, FormatError::BadHeader { .. })
            }),
            (file(&one("Q4", "[1]", "[0,4]"), &[0; 4]), |e| {
                matches!(e, FormatError::UnknownDtype { .. })
            }),
            (
                file(&one("F32", "[4294967296,4294967296]", "[0,4]"), &[0; 4]),
                |e| matches!(e, FormatError::ShapeOverflow { .. }),
            ),
            (
                file(&one("F32", "[4611686018427387904]", "[0,4]"), &[0; 4]),
                |e| matches!(e, FormatError::ShapeOverflow { .. }),
            ),
            (file(&one("F32", "[2]", "[0,4]"), &[0; 8]), |e| {
                matches!(e, FormatError::SizeMismatch { expected: 8, .. })
            }),
            (file(&one("F32", "[1]", "[8,4]"), &[0; 8]), |e| {
                matches!(e, FormatError::SizeMismatch { .. })
            }),
            (
                file(&one("F32", "[2]", "[18446744073709551615,7]"), &[0; 8]),
                |e| matches!(e, FormatError::SizeMismatch { .. }),
            ),
            (file(&one("F32", "[2]", "[4,12]"), &[0; 8]), |e| {
                matches!(
                    e,
                    FormatError::OutOfBounds {
                        end: 12,
                        data_len: 8,
                        ..
                    }
                )
            }),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                        "b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
                    &[0; 8],
                ),
                |e| matches!(e, FormatError::Overlap { .. }),
            ),
            (
                file(
                    r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
                        "a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                    &[0; 2],
                ),
                |e| matches!(e, FormatError::DuplicateTensor { .. }),
            ),
            (file(r#"{"__metadata__":{"k":1}}"#, &[]), |e| {
                matches!(e, FormatError::BadHeader { .. })
            }),
            (
                {
                    let mut f = 4u64.to_le_bytes().to_vec();
                    f.extend_from_slice(&[b'{', 0xff, b'}', b' ']);
                    f
                },
                |e| matches!(e, FormatError::BadHeader { .. }),
            ),
        ];
        for (i, (bytes, want)) in cases.into_iter().enumerate() {
            match open(bytes) {
                Err(e) => assert!(want(&e), "case {i}: unexpected error {e}"),
                Ok(_) => panic!("case {i}: accepted"),
            }
        }
    }

    #[test]
    fn empty_header_object_is_a_file_without_tensors() {
        let f = open(file("{}", &[])).unwrap();
        assert!(f.tensors().is_empty());
    }

    #[test]
    fn random_bytes_never_panic() {
        // A fixed xorshift stream: headers of random JSON-ish text and lengths.
        let mut s = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let alphabet = br#"{}[]:,"0123456789-eE.FBUI16832_ datoshpfens"#;
        for _ in 0..2000 {
            let n = (next() % 80) as usize;
            let text: Vec<u8> = (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut bytes = (text.len() as u64 + next() % 3).to_le_bytes().to_vec();
            bytes.extend_from_slice(&text);
            bytes.extend((0..next() % 16).map(|_| next() as u8));
            let _ = open(bytes);
        }
    }
}
