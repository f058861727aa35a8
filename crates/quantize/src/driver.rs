//! Writing the quantized file: llama-quantize's layout, streamed tensor by
//! tensor from the input's memory map, rows converted on several threads.
//!
//! Layout (`llama_model_quantize_impl`): GGUF version 3; the input's metadata
//! in its order, minus the split keys, with `general.quantization_version`
//! and `general.file_type` moved to the end; the tensors in the plan's order,
//! each padded with zeros to the alignment. Rows are converted by
//! dequantizing to f32 (exact for f16/bf16) and quantizing with the portable
//! kernels, which write the blocks of llama.cpp's `quantize_row_*_ref`, so
//! the output equals llama-quantize's byte for byte.
//!
//! One deliberate difference: an input declaring a `general.alignment` other
//! than 32 keeps it, and the data is laid out at that alignment.
//! llama-quantize copies the key but always lays data out at 32 bytes, which
//! makes a file that readers misread.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use edgellama_gguf::{GgmlType, GgufFile, GgufWriter};
use edgellama_kernels::{DequantizeFn, KernelError, Kernels, QuantizeFn};

use crate::error::QuantizeError;
use crate::ftype::FileType;
use crate::plan::{plan, ModelInfo, Plan, PlanOptions, TensorDesc, TensorPlan};
use crate::validate::row_data_is_finite;

/// `GGML_QNT_VERSION`: the revision of the quantized block formats.
pub const QUANTIZATION_VERSION: u32 = 2;
pub const FILE_TYPE_KEY: &str = "general.file_type";
pub const QUANTIZATION_VERSION_KEY: &str = "general.quantization_version";
/// Keys of split files; the output is always a single file.
const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];

/// Rows are converted in slabs of about this many output bytes, which bounds
/// memory whatever the tensor size.
const SLAB_BYTES: usize = 32 << 20;
/// Smallest unit of work handed to a thread, in elements (llama.cpp's
/// `min_chunk_size`); whole rows are always kept together.
const MIN_CHUNK_ELEMENTS: usize = 32 * 512;

/// What to do, validated by the caller's parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeOptions {
    pub ftype: FileType,
    /// Threads converting rows (at least 1).
    pub threads: usize,
    /// Allow converting tensors that are already quantized (they are
    /// dequantized first, which compounds the rounding errors).
    pub allow_requantize: bool,
    pub plan: PlanOptions,
}

impl QuantizeOptions {
    pub fn new(ftype: FileType) -> QuantizeOptions {
        QuantizeOptions {
            ftype,
            threads: 1,
            allow_requantize: false,
            plan: PlanOptions::default(),
        }
    }
}

