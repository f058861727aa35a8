//! Perplexity on this CPU's default kernels against llama.cpp's default
//! build: within 0.5%, the bound the project holds itself to.

#[path = "common/perplexity.rs"]
mod perplexity;

#[test]
fn smollm2_hamlet_within_half_a_percent_of_llama_cpp() {
    perplexity::check("default", 0.005, 0.0);
}
