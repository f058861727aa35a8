//! Building GGUF files.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::GgufError;
use crate::metadata::{ArrayValues, MetadataArray, MetadataValue};
use crate::reader::{
    align_up, alignment_of, check_alignment_value, check_overlap, GgufFile, ALIGNMENT_KEY,
    GGUF_MAGIC, MAX_ARRAY_DEPTH,
};
use crate::tensor::{shape_n_bytes, TensorInfo};
use crate::types::GgmlType;

struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    /// `None`: placed after the previous tensors, aligned, as llama.cpp and gguf-py do.
    offset: Option<u64>,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF file: version, ordered metadata and tensors.
///
/// The data section alignment is whatever `general.alignment` says (32 when
/// absent), exactly as a reader will interpret it. Tensors without an explicit
/// offset are laid out in insertion order, each at the next aligned offset, and
/// the file ends padded to the alignment — the layout llama.cpp and gguf-py write.
/// Tensor data may be borrowed (e.g. from a mapped [`GgufFile`]) so large files
/// are streamed, not copied.
pub struct GgufWriter<'a> {
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor<'a>>,
    file_len: Option<u64>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

/// Where everything goes, computed before the first byte is written.
struct Layout {
    alignment: u64,
    /// Tensor offsets relative to the data section, in insertion order.
    offsets: Vec<u64>,
    /// Indices into `offsets` sorted by offset.
    data_order: Vec<usize>,
}

impl<'a> GgufWriter<'a> {
    /// An empty version-3 file.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
            file_len: None,
        }
    }

    /// Everything `file` holds, with its tensor offsets and file length, so that
    /// writing it reproduces the file (padding and gaps are written as zeros).
    pub fn from_file(file: &'a GgufFile) -> Self {
        GgufWriter {
            version: file.version(),
            metadata: file.metadata().to_vec(),
            tensors: file
                .tensors()
                .iter()
                .map(|t| PendingTensor {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: t.ggml_type,
                    offset: Some(t.offset),
                    data: Cow::Borrowed(file.tensor_data(t)),
                })
                .collect(),
            file_len: Some(file.file_len()),
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// GGUF versions 2 and 3 share one layout; 3 is the current one.
    pub fn set_version(&mut self, version: u32) -> Result<(), GgufError> {
        if !matches!(version, 2 | 3) {
            return Err(GgufError::UnsupportedVersion { version });
        }
        self.version = version;
        Ok(())
    }

    /// The alignment the file will declare.
    pub fn alignment(&self) -> Result<u64, GgufError> {
        alignment_of(self.metadata.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Sets `general.alignment` (in place if present, else appended).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        self.set(ALIGNMENT_KEY, alignment)
    }

    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// Sets a metadata value: replaces it in place if the key exists, else appends.
    pub fn set(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> Result<(), GgufError> {
        let key = key.into();
        let value = value.into();
        if key.is_empty() {
            return Err(GgufError::EmptyKeyNotAllowed);
        }
        if key == ALIGNMENT_KEY {
            check_alignment_value(&value)?;
        }
        if value.nesting_depth() > MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key,
                max: MAX_ARRAY_DEPTH,
            });
        }
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> Option<MetadataValue> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        Some(self.metadata.remove(i).1)
    }

    /// Adds a tensor placed after the previous ones. `dims` in ggml order.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), GgufError> {
        self.push_tensor(name.into(), dims, ggml_type, None, data.into())
    }

    /// Adds a tensor at a given offset in the data section (must be aligned and
    /// must not overlap another tensor; checked when writing).
    pub fn add_tensor_at(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
        offset: u64,
    ) -> Result<(), GgufError> {
        self.push_tensor(name.into(), dims, ggml_type, Some(offset), data.into())
    }

    fn push_tensor(
        &mut self,
        name: String,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        offset: Option<u64>,
        data: Cow<'a, [u8]>,
    ) -> Result<(), GgufError> {
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        let expected = shape_n_bytes(&name, &dims, ggml_type)?;
        if data.len() as u64 != expected {
            return Err(GgufError::TensorSizeMismatch {
                tensor: name,
                expected,
                actual: data.len() as u64,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            dims,
            ggml_type,
            offset,
            data,
        });
        Ok(())
    }

    /// Makes the file exactly `len` bytes long, zero-filled after the last
    /// tensor (or after the tensor index when there are no tensors, which may
    /// then be shorter than the padded data offset). `None` restores the default
    /// padding to the alignment.
    pub fn set_file_len(&mut self, len: Option<u64>) {
        self.file_len = len;
    }

    /// The tensor index as it will be written (offsets resolved).
    pub fn tensor_infos(&self) -> Result<Vec<TensorInfo>, GgufError> {
        let layout = self.layout()?;
        Ok(self.infos(&layout))
    }

    fn infos(&self, layout: &Layout) -> Vec<TensorInfo> {
        self.tensors
            .iter()
            .zip(&layout.offsets)
            .map(|(t, &offset)| TensorInfo {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
                offset,
            })
            .collect()
    }

    fn layout(&self) -> Result<Layout, GgufError> {
        let alignment = self.alignment()?;
        let overflow = |t: &PendingTensor<'_>| GgufError::ShapeOverflow {
            tensor: t.name.clone(),
            dims: t.dims.clone(),
        };
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut cursor = 0u64;
        for t in &self.tensors {
            let offset = match t.offset {
                Some(o) if o % alignment != 0 => {
                    return Err(GgufError::MisalignedTensor {
                        tensor: t.name.clone(),
                        offset: o,
                        alignment,
                    })
                }
                Some(o) => o,
                None => align_up(cursor, alignment).ok_or_else(|| overflow(t))?,
            };
            let end = offset
                .checked_add(t.data.len() as u64)
                .ok_or_else(|| overflow(t))?;
            cursor = cursor.max(end);
            offsets.push(offset);
        }
        let mut data_order: Vec<usize> = (0..offsets.len()).collect();
        data_order.sort_by_key(|&i| offsets[i]);
        let layout = Layout {
            alignment,
            offsets,
            data_order,
        };
        check_overlap(&self.infos(&layout))?;
        Ok(layout)
    }

    fn header_bytes(&self, infos: &[TensorInfo]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&GGUF_MAGIC);
        h.extend_from_slice(&self.version.to_le_bytes());
        h.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut h, key);
            h.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut h, value);
        }
        for t in infos {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&(t.ggml_type as u32).to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        h
    }

    /// Writes the file; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, out: W) -> Result<u64, GgufError> {
        let layout = self.layout()?;
        let infos = self.infos(&layout);
        let header = self.header_bytes(&infos);
        let header_len = header.len() as u64;
        let too_long = || GgufError::LayoutOverflow;
        let data_offset = align_up(header_len, layout.alignment).ok_or_else(too_long)?;
        let data_end = infos
            .iter()
            .map(|t| t.offset + t.n_bytes())
            .max()
            .map(|end| data_offset.checked_add(end).ok_or_else(too_long))
            .transpose()?;
        let total = match (self.file_len, data_end) {
            (Some(len), needed) => {
                let needed = needed.unwrap_or(header_len);
                if len < needed {
                    return Err(GgufError::FileLenTooSmall {
                        requested: len,
                        needed,
                    });
                }
                len
            }
            (None, Some(end)) => align_up(end, layout.alignment).ok_or_else(too_long)?,
            (None, None) => data_offset,
        };

        let mut w = Counted {
            inner: BufWriter::with_capacity(1 << 20, out),
            pos: 0,
        };
        w.write(&header)?;
        if !self.tensors.is_empty() {
            w.zeros_until(data_offset)?;
            for &i in &layout.data_order {
                w.zeros_until(data_offset + layout.offsets[i])?;
                w.write(&self.tensors[i].data)?;
            }
        }
        w.zeros_until(total)?;
        w.inner.flush().map_err(GgufError::Write)?;
        Ok(w.pos)
    }

    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<u64, GgufError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| GgufError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.write_to(file).map_err(|e| match e {
            GgufError::Write(source) => GgufError::Io {
                path: path.to_owned(),
                source,
            },
            e => e,
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }
}

