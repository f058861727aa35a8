#!/usr/bin/env python3
"""Writes tiny random-weight Llama 3.2 Vision (mllama) checkpoints in Hugging Face layout.

    python3 scripts/make-tiny-mllama.py OUTDIR --tokenizer TOKENIZER_JSON

Pinned: numpy==2.4.6 (nothing else; no torch). The output is bit-reproducible
with that version on Python 3.11 and 3.12: every tensor is drawn from
numpy.random.default_rng seeded by (SEED, sha256 of the tensor's hub name),
rounded to bfloat16 (round to nearest even) and written by the small
safetensors writer below, tensors sorted by name. The sha256 of each
model.safetensors is printed, and the goldens record the ones they were made
from (crates/models/tests/golden/mllama/cases.json). scripts/fetch-testdata.sh
runs this into the test-data directory.

Directories written under OUTDIR (each one a complete checkpoint directory as
the hub has it: config.json, generation_config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, chat_template.json (read by the
processor), preprocessor_config.json):

  tiny-mllama              text: hidden 32, 4 heads over 2 KV heads (head_dim 8),
                           intermediate 64, 5 layers, cross-attention layers [1, 3];
                           vision: 56x56 tiles of 14x14 patches (16 patches + class
                           token = 17 tokens, padded to 24 inside the tower), hidden 32,
                           4 heads, intermediate 64, 4 local + 2 global layers,
                           intermediate_layers_indices [0, 2] (vision_output_dim
                           32 * 3 = 96), max_num_tiles 4.
                           Tensor names as Meta's hub checkpoints have them:
                           language_model.model.*, language_model.lm_head.weight,
                           vision_model.*, multi_modal_projector.*; config.json in the
                           transformers 4.45 style of the hub (rope_theta + rope_scaling,
                           torch_dtype).
  tiny-mllama-90b-pattern  the same vision tower; text with 10 layers and a
                           cross-attention layer every 5th from 3 ([3, 8]), the pattern
                           of the 90B (100 layers, [3, 8, 13, ...]).
  tiny-mllama-inmemory     tiny-mllama's weights (bit for bit) under the names that
                           transformers 5.x keeps in memory and writes with
                           save_pretrained(save_original_format=False):
                           model.language_model.*, model.vision_model.*,
                           model.multi_modal_projector.*, lm_head.weight; config.json as
                           transformers 5.25 writes it (rope_parameters holding
                           rope_type/rope_theta/factor/..., dtype instead of torch_dtype).
                           (5.25's default save_pretrained writes the hub names above
                           with the 5.x config.)

Shapes follow transformers' MllamaForConditionalGeneration: embed_tokens has
vocab + 8 rows (128264; the 8 extra rows are the learnable embeddings of Meta's
checkpoint, <|image|> = 128256 among them), lm_head has 128256; vocab_size is the
real 128256 so Meta's tokenizer (tokenizer.json of Llama 3.2, with
<|image|> = 128256) works unchanged. Text RoPE: theta 500000, llama3 scaling
(factor 8, low 1, high 4, original 8192), max_position_embeddings 131072.

Initialisation (not transformers'): every gate is a random nonzero value,
uniform in [-1.5, -0.3] U [0.3, 1.5] (cross_attn_attn_gate, cross_attn_mlp_gate,
gated_positional_embedding.gate, pre/post_tile_positional_embedding.gate, the
global layers' gate_attn/gate_ffn), where transformers' init zeroes them, so
every gated path changes the output. Linear weights (patch embedding included)
are normal with std 1 / sqrt(fan_in), token embeddings std 0.5, lm_head rows
random directions of unit length (logits of std about 1; rows of unequal length
let a few ids win almost every argmax), norm weights 1 + 0.1 N(0,1), biases
0.1 N(0,1); the positional and tile embeddings have std hidden^-0.5 as in
transformers. With smaller linear weights (0.5 / sqrt(fan_in), embeddings std 1)
the token embedding drowned the layers: two different image prompts gave the
same greedy tokens. All values are bfloat16 in the file.

The tokenizer_config.json and chat_template.json carry a chat template written
here for the Llama 3.2 Vision Instruct prompt format (not a copy of the hub's
file): BOS; when there is no image, a system header with the knowledge-cutoff
and date lines and the system message; each message as
<|start_header_id|>ROLE<|end_header_id|>\\n\\n, its content (image parts as
<|image|>, text parts as they are) and <|eot_id|>; images together with a
system message are refused, as the hub's template does; the generation prompt is
the assistant header. Tools are not covered.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

SEED = 0x3A11A32
LINEAR_GAIN = 1.0  # linear weights: std LINEAR_GAIN / sqrt(fan_in)
EMBED_STD = 0.5  # token embeddings
VOCAB = 128256
IMAGE_TOKEN = 128256

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

TEXT = dict(hidden=32, heads=4, kv_heads=2, intermediate=64, eps=1e-5)
VISION = dict(
    image_size=56,
    patch_size=14,
    hidden=32,
    heads=4,
    intermediate=64,
    layers=4,
    global_layers=2,
    intermediate_layers=[0, 2],
    max_num_tiles=4,
    eps=1e-5,
)


def supported_aspect_ratios(max_tiles: int) -> list[list[int]]:
    # As transformers' get_all_supported_aspect_ratios: (rows, columns) of tiles.
    return [[w, h] for w in range(1, max_tiles + 1) for h in range(1, max_tiles + 1) if w * h <= max_tiles]


# ---------------------------------------------------------------- tensors


def rng_for(name: str) -> np.random.Generator:
    digest = hashlib.sha256(name.encode()).digest()
    return np.random.default_rng([SEED, int.from_bytes(digest[:8], "little")])


def gate(name: str) -> np.ndarray:
    r = rng_for(name)
    mag = r.uniform(0.3, 1.5, size=1)
    sign = np.where(r.uniform(size=1) < 0.5, -1.0, 1.0)
    return mag * sign


def normal(name: str, shape, std: float, mean: float = 0.0) -> np.ndarray:
    return mean + std * rng_for(name).standard_normal(size=shape)


def linear(name: str, out_f: int, in_f: int) -> np.ndarray:
    return normal(name, (out_f, in_f), LINEAR_GAIN / np.sqrt(in_f))


def norm_weight(name: str, n: int) -> np.ndarray:
    return normal(name, (n,), 0.1, 1.0)


def bias(name: str, n: int) -> np.ndarray:
    return normal(name, (n,), 0.1)


def text_tensors(n_layers: int, cross_layers: list[int]) -> dict[str, np.ndarray]:
    h, nh, nkv, ff = TEXT["hidden"], TEXT["heads"], TEXT["kv_heads"], TEXT["intermediate"]
    hd = h // nh
    p = "language_model.model."
    t: dict[str, np.ndarray] = {}
    t[p + "embed_tokens.weight"] = normal(p + "embed_tokens.weight", (VOCAB + 8, h), EMBED_STD)
    for i in range(n_layers):
        q = f"{p}layers.{i}."
        attn = "cross_attn." if i in cross_layers else "self_attn."
        t[q + attn + "q_proj.weight"] = linear(q + attn + "q_proj.weight", nh * hd, h)
        t[q + attn + "k_proj.weight"] = linear(q + attn + "k_proj.weight", nkv * hd, h)
        t[q + attn + "v_proj.weight"] = linear(q + attn + "v_proj.weight", nkv * hd, h)
        t[q + attn + "o_proj.weight"] = linear(q + attn + "o_proj.weight", h, nh * hd)
        if i in cross_layers:
            t[q + "cross_attn.q_norm.weight"] = norm_weight(q + "cross_attn.q_norm.weight", hd)
            t[q + "cross_attn.k_norm.weight"] = norm_weight(q + "cross_attn.k_norm.weight", hd)
            t[q + "cross_attn_attn_gate"] = gate(q + "cross_attn_attn_gate")
            t[q + "cross_attn_mlp_gate"] = gate(q + "cross_attn_mlp_gate")
        t[q + "input_layernorm.weight"] = norm_weight(q + "input_layernorm.weight", h)
        t[q + "post_attention_layernorm.weight"] = norm_weight(q + "post_attention_layernorm.weight", h)
        t[q + "mlp.gate_proj.weight"] = linear(q + "mlp.gate_proj.weight", ff, h)
        t[q + "mlp.up_proj.weight"] = linear(q + "mlp.up_proj.weight", ff, h)
        t[q + "mlp.down_proj.weight"] = linear(q + "mlp.down_proj.weight", h, ff)
    t[p + "norm.weight"] = norm_weight(p + "norm.weight", h)
    # Rows of equal norm: random rows of unequal length make a few ids win
    # almost every argmax (greedy decoding then repeats one of them).
    head = normal("language_model.lm_head.weight", (VOCAB, h), 1.0)
    t["language_model.lm_head.weight"] = head / np.linalg.norm(head, axis=1, keepdims=True)
    return t


def vision_encoder_layer(t: dict, q: str, gated: bool) -> None:
    d, ff = VISION["hidden"], VISION["intermediate"]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        t[q + f"self_attn.{proj}.weight"] = linear(q + f"self_attn.{proj}.weight", d, d)
    t[q + "mlp.fc1.weight"] = linear(q + "mlp.fc1.weight", ff, d)
    t[q + "mlp.fc1.bias"] = bias(q + "mlp.fc1.bias", ff)
    t[q + "mlp.fc2.weight"] = linear(q + "mlp.fc2.weight", d, ff)
    t[q + "mlp.fc2.bias"] = bias(q + "mlp.fc2.bias", d)
    for ln in ("input_layernorm", "post_attention_layernorm"):
        t[q + f"{ln}.weight"] = norm_weight(q + f"{ln}.weight", d)
        t[q + f"{ln}.bias"] = bias(q + f"{ln}.bias", d)
    if gated:
        t[q + "gate_attn"] = gate(q + "gate_attn")
        t[q + "gate_ffn"] = gate(q + "gate_ffn")


def vision_tensors() -> dict[str, np.ndarray]:
    d, ps, tiles = VISION["hidden"], VISION["patch_size"], VISION["max_num_tiles"]
    n_tok = (VISION["image_size"] // ps) ** 2 + 1
    n_ar = len(supported_aspect_ratios(tiles)) + 1  # id 0 is "no image"
    scale = d**-0.5
    p = "vision_model."
    t: dict[str, np.ndarray] = {}
    t[p + "patch_embedding.weight"] = normal(p + "patch_embedding.weight", (d, 3, ps, ps), LINEAR_GAIN / np.sqrt(3 * ps * ps))
    t[p + "class_embedding"] = normal(p + "class_embedding", (d,), scale)
    g = p + "gated_positional_embedding."
    t[g + "embedding"] = normal(g + "embedding", (n_tok, d), scale)
    t[g + "tile_embedding.weight"] = normal(g + "tile_embedding.weight", (n_ar, tiles * n_tok * d), scale)
    t[g + "gate"] = gate(g + "gate")
    for pt in ("pre_tile_positional_embedding.", "post_tile_positional_embedding."):
        t[p + pt + "embedding.weight"] = normal(p + pt + "embedding.weight", (n_ar, tiles * d), scale)
        t[p + pt + "gate"] = gate(p + pt + "gate")
    for ln in ("layernorm_pre", "layernorm_post"):
        t[p + f"{ln}.weight"] = norm_weight(p + f"{ln}.weight", d)
        t[p + f"{ln}.bias"] = bias(p + f"{ln}.bias", d)
    for i in range(VISION["layers"]):
        vision_encoder_layer(t, f"{p}transformer.layers.{i}.", gated=False)
    for i in range(VISION["global_layers"]):
        vision_encoder_layer(t, f"{p}global_transformer.layers.{i}.", gated=True)
    return t


def projector_tensors() -> dict[str, np.ndarray]:
    out_dim = VISION["hidden"] * (len(VISION["intermediate_layers"]) + 1)
    return {
        "multi_modal_projector.weight": linear("multi_modal_projector.weight", TEXT["hidden"], out_dim),
        "multi_modal_projector.bias": bias("multi_modal_projector.bias", TEXT["hidden"]),
    }


def inmemory_name(hub_name: str) -> str:
    # transformers 5.x's conversion table for mllama, in reverse.
    if hub_name == "language_model.lm_head.weight":
        return "lm_head.weight"
    if hub_name.startswith("language_model.model."):
        return "model.language_model." + hub_name[len("language_model.model.") :]
    return "model." + hub_name  # vision_model.*, multi_modal_projector.*


# ---------------------------------------------------------------- safetensors


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    f = np.ascontiguousarray(a, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest, ties to even
    return rounded.astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> str:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        bits = to_bf16_bits(tensors[name])
        raw = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in (struct.pack("<Q", len(head)), head, *blobs):
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- configs


def vision_config() -> dict:
    v = VISION
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
        "supported_aspect_ratios": supported_aspect_ratios(v["max_num_tiles"]),
        "torch_dtype": "bfloat16",
        "vision_output_dim": v["hidden"] * (len(v["intermediate_layers"]) + 1),
    }


ROPE = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}


def text_config(n_layers: int, cross_layers: list[int]) -> dict:
    return {
        "bos_token_id": 128000,
        "cross_attention_layers": cross_layers,
        "dropout": 0,
        "eos_token_id": [128001, 128008, 128009],
        "hidden_act": "silu",
        "hidden_size": TEXT["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": TEXT["intermediate"],
        "max_position_embeddings": 131072,
        "model_type": "mllama_text_model",
        "num_attention_heads": TEXT["heads"],
        "num_hidden_layers": n_layers,
        "num_key_value_heads": TEXT["kv_heads"],
        "pad_token_id": 128004,
        "rms_norm_eps": TEXT["eps"],
        "rope_scaling": dict(ROPE),
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def hub_config(n_layers: int, cross_layers: list[int]) -> dict:
    """config.json as the hub's Llama 3.2 Vision checkpoints have it (transformers 4.45)."""
    return {
        "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": IMAGE_TOKEN,
        "model_type": "mllama",
        "text_config": text_config(n_layers, cross_layers),
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0.dev0",
        "vision_config": vision_config(),
    }


