use crate::EngineError;
use edgellama_backend::KvType;
use edgellama_kernels::ops::log_softmax_at;
use edgellama_models::{CausalLm, Logits};

#[derive(Debug, Clone)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// Standard error of the estimate, as llama-perplexity reports it.
    pub ppl_err: f64,
    /// Running estimate after each chunk.
    pub running: Vec<f64>,
    pub n_chunks: usize,
    pub n_scored: usize,
}

/// Scores `tokens` the way llama.cpp's `llama-perplexity` does: the text is
/// cut into chunks of `n_ctx` tokens, each evaluated from an empty cache
/// (its first token replaced by `bos` when the model adds one), and only the
/// second half of each chunk is scored, so every scored token has at least
/// `n_ctx / 2` tokens of context. The cache holds keys and values as the
/// `cache` types (`-ctk`, `-ctv`).
pub fn perplexity(
    model: &dyn CausalLm,
    tokens: &[u32],
    n_ctx: usize,
    cache: (KvType, KvType),
    max_chunks: Option<usize>,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityResult, EngineError> {
    if n_ctx < 4 {
        return Err(EngineError::ContextTooSmall(n_ctx));
    }
    if tokens.len() < 2 * n_ctx {
        return Err(EngineError::TextTooShort {
            n_tokens: tokens.len(),
            n_ctx,
            need: 2 * n_ctx,
        });
    }
    let n_chunk_max = tokens.len() / n_ctx;
    let n_chunks = max_chunks.map_or(n_chunk_max, |c| c.min(n_chunk_max));
    let n_vocab = model.info().n_vocab;
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    let mut state = model.new_state_typed(n_ctx, cache.0, cache.1)?;
    let mut chunk = vec![0u32; n_ctx];
    for i in 0..n_chunks {
        let start = i * n_ctx;
        chunk.copy_from_slice(&tokens[start..start + n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        state.truncate(0);
        let logits = model.forward(&mut state, &chunk, Logits::From(first))?;
        for j in first..n_ctx - 1 {
            let row = &logits[(j - first) * n_vocab..(j - first + 1) * n_vocab];
            let lp = log_softmax_at(row, tokens[start + j + 1] as usize);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        let est = (nll / count as f64).exp();
        running.push(est);
        on_chunk(i, est);
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityResult {
        ppl,
        ppl_err,
        running,
        n_chunks,
        n_scored: count,
    })
}
