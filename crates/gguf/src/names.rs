//! The GGUF tensor names, one table for every crate that reads or writes
//! them (models, convert, quantize), as gguf-py's `TENSOR_NAMES` and
//! llama.cpp's `LLM_TN` are for their programs. A name is a stem (with
//! `{bid}` standing for the block index) plus a suffix, usually `weight` or
//! `bias`: `blk.3.attn_q.weight`.

/// What a tensor is, independent of its block and suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorKind {
    TokenEmbd,
    OutputNorm,
    Output,
    RopeFreqs,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
}

/// Every kind with its stem. Order is the table's, not a file's.
const TABLE: &[(TensorKind, &str)] = &[
    (TensorKind::TokenEmbd, "token_embd"),
    (TensorKind::OutputNorm, "output_norm"),
    (TensorKind::Output, "output"),
    (TensorKind::RopeFreqs, "rope_freqs"),
    (TensorKind::AttnNorm, "blk.{bid}.attn_norm"),
    (TensorKind::AttnQ, "blk.{bid}.attn_q"),
    (TensorKind::AttnK, "blk.{bid}.attn_k"),
    (TensorKind::AttnV, "blk.{bid}.attn_v"),
    (TensorKind::AttnOutput, "blk.{bid}.attn_output"),
    (TensorKind::FfnNorm, "blk.{bid}.ffn_norm"),
    (TensorKind::FfnGate, "blk.{bid}.ffn_gate"),
    (TensorKind::FfnUp, "blk.{bid}.ffn_up"),
    (TensorKind::FfnDown, "blk.{bid}.ffn_down"),
];

impl TensorKind {
    /// The stem with `{bid}` unfilled.
    pub fn stem(self) -> &'static str {
        TABLE
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    /// Whether the name carries a block index.
    pub fn per_block(self) -> bool {
        self.stem().contains("{bid}")
    }

    /// The full name: `stem` with block `bid` (ignored for global tensors)
    /// and `suffix` (`"weight"`, `"bias"`, or `""` for none).
    pub fn name(self, bid: usize, suffix: &str) -> String {
        let stem = self.stem().replace("{bid}", &bid.to_string());
        if suffix.is_empty() {
            stem
        } else {
            format!("{stem}.{suffix}")
        }
    }

    /// `name(bid, "weight")`.
    pub fn weight(self, bid: usize) -> String {
        self.name(bid, "weight")
    }

    /// Parses a full name back into its kind, block and suffix.
    pub fn parse(name: &str) -> Option<(TensorKind, usize, &str)> {
        TABLE.iter().find_map(|&(kind, stem)| {
            let (rest, bid) = match stem.split_once("{bid}") {
                Some((pre, post)) => {
                    let tail = name.strip_prefix(pre)?;
                    let digits = tail.find(|c: char| !c.is_ascii_digit())?;
                    let bid = tail[..digits].parse().ok()?;
                    (tail[digits..].strip_prefix(post)?, bid)
                }
                None => (name.strip_prefix(stem)?, 0),
            };
            match rest {
                "" => Some((kind, bid, "")),
                r => r.strip_prefix('.').map(|suffix| (kind, bid, suffix)),
            }
            .filter(|(_, _, s)| !s.contains('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &(kind, _) in TABLE {
            for bid in [0, 7, 31] {
                let n = kind.weight(bid);
                let want_bid = if kind.per_block() { bid } else { 0 };
                assert_eq!(
                    TensorKind::parse(&n),
                    Some((kind, want_bid, "weight")),
                    "{n}"
                );
            }
        }
        assert_eq!(TensorKind::AttnQ.weight(3), "blk.3.attn_q.weight");
        assert_eq!(TensorKind::Output.weight(9), "output.weight");
        assert_eq!(
            TensorKind::parse("blk.12.ffn_down.bias"),
            Some((TensorKind::FfnDown, 12, "bias"))
        );
    }

    #[test]
    fn prefixes_of_other_names_do_not_match() {
        // `output` must not swallow `output_norm`, nor `attn_q` `attn_qkv`.
        assert_eq!(
            TensorKind::parse("output_norm.weight"),
            Some((TensorKind::OutputNorm, 0, "weight"))
        );
        assert_eq!(TensorKind::parse("blk.1.attn_qkv.weight"), None);
        assert_eq!(TensorKind::parse("blk.x.attn_q.weight"), None);
        assert_eq!(TensorKind::parse("blk.1.attn_q.weight.extra"), None);
        assert_eq!(TensorKind::parse("unknown.weight"), None);
    }
}
