//! Quantizing GGUF models the way llama.cpp's `llama-quantize` does.
//!
//! Two halves:
//! - [`plan`]: the type of every tensor under a mix such as `Q4_K_M`, ported
//!   rule for rule from llama.cpp's `src/llama-quant.cpp`: the output
//!   projection (or the tied token embeddings) at Q6_K or Q8_0, `attn_v` and
//!   `ffn_down` promoted in some layers of the `_M` mixes, and a fallback to a
//!   32-element block type when a row does not fill 256-element K-quant
//!   blocks (SmolLM2's 576-wide rows, for instance). 1-D tensors stay as they are.
//!   A Llama 3.2 Vision model's text half follows the same rules; its vision
//!   tower and projector are kept at a [`VisionType`] (F16 by default).
//! - [`quantize_file`]: writes the file llama-quantize writes (same metadata
//!   order, tensor order, alignment and bytes), streaming tensor by tensor from
//!   the input's memory map and converting rows on several threads.
//!
//! ```no_run
//! use edgellama_quantize::{quantize_file, FileType, NoProgress, QuantizeOptions};
//! let mut opts = QuantizeOptions::new(FileType::Q4_K_M);
//! opts.threads = 4;
//! let report = quantize_file("model-f16.gguf".as_ref(), "model-q4_k_m.gguf".as_ref(), &opts, &NoProgress)?;
//! println!("{} tensors, {} fell back", report.plan.tensors.len(), report.plan.n_fallback);
//! # Ok::<(), edgellama_quantize::QuantizeError>(())
//! ```

mod driver;
mod error;
mod ftype;
pub mod plan;
mod validate;

pub use driver::{
    check_requantize, convert_tensor, plan_file, quantize_file, write_quantized, NoProgress,
    Progress, QuantizeOptions, QuantizeReport, WriteError, FILE_TYPE_KEY, QUANTIZATION_VERSION,
    QUANTIZATION_VERSION_KEY,
};
pub use error::QuantizeError;
pub use ftype::{FileType, VisionType};
pub use plan::{plan, ModelInfo, Plan, PlanOptions, TensorDesc, TensorPlan};
