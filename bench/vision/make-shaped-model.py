#!/usr/bin/env python3
"""Writes a random-weight Llama 3.2 Vision checkpoint with the real vision tower of the 11B/90B.

    python3 bench/vision/make-shaped-model.py OUTDIR --tokenizer TOKENIZER_JSON
        [--local-layers 32] [--global-layers 8] [--text-width 4096]
        [--image FILE.png]
    python3 bench/vision/make-shaped-model.py --image FILE.png   (the image only)

Pinned: numpy==2.4.6 (nothing else; no torch). OUTDIR becomes a checkpoint
directory in the Hugging Face layout of Meta's hub checkpoints (config.json in
the transformers 4.45 style, model.safetensors in BF16 with the hub's tensor
names, tokenizer.json, tokenizer_config.json, chat_template.json,
generation_config.json, preprocessor_config.json), so that both
`edgellama convert` and transformers read it. Speed depends only on the shapes:
the weights stand in for Meta's, and what the model says is meaningless.

Vision tower (vision_config of meta-llama/Llama-3.2-11B-Vision, which the 90B
shares): hidden 1280, 16 heads, intermediate 5120, GELU, patch 14, tiles of
560 px (40 x 40 patches + the class token = 1601 tokens, padded to 1608 inside
the tower), max_num_tiles 4 and its 8 supported aspect ratios, 32 local + 8
global (gated) layers, intermediate_layers_indices [3, 7, 15, 23, 30], so
vision_output_dim 1280 * 6 = 7680; norm eps 1e-5; the preprocessor with CLIP's
mean and std. The projector maps 7680 to the text width.

Text model: only what the converter needs (an encode never runs it), but at
the 11B's width 4096 so the projector keeps its real cost (7680 x 4096): one
self-attention layer and one cross-attention layer (cross_attention_layers
[1]), 32 heads over 8 KV heads (head_dim 128), intermediate 256. Its
embeddings cannot shrink: Meta's tokenizer has ids up to <|image|> = 128256,
so embed_tokens has 128264 rows and lm_head 128256 (tie_word_embeddings is not
allowed for mllama). These two hold about 2.1 GB of the file; they are never
read while an image is encoded.

--local-layers / --global-layers shrink the tower for quick checks; the
intermediate layer indices are then scaled to the shorter stack
(min(i * L // 32, L - 1), repeats allowed) so the output stays 7680 wide.
--text-width shrinks the text model (and the projector's output).

Weights as in scripts/make-tiny-mllama.py, whose config pieces, tokenizer
config and chat template are reused: linear weights normal with std
1/sqrt(fan_in), token embeddings std 0.5, lm_head rows of unit length, norm
weights 1 + 0.1 N(0,1), biases 0.1 N(0,1), positional and tile embeddings std
hidden^-0.5, every gate a random nonzero value in [-1.5, -0.3] U [0.3, 1.5].
Each tensor is drawn from numpy.random.default_rng seeded by (SEED, sha256 of
its name), in float32, rounded to bfloat16 (nearest even) and written as soon
as its rows are drawn, so memory stays near 64 MB whatever the size; the output
is bit-reproducible with numpy 2.4.6. The sha256 of model.safetensors is
printed.

--image writes the benchmark's test image as well: a deterministic 1120 x 1120
RGB PNG (smooth gradients, stripes and noise; Python's zlib, no PIL), which
the preprocessor takes as 2 x 2 tiles of 560 without resizing.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SEED = 0x11B7153
VOCAB = 128256
IMAGE_TOKEN = 128256
EXTRA_EMBEDDINGS = 8
CHUNK = 1 << 24  # elements drawn at once


def _load_tiny():
    # The file name has dashes, so it cannot be imported by name.
    path = ROOT / "scripts" / "make-tiny-mllama.py"
    spec = importlib.util.spec_from_file_location("make_tiny_mllama", path)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tiny = _load_tiny()

REAL_LOCAL_LAYERS = 32
REAL_INTERMEDIATE = [3, 7, 15, 23, 30]


def vision_shape(local_layers: int, global_layers: int) -> dict:
    if local_layers == REAL_LOCAL_LAYERS:
        inter = list(REAL_INTERMEDIATE)
    else:
        inter = [min(i * local_layers // REAL_LOCAL_LAYERS, local_layers - 1) for i in REAL_INTERMEDIATE]
    return dict(
        image_size=560,
        patch_size=14,
        hidden=1280,
        heads=16,
        intermediate=5120,
        layers=local_layers,
        global_layers=global_layers,
        intermediate_layers=inter,
        max_num_tiles=4,
        eps=1e-5,
    )


def text_shape(width: int) -> dict:
    return dict(hidden=width, heads=32, kv_heads=8, intermediate=256, eps=1e-5, layers=2, cross_layers=[1])


# ---------------------------------------------------------------- the tensor plan
#
# (hub name, shape, kind, parameter): kinds are "linear" (std 1/sqrt(fan_in),
# fan_in = product of all dims but the first), "normal" (std = parameter),
# "norm" (1 + 0.1 N), "bias" (0.1 N), "gate" and "unit_rows".


def text_plan(t: dict) -> list[tuple]:
    h, nh, nkv, ff = t["hidden"], t["heads"], t["kv_heads"], t["intermediate"]
    hd = h // nh
    p = "language_model.model."
    plan = [(p + "embed_tokens.weight", (VOCAB + EXTRA_EMBEDDINGS, h), "normal", 0.5)]
    for i in range(t["layers"]):
        q = f"{p}layers.{i}."
        cross = i in t["cross_layers"]
        attn = "cross_attn." if cross else "self_attn."
        plan += [
            (q + attn + "q_proj.weight", (nh * hd, h), "linear", None),
            (q + attn + "k_proj.weight", (nkv * hd, h), "linear", None),
            (q + attn + "v_proj.weight", (nkv * hd, h), "linear", None),
            (q + attn + "o_proj.weight", (h, nh * hd), "linear", None),
        ]
        if cross:
            plan += [
                (q + "cross_attn.q_norm.weight", (hd,), "norm", None),
                (q + "cross_attn.k_norm.weight", (hd,), "norm", None),
                (q + "cross_attn_attn_gate", (1,), "gate", None),
                (q + "cross_attn_mlp_gate", (1,), "gate", None),
            ]
        plan += [
            (q + "input_layernorm.weight", (h,), "norm", None),
            (q + "post_attention_layernorm.weight", (h,), "norm", None),
            (q + "mlp.gate_proj.weight", (ff, h), "linear", None),
            (q + "mlp.up_proj.weight", (ff, h), "linear", None),
            (q + "mlp.down_proj.weight", (h, ff), "linear", None),
        ]
    plan += [
        (p + "norm.weight", (h,), "norm", None),
        ("language_model.lm_head.weight", (VOCAB, h), "unit_rows", None),
    ]
    return plan


def vision_layer_plan(q: str, v: dict, gated: bool) -> list[tuple]:
    d, ff = v["hidden"], v["intermediate"]
    plan = [(q + f"self_attn.{p}.weight", (d, d), "linear", None) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    plan += [
        (q + "mlp.fc1.weight", (ff, d), "linear", None),
        (q + "mlp.fc1.bias", (ff,), "bias", None),
        (q + "mlp.fc2.weight", (d, ff), "linear", None),
        (q + "mlp.fc2.bias", (d,), "bias", None),
    ]
    for ln in ("input_layernorm", "post_attention_layernorm"):
        plan += [(q + f"{ln}.weight", (d,), "norm", None), (q + f"{ln}.bias", (d,), "bias", None)]
    if gated:
        plan += [(q + "gate_attn", (1,), "gate", None), (q + "gate_ffn", (1,), "gate", None)]
    return plan


def vision_plan(v: dict, text_width: int) -> list[tuple]:
    d, ps, tiles = v["hidden"], v["patch_size"], v["max_num_tiles"]
    n_tok = (v["image_size"] // ps) ** 2 + 1
    n_ar = len(tiny.supported_aspect_ratios(tiles)) + 1  # id 0 is "no image"
    scale = d**-0.5
    p = "vision_model."
    g = p + "gated_positional_embedding."
    plan = [
        (p + "patch_embedding.weight", (d, 3, ps, ps), "linear", None),
        (p + "class_embedding", (d,), "normal", scale),
        (g + "embedding", (n_tok, d), "normal", scale),
        (g + "tile_embedding.weight", (n_ar, tiles * n_tok * d), "normal", scale),
        (g + "gate", (1,), "gate", None),
    ]
    for pt in ("pre_tile_positional_embedding.", "post_tile_positional_embedding."):
        plan += [(p + pt + "embedding.weight", (n_ar, tiles * d), "normal", scale), (p + pt + "gate", (1,), "gate", None)]
    for ln in ("layernorm_pre", "layernorm_post"):
        plan += [(p + f"{ln}.weight", (d,), "norm", None), (p + f"{ln}.bias", (d,), "bias", None)]
    for i in range(v["layers"]):
        plan += vision_layer_plan(f"{p}transformer.layers.{i}.", v, gated=False)
    for i in range(v["global_layers"]):
        plan += vision_layer_plan(f"{p}global_transformer.layers.{i}.", v, gated=True)
    out_dim = d * (len(v["intermediate_layers"]) + 1)
    plan += [
        ("multi_modal_projector.weight", (text_width, out_dim), "linear", None),
        ("multi_modal_projector.bias", (text_width,), "bias", None),
    ]
    return plan


# ---------------------------------------------------------------- drawing and writing


def rng_for(name: str) -> np.random.Generator:
    digest = hashlib.sha256(name.encode()).digest()
    return np.random.default_rng([SEED, int.from_bytes(digest[:8], "little")])


def bf16_bytes(a: np.ndarray) -> bytes:
    # Round to nearest, ties to even (finite values: no overflow in uint32).
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2").tobytes()


def chunks(name: str, shape: tuple, kind: str, param):
    """The tensor's values as float32 blocks of whole rows, in order."""
    r = rng_for(name)
    if kind == "gate":
        mag = r.uniform(0.3, 1.5, size=1)
        sign = np.where(r.uniform(size=1) < 0.5, -1.0, 1.0)
        yield (mag * sign).astype(np.float32)
        return
    if len(shape) == 1:
        rows, cols = 1, shape[0]
    else:
        rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, CHUNK // cols)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        x = r.standard_normal((n, cols), dtype=np.float32)
        if kind == "linear":
            x *= np.float32(1.0 / np.sqrt(cols))
        elif kind == "normal":
            x *= np.float32(param)
        elif kind == "norm":
            x = np.float32(1.0) + np.float32(0.1) * x
        elif kind == "bias":
            x *= np.float32(0.1)
        elif kind == "unit_rows":
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        else:
            raise ValueError(kind)
        yield x


