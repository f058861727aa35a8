#!/usr/bin/env python3
"""Writes tiny random-weight Hugging Face checkpoints shaped like Llama 3.2.

    python3 scripts/golden/convert/make_tiny_hf.py OUTDIR \
        [--tokenizer PATH] [--tokenizer-config PATH]

Pinned: numpy==2.4.6, safetensors==0.7.0 (no torch needed). The tokenizer is
Meta's Llama 3.2 tokenizer from the test data (.cache/testdata/
llama3.2-tokenizer.json and llama3.2-tokenizer_config.json, fetched by
scripts/fetch-testdata.sh); default: those two files under OUTDIR/..

Three checkpoints go to OUTDIR/<name>/, each a directory the way the hub
serves a Llama 3.2 model (config.json, tokenizer.json, tokenizer_config.json,
safetensors weights):

    tiny-llama32-tied-bf16   tied embeddings (no lm_head.weight), BF16 weights
                             in one model.safetensors, a generation_config.json
    tiny-llama32-untied-f16  an lm_head.weight, F16 weights sharded over
                             model-0000{1,2}-of-00002.safetensors with
                             model.safetensors.index.json
    tiny-llama32-tied-f32    tied, F32 weights in one model.safetensors

Shape: hidden 64, 4 query heads over 2 KV heads (GQA) of head_dim 16,
intermediate 192, 2 layers, vocab 128256, context 131072, rope_theta 500000,
rope_scaling llama3 (factor 32, low 1, high 4, original context 8192: with
head_dim 16 the 8 frequency factors use all three branches of the formula).

Tokenizer files: tokenizer.json is the test data's without the vision
models' `<|image|>` (id 128256), so that the 128,256 ids match vocab_size as
in the text models; tokenizer_config.json is the test data's with Llama 3.2
Instruct's chat template added (llama3.2-chat-template.jinja beside this
script, verbatim from llama.cpp's models/templates/
meta-llama-Llama-3.2-3B-Instruct.jinja) when it has none.

Weights are not drawn from numpy's generators but from a counter-based hash
(splitmix64), so that the Rust tests regenerate the same values without
Python (crates/convert/tests/common/mod.rs implements the same function):
tensor number t (in the order of TENSORS below) element j is

    z = mix64(SEED + t * 2^32 + (j + 1) * 0x9E3779B97F4A7C15)   (mod 2^64)
    u = float32(z >> 40) * 2^-24                                (in [0, 1))
    x = (u * 2 - 1) * scale + offset                            (float32 ops)

then rounded to the checkpoint's dtype (round to nearest even). Every
tensor's sha256 is written to OUTDIR/<name>.tensors.json; the goldens hold
those records, and the Rust tests check their regenerated tensors against them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

try:
    import safetensors
    import safetensors.numpy
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("safetensors is missing: pip install safetensors==0.7.0 numpy==2.4.6")

HERE = Path(__file__).resolve().parent
SEED = 0x3D5A_11A3
GAMMA = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1

N_VOCAB = 128256
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 16
N_FF = 192
N_LAYER = 2
IMAGE_TOKEN_ID = 128256

# (name, shape, scale, offset): uniform in [offset - scale, offset + scale).
TENSORS: list[tuple[str, tuple[int, ...], float, float]] = [
    ("model.embed_tokens.weight", (N_VOCAB, N_EMBD), 0.05, 0.0),
]
for _i in range(N_LAYER):
    _p = f"model.layers.{_i}."
    TENSORS += [
        (_p + "input_layernorm.weight", (N_EMBD,), 0.1, 1.0),
        (_p + "self_attn.q_proj.weight", (N_HEAD * HEAD_DIM, N_EMBD), 0.25, 0.0),
        (_p + "self_attn.k_proj.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD), 0.25, 0.0),
        (_p + "self_attn.v_proj.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD), 0.2, 0.0),
        (_p + "self_attn.o_proj.weight", (N_EMBD, N_HEAD * HEAD_DIM), 0.2, 0.0),
        (_p + "post_attention_layernorm.weight", (N_EMBD,), 0.1, 1.0),
        (_p + "mlp.gate_proj.weight", (N_FF, N_EMBD), 0.2, 0.0),
        (_p + "mlp.up_proj.weight", (N_FF, N_EMBD), 0.2, 0.0),
        (_p + "mlp.down_proj.weight", (N_EMBD, N_FF), 0.15, 0.0),
    ]
TENSORS += [
    ("model.norm.weight", (N_EMBD,), 2.0, 20.0),
    ("lm_head.weight", (N_VOCAB, N_EMBD), 0.05, 0.0),
]

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": HEAD_DIM,
    "hidden_act": "silu",
    "hidden_size": N_EMBD,
    "initializer_range": 0.02,
    "intermediate_size": N_FF,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": N_HEAD,
    "num_hidden_layers": N_LAYER,
    "num_key_value_heads": N_HEAD_KV,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": N_VOCAB,
}

GENERATION_CONFIG = {
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": [128001, 128008, 128009],
    "temperature": 0.6,
    "top_p": 0.9,
    "transformers_version": "4.45.0.dev0",
}

# name -> (dtype, tied, shards, generation config)
VARIANTS = {
    "tiny-llama32-tied-bf16": ("BF16", True, 1, True),
    "tiny-llama32-untied-f16": ("F16", False, 2, False),
    "tiny-llama32-tied-f32": ("F32", True, 1, False),
}


def mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def tensor_values(index: int, shape: tuple[int, ...], scale: float, offset: float) -> np.ndarray:
    n = int(np.prod(shape))
    base = (SEED + index * (1 << 32)) & MASK
    j = np.arange(1, n + 1, dtype=np.uint64)
    z = mix64(np.uint64(base) + j * np.uint64(GAMMA))
    u = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    x = (u * np.float32(2.0) - np.float32(1.0)) * np.float32(scale) + np.float32(offset)
    return x.astype(np.float32).reshape(shape)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (no NaNs here)."""
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def encode(x: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        return to_bf16_bits(x).astype("<u2").tobytes()
    raise ValueError(dtype)


def write_shard(path: Path, tensors: dict[str, tuple[tuple[int, ...], bytes]], dtype: str) -> None:
    meta = {"format": "pt"}
    if dtype == "BF16":
        # safetensors.numpy has no bfloat16: hand the raw bits to the serializer.
        safetensors.serialize_file(
            {name: {"dtype": "bfloat16", "shape": list(shape), "data": data} for name, (shape, data) in tensors.items()},
            str(path),
            metadata=meta,
        )
    else:
        np_dtype = {"F32": "<f4", "F16": "<f2"}[dtype]
        arrays = {name: np.frombuffer(data, dtype=np_dtype).reshape(shape) for name, (shape, data) in tensors.items()}
        safetensors.numpy.save_file(arrays, str(path), metadata=meta)


def tokenizer_files(tokenizer: Path, tokenizer_config: Path) -> tuple[str, str]:
    tok = json.loads(tokenizer.read_text(encoding="utf-8"))
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] != IMAGE_TOKEN_ID]
    tok["model"]["vocab"] = {k: v for k, v in tok["model"]["vocab"].items() if v != IMAGE_TOKEN_ID}
    cfg = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    cfg.get("added_tokens_decoder", {}).pop(str(IMAGE_TOKEN_ID), None)
    if "chat_template" not in cfg:
        cfg["chat_template"] = (HERE / "llama3.2-chat-template.jinja").read_text(encoding="utf-8")
    return (
        json.dumps(tok, ensure_ascii=False, indent=2) + "\n",
        json.dumps(cfg, ensure_ascii=False, indent=2) + "\n",
    )


