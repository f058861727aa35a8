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
    // Llama 3.2 Vision (mllama), in the layout of ollama's unified mllama
    // GGUF. A text cross-attention layer has attn_norm, ffn_norm and
    // ffn_{gate,up,down} as a self-attention layer does, and these instead of
    // attn_{q,k,v,output}.
    /// `[n_embd, n_head * head_dim]`; rows permuted per head as attn_q.
    CrossAttnQ,
    /// `[n_embd, n_head_kv * head_dim]`, applied to the vision states; rows
    /// permuted per head as attn_k.
    CrossAttnK,
    /// `[n_embd, n_head_kv * head_dim]`.
    CrossAttnV,
    /// `[n_head * head_dim, n_embd]`.
    CrossAttnO,
    /// `[head_dim]` RMS norm of each query head, in the checkpoint's order:
    /// unlike CrossAttnQ's rows it is not permuted, so a reader permutes it
    /// (or un-permutes the rows) to match.
    CrossAttnQNorm,
    /// `[head_dim]` RMS norm of each key head; not permuted, as CrossAttnQNorm.
    CrossAttnKNorm,
    /// One F32 element, no suffix: the raw gate (tanh is applied at run time).
    CrossAttnAttnGate,
    /// One F32 element, no suffix: the raw gate (tanh is applied at run time).
    CrossAttnMlpGate,
    /// `[patch, patch, channels, v_embd]`: the conv weight, not reshaped.
    VisPatchEmbd,
    /// `[v_embd]` F32, no suffix.
    VisClassEmbd,
    /// `.weight` `[v_embd, n_patches + 1]` F32; `.gate` one F32 element
    /// holding 1 - tanh(g).
    VisPositionEmbd,
    /// `.weight` `[max_tiles * (n_patches + 1) * v_embd, n_aspect_ratios + 1]`
    /// F32; `.gate` one F32 element holding tanh(g), g the same checkpoint
    /// gate as VisPositionEmbd's.
    VisTilePositionEmbd,
    /// `.weight` `[max_tiles * v_embd, n_aspect_ratios + 1]` F32; `.gate` one
    /// F32 element holding tanh(g).
    VisPreTilePositionEmbd,
    /// As VisPreTilePositionEmbd, applied after the local layers.
    VisPostTilePositionEmbd,
    /// Layer norm (`.weight`, `.bias`) before the local layers.
    VisPreLn,
    /// Layer norm (`.weight`, `.bias`) after the local layers.
    VisPostLn,
    /// Local vision layers `v.blk.N`: layer norm, `.weight` and `.bias`.
    VisBlkAttnNorm,
    /// `[v_embd, v_embd]`; rows permuted per head as attn_q (the tower has no
    /// RoPE: permuting Q and K alike leaves the scores unchanged).
    VisBlkAttnQ,
    /// `[v_embd, v_embd]`; rows permuted per head as VisBlkAttnQ.
    VisBlkAttnK,
    /// `[v_embd, v_embd]`.
    VisBlkAttnV,
    /// `[v_embd, v_embd]`.
    VisBlkAttnOutput,
    /// Layer norm, `.weight` and `.bias`.
    VisBlkFfnNorm,
    /// `[v_embd, v_ff]` and `.bias` (mlp.fc1).
    VisBlkFfnUp,
    /// `[v_ff, v_embd]` and `.bias` (mlp.fc2).
    VisBlkFfnDown,
    /// Global vision layers `v.global.blk.N`: as the local ones, plus the
    /// two gates.
    VisGlobalBlkAttnNorm,
    VisGlobalBlkAttnQ,
    VisGlobalBlkAttnK,
    VisGlobalBlkAttnV,
    VisGlobalBlkAttnOutput,
    VisGlobalBlkFfnNorm,
    VisGlobalBlkFfnUp,
    VisGlobalBlkFfnDown,
    /// One F32 element, no suffix: tanh(gate_attn), already applied.
    VisGlobalBlkAttnGate,
    /// One F32 element, no suffix: tanh(gate_ffn), already applied (a gate,
    /// unlike the text FfnGate, which is a weight).
    VisGlobalBlkFfnGate,
    /// The multi-modal projector: `.weight` `[v_embd * (n_intermediate + 1),
    /// n_embd]` and `.bias`.
    Projector,
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
    (TensorKind::CrossAttnQ, "blk.{bid}.cross_attn_q_proj"),
    (TensorKind::CrossAttnK, "blk.{bid}.cross_attn_k_proj"),
    (TensorKind::CrossAttnV, "blk.{bid}.cross_attn_v_proj"),
    (TensorKind::CrossAttnO, "blk.{bid}.cross_attn_o_proj"),
    (TensorKind::CrossAttnQNorm, "blk.{bid}.cross_attn_q_norm"),
    (TensorKind::CrossAttnKNorm, "blk.{bid}.cross_attn_k_norm"),
    (
        TensorKind::CrossAttnAttnGate,
        "blk.{bid}.cross_attn_attn_gate",
    ),
    (
        TensorKind::CrossAttnMlpGate,
        "blk.{bid}.cross_attn_mlp_gate",
    ),
    (TensorKind::VisPatchEmbd, "v.patch_embd"),
    (TensorKind::VisClassEmbd, "v.class_embd"),
    (TensorKind::VisPositionEmbd, "v.position_embd"),
    (TensorKind::VisTilePositionEmbd, "v.tile_position_embd"),
    (
        TensorKind::VisPreTilePositionEmbd,
        "v.pre_tile_position_embd",
    ),
    (
        TensorKind::VisPostTilePositionEmbd,
        "v.post_tile_position_embd",
    ),
    (TensorKind::VisPreLn, "v.pre_ln"),
    (TensorKind::VisPostLn, "v.post_ln"),
    (TensorKind::VisBlkAttnNorm, "v.blk.{bid}.attn_norm"),
    (TensorKind::VisBlkAttnQ, "v.blk.{bid}.attn_q"),
    (TensorKind::VisBlkAttnK, "v.blk.{bid}.attn_k"),
    (TensorKind::VisBlkAttnV, "v.blk.{bid}.attn_v"),
    (TensorKind::VisBlkAttnOutput, "v.blk.{bid}.attn_output"),
    (TensorKind::VisBlkFfnNorm, "v.blk.{bid}.ffn_norm"),
    (TensorKind::VisBlkFfnUp, "v.blk.{bid}.ffn_up"),
    (TensorKind::VisBlkFfnDown, "v.blk.{bid}.ffn_down"),
    (
        TensorKind::VisGlobalBlkAttnNorm,
        "v.global.blk.{bid}.attn_norm",
    ),
    (TensorKind::VisGlobalBlkAttnQ, "v.global.blk.{bid}.attn_q"),
    (TensorKind::VisGlobalBlkAttnK, "v.global.blk.{bid}.attn_k"),
    (TensorKind::VisGlobalBlkAttnV, "v.global.blk.{bid}.attn_v"),
    (
        TensorKind::VisGlobalBlkAttnOutput,
        "v.global.blk.{bid}.attn_output",
    ),
    (
        TensorKind::VisGlobalBlkFfnNorm,
        "v.global.blk.{bid}.ffn_norm",
    ),
    (TensorKind::VisGlobalBlkFfnUp, "v.global.blk.{bid}.ffn_up"),
    (
        TensorKind::VisGlobalBlkFfnDown,
        "v.global.blk.{bid}.ffn_down",
    ),
    (
        TensorKind::VisGlobalBlkAttnGate,
        "v.global.blk.{bid}.attn_gate",
    ),
    (
        TensorKind::VisGlobalBlkFfnGate,
        "v.global.blk.{bid}.ffn_gate",
    ),
    (TensorKind::Projector, "mm.0"),
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

    #[test]
    fn every_kind_round_trips_with_every_suffix() {
        // `parse` takes the first row that matches: no row may capture the
        // names of a later one (`blk.{bid}.attn_q` must leave
        // `v.blk.0.attn_q`, and `v.blk.{bid}` `v.global.blk.0`).
        for &(kind, _) in TABLE {
            for suffix in ["weight", "bias", "gate", ""] {
                for bid in [0, 4, 99] {
                    let n = kind.name(bid, suffix);
                    let want_bid = if kind.per_block() { bid } else { 0 };
                    assert_eq!(TensorKind::parse(&n), Some((kind, want_bid, suffix)), "{n}");
                }
            }
        }
        let mut stems: Vec<&str> = TABLE.iter().map(|(_, s)| *s).collect();
        stems.sort_unstable();
        stems.dedup();
        assert_eq!(stems.len(), TABLE.len(), "two kinds share a stem");
    }

    #[test]
    fn mllama_names() {
        let p = TensorKind::parse;
        assert_eq!(
            p("v.blk.0.attn_q.weight"),
            Some((TensorKind::VisBlkAttnQ, 0, "weight"))
        );
        assert_eq!(
            p("v.global.blk.0.attn_q.weight"),
            Some((TensorKind::VisGlobalBlkAttnQ, 0, "weight"))
        );
        assert_eq!(
            p("v.global.blk.7.ffn_gate"),
            Some((TensorKind::VisGlobalBlkFfnGate, 7, ""))
        );
        assert_eq!(
            p("blk.3.ffn_gate.weight"),
            Some((TensorKind::FfnGate, 3, "weight"))
        );
        assert_eq!(
            p("blk.3.cross_attn_attn_gate"),
            Some((TensorKind::CrossAttnAttnGate, 3, ""))
        );
        assert_eq!(
            p("blk.3.cross_attn_q_proj.weight"),
            Some((TensorKind::CrossAttnQ, 3, "weight"))
        );
        assert_eq!(
            p("v.tile_position_embd.gate"),
            Some((TensorKind::VisTilePositionEmbd, 0, "gate"))
        );
        assert_eq!(
            p("v.pre_tile_position_embd.weight"),
            Some((TensorKind::VisPreTilePositionEmbd, 0, "weight"))
        );
        assert_eq!(p("v.class_embd"), Some((TensorKind::VisClassEmbd, 0, "")));
        assert_eq!(p("mm.0.bias"), Some((TensorKind::Projector, 0, "bias")));
        assert_eq!(
            TensorKind::CrossAttnMlpGate.name(8, ""),
            "blk.8.cross_attn_mlp_gate"
        );
        assert_eq!(p("v.blk.0.attn_qkv.weight"), None);
        assert_eq!(p("v.global.attn_q.weight"), None);
        assert_eq!(p("v.blk.x.attn_q.weight"), None);
        assert_eq!(p("mm.1.weight"), None);
    }
}
