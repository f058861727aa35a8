//! Parsing and validation of a whole GGUF file held in memory (mapped or owned).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::GgufError;
use crate::metadata::{ArrayValues, MetadataArray, MetadataValue, ValueType};
use crate::tensor::{shape_n_bytes, TensorInfo, MAX_DIMS};
use crate::types::GgmlType;

/// "GGUF" as stored on disk.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Arrays of arrays deeper than this are refused, so that a hostile file cannot
/// exhaust the stack through recursion. Real files nest at most one level.
pub const MAX_ARRAY_DEPTH: u32 = 32;

/// Smallest encoding of a metadata entry: key length (8), type (4), one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of a tensor index entry: name length (8), n_dims (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// Upper bound for up-front reservations; larger collections grow as parsed.
const MAX_RESERVE: usize = 1 << 16;

/// How [`GgufFile::open_with`] holds a file's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadMode {
    /// A read-only memory map of the file: opening is instant and the page
    /// cache's copy is shared, but the weights sit in 4 KiB pages.
    #[default]
    Map,
    /// The file read into anonymous memory that asks for transparent huge
    /// pages (`MADV_HUGEPAGE`, on Linux): opening copies the file, but
    /// streaming the weights then misses the TLB once per 2 MiB instead of
    /// once per 4 KiB, so generation reads memory faster.
    Read,
}

impl LoadMode {
    /// [`LoadMode::Read`] where the kernel grants huge pages on request
    /// (Linux with transparent huge pages `always` or `madvise`), else
    /// [`LoadMode::Map`]: without huge pages a copy gains nothing.
    pub fn fastest() -> LoadMode {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if thp.contains("[always]") || thp.contains("[madvise]") {
            LoadMode::Read
        } else {
            LoadMode::Map
        }
    }
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

/// A parsed, validated GGUF file. Owns its bytes (a read-only memory map, or a
/// buffer for [`GgufFile::from_bytes`]); tensor data is borrowed from them.
pub struct GgufFile {
    backing: Backing,
    version: u32,
    alignment: u64,
    header_len: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("file_len", &self.file_len())
            .field("data_offset", &self.data_offset)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file read-only and validates it completely.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        GgufFile::open_with(path, LoadMode::Map)
    }