def write_variant(out: Path, name: str, tok_json: str, tok_cfg: str) -> dict:
    dtype, tied, shards, gen = VARIANTS[name]
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    config = dict(CONFIG)
    config["tie_word_embeddings"] = tied
    config["torch_dtype"] = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype]
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if gen:
        (d / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n", encoding="utf-8")
    (d / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    (d / "tokenizer_config.json").write_text(tok_cfg, encoding="utf-8")

    tensors: dict[str, tuple[tuple[int, ...], bytes]] = {}
    record = []
    for index, (tname, shape, scale, offset) in enumerate(TENSORS):
        if tied and tname == "lm_head.weight":
            continue
        data = encode(tensor_values(index, shape, scale, offset), dtype)
        tensors[tname] = (shape, data)
        record.append({"name": tname, "dtype": dtype, "shape": list(shape), "sha256": hashlib.sha256(data).hexdigest()})

    if shards == 1:
        write_shard(d / "model.safetensors", tensors, dtype)
    else:
        # First shard: the embedding and the first layer; second: the rest.
        first = {k: v for k, v in tensors.items() if k == "model.embed_tokens.weight" or k.startswith("model.layers.0.")}
        rest = {k: v for k, v in tensors.items() if k not in first}
        files = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in (1, 2)]
        write_shard(d / files[0], first, dtype)
        write_shard(d / files[1], rest, dtype)
        weight_map = {k: files[0] for k in first} | {k: files[1] for k in rest}
        index = {
            "metadata": {"total_size": sum(len(v[1]) for v in tensors.values())},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return {"name": name, "tensors": record}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--tokenizer-config", type=Path)
    args = ap.parse_args()
    testdata = args.outdir.parent
    tokenizer = args.tokenizer or testdata / "llama3.2-tokenizer.json"
    tokenizer_config = args.tokenizer_config or testdata / "llama3.2-tokenizer_config.json"
    for p in (tokenizer, tokenizer_config):
        if not p.is_file():
            sys.exit(f"{p} is missing: run scripts/fetch-testdata.sh")
    tok_json, tok_cfg = tokenizer_files(tokenizer, tokenizer_config)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name in VARIANTS:
        rec = write_variant(args.outdir, name, tok_json, tok_cfg)
        (args.outdir / f"{name}.tensors.json").write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.outdir / name}")


if __name__ == "__main__":
    main()