/// Progress callbacks, called from the converting threads.
pub trait Progress: Sync {
    /// Before the first tensor.
    fn begin(&self, _plan: &Plan) {}
    /// When tensor `index` of the plan starts.
    fn tensor(&self, _index: usize, _tensor: &TensorPlan) {}
    /// After `elements` more elements of the current tensor are done.
    fn advance(&self, _elements: u64) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeReport {
    pub plan: Plan,
    /// Bytes of tensor data in the input and in the output (without padding).
    pub input_tensor_bytes: u64,
    pub output_tensor_bytes: u64,
    /// Length of the output file.
    pub file_len: u64,
}

/// Reads the model's hyperparameters and plans every tensor's type. Refuses
/// split files, which llama-quantize would read as a whole.
pub fn plan_file(
    file: &GgufFile,
    ftype: FileType,
    opts: &PlanOptions,
) -> Result<Plan, QuantizeError> {
    if let Some(count) = file.get_u32_opt("split.count").filter(|&n| n > 1) {
        let part = file.get_u32_opt("split.no").unwrap_or(0) + 1;
        return Err(QuantizeError::SplitModel { part, count });
    }
    let model = ModelInfo::from_gguf(file)?;
    let tensors: Vec<TensorDesc> = file.tensors().iter().map(TensorDesc::from).collect();
    plan(&model, &tensors, ftype, opts)
}

/// Refuses to convert an already quantized tensor unless allowed. Copying a
/// quantized tensor unchanged is always fine.
pub fn check_requantize(plan: &Plan, allow_requantize: bool) -> Result<(), QuantizeError> {
    if allow_requantize {
        return Ok(());
    }
    match plan
        .tensors
        .iter()
        .find(|t| t.converts() && is_block_quantized(t.source))
    {
        Some(t) => Err(QuantizeError::RequantizeDisabled {
            tensor: t.name.clone(),
            from: t.source,
            to: t.target,
        }),
        None => Ok(()),
    }
}

fn is_block_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

fn bytes_of(t: GgmlType, dims: &[u64], name: &str) -> Result<u64, QuantizeError> {
    let row_len = dims.first().copied().unwrap_or(1);
    let rows: u64 = dims.iter().skip(1).product();
    t.row_size(row_len)
        .and_then(|r| r.checked_mul(rows))
        .ok_or_else(|| QuantizeError::Internal {
            what: format!("tensor '{name}' of shape {dims:?} does not fit {t} blocks"),
        })
}

/// Keeps the first `limit` bytes written to it and counts the rest.
struct HeaderCapture {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for HeaderCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&buf[..room.min(buf.len())]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The output's header and index (up to the data section) and each tensor's
/// offset relative to the data section.
struct Layout {
    header: Vec<u8>,
    offsets: Vec<u64>,
    alignment: u64,
    file_len: u64,
}

/// Lays the output out with the gguf crate's writer, so the header is
/// encoded in one place. The writer needs tensor bytes, so it gets zeros (a
/// calloc'd buffer costs no memory until touched); the tensor data section is
/// then streamed separately.
fn layout(file: &GgufFile, plan: &Plan) -> Result<Layout, QuantizeError> {
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        let moved = key == FILE_TYPE_KEY || key == QUANTIZATION_VERSION_KEY;
        if !moved && !SPLIT_KEYS.contains(&key.as_str()) {
            w.set(key.clone(), value.clone())?;
        }
    }
    w.set(QUANTIZATION_VERSION_KEY, QUANTIZATION_VERSION)?;
    w.set(FILE_TYPE_KEY, plan.ftype.llama_ftype())?;

    let sizes = plan
        .tensors
        .iter()
        .map(|t| bytes_of(t.target, &t.dims, &t.name))
        .collect::<Result<Vec<u64>, _>>()?;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let largest = usize::try_from(largest).map_err(|_| QuantizeError::Internal {
        what: "a tensor is larger than the address space".into(),
    })?;
    let zeros = vec![0u8; largest];
    for (t, &size) in plan.tensors.iter().zip(&sizes) {
        // `size` <= `largest`, which fits in usize.
        w.add_tensor(
            t.name.clone(),
            t.dims.clone(),
            t.target,
            &zeros[..size as usize],
        )?;
    }
    let alignment = w.alignment()?;
    let offsets: Vec<u64> = w.tensor_infos()?.iter().map(|t| t.offset).collect();
    let data_len = offsets
        .iter()
        .zip(&sizes)
        .map(|(o, s)| o + s)
        .max()
        .map_or(0, |end| end.div_ceil(alignment) * alignment);

    let file_len = w.write_to(std::io::sink())?;
    let header_len = file_len
        .checked_sub(data_len)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| QuantizeError::Internal {
            what: "the file is shorter than its data section".into(),
        })?;
    let mut capture = HeaderCapture {
        bytes: Vec::with_capacity(header_len),
        limit: header_len,
    };
    w.write_to(&mut capture)?;
    Ok(Layout {
        header: capture.bytes,
        offsets,
        alignment,
        file_len,
    })
}

/// Counts what goes through, so the streamed layout can be checked against
/// the planned one.
struct Counted<W: Write> {
    inner: W,
    pos: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn zeros_until(&mut self, target: u64) -> std::io::Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.pos < target {
            let n = (target - self.pos).min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..n])?;
        }
        Ok(())
    }
}

