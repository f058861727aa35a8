//! Llama 3.2 Vision (mllama).

pub mod preprocess;
