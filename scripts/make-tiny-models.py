#!/usr/bin/env python3
"""Writes tiny random-weight models shaped like Llama 3.2 as GGUF files.

    python3 scripts/make-tiny-models.py OUTDIR [--tokenizer PATH]

Pinned: numpy==2.4.6, gguf==0.19.0 (gguf-py). The output is bit-reproducible
with these versions: weights come from numpy.random.default_rng(SEED) and every
file's sha256 is recorded in the forward-pass goldens
(crates/models/tests/golden/). scripts/fetch-testdata.sh runs this into the
test-data directory.

The vocabulary is Meta's Llama 3.2 tokenizer (`llama3.2-tokenizer.json` from the
test data; default OUTDIR/llama3.2-tokenizer.json) written the way
llama.cpp's convert_hf_to_gguf.py writes a Llama 3 model: gpt2 BPE, pre-tokenizer
`llama-bpe`, the 256 added special tokens typed CONTROL, BOS 128000,
EOS 128009 (<|eot_id|>, as in the Instruct models), add_bos true. Only the
128,256 ids of the text models are kept (the tokenizer file also has
<|image|>=128256 for the vision models).

Shape features exercised: tied embeddings (no output.weight), grouped-query
attention (8 query heads over 2 KV heads, head_dim 32), llama3 RoPE scaling as
a `rope_freqs.weight` tensor (convert_hf_to_gguf.py writes no
`llama.rope.scaling.*` keys for rope_type llama3, so neither does this script),
rope theta 500000, rms eps 1e-5, context length 131072. With head_dim 32 the
16 frequency factors are 1 (x8), 3.2922628 (the smoothed band), 32 (x7), so
all three branches of the llama3 formula are used. Sizes: n_embd 256,
n_ff 768, 2 layers, vocab 128256; every row length is a multiple of 256 as
Q4_K needs.

Files (all share the same F32 master weights; ~145, 44 and 27 MB):
    tiny-llama32-f32.gguf   every tensor F32
    tiny-llama32-q8_0.gguf  2-D weights Q8_0 (gguf-py's quantizer), norms F32
    tiny-llama32-q4_k.gguf  2-D weights Q4_K (packer below), norms F32
token_embd.weight is 2-D too, so in the quantized files the embedding lookup
and the tied output projection both read quantized rows.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import sys
from pathlib import Path

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QT
    from gguf import quants
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("gguf-py is missing: pip install gguf==0.19.0 numpy==2.4.6")

SEED = 0x11A3A32

N_VOCAB = 128256
N_EMBD = 256
N_FF = 768
N_HEAD = 8
N_HEAD_KV = 2
HEAD_DIM = 32
N_LAYER = 2
N_CTX_TRAIN = 131072
ROPE_THETA = 500000.0
RMS_EPS = 1e-5
BOS_ID = 128000
EOS_ID = 128009
PAD_ID = 128004

# What the pinned numpy/gguf versions produce; the goldens were made from these
# files. Changing anything above changes them: regenerate the goldens too
# (scripts/golden/make_forward_goldens.sh) and update this table.
EXPECTED_SHA256 = {
    "tiny-llama32-f32.gguf": "cd1195a1c5b537198bebfe59a8afc4840a48e7725daaa2a2b833590e3c5d718b",
    "tiny-llama32-q8_0.gguf": "144f37dc2f405df671c394933075df12d85782829d3135913f953ad3ea369d60",
    "tiny-llama32-q4_k.gguf": "fc01637c3a7af9b9540cb95ee9e3f6edf99404f0960b10c87ad45d75263ca7ac",
}

# Llama 3.2's rope_scaling block in config.json.
ROPE_SCALING = {
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}

# Standard deviations of the random weights, chosen so that greedy decoding
# is a meaningful comparison:
# - the blocks' outputs (rms ~1) dwarf the token embedding (rms ~0.003) in the
#   residual stream; with tied embeddings a large input embedding makes the
#   model predict its own input token forever;
# - each embedding row gets a log-normal scale, so the logits have a heavier
#   upper tail than a plain Gaussian and the top-1/top-2 gap is usually wide
#   (median ~9% of the top logit) instead of the ~1% a Gaussian gives over
#   128k tokens;
# - query/key weights give attention scores a spread of ~2, so heads attend
#   selectively and the continuation depends on the context (smoother attention
#   made the text repeat much more);
# - the output norm gain puts the top logits around 15-25, like a real model.
STD_EMBD = 0.003
EMBD_ROW_LOG_STD = 0.5
STD_QK = 0.09
STD_V = 0.0625
STD_O = 0.10
STD_GATE_UP = 0.0625
STD_DOWN = 0.06
NORM_JITTER = 0.1
OUTPUT_NORM_GAIN = 20.0


def rope_freqs(head_dim: int, theta: float = ROPE_THETA, scaling: dict | None = None) -> np.ndarray:
    """llama3 RoPE frequency factors, ported from convert_hf_to_gguf.py
    (LlamaModel.generate_extra_tensors), float32 arithmetic as torch does there."""
    scaling = scaling or ROPE_SCALING
    base = np.float32(theta)
    exps = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    freqs = np.float32(1.0) / np.power(base, exps, dtype=np.float32)

    factor = scaling["factor"]
    low_freq_factor = scaling["low_freq_factor"]
    high_freq_factor = scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor

    out = []
    for freq in freqs:
        wavelen = np.float32(2 * math.pi) / freq
        if wavelen < high_freq_wavelen:
            out.append(np.float32(1.0))
        elif wavelen > low_freq_wavelen:
            out.append(np.float32(factor))
        else:
            smooth = (np.float32(old_context_len) / wavelen - np.float32(low_freq_factor)) / np.float32(
                high_freq_factor - low_freq_factor
            )
            out.append(np.float32(1.0) / ((np.float32(1.0) - smooth) / np.float32(factor) + smooth))
    return np.array(out, dtype=np.float32)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Packs rows of float32 into block_q4_K (ggml-common.h):
        ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qs[128];
    per 256 values, x ~= d*sc[j]*q - dmin*m[j] for 8 sub-blocks of 32, with 6-bit
    sc/m and 4-bit q. A plain min/max fit, not llama.cpp's search: the blocks
    only need to be valid, the models consume what is written.
    Returns uint8 of shape (rows, row_bytes)."""
    rows, cols = x.shape
    if cols % gguf.QK_K != 0:
        raise ValueError(f"Q4_K needs rows of a multiple of {gguf.QK_K}, got {cols}")
    nb = rows * cols // gguf.QK_K
    sub = x.astype(np.float32).reshape(nb, 8, 32)

    lo = np.minimum(sub.min(axis=-1), 0.0)
    hi = sub.max(axis=-1)
    scale = (hi - lo) / 15.0
    mins = -lo

    d = (scale.max(axis=-1) / 63.0).astype(np.float16)
    dmin = (mins.max(axis=-1) / 63.0).astype(np.float16)
    d32 = d.astype(np.float32)[:, None]
    dmin32 = dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.rint(scale / d32), 0.0)
        m = np.where(dmin32 > 0, np.rint(mins / dmin32), 0.0)
    sc = np.clip(sc, 0, 63).astype(np.uint8)
    m = np.clip(m, 0, 63).astype(np.uint8)

    eff_s = (d32 * sc.astype(np.float32))[:, :, None]
    eff_m = (dmin32 * m.astype(np.float32))[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(eff_s > 0, np.rint((sub + eff_m) / eff_s), 0.0)
    q = np.clip(q, 0, 15).astype(np.uint8).reshape(nb, 4, 2, 32)

    # Scale packing mirrors get_scale_min_k4: sub-blocks 0-3 keep 6 bits in
    # bytes 0-7; 4-7 keep their low nibbles in bytes 8-11 and their top two
    # bits in the top of bytes 0-7.
    scales = np.empty((nb, 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)

    # Each 64 values share 32 bytes: low nibbles hold the first 32, high the next.
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)

    blocks = np.concatenate(
        [d.reshape(nb, 1).view(np.uint8), dmin.reshape(nb, 1).view(np.uint8), scales, qs], axis=1
    )
    return blocks.reshape(rows, -1)


def check_q4_k(x: np.ndarray, packed: np.ndarray) -> float:
    """dequant(pack(x)) through gguf-py's own Q4_K reader; returns the worst
    error relative to the value range of a 32-value sub-block."""
    back = quants.dequantize(packed, QT.Q4_K).reshape(x.shape)
    sub = x.reshape(-1, 32)
    rng = np.maximum(sub.max(axis=1), 0) - np.minimum(sub.min(axis=1), 0)
    err = np.abs(back.reshape(-1, 32) - sub).max(axis=1)
    return float((err / np.maximum(rng, 1e-30)).max())


def load_vocab(path: Path) -> tuple[list[str], list[int], list[str]]:
    with path.open(encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{path}: expected a BPE tokenizer")
    id_to_tok: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    special: set[int] = set()
    for added in tok["added_tokens"]:
        id_to_tok[added["id"]] = added["content"]
        if added["special"]:
            special.add(added["id"])
    tokens: list[str] = []
    types: list[int] = []
    for i in range(N_VOCAB):
        if i not in id_to_tok:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(id_to_tok[i])
        types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def make_weights() -> list[tuple[str, np.ndarray]]:
    """All tensors in GGUF order, numpy shapes = reversed ggml ne."""
    rng = np.random.default_rng(SEED)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def norm_weight(gain: float = 1.0) -> np.ndarray:
        return (np.float32(gain) * (np.float32(1.0) + normal((N_EMBD,), NORM_JITTER))).astype(np.float32)

    def token_embd() -> np.ndarray:
        rows = normal((N_VOCAB, N_EMBD), STD_EMBD)
        row_scale = np.exp(normal((N_VOCAB, 1), EMBD_ROW_LOG_STD))
        return (rows * row_scale).astype(np.float32)

    out: list[tuple[str, np.ndarray]] = [
        ("rope_freqs.weight", rope_freqs(HEAD_DIM)),  # [head_dim/2]
        ("token_embd.weight", token_embd()),  # [n_embd, n_vocab] in ggml order
    ]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", norm_weight()),
            (p + "attn_q.weight", normal((N_HEAD * HEAD_DIM, N_EMBD), STD_QK)),
            (p + "attn_k.weight", normal((N_HEAD_KV * HEAD_DIM, N_EMBD), STD_QK)),
            (p + "attn_v.weight", normal((N_HEAD_KV * HEAD_DIM, N_EMBD), STD_V)),
            (p + "attn_output.weight", normal((N_EMBD, N_HEAD * HEAD_DIM), STD_O)),
            (p + "ffn_norm.weight", norm_weight()),
            (p + "ffn_gate.weight", normal((N_FF, N_EMBD), STD_GATE_UP)),
            (p + "ffn_up.weight", normal((N_FF, N_EMBD), STD_GATE_UP)),
            (p + "ffn_down.weight", normal((N_EMBD, N_FF), STD_DOWN)),
        ]
    out.append(("output_norm.weight", norm_weight(OUTPUT_NORM_GAIN)))
    return out


def add_llama_shape(w, name, n_layer, n_ctx, n_embd, n_ff, n_head, n_head_kv, head_dim, file_type,
                    rope_theta=ROPE_THETA, rms_eps=RMS_EPS, n_vocab=N_VOCAB) -> None:
    """A Llama model's hyperparameters, in convert_hf_to_gguf.py's order
    (shared with scripts/make-tiny-guard.py and bench/make-shaped-models.py)."""
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_block_count(n_layer)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_file_type(file_type)
    w.add_vocab_size(n_vocab)
    w.add_rope_dimension_count(head_dim)


def add_vocab(w, vocab, bos: int, eos: int, pad: int | None) -> None:
    """Meta's Llama 3 vocabulary as convert_hf_to_gguf.py writes it."""
    tokens, types, merges = vocab
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    if pad is not None:
        w.add_pad_token_id(pad)
    w.add_add_bos_token(True)


def write_model(
    path: Path,
    name: str,
    weights: list[tuple[str, np.ndarray]],
    vocab: tuple[list[str], list[int], list[str]],
    qtype: QT | None,
) -> None:
    if qtype is None:
        file_type = gguf.LlamaFileType.ALL_F32
    elif qtype == QT.Q8_0:
        file_type = gguf.LlamaFileType.MOSTLY_Q8_0
    else:
        file_type = gguf.LlamaFileType.MOSTLY_Q4_K_S
    w = gguf.GGUFWriter(str(path), "llama")
    add_llama_shape(w, name, N_LAYER, N_CTX_TRAIN, N_EMBD, N_FF, N_HEAD, N_HEAD_KV, HEAD_DIM, file_type)
    add_vocab(w, vocab, BOS_ID, EOS_ID, PAD_ID)
    if qtype is not None:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    for tname, data in weights:
        if qtype is None or data.ndim == 1:
            w.add_tensor(tname, data)
        elif qtype == QT.Q8_0:
            w.add_tensor(tname, quants.quantize(data, QT.Q8_0), raw_dtype=QT.Q8_0)
        else:
            packed = quantize_q4_k(data)
            worst = check_q4_k(data, packed)
            # 4-bit codes over a sub-block's range leave at most half a step
            # (1/30 of the range) plus 6-bit scale rounding; far more means a
            # packing bug.
            if worst > 0.08:
                raise RuntimeError(f"{tname}: Q4_K round trip error {worst:.3f} of the range")
            w.add_tensor(tname, packed, raw_dtype=QT.Q4_K)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--tokenizer", type=Path, help="llama3.2-tokenizer.json (default: OUTDIR/llama3.2-tokenizer.json)")
    args = ap.parse_args()

    gguf_version = importlib.metadata.version("gguf")
    if np.__version__ != "2.4.6" or gguf_version != "0.19.0":
        print(
            f"warning: pinned numpy==2.4.6 gguf==0.19.0, found numpy=={np.__version__} "
            f"gguf=={gguf_version}; the files may not match the recorded sha256",
            file=sys.stderr,
        )

    tok_path = args.tokenizer or args.outdir / "llama3.2-tokenizer.json"
    if not tok_path.is_file():
        sys.exit(f"{tok_path} is missing: run scripts/fetch-testdata.sh")
    args.outdir.mkdir(parents=True, exist_ok=True)

    vocab = load_vocab(tok_path)
    weights = make_weights()
    mismatched = []
    for fname, name, qtype in [
        ("tiny-llama32-f32.gguf", "tiny-llama32 F32 (random weights)", None),
        ("tiny-llama32-q8_0.gguf", "tiny-llama32 Q8_0 (random weights)", QT.Q8_0),
        ("tiny-llama32-q4_k.gguf", "tiny-llama32 Q4_K (random weights)", QT.Q4_K),
    ]:
        path = args.outdir / fname
        tmp = path.with_suffix(".gguf.part")
        write_model(tmp, name, weights, vocab, qtype)
        tmp.replace(path)
        digest = sha256(path)
        print(f"{digest}  {fname}")
        if digest != EXPECTED_SHA256[fname]:
            mismatched.append(fname)
    if mismatched:
        sys.exit(
            f"{', '.join(mismatched)}: sha256 differs from EXPECTED_SHA256, so the goldens do not "
            "describe these files (other numpy/gguf versions, or the script changed)"
        )


if __name__ == "__main__":
    main()