/// Writes the quantized model to `out` following `plan` (from [`plan_file`]
/// on the same file). Returns the number of bytes written.
pub fn write_quantized<W: Write>(
    file: &GgufFile,
    plan: &Plan,
    threads: usize,
    out: W,
    progress: &dyn Progress,
) -> Result<u64, WriteError> {
    let layout = layout(file, plan)?;
    let data_offset = layout.header.len() as u64;
    let mut out = Counted { inner: out, pos: 0 };
    out.put(&layout.header).map_err(WriteError::Io)?;

    let kernels = edgellama_kernels::scalar::kernels();
    let mut converter = Converter::new(&kernels, threads.max(1));
    progress.begin(plan);
    for (i, (t, &offset)) in plan.tensors.iter().zip(&layout.offsets).enumerate() {
        progress.tensor(i, t);
        if out.pos != data_offset + offset {
            return Err(QuantizeError::Internal {
                what: format!(
                    "tensor '{}' would land at {}, the index says {}",
                    t.name,
                    out.pos,
                    data_offset + offset
                ),
            }
            .into());
        }
        let (_, src) = file.tensor_bytes(&t.name).map_err(QuantizeError::from)?;
        converter.write_tensor(t, src, &mut out, progress)?;
        let padded = out.pos.div_ceil(layout.alignment) * layout.alignment;
        out.zeros_until(padded).map_err(WriteError::Io)?;
    }
    if out.pos != layout.file_len {
        return Err(QuantizeError::Internal {
            what: format!(
                "wrote {} bytes, the layout says {}",
                out.pos, layout.file_len
            ),
        }
        .into());
    }
    out.inner.flush().map_err(WriteError::Io)?;
    Ok(out.pos)
}

/// An error of [`write_quantized`]: the writer's own I/O errors are kept apart
/// so the caller can name the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    #[error("write failed")]
    Io(#[source] std::io::Error),
}

impl From<edgellama_gguf::GgufError> for WriteError {
    fn from(e: edgellama_gguf::GgufError) -> WriteError {
        WriteError::Quantize(e.into())
    }
}

/// Converts the rows of one tensor at a time; keeps its buffers across tensors.
struct Converter<'k> {
    kernels: &'k Kernels,
    threads: usize,
    slab: Vec<u8>,
}

/// One thread's share of a slab: source rows and where their output goes.
struct Chunk<'a> {
    src: &'a [u8],
    dst: &'a mut [u8],
    rows: usize,
}