struct Counted<W: Write> {
    inner: BufWriter<W>,
    pos: u64,
}

impl<W: Write> Counted<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.inner.write_all(bytes).map_err(GgufError::Write)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn zeros_until(&mut self, target: u64) -> Result<(), GgufError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.pos < target {
            let n = (target - self.pos).min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n])?;
        }
        Ok(())
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &MetadataValue) {
    match v {
        MetadataValue::U8(x) => h.push(*x),
        MetadataValue::I8(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => h.push(u8::from(*x)),
        MetadataValue::String(s) => put_str(h, s),
        MetadataValue::Array(a) => put_array(h, a),
        MetadataValue::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(h: &mut Vec<u8>, a: &MetadataArray) {
    h.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
    h.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                h.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a.values() {
        ArrayValues::U8(v) => h.extend_from_slice(v),
        ArrayValues::I8(v) => le!(v),
        ArrayValues::U16(v) => le!(v),
        ArrayValues::I16(v) => le!(v),
        ArrayValues::U32(v) => le!(v),
        ArrayValues::I32(v) => le!(v),
        ArrayValues::F32(v) => le!(v),
        ArrayValues::Bool(v) => h.extend(v.iter().map(|&b| u8::from(b))),
        ArrayValues::String(v) => v.iter().for_each(|s| put_str(h, s)),
        ArrayValues::Array(v) => v.iter().for_each(|inner| put_array(h, inner)),
        ArrayValues::U64(v) => le!(v),
        ArrayValues::I64(v) => le!(v),
        ArrayValues::F64(v) => le!(v),
    }
}
