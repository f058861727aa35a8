//! Byte-level BPE tokenization as Llama 3, SmolLM and GPT-2 use it, built
//! from GGUF metadata or a Hugging Face `tokenizer.json`, with special tokens
//! and streaming decode that never splits a UTF-8 character.
//!
//! ```no_run
//! # fn main() -> Result<(), edgellama_tokenizer::TokenizerError> {
//! let tok = edgellama_tokenizer::Tokenizer::from_hf_json("tokenizer.json")?;
//! let ids = tok.encode("<|start_header_id|>user<|end_header_id|>", true, true);
//! let mut stream = tok.stream_decoder(false);
//! for &id in &ids {
//!     if let Some(text) = stream.push(id) {
//!         print!("{text}");
//!     }
//! }
//! # Ok(()) }
//! ```

mod bpe;
pub mod bytes;
pub mod chat;
mod error;
mod gguf;
mod hf;
pub mod pretok;
mod spec;
mod stream;
mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError, RenderRequest};
pub use error::{Result, TokenizerError};
pub use pretok::PreTokenizer;
pub use spec::{SpecToken, SpecialIds, TokenType, TokenizerSpec};
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
