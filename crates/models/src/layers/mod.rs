//! Building blocks shared by decoder architectures.

pub mod linear;
pub mod rope;

pub use linear::{Linear, NormWeight};