impl<'k> Converter<'k> {
    fn new(kernels: &'k Kernels, threads: usize) -> Converter<'k> {
        Converter {
            kernels,
            threads,
            slab: Vec::new(),
        }
    }

    fn write_tensor<W: Write>(
        &mut self,
        t: &TensorPlan,
        src: &[u8],
        out: &mut Counted<W>,
        progress: &dyn Progress,
    ) -> Result<(), WriteError> {
        let row_len = usize::try_from(t.row_len()).map_err(|_| too_big(t))?;
        let n_rows = usize::try_from(t.n_rows()).map_err(|_| too_big(t))?;
        let src_row = row_bytes(t.source, row_len, t)?;
        if src.len() != src_row.checked_mul(n_rows).ok_or_else(|| too_big(t))? {
            return Err(QuantizeError::Internal {
                what: format!("tensor '{}' has {} bytes of data", t.name, src.len()),
            }
            .into());
        }

        if !t.converts() {
            let rows_per_slab = (SLAB_BYTES / src_row.max(1)).max(1);
            for slab in src.chunks(rows_per_slab * src_row) {
                out.put(slab).map_err(WriteError::Io)?;
                progress.advance((slab.len() / src_row * row_len) as u64);
            }
            return Ok(());
        }

        let dst_row = row_bytes(t.target, row_len, t)?;
        let dequantize = self.function(t, t.source, "dequantize", |k, ty| k.dequantize(ty))?;
        let quantize = self.function(t, t.target, "quantize", |k, ty| k.quantize(ty))?;
        let rows_per_slab = (SLAB_BYTES / dst_row.max(row_len * 4)).max(1);
        let rows_per_chunk = MIN_CHUNK_ELEMENTS.div_ceil(row_len).max(1);

        for first in (0..n_rows).step_by(rows_per_slab) {
            let rows = rows_per_slab.min(n_rows - first);
            self.slab.resize(rows * dst_row, 0);
            let src = &src[first * src_row..(first + rows) * src_row];
            let chunks = src
                .chunks(rows_per_chunk * src_row)
                .zip(self.slab.chunks_mut(rows_per_chunk * dst_row))
                .map(|(src, dst)| Chunk {
                    rows: src.len() / src_row,
                    src,
                    dst,
                });
            let work = RowWork {
                tensor: t,
                row_len,
                dequantize,
                quantize,
                progress,
            };
            work.run(chunks, self.threads.min(rows.div_ceil(rows_per_chunk)))?;
            out.put(&self.slab).map_err(WriteError::Io)?;
        }
        Ok(())
    }

    fn function<F>(
        &self,
        t: &TensorPlan,
        ty: GgmlType,
        op: &'static str,
        get: impl Fn(&Kernels, GgmlType) -> Option<F>,
    ) -> Result<F, QuantizeError> {
        get(self.kernels, ty).ok_or_else(|| QuantizeError::Kernel {
            tensor: t.name.clone(),
            source: KernelError::Unsupported { ty, op },
        })
    }
}

fn too_big(t: &TensorPlan) -> WriteError {
    QuantizeError::Internal {
        what: format!(
            "tensor '{}' of shape {:?} does not fit in memory",
            t.name, t.dims
        ),
    }
    .into()
}

fn row_bytes(ty: GgmlType, row_len: usize, t: &TensorPlan) -> Result<usize, WriteError> {
    ty.row_size(row_len as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            QuantizeError::Kernel {
                tensor: t.name.clone(),
                source: KernelError::NotBlockMultiple {
                    ty,
                    n: row_len,
                    block: ty.block_size(),
                },
            }
            .into()
        })
}

/// Dequantize-then-quantize of whole rows, shared by the threads.
struct RowWork<'a> {
    tensor: &'a TensorPlan,
    row_len: usize,
    dequantize: DequantizeFn,
    quantize: QuantizeFn,
    progress: &'a dyn Progress,
}

