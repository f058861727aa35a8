//! Building blocks shared by the architectures: each is one step of a
//! transformer block, with its weights named as in the file.

pub mod attention;
pub mod block;
pub mod embedding;
pub mod head;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod rope;

pub use attention::{AttnScratch, HeadDims, Segment, SelfAttention};
pub use block::{BlockDims, BlockScratch, DecoderBlock};
pub use embedding::Embedding;
pub use head::{forward_ubatches, OutputHead};
pub use linear::{Affine, Linear};
pub use mlp::{FfnScratch, GeluMlp, SwiGlu};
pub use norm::{LayerNorm, RmsNorm};

use edgellama_backend::Backend;
use edgellama_gguf::GgufFile;

/// What every layer reads its weights from and computes on.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub file: &'a GgufFile,
    pub backend: &'a dyn Backend,
}
