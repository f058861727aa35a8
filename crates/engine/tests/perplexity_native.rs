//! Perplexity on this CPU's default kernels against llama.cpp's default
//! build: the final estimate within 0.5%, the bound the project holds itself
//! to. Running estimates over the first chunks rest on a few hundred tokens
//! and move by more than that between llama.cpp's own settings (0.9% after
//! the first chunk with flash attention off), so only the final one is held.

#[path = "common/perplexity.rs"]
mod perplexity;

#[test]
fn smollm2_hamlet_within_half_a_percent_of_llama_cpp() {
    perplexity::check("default", 0.005, 0.0, false);
}