    /// Opens the file as `mode` says and validates it completely.
    pub fn open_with(path: impl AsRef<Path>, mode: LoadMode) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let backing = if len == 0 {
            // Mapping an empty file fails on some systems; parsing reports truncation.
            Backing::Owned(Vec::new())
        } else if mode == LoadMode::Read {
            let len = usize::try_from(len).map_err(|_| {
                io_err(std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    "the file is larger than this machine's address space",
                ))
            })?;
            let mut anon = memmap2::MmapMut::map_anon(len).map_err(io_err)?;
            // Only a hint: without huge pages the copy still works.
            #[cfg(target_os = "linux")]
            let _ = anon.advise(memmap2::Advice::HugePage);
            (&file).read_exact(&mut anon).map_err(io_err)?;
            Backing::Mmap(anon.make_read_only().map_err(io_err)?)
        } else {
            // SAFETY: the map is read-only and private to this struct. Like every
            // mmap-based model loader, we rely on the file not being truncated or
            // rewritten by another process while it is open.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
            Backing::Mmap(map)
        };
        GgufFile::parse(backing)
    }

    /// Validates a file held in memory, with the same checks as [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::parse(Backing::Owned(bytes))
    }

    fn parse(backing: Backing) -> Result<GgufFile, GgufError> {
        let p = parse_bytes(backing.bytes())?;
        Ok(GgufFile {
            backing,
            version: p.version,
            alignment: p.alignment,
            header_len: p.header_len,
            data_offset: p.data_offset,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor offset within it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section: the end of the tensor index rounded
    /// up to the alignment. A file without tensors may end before it.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Length of header, metadata and tensor index, before the padding.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        expected: &'static str,
        conv: impl FnOnce(&'s MetadataValue) -> Option<T>,
    ) -> Result<T, GgufError> {
        let v = self.require(key)?;
        conv(v).ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: v.value_type(),
        })
    }

    fn typed_opt<'s, T>(
        &'s self,
        key: &str,
        conv: impl FnOnce(&'s MetadataValue) -> Option<T>,
    ) -> Option<T> {
        self.get(key).and_then(conv)
    }

    /// Any integer type that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.typed(key, "an integer that fits in u32", MetadataValue::as_u32)
    }

    /// Any integer type that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.typed(key, "an integer that fits in u64", MetadataValue::as_u64)
    }

    /// Any integer type that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.typed(key, "an integer that fits in i64", MetadataValue::as_i64)
    }

    /// F32, F64 or an integer.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.typed(key, "a number", MetadataValue::as_f32)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.typed(key, "BOOL", MetadataValue::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.typed(key, "STRING", MetadataValue::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<&MetadataArray, GgufError> {
        self.typed(key, "ARRAY", MetadataValue::as_array)
    }

    /// `None` when the key is absent or not convertible; use the `_or` variants
    /// to treat a present key of the wrong type as an error.
    pub fn get_u32_opt(&self, key: &str) -> Option<u32> {
        self.typed_opt(key, MetadataValue::as_u32)
    }

    pub fn get_u64_opt(&self, key: &str) -> Option<u64> {
        self.typed_opt(key, MetadataValue::as_u64)
    }

    pub fn get_f32_opt(&self, key: &str) -> Option<f32> {
        self.typed_opt(key, MetadataValue::as_f32)
    }

    pub fn get_bool_opt(&self, key: &str) -> Option<bool> {
        self.typed_opt(key, MetadataValue::as_bool)
    }

    pub fn get_str_opt(&self, key: &str) -> Option<&str> {
        self.typed_opt(key, MetadataValue::as_str)
    }

    pub fn get_array_opt(&self, key: &str) -> Option<&MetadataArray> {
        self.typed_opt(key, MetadataValue::as_array)
    }

    /// `default` when the key is absent; an error when present with the wrong type.
    pub fn get_u32_or(&self, key: &str, default: u32) -> Result<u32, GgufError> {
        self.get(key).map_or(Ok(default), |_| self.get_u32(key))
    }

    /// `default` when the key is absent; an error when present with the wrong type.
    pub fn get_f32_or(&self, key: &str, default: f32) -> Result<f32, GgufError> {
        self.get(key).map_or(Ok(default), |_| self.get_f32(key))
    }

    /// `default` when the key is absent; an error when present with the wrong type.
    pub fn get_bool_or(&self, key: &str, default: bool) -> Result<bool, GgufError> {
        self.get(key).map_or(Ok(default), |_| self.get_bool(key))
    }

    /// `general.architecture`, e.g. "llama".
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// The tensor index in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file (bounds were checked at open). A
    /// descriptor that does not fit this file yields an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = (|| {
            let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.n_bytes()).ok()?)?;
            Some(start..end)
        })();
        range.and_then(|r| self.bytes().get(r)).unwrap_or_default()
    }

    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_owned(),
        })?;
        Ok((t, self.tensor_data(t)))
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    header_len: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// What is being read, for error messages; rendered only when an error occurs.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    Header(&'static str),
    Key(u64),
    Value(&'a str),
    TensorName(u64),
    Tensor(&'a str, &'static str),
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Header(what) => write!(f, "header {what}"),
            Ctx::Key(i) => write!(f, "key of metadata entry #{i}"),
            Ctx::Value(key) => write!(f, "value of metadata key '{key}'"),
            Ctx::TensorName(i) => write!(f, "name of tensor #{i}"),
            Ctx::Tensor(name, what) => write!(f, "{what} of tensor '{name}'"),
        }
    }
}

