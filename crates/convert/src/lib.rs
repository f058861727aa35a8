//! Hugging Face checkpoints to GGUF: Llama (`LlamaForCausalLM`) the way
//! llama.cpp's `convert_hf_to_gguf.py` writes it, Llama 3.2 Vision
//! (`MllamaForConditionalGeneration`) in the layout of ollama's unified
//! mllama files (see `mllama.rs`).
//!
//! The converter is generic: reading, planning, output types and writing are
//! here; what differs between model families (metadata keys, tensor names
//! and shapes, generated tensors) sits behind the `Architecture` trait, one
//! implementation per family, picked by config.json's `architectures[0]`
//! through a table ([`supported_architectures`]).
//!
//! [`Converter::open`] reads a checkpoint directory (`config.json`,
//! `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` if
//! present, and the safetensors weights, sharded or not) and plans the whole
//! file: metadata in the converter's order, every tensor's GGUF name, shape
//! and type. Nothing is written until then, and every input problem is
//! reported before the first byte. Writing streams one tensor at a time from
//! the memory-mapped checkpoint, rows converted on several threads, so memory
//! stays near the size of the largest tensor.
//!
//! What it reproduces of the converter, for `LlamaForCausalLM`:
//! - tensor names (`token_embd`, `blk.N.attn_q`, ...) and order: a generated
//!   `rope_freqs.weight` first (llama3 RoPE scaling), then the checkpoint's
//!   tensors file by file, by name;
//! - the Q/K row permutation (`LlamaModel.permute`) from the rotate-half layout
//!   to ggml's interleaved pairs;
//! - output types: 1-D and norm tensors F32, the rest as `--outtype` (Q8_0
//!   falls back to F16 for rows that are not whole blocks), with the same
//!   rounding (the kernels crate's conversions and Q8_0 quantizer, bit-exact
//!   with ggml's and gguf-py's);
//! - the metadata: `general.*` (name heuristics, size label, sampling defaults
//!   from generation_config.json), `llama.*`, and the vocabulary
//!   (`tokenizer.ggml.*`: tokens and types, merges, the pre-tokenizer found by
//!   llama.cpp's token-id hash, special token ids, add-BOS/EOS flags, chat
//!   template);
//! - tied embeddings: without `lm_head.weight` no `output.weight` is written.
//!
//! Not reproduced: the model card's metadata (license, tags, languages, base
//! models: README.md is not read), NaN payloads in f32 -> f16 conversion
//! (ggml's canonical NaN instead of numpy's payload-preserving one), and
//! SentencePiece vocabularies.
//!
//! ```no_run
//! use edgellama_convert::{Converter, OutType};
//! let conv = Converter::open("Llama-3.2-1B-Instruct", OutType::Auto)?;
//! conv.write_to_path("llama-3.2-1b-instruct-bf16.gguf")?;
//! # Ok::<(), edgellama_convert::ConvertError>(())
//! ```

mod arch;
mod error;
mod llama;
mod mllama;
pub mod naming;
mod outtype;
mod tensors;
pub mod vocab;

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use edgellama_gguf::formats::{read_json, Checkpoint, Dtype};
use edgellama_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue};
use serde_json::Value;

pub use arch::supported_architectures;
use arch::{Architecture, GateFn, Mapped, Target, Transform};
pub use error::ConvertError;
pub use llama::permuted_row;
pub use naming::ModelNaming;
pub use outtype::OutType;
pub use tensors::target_type;

/// `general.quantization_version` (`GGML_QUANT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Where a planned tensor's data comes from.
#[derive(Debug, Clone)]
enum Source {
    Checkpoint {
        name: String,
        permute_heads: Option<u64>,
    },
    Values(Vec<f32>),
    /// One checkpoint gate with its activation applied, as F32.
    Gate {
        name: String,
        f: GateFn,
    },
}

/// One tensor of the output file.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// The checkpoint tensor it is made from (`None` for generated ones).
    pub source_name: Option<String>,
    source: Source,
}

