//! Perplexity with a quantized KV cache (`-ctk`/`-ctv`) on this CPU's
//! default kernels against llama.cpp's default build with the same cache
//! types (flash attention on, which its quantized values need): Q8_0 within
//! 0.5%, Q4_0 within 2%, over 32 chunks of 512 (8160 scored tokens); and
//! long-context perplexity with the default F16 cache within 0.5%.

#[path = "common/perplexity.rs"]
mod perplexity;

#[test]
fn q8_0_cache_within_half_a_percent_of_llama_cpp() {
    perplexity::check("kv-q8_0", 0.005, 0.0, false);
}

#[test]
fn q4_0_cache_within_two_percent_of_llama_cpp() {
    perplexity::check("kv-q4_0", 0.02, 0.0, false);
}

/// Long context: two chunks of 8192 tokens (4095 scored each, every one with
/// at least 4096 tokens before it), F16 cache.
#[test]
fn long_context_within_half_a_percent_of_llama_cpp() {
    perplexity::check("long-c8192", 0.005, 0.0, false);
}