def v5_config(n_layers: int, cross_layers: list[int]) -> dict:
    """config.json as transformers 5.25's save_pretrained writes it."""
    text = text_config(n_layers, cross_layers)
    del text["rope_scaling"], text["rope_theta"], text["torch_dtype"]
    text["dropout"] = 0.0
    text["rope_parameters"] = dict(sorted({**ROPE, "rope_theta": 500000.0}.items()))
    vision = vision_config()
    del vision["torch_dtype"]
    return {
        "architectures": ["MllamaForConditionalGeneration"],
        "dtype": "bfloat16",
        "image_token_index": IMAGE_TOKEN,
        "model_type": "mllama",
        "text_config": dict(sorted(text.items())),
        "transformers_version": "5.25.0",
        "vision_config": vision,
    }


GENERATION_CONFIG = {
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": [128001, 128008, 128009],
    "pad_token_id": 128004,
    "temperature": 0.6,
    "top_p": 0.9,
    "transformers_version": "4.45.0.dev0",
}

PREPROCESSOR_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": CLIP_MEAN,
    "image_processor_type": "MllamaImageProcessor",
    "image_std": CLIP_STD,
    "max_image_tiles": VISION["max_num_tiles"],
    "processor_class": "MllamaProcessor",
    "resample": 2,
    "rescale_factor": 1 / 255,
    "size": {"height": VISION["image_size"], "width": VISION["image_size"]},
}

CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] if messages[0]['content'] is string"
    " else messages[0]['content'][0]['text'] %}\n"
    "    {%- set system_message = system_message | trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(has_images=false) %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['content'] is not string %}\n"
    "        {%- for part in message['content'] %}\n"
    "            {%- if part['type'] == 'image' %}{%- set ns.has_images = true %}{%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if ns.has_images and system_message != \"\" %}\n"
    "    {{- raise_exception(\"Prompting with images is incompatible with system messages.\") }}\n"
    "{%- endif %}\n"
    "{%- if not ns.has_images %}\n"
    "    {{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "    {{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "    {{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "    {{- system_message }}\n"
    "    {{- \"<|eot_id|>\" }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
    "    {%- if message['content'] is string %}\n"
    "        {{- message['content'] }}\n"
    "    {%- else %}\n"
    "        {%- for part in message['content'] %}\n"
    "            {%- if part['type'] == 'image' %}{{- '<|image|>' }}\n"
    "            {%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "    {{- '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)


def tokenizer_config(tokenizer: dict) -> dict:
    added = {
        str(t["id"]): {
            "content": t["content"],
            "lstrip": t["lstrip"],
            "normalized": t["normalized"],
            "rstrip": t["rstrip"],
            "single_word": t["single_word"],
            "special": t["special"],
        }
        for t in tokenizer["added_tokens"]
    }
    return {
        "added_tokens_decoder": added,
        "bos_token": "<|begin_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "pad_token": "<|finetune_right_pad_id|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def dump_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------- main

MODELS = [
    # (directory, text layers, cross-attention layers, layout)
    ("tiny-mllama", 5, [1, 3], "hub"),
    ("tiny-mllama-90b-pattern", 10, [3, 8], "hub"),
    ("tiny-mllama-inmemory", 5, [1, 3], "inmemory"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--tokenizer", type=Path, required=True, help="Meta's Llama 3.2 tokenizer.json")
    args = ap.parse_args()

    if np.__version__ != "2.4.6":
        print(f"warning: numpy {np.__version__}; the pinned files are made with numpy 2.4.6", file=sys.stderr)
    tokenizer = json.loads(args.tokenizer.read_text())
    image = [t for t in tokenizer["added_tokens"] if t["content"] == "<|image|>"]
    if not image or image[0]["id"] != IMAGE_TOKEN:
        sys.exit(f"{args.tokenizer}: no <|image|> = {IMAGE_TOKEN} (need the Llama 3.2 tokenizer)")

    vision = vision_tensors()
    projector = projector_tensors()
    for name, n_layers, cross, layout in MODELS:
        d = args.outdir / name
        d.mkdir(parents=True, exist_ok=True)
        tensors = {**text_tensors(n_layers, cross), **vision, **projector}
        if layout == "inmemory":
            tensors = {inmemory_name(k): v for k, v in tensors.items()}
            dump_json(d / "config.json", v5_config(n_layers, cross))
        else:
            dump_json(d / "config.json", hub_config(n_layers, cross))
        digest = write_safetensors(d / "model.safetensors", tensors)
        dump_json(d / "generation_config.json", GENERATION_CONFIG)
        dump_json(d / "preprocessor_config.json", PREPROCESSOR_CONFIG)
        dump_json(d / "tokenizer_config.json", tokenizer_config(tokenizer))
        dump_json(d / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
        shutil.copyfile(args.tokenizer, d / "tokenizer.json")
        print(f"{digest}  {name}/model.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