impl PlannedTensor {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    fn n_bytes(&self) -> Result<u64, ConvertError> {
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ggml_type
            .row_size(self.dims.first().copied().unwrap_or(1))
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| ConvertError::Internal {
                what: format!("size of {} overflows", self.name),
            })
    }
}

/// A planned conversion of one checkpoint directory.
pub struct Converter {
    checkpoint: Checkpoint,
    outtype: OutType,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PlannedTensor>,
    threads: usize,
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converter")
            .field("dir", &self.checkpoint.dir())
            .field("outtype", &self.outtype)
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

fn optional_json(path: &Path) -> Result<Option<Value>, ConvertError> {
    Ok(if path.is_file() {
        Some(read_json(path)?)
    } else {
        None
    })
}

/// `general.sampling.*` from generation_config.json, in gguf-py's order.
/// Values of the wrong JSON type are left out.
fn sampling_metadata(gen: &Value) -> Vec<(String, MetadataValue)> {
    let mut md = Vec::new();
    let int = |k: &str| {
        gen.get(k)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    let float = |k: &str| gen.get(k).and_then(Value::as_f64).map(|v| v as f32);
    if let Some(s) = gen.get("sequence").and_then(Value::as_str) {
        md.push(("general.sampling.sequence".into(), s.into()));
    }
    let entries: [(&str, Option<MetadataValue>); 11] = [
        ("top_k", int("top_k").map(Into::into)),
        ("top_p", float("top_p").map(Into::into)),
        ("min_p", float("min_p").map(Into::into)),
        ("xtc_probability", float("xtc_probability").map(Into::into)),
        ("xtc_threshold", float("xtc_threshold").map(Into::into)),
        ("temp", float("temperature").map(Into::into)),
        ("penalty_last_n", int("penalty_last_n").map(Into::into)),
        (
            "penalty_repeat",
            float("penalty_repeat")
                .or_else(|| float("repetition_penalty"))
                .map(Into::into),
        ),
        ("mirostat", int("mirostat").map(Into::into)),
        ("mirostat_tau", float("mirostat_tau").map(Into::into)),
        ("mirostat_eta", float("mirostat_eta").map(Into::into)),
    ];
    for (k, v) in entries {
        if let Some(v) = v {
            md.push((format!("general.sampling.{k}"), v));
        }
    }
    md
}

fn naming_metadata(n: &ModelNaming) -> Vec<(String, MetadataValue)> {
    let mut md = Vec::new();
    let fields = [
        ("general.name", &n.name),
        ("general.version", &n.version),
        ("general.organization", &n.organization),
        ("general.finetune", &n.finetune),
        ("general.basename", &n.basename),
        ("general.size_label", &n.size_label),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            md.push((k.to_owned(), v.as_str().into()));
        }
    }
    md
}

/// The directory as `transformers` would record it in `_name_or_path`:
/// the path as given, without `.` components or a trailing separator.
fn name_or_path(dir: &Path) -> String {
    let p: PathBuf = dir
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    p.to_string_lossy().into_owned()
}

impl Converter {
    /// Reads and checks a checkpoint directory and plans the output file.
    pub fn open(dir: impl AsRef<Path>, outtype: OutType) -> Result<Converter, ConvertError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(ConvertError::NotADirectory {
                dir: dir.to_owned(),
            });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ConvertError::MissingFile { path: config_path });
        }
        let config_json = read_json(&config_path)?;
        let arch = arch::open(&config_json, &config_path)?;
        let generation = optional_json(&dir.join("generation_config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;

        let outtype = outtype.resolve(
            checkpoint
                .tensors()
                .filter(|(_, t)| t.shape.len() >= 2)
                .map(|(_, t)| t.dtype),
        );
        let file_type = outtype.file_type().ok_or_else(|| ConvertError::Internal {
            what: "output type left unresolved".into(),
        })?;

        let tensors = plan_tensors(&checkpoint, &*arch, outtype)?;
        let total_params: u64 = tensors.iter().map(PlannedTensor::n_elements).sum();
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let naming = ModelNaming::infer(&name_or_path(dir), &dir_name, total_params);

        let mut metadata: Vec<(String, MetadataValue)> = vec![
            ("general.architecture".into(), arch.name().into()),
            ("general.type".into(), "model".into()),
        ];
        if let Some(gen) = &generation {
            metadata.extend(sampling_metadata(gen));
        }
        metadata.extend(naming_metadata(&naming));
        metadata.extend(arch.hparams_metadata(file_type)?);
        metadata.push((
            "general.quantization_version".into(),
            QUANTIZATION_VERSION.into(),
        ));
        let vocab_len = arch.vocab_len();
        metadata.extend(vocab::vocab_metadata(&vocab::VocabInput {
            dir,
            config: &config_json,
            vocab_size: vocab_len.vocab_size,
            id_limit: vocab_len.id_limit,
        })?);

        Ok(Converter {
            checkpoint,
            outtype,
            metadata,
            tensors,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// Worker threads for converting rows (default: one per core).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// The output type, with `Auto` resolved.
    pub fn outtype(&self) -> OutType {
        self.outtype
    }

    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    pub fn tensors(&self) -> &[PlannedTensor] {
        &self.tensors
    }

    /// The header layout: a writer holding the metadata and every tensor
    /// with zero placeholders (borrowed from `zeros`, never written to).
    fn layout<'z>(&self, zeros: &'z [u8]) -> Result<(GgufWriter<'z>, Vec<u64>), ConvertError> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.set(k.clone(), v.clone())?;
        }
        let mut sizes = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let n = t.n_bytes()?;
            let placeholder = usize::try_from(n)
                .ok()
                .and_then(|n| zeros.get(..n))
                .ok_or_else(|| ConvertError::Internal {
                    what: format!("{} is larger than the largest tensor", t.name),
                })?;
            w.add_tensor(
                t.name.clone(),
                t.dims.clone(),
                t.ggml_type,
                Cow::Borrowed(placeholder),
            )?;
            sizes.push(n);
        }
        Ok((w, sizes))
    }

    /// Writes the GGUF file to `out`, one tensor at a time; returns its size.
    pub fn write_to<W: Write>(&self, out: W) -> Result<u64, ConvertError> {
        let io_err = |source| ConvertError::Write {
            path: PathBuf::from("<output>"),
            source,
        };
        self.write_inner(out, &io_err, &mut |_, _| {})
    }

    /// The header bytes, each tensor's offset in the data section and the
    /// file length, computed before any tensor is converted.
    fn file_layout(&self) -> Result<FileLayout, ConvertError> {
        let largest = self
            .tensors
            .iter()
            .map(PlannedTensor::n_bytes)
            .try_fold(0u64, |m, n| n.map(|n| m.max(n)))?;
        let largest = usize::try_from(largest).map_err(|_| ConvertError::Internal {
            what: "a tensor is larger than the address space".into(),
        })?;
        // Untouched zero pages: no memory is committed for the placeholders.
        let zeros = vec![0u8; largest];
        let (w, sizes) = self.layout(&zeros)?;
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
            .ok_or_else(|| ConvertError::Internal {
                what: "the file is shorter than its data section".into(),
            })?;
        let mut header = HeaderCapture {
            bytes: Vec::new(),
            limit: usize::try_from(header_len).map_err(|_| ConvertError::Internal {
                what: "header larger than the address space".into(),
            })?,
        };
        w.write_to(&mut header)?;
        Ok(FileLayout {
            header: header.bytes,
            offsets,
            file_len,
        })
    }

    fn write_inner<W: Write>(
        &self,
        out: W,
        io_err: &dyn Fn(std::io::Error) -> ConvertError,
        done: &mut dyn FnMut(usize, &PlannedTensor),
    ) -> Result<u64, ConvertError> {
        let layout = self.file_layout()?;
        self.write_layout(&layout, out, io_err, done)
    }

    fn write_layout<W: Write>(
        &self,
        layout: &FileLayout,
        out: W,
        io_err: &dyn Fn(std::io::Error) -> ConvertError,
        done: &mut dyn FnMut(usize, &PlannedTensor),
    ) -> Result<u64, ConvertError> {
        let header_len = layout.header.len() as u64;
        let (offsets, file_len) = (&layout.offsets, layout.file_len);
        let mut out = Counted {
            inner: std::io::BufWriter::with_capacity(1 << 20, out),
            pos: 0,
        };
        out.put(&layout.header).map_err(io_err)?;
        for (i, (t, &offset)) in self.tensors.iter().zip(offsets).enumerate() {
            out.zeros_until(header_len + offset).map_err(io_err)?;
            if out.pos != header_len + offset {
                return Err(ConvertError::Internal {
                    what: format!(
                        "tensor '{}' would land at {}, the index says {}",
                        t.name,
                        out.pos,
                        header_len + offset
                    ),
                });
            }
            let data = self.tensor_data(t)?;
            out.put(&data).map_err(io_err)?;
            done(i, t);
        }
        out.zeros_until(file_len).map_err(io_err)?;
        out.inner.flush().map_err(io_err)?;
        if out.pos != file_len {
            return Err(ConvertError::Internal {
                what: format!("wrote {} bytes, the layout says {file_len}", out.pos),
            });
        }
        Ok(out.pos)
    }

    /// Writes the file at `path` (through a temporary file beside it, renamed
    /// when complete).
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<u64, ConvertError> {
        self.write_to_path_with_progress(path, &mut |_, _| {})
    }

    /// Like [`Converter::write_to_path`], calling `done(index, tensor)` after
    /// each tensor is written.
    pub fn write_to_path_with_progress(
        &self,
        path: impl AsRef<Path>,
        done: &mut dyn FnMut(usize, &PlannedTensor),
    ) -> Result<u64, ConvertError> {
        let path = path.as_ref();
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".partial");
        let tmp = path.with_file_name(tmp_name);
        let err = |source| ConvertError::Write {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::create(&tmp).map_err(err)?;
        let written = self.write_inner(file, &err, done).and_then(|n| {
            std::fs::rename(&tmp, path).map_err(err)?;
            Ok(n)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ConvertError> {
        let layout = self.file_layout()?;
        let len = usize::try_from(layout.file_len).map_err(|_| ConvertError::Internal {
            what: "the file is larger than the address space".into(),
        })?;
        let mut out = Vec::with_capacity(len);
        let io_err = |source| ConvertError::Write {
            path: PathBuf::from("<memory>"),
            source,
        };
        self.write_layout(&layout, &mut out, &io_err, &mut |_, _| {})?;
        Ok(out)
    }

    /// The converted model, held in memory, without writing a file.
    pub fn to_gguf(&self) -> Result<GgufFile, ConvertError> {
        Ok(GgufFile::from_bytes(self.to_bytes()?)?)
    }

    /// The bytes of one planned tensor.
    pub fn tensor_data(&self, t: &PlannedTensor) -> Result<Vec<u8>, ConvertError> {
        let view = |name: &String| {
            self.checkpoint
                .get(name)
                .ok_or_else(|| ConvertError::MissingTensor {
                    tensor: name.clone(),
                })
        };
        match &t.source {
            Source::Values(v) => Ok(tensors::f32_bytes(v)),
            Source::Gate { name, f } => {
                let values: Vec<f32> = tensors::decode(&view(name)?)
                    .into_iter()
                    .map(|g| f.apply(g))
                    .collect();
                Ok(tensors::f32_bytes(&values))
            }
            Source::Checkpoint {
                name,
                permute_heads,
            } => {
                let view = view(name)?;
                let rows = row_plan(view.shape, *permute_heads, &t.name)?;
                tensors::encode(&view, rows, t.ggml_type, &t.name, self.threads)
            }
        }
    }
}

/// Rows of a checkpoint tensor (row-major shape): the last dimension is the
/// row. A permuted 1-D tensor (a Q/K bias) is a column of one-element rows.
fn row_plan(
    shape: &[u64],
    permute_heads: Option<u64>,
    name: &str,
) -> Result<tensors::RowPlan, ConvertError> {
    let too_big = || ConvertError::Internal {
        what: format!("{name}: shape {shape:?} does not fit in memory"),
    };
    let n: u64 = shape.iter().product();
    let (row_len, n_rows) = match (shape.len(), permute_heads) {
        (0, _) => (1, 1),
        (1, Some(_)) => (1, n),
        _ => {
            let row = shape.last().copied().unwrap_or(1);
            (row, n.checked_div(row).unwrap_or(0))
        }
    };
    Ok(tensors::RowPlan {
        n_rows: usize::try_from(n_rows).map_err(|_| too_big())?,
        row_len: usize::try_from(row_len).map_err(|_| too_big())?,
        permute_heads: permute_heads
            .map(|h| usize::try_from(h).map_err(|_| too_big()))
            .transpose()?,
    })
}

fn plan_tensors(
    ck: &Checkpoint,
    arch: &dyn Architecture,
    outtype: OutType,
) -> Result<Vec<PlannedTensor>, ConvertError> {
    let mut planned = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (_, t) in ck.tensors() {
        let targets = match arch.map_name(&t.name)? {
            Mapped::Skip => continue,
            Mapped::To(targets) => targets,
        };
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(ConvertError::UnsupportedDtype {
                tensor: t.name.clone(),
                dtype: t.dtype,
            });
        }
        for Target {
            name: gguf_name,
            transform,
        } in targets
        {
            if let Some(expected) = arch.expected_shape(&gguf_name) {
                if t.shape != expected {
                    return Err(ConvertError::ShapeMismatch {
                        tensor: t.name.clone(),
                        found: t.shape.clone(),
                        expected,
                    });
                }
            }
            if t.shape.contains(&0) {
                return Err(ConvertError::ShapeMismatch {
                    tensor: t.name.clone(),
                    found: t.shape.clone(),
                    expected: Vec::new(),
                });
            }
            if let Transform::PermuteHeads(h) = transform {
                if t.shape[0] % (2 * h) != 0 {
                    return Err(ConvertError::ShapeMismatch {
                        tensor: t.name.clone(),
                        found: t.shape.clone(),
                        expected: vec![2 * h * (t.shape[0] / (2 * h)).max(1)],
                    });
                }
            }
            if let Some(first) = seen.insert(gguf_name.clone(), t.name.clone()) {
                return Err(ConvertError::DuplicateTensor {
                    first,
                    second: t.name.clone(),
                    gguf_name,
                });
            }
            let row_len = t.shape.last().copied().unwrap_or(1);
            let (ggml_type, source) = match transform {
                Transform::Gate(f) => (
                    GgmlType::F32,
                    Source::Gate {
                        name: t.name.clone(),
                        f,
                    },
                ),
                Transform::Copy | Transform::PermuteHeads(_) => (
                    arch.tensor_type(&gguf_name, t.shape.len(), row_len, outtype),
                    Source::Checkpoint {
                        name: t.name.clone(),
                        permute_heads: match transform {
                            Transform::PermuteHeads(h) => Some(h),
                            _ => None,
                        },
                    },
                ),
            };
            planned.push(PlannedTensor {
                dims: t.shape.iter().rev().copied().collect(),
                ggml_type,
                source_name: Some(t.name.clone()),
                source,
                name: gguf_name,
            });
        }
    }
    if let Some(tensor) = arch.first_missing(ck.len(), &|n| seen.contains_key(n)) {
        return Err(ConvertError::MissingTensor { tensor });
    }
    // Generated first, as the converter does; computed only now that the
    // shapes have confirmed head_dim.
    let extra = arch.extra_tensors().into_iter().map(|e| PlannedTensor {
        dims: vec![e.values.len() as u64],
        name: e.name,
        ggml_type: GgmlType::F32,
        source_name: None,
        source: Source::Values(e.values),
    });
    Ok(extra.chain(planned).collect())
}

struct FileLayout {
    header: Vec<u8>,
    /// Per tensor, relative to the data section (which starts right after
    /// the header, itself padded to the alignment).
    offsets: Vec<u64>,
    file_len: u64,
}

/// Keeps the first `limit` bytes written and discards the rest.
struct HeaderCapture {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for HeaderCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit - self.bytes.len();
        self.bytes.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Counted<W: Write> {
    inner: std::io::BufWriter<W>,
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
