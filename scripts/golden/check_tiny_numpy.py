#!/usr/bin/env python3
"""Cross-checks the tiny F32 model's llama.cpp goldens with a plain float64
numpy Llama forward pass (not a golden itself: it shows the goldens mean what
they are taken to mean, and spells the semantics out in a few lines).

    python3 scripts/golden/check_tiny_numpy.py [--testdata DIR]

Pinned: numpy==2.4.6, gguf==0.19.0. Semantics as llama.cpp's llama graph:
RMS norm x / sqrt(mean(x^2) + eps) times the weight; RoPE in ggml's NORM mode
(adjacent pairs (2i, 2i+1)) with angle pos * theta^(-2i/head_dim) /
rope_freqs[i]; query head h reads KV head h // (n_head / n_head_kv); SwiGLU
FFN; logits from the output norm times token_embd (tied). Result on the
committed goldens: within 1.1e-5 of tiny-llama32-f32.fa-off-kv-f32.json, and
0.036 from tiny-llama32-f32.json (flash attention in F16).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "crates" / "models" / "tests" / "golden"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testdata", type=Path, default=ROOT / ".cache" / "testdata")
    args = ap.parse_args()
    path = args.testdata / "tiny-llama32-f32.gguf"
    if not path.is_file():
        sys.exit(f"{path} is missing: run scripts/fetch-testdata.sh")

    r = GGUFReader(str(path))
    kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.")}
    w = {t.name: np.array(t.data, dtype=np.float64) for t in r.tensors}
    n_layer = kv["llama.block_count"]
    n_head = kv["llama.attention.head_count"]
    n_kv = kv["llama.attention.head_count_kv"]
    hd = kv["llama.attention.key_length"]
    eps = kv["llama.attention.layer_norm_rms_epsilon"]
    base = kv["llama.rope.freq_base"]
    freq_factors = w["rope_freqs.weight"]

    def rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    def rope(x: np.ndarray, pos: np.ndarray) -> np.ndarray:  # x: [T, heads, hd]
        i = np.arange(hd // 2)
        theta = pos[:, None] * (base ** (-2.0 * i / hd))[None, :] / freq_factors[None, :]
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def last_logits(tokens: list[int]) -> np.ndarray:
        t = len(tokens)
        pos = np.arange(t, dtype=np.float64)
        x = w["token_embd.weight"][tokens]  # [T, n_embd]
        mask = np.triu(np.full((t, t), -np.inf), 1)
        for layer in range(n_layer):
            p = f"blk.{layer}."
            h = rms(x, w[p + "attn_norm.weight"])
            q = rope((h @ w[p + "attn_q.weight"].T).reshape(t, n_head, hd), pos)
            k = rope((h @ w[p + "attn_k.weight"].T).reshape(t, n_kv, hd), pos)
            v = (h @ w[p + "attn_v.weight"].T).reshape(t, n_kv, hd)
            o = np.zeros((t, n_head, hd))
            for head in range(n_head):
                kvh = head // (n_head // n_kv)
                s = q[:, head] @ k[:, kvh].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                o[:, head] = (s / s.sum(-1, keepdims=True)) @ v[:, kvh]
            x = x + o.reshape(t, -1) @ w[p + "attn_output.weight"].T
            h = rms(x, w[p + "ffn_norm.weight"])
            g = h @ w[p + "ffn_gate.weight"].T
            u = h @ w[p + "ffn_up.weight"].T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ w[p + "ffn_down.weight"].T
        return rms(x[-1], w["output_norm.weight"]) @ w["token_embd.weight"].T

    for name in ["tiny-llama32-f32.fa-off-kv-f32.json", "tiny-llama32-f32.json"]:
        g = json.loads((GOLDEN / name).read_text(encoding="utf-8"))
        worst = 0.0
        for case in g["cases"]:
            logits = last_logits(case["prompt_tokens"])
            ids = case["last_logits_top"] + case["last_logits_sample"]
            worst = max(worst, max(abs(logits[i] - v) for i, v in ids))
        print(f"{name}: largest |numpy - llama.cpp| over recorded logits {worst:.3g}")


if __name__ == "__main__":
    main()
