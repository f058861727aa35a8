//! Perplexity on this CPU's default kernels against llama.cpp's default
//! build: the final estimate within 0.5%, the bound the project holds itself
//! to, over 32 chunks of 512 and 64 of 128 (8160 and 4032 scored tokens).
//! Running estimates over the first chunks rest on a few hundred tokens
//! and move by more than that between llama.cpp's own settings (1.3% after
//! the first chunk of 128 with only the chunk count changed), so only the
//! final one is held; so is its length: a 4-chunk estimate moved by 0.7%
//! between equally exact kernels of ours.

#[path = "common/perplexity.rs"]
mod perplexity;

#[test]
fn smollm2_hamlet_within_half_a_percent_of_llama_cpp() {
    perplexity::check("default", 0.005, 0.0, false);
}