struct Cursor<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> Cursor<'b> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn take(&mut self, n: u64, ctx: Ctx<'_>) -> Result<&'b [u8], GgufError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(GgufError::Truncated {
                what: ctx.to_string(),
                offset: self.offset(),
                needed: n,
                available: remaining,
            });
        }
        // n <= remaining <= buf.len(), so it fits in usize.
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, ctx: Ctx<'_>) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, ctx)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self, ctx: Ctx<'_>) -> Result<u8, GgufError> {
        Ok(self.array::<1>(ctx)?[0])
    }

    fn u32(&mut self, ctx: Ctx<'_>) -> Result<u32, GgufError> {
        self.array(ctx).map(u32::from_le_bytes)
    }

    fn u64(&mut self, ctx: Ctx<'_>) -> Result<u64, GgufError> {
        self.array(ctx).map(u64::from_le_bytes)
    }

    /// A u64 length followed by that many bytes of UTF-8.
    fn string(&mut self, ctx: Ctx<'_>) -> Result<String, GgufError> {
        let len = self.u64(ctx)?;
        let offset = self.offset();
        if len > self.remaining() {
            return Err(GgufError::StringTooLong {
                what: ctx.to_string(),
                offset: offset - 8,
                len,
                remaining: self.remaining(),
            });
        }
        let bytes = self.take(len, ctx)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(GgufError::InvalidUtf8 {
                what: ctx.to_string(),
                offset: offset + e.valid_up_to() as u64,
            }),
        }
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let offset = self.offset();
        let type_id = self.u32(Ctx::Value(key))?;
        ValueType::from_u32(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_owned(),
            type_id,
            offset,
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool, GgufError> {
        let offset = self.offset();
        match self.u8(Ctx::Value(key))? {
            0 => Ok(false),
            1 => Ok(true),
            // Other values would not survive a write-back unchanged.
            value => Err(GgufError::InvalidBool {
                key: key.to_owned(),
                value,
                offset,
            }),
        }
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: u32) -> Result<MetadataValue, GgufError> {
        let ctx = Ctx::Value(key);
        Ok(match ty {
            ValueType::U8 => MetadataValue::U8(self.u8(ctx)?),
            ValueType::I8 => MetadataValue::I8(i8::from_le_bytes(self.array(ctx)?)),
            ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(self.array(ctx)?)),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.array(ctx)?)),
            ValueType::U32 => MetadataValue::U32(self.u32(ctx)?),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.array(ctx)?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.array(ctx)?)),
            ValueType::Bool => MetadataValue::Bool(self.bool(key)?),
            ValueType::String => MetadataValue::String(self.string(ctx)?),
            ValueType::Array => MetadataValue::Array(self.metadata_array(key, depth + 1)?),
            ValueType::U64 => MetadataValue::U64(self.u64(ctx)?),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.array(ctx)?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.array(ctx)?)),
        })
    }

    /// Element type, count, elements. `depth` counts this array.
    fn metadata_array(&mut self, key: &str, depth: u32) -> Result<MetadataArray, GgufError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_owned(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let ctx = Ctx::Value(key);
        let ty = self.value_type(key)?;
        let count_offset = self.offset();
        let count = self.u64(ctx)?;
        let remaining = self.remaining();
        if count
            .checked_mul(ty.min_encoded_size())
            .is_none_or(|n| n > remaining)
        {
            return Err(GgufError::ArrayTooLarge {
                key: key.to_owned(),
                element_type: ty,
                count,
                offset: count_offset,
                remaining,
            });
        }
        // count * (>= 1 byte each) <= remaining, so it fits in usize.
        let n = count as usize;

        fn fixed<const N: usize, T>(
            c: &mut Cursor<'_>,
            n: usize,
            ctx: Ctx<'_>,
            f: fn([u8; N]) -> T,
        ) -> Result<Vec<T>, GgufError> {
            let bytes = c.take((n * N) as u64, ctx)?;
            Ok(bytes
                .chunks_exact(N)
                .map(|ch| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(ch);
                    f(a)
                })
                .collect())
        }

        let values = match ty {
            ValueType::U8 => ArrayValues::U8(self.take(count, ctx)?.to_vec()),
            ValueType::I8 => ArrayValues::I8(fixed(self, n, ctx, i8::from_le_bytes)?),
            ValueType::U16 => ArrayValues::U16(fixed(self, n, ctx, u16::from_le_bytes)?),
            ValueType::I16 => ArrayValues::I16(fixed(self, n, ctx, i16::from_le_bytes)?),
            ValueType::U32 => ArrayValues::U32(fixed(self, n, ctx, u32::from_le_bytes)?),
            ValueType::I32 => ArrayValues::I32(fixed(self, n, ctx, i32::from_le_bytes)?),
            ValueType::F32 => ArrayValues::F32(fixed(self, n, ctx, f32::from_le_bytes)?),
            ValueType::U64 => ArrayValues::U64(fixed(self, n, ctx, u64::from_le_bytes)?),
            ValueType::I64 => ArrayValues::I64(fixed(self, n, ctx, i64::from_le_bytes)?),
            ValueType::F64 => ArrayValues::F64(fixed(self, n, ctx, f64::from_le_bytes)?),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                ArrayValues::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    v.push(self.string(ctx)?);
                }
                ArrayValues::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    v.push(self.metadata_array(key, depth + 1)?);
                }
                ArrayValues::Array(v)
            }
        };
        Ok(MetadataArray::new(values))
    }
}

pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    let rem = x % alignment;
    if rem == 0 {
        Some(x)
    } else {
        x.checked_add(alignment - rem)
    }
}