def write_safetensors(path: Path, plan: list[tuple]) -> str:
    plan = sorted(plan, key=lambda e: e[0])
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, _, _ in plan:
        n = 2 * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    h = hashlib.sha256()
    tmp = path.with_suffix(".safetensors.part")
    with open(tmp, "wb") as f:
        for chunk in (struct.pack("<Q", len(head)), head):
            f.write(chunk)
            h.update(chunk)
        for name, shape, kind, param in plan:
            for block in chunks(name, shape, kind, param):
                raw = bf16_bytes(block)
                f.write(raw)
                h.update(raw)
    tmp.replace(path)
    return h.hexdigest()


# ---------------------------------------------------------------- configs


def vision_config(v: dict) -> dict:
    return {
        "attention_heads": v["heads"],
        "hidden_act": "gelu",
        "hidden_size": v["hidden"],
        "image_size": v["image_size"],
        "initializer_range": 0.02,
        "intermediate_layers_indices": v["intermediate_layers"],
        "intermediate_size": v["intermediate"],
        "max_num_tiles": v["max_num_tiles"],
        "model_type": "mllama_vision_model",
        "norm_eps": v["eps"],
        "num_channels": 3,
        "num_global_layers": v["global_layers"],
        "num_hidden_layers": v["layers"],
        "patch_size": v["patch_size"],
        "supported_aspect_ratios": tiny.supported_aspect_ratios(v["max_num_tiles"]),
        "torch_dtype": "bfloat16",
        "vision_output_dim": v["hidden"] * (len(v["intermediate_layers"]) + 1),
    }


