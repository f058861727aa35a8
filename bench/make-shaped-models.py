#!/usr/bin/env python3
"""Writes random-weight F16 models with the exact shapes of Llama 3.2 1B and 3B
(and of Llama Guard 3 1B).

    python3 bench/make-shaped-models.py OUTDIR [--size 1b|3b|guard1b|all] [--tokenizer PATH]

Pinned: numpy==2.4.6, gguf==0.19.0 (gguf-py). Output:
    llama32-1b-shaped-f16.gguf   ~2.5 GB
    llama32-3b-shaped-f16.gguf   ~6.4 GB
    llama-guard3-1b-shaped-f16.gguf  ~3.0 GB (--size guard1b: untied output, RoPE factor 8,
                                 Llama Guard 3 1B's chat template; not part of "all")
Quantized variants are made from these with llama-quantize (bench/run.sh does).

Speed depends only on the shapes, so these stand in for Meta's weights in
benchmarks; their output is meaningless. Shapes (config.json of
meta-llama/Llama-3.2-1B and -3B):

            layers  n_embd  heads/kv  head_dim  n_ff  vocab
    1B      16      2048    32/8      64        8192  128256
    3B      28      3072    24/8      128       8192  128256

Like the real models: tied embeddings (no output.weight, so the output
projection reads all of token_embd.weight), llama3 RoPE scaling as a
`rope_freqs.weight` tensor, rope theta 500000, rms eps 1e-5, context 131072,
Meta's Llama 3.2 vocabulary (`llama3.2-tokenizer.json` from the test data,
default OUTDIR/llama3.2-tokenizer.json). The tensor layout and metadata are
what convert_hf_to_gguf.py writes for an F16 conversion: 2-D weights F16,
norms and rope_freqs F32. Vocabulary and rope_freqs code are shared with
scripts/make-tiny-models.py.

Each tensor is generated in row chunks and written as soon as it is complete,
so memory stays near the size of the largest tensor (token_embd, 0.8 GB
for the 3B) instead of the whole model.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("gguf-py is missing: pip install gguf==0.19.0 numpy==2.4.6")

ROOT = Path(__file__).resolve().parent.parent


def _load_tiny() -> object:
    # The file name has a dash, so it cannot be imported by name.
    path = ROOT / "scripts" / "make-tiny-models.py"
    spec = importlib.util.spec_from_file_location("make_tiny_models", path)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tiny = _load_tiny()

SEED = 0x32B3A32
N_VOCAB = 128256
N_CTX_TRAIN = 131072
ROPE_THETA = 500000.0
RMS_EPS = 1e-5
BOS_ID = 128000
EOS_ID = 128009
PAD_ID = 128004
# Rows generated at once: bounds the float32 scratch to ~100 MB.
CHUNK_VALUES = 1 << 25


@dataclass(frozen=True)
class Shape:
    key: str
    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    # Llama Guard 3 1B: the 1B with an output matrix of its own, RoPE factor 8
    # (Llama 3.1's), and its chat template.
    untied: bool = False
    rope_factor: float = 32.0
    template: Path | None = None
    file: str = ""


GUARD_TEMPLATE = ROOT / "crates" / "engine" / "tests" / "golden" / "guard" / "llama-guard-3-1b.jinja"
SHAPES = {
    "1b": Shape("1b", "Llama-3.2-1B-shaped (random weights)", 16, 2048, 32, 8, 64, 8192,
                file="llama32-1b-shaped-f16.gguf"),
    "3b": Shape("3b", "Llama-3.2-3B-shaped (random weights)", 28, 3072, 24, 8, 128, 8192,
                file="llama32-3b-shaped-f16.gguf"),
    "guard1b": Shape("guard1b", "Llama-Guard-3-1B-shaped (random weights)", 16, 2048, 32, 8, 64, 8192,
                     untied=True, rope_factor=8.0, template=GUARD_TEMPLATE,
                     file="llama-guard3-1b-shaped-f16.gguf"),
}


def tensor_plan(s: Shape) -> list[tuple[str, tuple[int, ...], float]]:
    """(name, numpy shape = reversed ggml ne, std) in convert_hf_to_gguf.py's
    order. std 0 marks a norm (ones plus jitter, F32); the rest are F16 and
    scaled by 1/sqrt(fan_in) so activations stay finite through the layers
    (the values do not matter for speed, NaNs or infinities might)."""
    q = s.n_head * s.head_dim
    kv = s.n_head_kv * s.head_dim
    plan: list[tuple[str, tuple[int, ...], float]] = [
        ("token_embd.weight", (N_VOCAB, s.n_embd), 0.02),  # [n_embd, n_vocab]
    ]
    for i in range(s.n_layer):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (s.n_embd,), 0.0),
            (p + "attn_q.weight", (q, s.n_embd), s.n_embd**-0.5),  # [n_embd, n_head*head_dim]
            (p + "attn_k.weight", (kv, s.n_embd), s.n_embd**-0.5),  # [n_embd, n_head_kv*head_dim]
            (p + "attn_v.weight", (kv, s.n_embd), s.n_embd**-0.5),  # [n_embd, n_head_kv*head_dim]
            (p + "attn_output.weight", (s.n_embd, q), q**-0.5),  # [n_head*head_dim, n_embd]
            (p + "ffn_norm.weight", (s.n_embd,), 0.0),
            (p + "ffn_gate.weight", (s.n_ff, s.n_embd), s.n_embd**-0.5),  # [n_embd, n_ff]
            (p + "ffn_up.weight", (s.n_ff, s.n_embd), s.n_embd**-0.5),  # [n_embd, n_ff]
            (p + "ffn_down.weight", (s.n_embd, s.n_ff), s.n_ff**-0.5),  # [n_ff, n_embd]
        ]
    plan.append(("output_norm.weight", (s.n_embd,), 0.0))
    if s.untied:
        plan.append(("output.weight", (N_VOCAB, s.n_embd), s.n_embd**-0.5))  # [n_embd, n_vocab]
    return plan


def random_tensor(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    if std == 0.0:
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    rows, cols = shape
    out = np.empty(shape, dtype=np.float16)
    step = max(1, CHUNK_VALUES // cols)
    for r in range(0, rows, step):
        chunk = rng.standard_normal((min(step, rows - r), cols), dtype=np.float32)
        chunk *= np.float32(std)
        out[r : r + chunk.shape[0]] = chunk
    return out


def write_model(path: Path, s: Shape, vocab: tuple[list[str], list[int], list[str]]) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    tiny.add_llama_shape(w, s.name, s.n_layer, N_CTX_TRAIN, s.n_embd, s.n_ff, s.n_head, s.n_head_kv, s.head_dim,
                         gguf.LlamaFileType.MOSTLY_F16, ROPE_THETA, RMS_EPS, N_VOCAB)
    tiny.add_vocab(w, vocab, BOS_ID, EOS_ID, PAD_ID)
    if s.template is not None:
        w.add_chat_template(s.template.read_text(encoding="utf-8"))

    scaling = dict(tiny.ROPE_SCALING, factor=s.rope_factor)
    freqs = tiny.rope_freqs(s.head_dim, ROPE_THETA, scaling)  # [head_dim/2]
    plan = tensor_plan(s)
    w.add_tensor_info("rope_freqs.weight", freqs.shape, freqs.dtype, freqs.nbytes)
    for name, shape, std in plan:
        dtype = np.dtype(np.float32 if std == 0.0 else np.float16)
        w.add_tensor_info(name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.write_tensor_data(freqs)
    rng = np.random.default_rng(SEED)
    for name, shape, std in plan:
        data = random_tensor(rng, shape, std)
        w.write_tensor_data(data)
        del data
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--size", choices=["1b", "3b", "guard1b", "all"], default="all")
    ap.add_argument("--tokenizer", type=Path, help="llama3.2-tokenizer.json (default: OUTDIR/llama3.2-tokenizer.json)")
    args = ap.parse_args()

    gguf_version = importlib.metadata.version("gguf")
    if np.__version__ != "2.4.6" or gguf_version != "0.19.0":
        print(
            f"warning: pinned numpy==2.4.6 gguf==0.19.0, found numpy=={np.__version__} gguf=={gguf_version}",
            file=sys.stderr,
        )

    tok_path = args.tokenizer or args.outdir / "llama3.2-tokenizer.json"
    if not tok_path.is_file():
        sys.exit(f"{tok_path} is missing: run scripts/fetch-testdata.sh")
    args.outdir.mkdir(parents=True, exist_ok=True)

    vocab = tiny.load_vocab(tok_path)
    if len(vocab[0]) != N_VOCAB:
        sys.exit(f"vocabulary has {len(vocab[0])} tokens, expected {N_VOCAB}")
    for key in ["1b", "3b"] if args.size == "all" else [args.size]:
        s = SHAPES[key]
        path = args.outdir / s.file
        tmp = path.with_suffix(".gguf.part")
        write_model(tmp, s, vocab)
        tmp.replace(path)
        print(f"{path} ({path.stat().st_size / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