/// The alignment a metadata set declares, validated.
pub(crate) fn alignment_of<'m>(
    mut metadata: impl Iterator<Item = (&'m str, &'m MetadataValue)>,
) -> Result<u64, GgufError> {
    match metadata.find(|(k, _)| *k == ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, v)) => check_alignment_value(v),
    }
}

/// llama.cpp requires `general.alignment` to be a u32; so do we.
pub(crate) fn check_alignment_value(v: &MetadataValue) -> Result<u64, GgufError> {
    match *v {
        MetadataValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        MetadataValue::U32(a) => Err(GgufError::InvalidAlignment { value: a.into() }),
        _ => Err(GgufError::WrongType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: "UINT32",
            found: v.value_type(),
        }),
    }
}

fn parse_bytes(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut c = Cursor { buf, pos: 0 };

    let magic: [u8; 4] = c.array(Ctx::Header("magic"))?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(Ctx::Header("version"))?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(GgufError::BigEndian {
                version: v.swap_bytes(),
            })
        }
        v => return Err(GgufError::UnsupportedVersion { version: v }),
    }
    let n_tensors = c.u64(Ctx::Header("tensor count"))?;
    let n_kv = c.u64(Ctx::Header("metadata count"))?;
    let remaining = c.remaining();
    if n_kv.checked_mul(MIN_KV_BYTES).is_none_or(|n| n > remaining) {
        return Err(GgufError::TooManyKeys {
            count: n_kv,
            remaining,
        });
    }
    let check_tensor_count = |remaining: u64| {
        if n_tensors
            .checked_mul(MIN_TENSOR_INFO_BYTES)
            .is_none_or(|n| n > remaining)
        {
            Err(GgufError::TooManyTensors {
                count: n_tensors,
                remaining,
            })
        } else {
            Ok(())
        }
    };
    check_tensor_count(remaining)?;

    // Both counts are now bounded by the file length.
    let reserve_kv = (n_kv as usize).min(MAX_RESERVE);
    let mut metadata = Vec::with_capacity(reserve_kv);
    let mut key_index = HashMap::with_capacity(reserve_kv);
    for i in 0..n_kv {
        let key_offset = c.offset();
        let key = c.string(Ctx::Key(i))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                index: i,
                offset: key_offset,
            });
        }
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        let ty = c.value_type(&key)?;
        let value = c.value(&key, ty, 0)?;
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = alignment_of(metadata.iter().map(|(k, v)| (k.as_str(), v)))?;

    check_tensor_count(c.remaining())?;
    let reserve_t = (n_tensors as usize).min(MAX_RESERVE);
    let mut tensors = Vec::with_capacity(reserve_t);
    let mut tensor_index = HashMap::with_capacity(reserve_t);
    for i in 0..n_tensors {
        let name = c.string(Ctx::TensorName(i))?;
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        let n_dims = c.u32(Ctx::Tensor(&name, "n_dims"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                n_dims,
                max: MAX_DIMS as u32,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(Ctx::Tensor(&name, "dimension"))?);
        }
        let type_id = c.u32(Ctx::Tensor(&name, "type"))?;
        let ggml_type =
            GgmlType::from_u32(type_id).ok_or_else(|| GgufError::UnknownTensorType {
                tensor: name.clone(),
                type_id,
            })?;
        shape_n_bytes(&name, &dims, ggml_type)?;
        let offset = c.u64(Ctx::Tensor(&name, "offset"))?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: name,
                offset,
                alignment,
            });
        }
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }

    let header_len = c.offset();
    let file_len = buf.len() as u64;
    let data_offset =
        align_up(header_len, alignment).ok_or(GgufError::InvalidAlignment { value: alignment })?;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(GgufError::Truncated {
            what: "padding before the tensor data".to_owned(),
            offset: header_len,
            needed: data_offset - header_len,
            available: file_len - header_len,
        });
    }
    let data_len = file_len.saturating_sub(data_offset);
    for t in &tensors {
        let n_bytes = t.n_bytes();
        if t.offset
            .checked_add(n_bytes)
            .is_none_or(|end| end > data_len)
        {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                n_bytes,
                data_len,
            });
        }
    }
    check_overlap(&tensors)?;

    Ok(Parsed {
        version,
        alignment,
        header_len,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Every tensor has nonzero size, so sorting by offset and comparing neighbours
/// finds any overlap.
pub(crate) fn check_overlap(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset.saturating_add(a.n_bytes()) > b.offset {
            return Err(GgufError::OverlappingTensors {
                first: a.name.clone(),
                second: b.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_file_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GgufFile>();
    }

    #[test]
    fn align_up_rounds_to_multiples() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
    }
}
