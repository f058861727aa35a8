//! Perplexity with quantized KV caches on the scalar kernels against
//! llama.cpp's portable build with the same cache types: its one-by-one
//! attention route (query quantized to Q8_0, each key scored with the
//! type's dot product, values widened and summed in f32) followed operation
//! for operation, so the estimates agree to the 4 decimals it prints.

#[path = "common/perplexity.rs"]
mod perplexity;

#[test]
fn quantized_caches_match_portable_llama_cpp() {
    std::env::set_var("EDGELLAMA_KERNELS", "scalar");
    assert_eq!(edgellama_kernels::kernels().name(), "scalar");
    perplexity::check("portable-kv-q8_0", 0.0, 0.5e-4 + 1e-9, true);
    perplexity::check("portable-kv-q4_0", 0.0, 0.5e-4 + 1e-9, true);
}
