//! Models from the Hugging Face hub, kept in the hub's own cache layout.
//!
//! - [`RepoSpec`] parses llama.cpp's `ORG/NAME[:QUANT]`, and [`select`]
//!   picks the GGUF file a quant tag means, by llama.cpp's rules.
//! - [`HubCache`] reads and writes `models--ORG--NAME/{blobs,refs,snapshots}`
//!   exactly as `huggingface_hub` does, so either reuses the other's files.
//! - [`Hub`] talks to the hub (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`):
//!   resumable downloads checked against the hub's sha256, clear errors for
//!   401, 404, gated repositories and a missing network.

pub mod cache;
mod client;
pub mod config;
mod error;
pub mod repo;
pub mod select;
#[cfg(feature = "stand-in")]
pub mod stand_in;

pub use cache::{CachedFile, HubCache, RemoveTarget, Removed};
pub use client::{DownloadedFile, Fetched, FileMetadata, Hub, RepoListing, Source};
pub use config::HubConfig;
pub use error::HubError;
pub use repo::RepoSpec;
