//! Perplexity on the scalar kernels against llama.cpp's portable build
//! (its plain C kernels), which they follow operation for operation: the
//! estimates agree to the 4 decimals llama-perplexity prints.

#[path = "common/perplexity.rs"]
mod perplexity;

#[test]
fn smollm2_hamlet_matches_portable_llama_cpp() {
    std::env::set_var("EDGELLAMA_KERNELS", "scalar");
    assert_eq!(edgellama_kernels::kernels().name(), "scalar");
    // The golden holds the 4 decimals llama-perplexity prints: ours must
    // round to the same digits (half a unit in the last place, plus float
    // noise in the comparison itself).
    perplexity::check("portable", 0.0, 0.5e-4 + 1e-9, true);
}