impl RowWork<'_> {
    fn run<'c>(
        &self,
        chunks: impl Iterator<Item = Chunk<'c>> + Send,
        threads: usize,
    ) -> Result<(), QuantizeError> {
        if threads <= 1 {
            let mut f32_rows = Vec::new();
            return chunks
                .into_iter()
                .try_for_each(|c| self.convert(c, &mut f32_rows));
        }
        let queue = Mutex::new(chunks);
        let failed = AtomicBool::new(false);
        let worker = || -> Result<(), QuantizeError> {
            let mut f32_rows = Vec::new();
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                // A poisoned queue means another worker panicked; its join reports it.
                let next = match queue.lock() {
                    Ok(mut q) => q.next(),
                    Err(_) => return Ok(()),
                };
                let Some(chunk) = next else { return Ok(()) };
                if let Err(e) = self.convert(chunk, &mut f32_rows) {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            let mut result = Ok(());
            for h in handles {
                let r = h.join().unwrap_or_else(|_| {
                    Err(QuantizeError::WorkerPanicked {
                        tensor: self.tensor.name.clone(),
                    })
                });
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }

    fn convert(&self, c: Chunk<'_>, f32_rows: &mut Vec<f32>) -> Result<(), QuantizeError> {
        f32_rows.resize(c.rows * self.row_len, 0.0);
        (self.dequantize)(c.src, f32_rows);
        let dst_row = c.dst.len() / c.rows.max(1);
        // Row by row, as ggml_quantize_chunk does for the K-quants; the legacy
        // formats' blocks never straddle rows, so this changes nothing for them.
        for (src, dst) in f32_rows
            .chunks_exact(self.row_len)
            .zip(c.dst.chunks_exact_mut(dst_row))
        {
            (self.quantize)(src, dst);
        }
        if !row_data_is_finite(self.tensor.target, c.dst) {
            return Err(QuantizeError::NonFinite {
                tensor: self.tensor.name.clone(),
                ty: self.tensor.target,
            });
        }
        self.progress.advance((c.rows * self.row_len) as u64);
        Ok(())
    }
}

/// Converts one tensor's data (`rows` of `row_len` elements of `from`) to
/// `to`, with the same kernels as [`quantize_file`].
pub fn convert_tensor(
    data: &[u8],
    from: GgmlType,
    to: GgmlType,
    row_len: usize,
    threads: usize,
) -> Result<Vec<u8>, QuantizeError> {
    let kernel_err = |source| QuantizeError::Kernel {
        tensor: "<data>".into(),
        source,
    };
    let row_bytes = from
        .row_size(row_len as u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| {
            kernel_err(KernelError::NotBlockMultiple {
                ty: from,
                n: row_len,
                block: from.block_size(),
            })
        })?;
    if !(data.len() as u64).is_multiple_of(row_bytes) {
        return Err(kernel_err(KernelError::LengthMismatch {
            ty: from,
            what: "source rows",
            n: row_len,
            expected: row_bytes as usize,
            got: data.len(),
        }));
    }
    let n_rows = data.len() as u64 / row_bytes;
    let t = TensorPlan {
        name: "<data>".into(),
        dims: vec![row_len as u64, n_rows],
        source: from,
        target: to,
        fallback_from: None,
    };
    let kernels = edgellama_kernels::scalar::kernels();
    let mut converter = Converter::new(&kernels, threads.max(1));
    let mut out = Counted {
        inner: Vec::new(),
        pos: 0,
    };
    converter
        .write_tensor(&t, data, &mut out, &NoProgress)
        .map_err(|e| match e {
            WriteError::Quantize(e) => e,
            // Writing to a Vec cannot fail.
            WriteError::Io(e) => QuantizeError::Internal {
                what: e.to_string(),
            },
        })?;
    Ok(out.inner)
}

/// Removes a partly written file unless it was completed.
struct PartialFile {
    path: PathBuf,
    done: bool,
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Quantizes the GGUF model at `input` into `output`, as
/// `llama-quantize [--allow-requantize] [--pure] input output TYPE threads`.
///
/// Everything about the input is checked before `output` is touched. The
/// data goes to a temporary file beside `output`, renamed over it once
/// complete, so a failure never leaves a truncated model behind and the
/// output may replace the input.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: &dyn Progress,
) -> Result<QuantizeReport, QuantizeError> {
    let file = GgufFile::open(input)?;
    let plan = plan_file(&file, opts.ftype, &opts.plan)?;
    check_requantize(&plan, opts.allow_requantize)?;

    let write_err = |path: &Path, source| QuantizeError::Write {
        path: path.to_owned(),
        source,
    };
    let name = output.file_name().ok_or_else(|| {
        write_err(
            output,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = output.with_file_name(tmp_name);
    let out = File::create(&tmp).map_err(|e| write_err(output, e))?;
    let mut partial = PartialFile {
        path: tmp.clone(),
        done: false,
    };
    let file_len = write_quantized(
        &file,
        &plan,
        opts.threads,
        BufWriter::with_capacity(1 << 20, out),
        progress,
    )
    .map_err(|e| match e {
        WriteError::Quantize(e) => e,
        WriteError::Io(e) => write_err(output, e),
    })?;
    std::fs::rename(&tmp, output).map_err(|e| write_err(output, e))?;
    partial.done = true;

    let mut input_tensor_bytes = 0;
    let mut output_tensor_bytes = 0;
    for t in &plan.tensors {
        input_tensor_bytes += bytes_of(t.source, &t.dims, &t.name)?;
        output_tensor_bytes += bytes_of(t.target, &t.dims, &t.name)?;
    }
    Ok(QuantizeReport {
        plan,
        input_tensor_bytes,
        output_tensor_bytes,
        file_len,
    })
}