def text_config(t: dict) -> dict:
    return {
        "bos_token_id": 128000,
        "cross_attention_layers": t["cross_layers"],
        "dropout": 0,
        "eos_token_id": [128001, 128008, 128009],
        "hidden_act": "silu",
        "hidden_size": t["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate"],
        "max_position_embeddings": 131072,
        "model_type": "mllama_text_model",
        "num_attention_heads": t["heads"],
        "num_hidden_layers": t["layers"],
        "num_key_value_heads": t["kv_heads"],
        "pad_token_id": 128004,
        "rms_norm_eps": t["eps"],
        "rope_scaling": dict(tiny.ROPE),
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def preprocessor_config(v: dict) -> dict:
    return {
        **tiny.PREPROCESSOR_CONFIG,
        "image_mean": tiny.CLIP_MEAN,
        "image_std": tiny.CLIP_STD,
        "max_image_tiles": v["max_num_tiles"],
        "size": {"height": v["image_size"], "width": v["image_size"]},
    }


# ---------------------------------------------------------------- the test image


def write_png(path: Path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6))
    png += chunk(b"IEND", b"")
    path.write_bytes(png)


def test_image(w: int = 1120, h: int = 1120, seed: int = 11) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    freq = rng.uniform(0.01, 0.06, size=3)
    img = np.empty((h, w, 3))
    for c in range(3):
        img[..., c] = (
            0.5
            + 0.3 * np.sin(freq[c] * x + phase[c])
            + 0.2 * np.cos(freq[(c + 1) % 3] * y - phase[c])
            + 0.25 * (x / w - y / h)
        )
    img += rng.normal(0, 0.05, size=img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", type=Path, nargs="?")
    ap.add_argument("--tokenizer", type=Path, help="Meta's Llama 3.2 tokenizer.json (with OUTDIR)")
    ap.add_argument("--local-layers", type=int, default=32)
    ap.add_argument("--global-layers", type=int, default=8)
    ap.add_argument("--text-width", type=int, default=4096, help="a multiple of 32 (32 heads)")
    ap.add_argument("--image", type=Path, help="also write the 1120x1120 test PNG here")
    args = ap.parse_args()
    if args.local_layers < 1 or args.global_layers < 0:
        ap.error("--local-layers must be at least 1 and --global-layers at least 0")
    if args.text_width < 32 or args.text_width % 32:
        ap.error("--text-width must be a positive multiple of 32")
    if args.outdir is None and args.image is None:
        ap.error("nothing to write: give OUTDIR, --image or both")
    if args.outdir is not None and args.tokenizer is None:
        ap.error("OUTDIR needs --tokenizer")

    if np.__version__ != "2.4.6":
        print(f"warning: numpy {np.__version__}; the output is reproducible with numpy 2.4.6", file=sys.stderr)
    if args.image:
        args.image.parent.mkdir(parents=True, exist_ok=True)
        write_png(args.image, test_image())
    if args.outdir is None:
        return 0
    tokenizer = json.loads(args.tokenizer.read_text())
    image = [t for t in tokenizer["added_tokens"] if t["content"] == "<|image|>"]
    if not image or image[0]["id"] != IMAGE_TOKEN:
        sys.exit(f"{args.tokenizer}: no <|image|> = {IMAGE_TOKEN} (need the Llama 3.2 tokenizer)")

    v = vision_shape(args.local_layers, args.global_layers)
    t = text_shape(args.text_width)
    d = args.outdir
    d.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": IMAGE_TOKEN,
        "model_type": "mllama",
        "text_config": text_config(t),
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0.dev0",
        "vision_config": vision_config(v),
    }
    tiny.dump_json(d / "config.json", config)
    tiny.dump_json(d / "generation_config.json", tiny.GENERATION_CONFIG)
    tiny.dump_json(d / "preprocessor_config.json", preprocessor_config(v))
    tiny.dump_json(d / "tokenizer_config.json", tiny.tokenizer_config(tokenizer))
    tiny.dump_json(d / "chat_template.json", {"chat_template": tiny.CHAT_TEMPLATE})
    shutil.copyfile(args.tokenizer, d / "tokenizer.json")
    plan = text_plan(t) + vision_plan(v, t["hidden"])
    digest = write_safetensors(d / "model.safetensors", plan)
    n_vision = sum(int(np.prod(s)) for n, s, _, _ in plan if not n.startswith("language_model."))
    n_all = sum(int(np.prod(s)) for _, s, _, _ in plan)
    print(f"{digest}  {d.name}/model.safetensors", file=sys.stderr)
    print(
        f"vision tower + projector: {n_vision / 1e6:.1f} M parameters; all: {n_all / 1e6:.1f} M "
        f"(local {v['layers']}, global {v['global_layers']}, intermediate layers {v['intermediate_layers']}, "
        f"text width {t['hidden']})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
