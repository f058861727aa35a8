//! Token embedding lookup.

use super::Linear;
use crate::ModelError;
use edgellama_gguf::GgufFile;

/// The embedding table, `[n_embd, n_rows]` in GGUF order: row `id` is the
/// vector of token `id`, dequantized on lookup.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub table: Linear, // token_embd.weight [n_embd, n_rows]
}

impl Embedding {
    pub fn load(
        file: &GgufFile,
        name: &str,
        n_embd: usize,
        n_rows: usize,
    ) -> Result<Embedding, ModelError> {
        Ok(Embedding {
            table: Linear::load(file, name, n_embd, n_rows)?,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.table.n_out
    }

    /// Writes the vectors of `tokens` into consecutive rows of `x`. Ids
    /// must already be checked against [`Embedding::n_rows`].
    pub fn lookup(&self, file: &GgufFile, tokens: &[u32], x: &mut [f32]) -> Result<(), ModelError> {
        let d = self.table.n_in;
        for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
            self.table.row(file, id as usize, row)?;
        }
        Ok(())
    }
}
