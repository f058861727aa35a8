#!/usr/bin/env python3
"""Writes a tiny random-weight model shaped like Llama Guard 3 1B as GGUF.

    python3 scripts/make-tiny-guard.py OUTDIR [--tokenizer PATH]

Pinned: numpy==2.4.6, gguf==0.19.0 (as scripts/make-tiny-models.py, whose
vocabulary writer and RoPE factors this reuses). The file is bit-reproducible
with these versions; its sha256 is checked below and recorded in the guard
goldens (crates/engine/tests/golden/guard/), which
scripts/golden/guard_goldens.py made with transformers on the same weights.

What makes it Guard-shaped, and where it differs from Llama 3.2 1B:
- an untied output matrix (`output.weight`), as Llama Guard 3 1B has;
- llama3 RoPE scaling with factor 8 (Llama 3.2 1B has 32), as `rope_freqs.weight`;
- the real Llama Guard 3 1B chat template in `tokenizer.chat_template`
  (crates/engine/tests/golden/guard/llama-guard-3-1b.jinja); EOS 128009.

The weights are random, but not all alike: every token embedding carries a
shared component on dimension 0 and the output rows of the tokens a guard
writes (`safe`, `unsafe`, newlines, `S`, the category numbers) read it, so
those tokens take most of the probability and the scores being compared are
of order 0.1, not 1e-5 (differences of 1e-4 then mean something).

Sizes: n_embd 64, n_ff 192, 4 heads over 2 KV heads of 16, 2 layers, vocab
128256, all F32 (~66 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEMPLATE = ROOT / "crates/engine/tests/golden/guard/llama-guard-3-1b.jinja"

_spec = importlib.util.spec_from_file_location("make_tiny_models", HERE / "make-tiny-models.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
gguf = tiny.gguf

SEED = 0x6A4D
N_VOCAB = tiny.N_VOCAB
N_EMBD = 64
N_FF = 192
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 16
N_LAYER = 2
N_CTX_TRAIN = 131072
ROPE_THETA = 500000.0
RMS_EPS = 1e-5
BOS_ID = 128000
EOS_ID = 128009
ROPE_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
# Tokens of a guard's reply (ids in Llama 3's vocabulary).
NL2, NL, SAFE, UNSAFE, S_, EOT = 271, 198, 19193, 39257, 50, 128009
DIGITS = list(range(16, 25)) + [605, 806, 717, 1032, 975]  # "1".."9", "10".."14"
# Dimension 0 of every embedding holds SHARED; dimensions 1..6 mark the
# current token: "\n\n", "unsafe", "safe", "\n", "S", a category number.
# The blocks write nothing there, so the final norm sees them as they are.
SHARED = 0.5
MARK = 0.5
MARKED = [[NL2], [UNSAFE], [SAFE], [NL], [S_], DIGITS]
GAIN = 45.0  # how strongly the output rows below read dimensions 0..6

FILE = "tiny-llama-guard.gguf"
EXPECTED_SHA256 = "cb51ef365918e0f90350db96cc3ecfabb375ebc282ef8ca713b1e689848f2e43"


def make_weights() -> list[tuple[str, np.ndarray]]:
    """All tensors in GGUF order and layout (numpy shape = reversed ggml ne);
    q/k rows in GGUF's rotary order (convert_hf_to_gguf.py permutes them)."""
    rng = np.random.default_rng(SEED)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def norm_weight() -> np.ndarray:
        return (np.float32(1.0) + normal((N_EMBD,), 0.1)).astype(np.float32)

    embd = normal((N_VOCAB, N_EMBD), 0.02)
    embd[:, : 1 + len(MARKED)] = 0.0
    embd[:, 0] = np.float32(SHARED)
    for k, ids in enumerate(MARKED, start=1):
        embd[ids, k] = np.float32(MARK)
    # The output rows read the marks as a guard's reply grammar: "\n\n" at
    # the start, then "safe" or "unsafe" (the random rest of the rows and
    # the context decide which), "unsafe" -> "\n" -> "S" -> a number -> end,
    # "safe" -> end.
    output = normal((N_VOCAB, N_EMBD), 0.25)
    output[:, : 1 + len(MARKED)] = 0.0
    g = np.float32(GAIN)
    output[NL2, 0] = g
    output[NL2, 1 : 1 + len(MARKED)] = -g
    output[[SAFE, UNSAFE], 1] = g * (np.float32(1.0) + normal((2,), 0.05))
    output[NL, 2] = g
    output[EOT, 3] = g
    output[S_, 4] = g
    output[DIGITS, 5] = g * (np.float32(1.0) + normal((len(DIGITS),), 0.1))
    output[EOT, 6] = g
    out: list[tuple[str, np.ndarray]] = [
        ("rope_freqs.weight", tiny.rope_freqs(HEAD_DIM, ROPE_THETA, ROPE_SCALING)),
        ("token_embd.weight", embd.astype(np.float32)),
    ]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        # The blocks write nothing to dimension 0: it keeps the shared
        # component, which the final norm scales by the stream's size.
        attn_output = normal((N_EMBD, N_HEAD * HEAD_DIM), 0.1)
        attn_output[: 1 + len(MARKED), :] = 0.0
        out += [
            (p + "attn_norm.weight", norm_weight()),
            (p + "attn_q.weight", normal((N_HEAD * HEAD_DIM, N_EMBD), 0.2)),
            (p + "attn_k.weight", normal((N_HEAD_KV * HEAD_DIM, N_EMBD), 0.2)),
            (p + "attn_v.weight", normal((N_HEAD_KV * HEAD_DIM, N_EMBD), 0.15)),
            (p + "attn_output.weight", attn_output),
            (p + "ffn_norm.weight", norm_weight()),
            (p + "ffn_gate.weight", normal((N_FF, N_EMBD), 0.12)),
            (p + "ffn_up.weight", normal((N_FF, N_EMBD), 0.12)),
        ]
        ffn_down = normal((N_EMBD, N_FF), 0.08)
        ffn_down[: 1 + len(MARKED), :] = 0.0
        out.append((p + "ffn_down.weight", ffn_down))
    out.append(("output_norm.weight", norm_weight()))
    out.append(("output.weight", output.astype(np.float32)))
    return out


def write_model(path: Path, weights, vocab, template: str) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    tiny.add_llama_shape(w, "tiny-llama-guard (random weights)", N_LAYER, N_CTX_TRAIN, N_EMBD, N_FF, N_HEAD,
                         N_HEAD_KV, HEAD_DIM, gguf.LlamaFileType.ALL_F32, ROPE_THETA, RMS_EPS)
    tiny.add_vocab(w, vocab, BOS_ID, EOS_ID, None)
    w.add_chat_template(template)
    for name, data in weights:
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--tokenizer", type=Path, help="llama3.2-tokenizer.json (default: OUTDIR/llama3.2-tokenizer.json)")
    args = ap.parse_args()
    tok_path = args.tokenizer or args.outdir / "llama3.2-tokenizer.json"
    if not tok_path.is_file():
        sys.exit(f"{tok_path} is missing: run scripts/fetch-testdata.sh")
    args.outdir.mkdir(parents=True, exist_ok=True)
    path = args.outdir / FILE
    tmp = path.with_suffix(".gguf.part")
    write_model(tmp, make_weights(), tiny.load_vocab(tok_path), TEMPLATE.read_text(encoding="utf-8"))
    tmp.replace(path)
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"{h}  {FILE}")
    if h != EXPECTED_SHA256:
        sys.exit(f"{FILE}: sha256 differs from EXPECTED_SHA256 (other numpy/gguf versions, or the script changed)")


if __name__ == "__main__":
    main()
