#!/usr/bin/env python3
"""Reference values for Llama 3.2 Vision (mllama) from Hugging Face transformers on the CPU.

    python3 crates/models/tests/golden/mllama/make_goldens.py

Writes, beside this script: expected.safetensors (the numbers), cases.json (what
each case is) and the input images (img-*.png, img-*.jpg). Runs in under a minute
once the environment exists.

Environment (made on first run, or by hand):

    ~/.pyenv/versions/3.12.1/bin/python -m venv .cache/venv-mllama
    .cache/venv-mllama/bin/pip install torch==2.15.0 transformers==5.25.0 \
        numpy==2.4.6 pillow==12.3.0 safetensors==0.8.0

(.cache is relative to the repository root.) Started with any other interpreter,
the script creates that venv when missing and runs itself again inside it. torch
is the default PyPI wheel; it pulls in the CUDA libraries (about 5 GB) although
only the CPU is used: a wheel installed with --no-deps does not import without
them. torchvision is deliberately absent, so the processor is transformers' PIL
backend (MllamaImageProcessorPil: PIL bilinear resize on uint8, numpy rescale
and normalise), which is what these pixel values are.

Models: scripts/make-tiny-mllama.py (numpy only, bit-reproducible; see its
header) is run into a temporary directory with Meta's Llama 3.2 tokenizer
(.cache/testdata/llama3.2-tokenizer.json, fetched by scripts/fetch-testdata.sh,
which is run when the file is missing). scripts/fetch-testdata.sh makes the
same three directories in the test-data directory; cases.json records the sha256
of each model.safetensors used, and the script stops if the generator's output
ever differs from the recorded digests (pass --update to accept new ones).
Each directory is loaded with MllamaForConditionalGeneration.from_pretrained
(dtype float32, attn_implementation "eager"); the bfloat16 weights are exact in
float32, so a float32 implementation should match to about 1e-4 (logits are of
std about 1). cases.json gives for each case the smallest gap between the first
and second logit met during the greedy steps (greedy_min_top2_gap, >= 1e-3).

Two rules where Meta's reference (llama-models, models/llama3/multimodal/model.py)
is followed instead of transformers 5.25.0. Both are applied by monkeypatching
below, and each is checked by an assertion that the patch changed the numbers:

 1. Text rows before the first image (BOS and the user header: rows whose
    cross-attention mask is all zero). Meta's cross-attention layer is the
    identity there: CrossAttention.forward multiplies the attention output by
    full_text_row_masked_out_mask, and the block multiplies the MLP output by it
    too. transformers multiplies only the MLP branch and lets the attention
    branch through; for such rows the additive mask is all zero (it is
    multiplied by the row mask), so the row attends uniformly to every vision
    token, padding tiles included (transformers issue #39379).
    Patched: MllamaCrossAttentionDecoderLayer also multiplies the attention
    output by the row mask, so those rows come out of the layer unchanged.
 2. Intermediate vision features (intermediate_layers_indices). Meta's
    ImageTransformer collects x before resblock i (the INPUT of layer i), as did
    transformers 4.45 (its encoder appended the hidden state before each layer).
    transformers 5.25.0's MllamaVisionEncoder appends after each layer, so
    hidden_states[i] is the OUTPUT of layer i, one layer later than Meta.
    Patched: MllamaVisionEncoder records the input of each layer.

Cases (prompts are written out in the Llama 3.2 chat format and tokenized with
add_special_tokens=False, so the one BOS is the text's own; the processor with
default arguments would add a second BOS in front of <|begin_of_text|>):

  a  tiny-mllama, one 40x30 PNG (upscaled to 56x42, padded: 1 tile), text before
     (BOS + user header), the image token, text after
  b  a wide 120x50 JPEG: 1x3 tiles (fits the canvas: no resize, padded to 168x56)
  c  two images separated by text (<|image|>...<|image|>...): a 300x200 PNG
     (downscaled to 112x74, 2x2 tiles) and a tall 50x150 PNG (3x1 tiles)
  d  two consecutive image tokens then text (<|image|><|image|>...): a 100x100
     PNG (2x2) and a 64x48 PNG (1x2); the text after attends both images
  e  text only, no image (the cross-attention layers are skipped)
  f  a 200x90 RGBA PNG with partial transparency (composited on white by the
     processor; downscaled to 124x56, 1x3 tiles)
  g  tiny-mllama-90b-pattern (cross-attention layers [3, 8] of 10) with case a's
     input; its vision tower and projector weights equal tiny-mllama's, so the
     vision values are a's (asserted, not stored again)
  h  tiny-mllama-inmemory (transformers 5.x in-memory tensor names, 5.x config)
     with case a's input; asserted bit-identical to a, nothing stored

expected.safetensors, for each case X (integers as I64, the rest F32; images
index i, tile t in 0..4, token k in 0..17):
  X.tokens                [T]                 prompt token ids
  X.pixel_values          [n_img, 4, 3, 56, 56]  processor output (tiles past an
                                              image's count are all zero)
  X.aspect_ratio_ids      [n_img]             1-based index into supported_aspect_ratios
  X.aspect_ratio_mask     [n_img, 4]          1 for the image's tiles
  X.cross_attention_mask  [T, n_img, 4]       as the processor makes it
  X.vision_out            [n_img, 4, 17, 96]  vision tower output before the projector:
                                              channels 0..32 the final (global) output,
                                              then the intermediate features stacked
                                              on the LAST axis: channel 32 + 2*c + j is
                                              channel c of intermediate layer j
                                              (torch.stack(dim=-1) then reshape, as Meta)
  X.projected             [n_img, 4, 17, 32]  after multi_modal_projector
  X.logit_columns         [C]                 vocabulary ids kept: 0..255, every 127th
                                              id, and the top 5 of every row, sorted
  X.logits                [T, C]              logits at every prompt position, columns
                                              X.logit_columns
  X.greedy                [8]                 greedy tokens (argmax over all 128256),
                                              from transformers' generate with the KV
                                              cache (each new token's cross-attention
                                              row is a copy of the last prompt row)
Case e has no image tensors; g stores tokens, logits, logit_columns, greedy; h
stores nothing (cases.json says "same_as").

What transformers 5.25.0 does, and so what these values encode:
  - Preprocessing: RGBA is composited on white (PIL alpha_composite); the
    canvas is the tile grid of least upscaling (or, when every grid needs
    downscaling, the least downscaling), ties to the smaller area; the image is
    resized (PIL bilinear on uint8; not at all when it already fits) and padded
    with 0 at the bottom and right BEFORE rescale and normalise, so padded pixels
    are -mean/std (-1.7923, -1.7521, -1.4802); tile slots past the image's tiles
    are 0 AFTER normalisation. Tiles are taken row by row.
  - Vision encoder: 17 tokens per tile (class token first) padded to 24 with
    zero rows after layernorm_pre; the attention mask blocks only pairs of which
    BOTH tokens are padding (a padding token or any token of an unused tile
    slot), so real tokens attend to padding and to unused tiles, and all 4 tile
    slots must be computed. The global layers use the same mask. Padding rows are
    dropped at the end (17 per tile again).
  - Cross-attention keys and values: n_img x 4 tile slots x 17 tokens, in that
    order (unused tile slots included, padding rows not), projected and k_norm'ed
    per head; the cross-attention mask [T, n_img, 4] is repeated 17 times per
    tile. A row whose mask is all zero gets a zero additive mask (uniform
    attention) in transformers, hence rule 1.
  - Mask rows: an image attends from its own <|image|> token (inclusive) up to
    the next <|image|> token, or to the end; a run of consecutive image tokens
    all extend to the end of the run's following text, each starting at its own
    token (so in case d the first <|image|> row sees image 0 only). Each
    generated token gets a copy of the previous last row.
  - No image at all: the cross-attention layers are skipped.

Checks made here besides the two patch assertions: the gates are nonzero; case
a's logits after the image differ from the same tokens without the image; rows
before the first image equal the text-only forward (rule 1); the valid tiles'
vision output depends on the padding tiles (the encoder masks only pad-to-pad
pairs, so every tile slot must be computed); in case d the rows after the two
image tokens attend both images (the mask, and logits that change with either
image); the greedy tokens are not all one id, and an uncached argmax over
prompt + generated tokens gives the same ids.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[4]
VENV = REPO / ".cache" / "venv-mllama"
PINS = ["torch==2.15.0", "transformers==5.25.0", "numpy==2.4.6", "pillow==12.3.0", "safetensors==0.8.0"]
BASE_PYTHON = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python"


def ensure_venv() -> None:
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        base = str(BASE_PYTHON) if BASE_PYTHON.exists() else sys.executable
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True)
    os.execv(str(py), [str(py), __file__, *sys.argv[1:]])


ensure_venv()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoProcessor, GenerationConfig, MllamaForConditionalGeneration  # noqa: E402
from transformers.modeling_outputs import BaseModelOutput  # noqa: E402
from transformers.models.mllama import modeling_mllama as mm  # noqa: E402

for pkg, want in (("torch", "2.15.0"), ("transformers", "5.25.0"), ("numpy", "2.4.6")):
    have = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}[pkg]
    if not have.startswith(want):
        sys.exit(f"{pkg} {have}, need {want}: reinstall {VENV}")

torch.manual_seed(0)
torch.set_num_threads(2)

TOKENIZER = REPO / ".cache" / "testdata" / "llama3.2-tokenizer.json"
IMAGE_TOKEN = 128256
N_GREEDY = 8
MODELS = ["tiny-mllama", "tiny-mllama-90b-pattern", "tiny-mllama-inmemory"]


def chat(user: str) -> str:
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


# ---------------------------------------------------------------- Meta's two rules

META_RULES = True  # switched off only to show that each patch changes something


def cross_attention_layer_forward(
    self,
    hidden_states,
    cross_attention_states,
    cross_attention_mask,
    attention_mask,
    full_text_row_masked_out_mask,
    position_ids=None,
    cache=None,
    use_cache=False,
    position_embeddings=None,
    **kwargs,
):
    # MllamaCrossAttentionDecoderLayer.forward of 5.25.0 with Meta's rule 1.
    residual = hidden_states
    hidden_states = self.input_layernorm(hidden_states)
    hidden_states, _ = self.cross_attn(
        hidden_states=hidden_states,
        attention_mask=cross_attention_mask,
        cross_attention_states=cross_attention_states,
        cache=cache,
        **kwargs,
    )
    if META_RULES and full_text_row_masked_out_mask is not None:
        hidden_states = full_text_row_masked_out_mask[:, 0] * hidden_states
    hidden_states = residual + self.cross_attn_attn_gate.tanh() * hidden_states

    residual = hidden_states
    hidden_states = self.post_attention_layernorm(hidden_states)
    hidden_states = self.mlp(hidden_states)
    if full_text_row_masked_out_mask is not None:
        hidden_states = full_text_row_masked_out_mask[:, 0] * hidden_states
    return residual + self.cross_attn_mlp_gate.tanh() * hidden_states


def vision_encoder_forward(self, hidden_states, attention_mask=None):
    # MllamaVisionEncoder.forward with Meta's rule 2: hidden_states[i] is the
    # input of layer i (5.25.0 stores the output of layer i there).
    states = ()
    for layer in self.layers:
        if META_RULES:
            states += (hidden_states,)
        hidden_states = layer(hidden_states=hidden_states, attention_mask=attention_mask)
        if not META_RULES:
            states += (hidden_states,)
    return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=states)


mm.MllamaCrossAttentionDecoderLayer.forward = cross_attention_layer_forward
mm.MllamaVisionEncoder.forward = vision_encoder_forward


# ---------------------------------------------------------------- images


def pattern(w: int, h: int, seed: int, channels: int = 3) -> np.ndarray:
    """Smooth gradients, stripes and a little noise, uint8 [h, w, channels]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    freq = rng.uniform(0.05, 0.3, size=3)
    img = np.empty((h, w, 3))
    for c in range(3):
        img[..., c] = (
            0.5
            + 0.3 * np.sin(freq[c] * x + phase[c])
            + 0.2 * np.cos(freq[(c + 1) % 3] * y - phase[c])
            + 0.25 * (x / w - y / h)
        )
    img += rng.normal(0, 0.05, size=img.shape)
    out = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if channels == 4:
        yy, xx = np.mgrid[0:h, 0:w]
        alpha = np.clip(255 * (xx / (w - 1)) * 1.5 - 60 + 40 * np.sin(yy / 6), 0, 255)
        alpha[: h // 4, : w // 5] = 0  # fully transparent corner
        alpha[-h // 4 :, -w // 5 :] = 255  # opaque corner
        out = np.dstack([out, alpha.round().astype(np.uint8)])
    return out


IMAGES = {
    # file: (width, height, seed, channels)
    "img-a-40x30.png": (40, 30, 1, 3),
    "img-b-120x50.jpg": (120, 50, 2, 3),
    "img-c1-300x200.png": (300, 200, 3, 3),
    "img-c2-50x150.png": (50, 150, 4, 3),
    "img-d1-100x100.png": (100, 100, 5, 3),
    "img-d2-64x48.png": (64, 48, 6, 3),
    "img-f-200x90-rgba.png": (200, 90, 7, 4),
}


def write_images() -> dict[str, Image.Image]:
    out = {}
    for name, (w, h, seed, ch) in IMAGES.items():
        arr = pattern(w, h, seed, ch)
        im = Image.fromarray(arr, "RGBA" if ch == 4 else "RGB")
        path = HERE / name
        if name.endswith(".jpg"):
            im.save(path, quality=90, subsampling=0)
        else:
            im.save(path, optimize=False, compress_level=9)
        out[name] = Image.open(path)
        out[name].load()
    return out


# ---------------------------------------------------------------- running


def load(models: Path, name: str):
    model = MllamaForConditionalGeneration.from_pretrained(
        models / name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    processor = AutoProcessor.from_pretrained(models / name)
    return model, processor


def prepare(processor, text: str, images: list[Image.Image]):
    kw = dict(text=[text], add_special_tokens=False, return_tensors="pt")
    if images:
        kw["images"] = [images]
    return processor(**kw)


@torch.no_grad()
def vision(model, inputs):
    v = model.model.vision_model(
        pixel_values=inputs["pixel_values"],
        aspect_ratio_ids=inputs["aspect_ratio_ids"],
        aspect_ratio_mask=inputs["aspect_ratio_mask"],
    ).last_hidden_state
    return v[0], model.model.multi_modal_projector(v)[0]


@torch.no_grad()
def logits(model, inputs):
    keys = ("input_ids", "pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")
    return model(**{k: inputs[k] for k in keys if k in inputs}, use_cache=False).logits[0]


@torch.no_grad()
def greedy(model, inputs) -> list[int]:
    cfg = GenerationConfig(
        do_sample=False, max_new_tokens=N_GREEDY, eos_token_id=None, pad_token_id=128004, use_cache=True
    )
    out = model.generate(**inputs, generation_config=cfg)
    ids = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(ids) == N_GREEDY, ids
    return ids


@torch.no_grad()
def greedy_uncached(model, inputs) -> tuple[list[int], float]:
    """Argmax over the full vocabulary recomputing the whole sequence each step,
    and the smallest gap between the first and second logit on the way."""
    inp = {k: v for k, v in inputs.items()}
    ids = []
    margin = float("inf")
    for _ in range(N_GREEDY):
        row = logits(model, inp)[-1]
        top = row.topk(2).values
        margin = min(margin, float(top[0] - top[1]))
        nxt = int(row.argmax())
        ids.append(nxt)
        inp["input_ids"] = torch.cat([inp["input_ids"], torch.tensor([[nxt]])], dim=1)
        if "cross_attention_mask" in inp:
            m = inp["cross_attention_mask"]
            inp["cross_attention_mask"] = torch.cat([m, m[:, -1:]], dim=1)
        if "attention_mask" in inp:
            inp["attention_mask"] = torch.ones_like(inp["input_ids"])
    return ids, margin


def columns(rows: torch.Tensor) -> torch.Tensor:
    cols = set(range(256)) | set(range(0, rows.shape[-1], 127))
    cols |= set(rows.topk(5, dim=-1).indices.flatten().tolist())
    return torch.tensor(sorted(cols), dtype=torch.int64)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tile_info(inputs, sizes: list[tuple[int, int]]):
    """Per image: the aspect-ratio id, the tile grid and the size the image is
    resized to before it is padded to the grid (as the processor computes them)."""
    from transformers.models.mllama import image_processing_pil_mllama as ip

    out = []
    for i, (w, h) in enumerate(sizes):
        ar_id = int(inputs["aspect_ratio_ids"][0, i])
        rows, cols = ip.get_all_supported_aspect_ratios(4)[ar_id - 1]
        canvas = ip.get_optimal_tiled_canvas(h, w, 4, 56)
        assert tuple(int(c) for c in canvas) == (rows * 56, cols * 56)
        new_h, new_w = ip.get_image_size_fit_to_canvas(h, w, int(canvas[0]), int(canvas[1]), 56)
        out.append(
            {
                "aspect_ratio_id": ar_id,
                "tiles": rows * cols,
                "tile_rows": rows,
                "tile_cols": cols,
                "resized_width": int(new_w),
                "resized_height": int(new_h),
            }
        )
    return out


CASES = [
    # name, model, prompt (user part), image files
    ("a", "tiny-mllama", "<|image|>Describe this.", ["img-a-40x30.png"]),
    ("b", "tiny-mllama", "<|image|>What is in this wide picture?", ["img-b-120x50.jpg"]),
    (
        "c",
        "tiny-mllama",
        "<|image|>First picture.<|image|>Second picture.",
        ["img-c1-300x200.png", "img-c2-50x150.png"],
    ),
    ("d", "tiny-mllama", "<|image|><|image|>Describe both.", ["img-d1-100x100.png", "img-d2-64x48.png"]),
    ("e", "tiny-mllama", "Describe a cat.", []),
    ("f", "tiny-mllama", "<|image|>What is drawn here?", ["img-f-200x90-rgba.png"]),
    ("g", "tiny-mllama-90b-pattern", "<|image|>Describe this.", ["img-a-40x30.png"]),
    ("h", "tiny-mllama-inmemory", "<|image|>Describe this.", ["img-a-40x30.png"]),
]


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max())))


def main() -> int:
    global META_RULES
    ap = argparse.ArgumentParser()
    ap.add_argument("--update", action="store_true", help="accept new model.safetensors digests")
    args = ap.parse_args()

    if not TOKENIZER.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "fetch-testdata.sh")], check=True)
    old_cases = {}
    if (HERE / "cases.json").exists():
        old_cases = json.loads((HERE / "cases.json").read_text())

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "make-tiny-mllama.py"), tmp, "--tokenizer", str(TOKENIZER)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        digests = {m: sha256(models / m / "model.safetensors") for m in MODELS}
        recorded = old_cases.get("models", {})
        for m, d in digests.items():
            if m in recorded and recorded[m]["sha256"] != d and not args.update:
                sys.exit(f"{m}/model.safetensors is {d}, cases.json records {recorded[m]['sha256']} (--update)")

        images = write_images()
        loaded = {m: load(models, m) for m in MODELS}
        tensors: dict[str, torch.Tensor] = {}
        cases_json = []
        results = {}

        # The gates are all nonzero.
        for m, (model, _) in loaded.items():
            for n, p in model.named_parameters():
                if "gate" in n:
                    assert bool((p != 0).all()), (m, n)

        for name, mname, user, files in CASES:
            model, processor = loaded[mname]
            text = chat(user)
            imgs = [images[f] for f in files]
            inputs = prepare(processor, text, imgs)
            tokens = inputs["input_ids"][0]
            assert int((tokens == IMAGE_TOKEN).sum()) == len(files)
            assert int((tokens == 128000).sum()) == 1
            lg = logits(model, inputs)
            cols = columns(lg)
            gr = greedy(model, inputs)
            gr_uncached, margin = greedy_uncached(model, inputs)
            assert gr == gr_uncached, name
            assert margin > 1e-3, (name, margin)
            res = {"inputs": inputs, "logits": lg, "greedy": gr}
            entry = {
                "name": name,
                "model": mname,
                "model_sha256": digests[mname],
                "prompt": text,
                "tokens": tokens.tolist(),
                "images": [],
                "greedy": gr,
                "greedy_min_top2_gap": round(margin, 4),
            }
            if files:
                vo, pr = vision(model, inputs)
                res.update(vision_out=vo, projected=pr)
                for f, t in zip(files, tile_info(inputs, [IMAGES[f][:2] for f in files])):
                    w, h, _, ch = IMAGES[f]
                    entry["images"].append({"file": f, "width": w, "height": h, "mode": "RGBA" if ch == 4 else "RGB", **t})
            results[name] = res

            if name == "h":
                a = results["a"]
                assert torch.equal(lg, a["logits"]) and gr == a["greedy"], "in-memory layout differs from hub layout"
                assert torch.equal(res["vision_out"], a["vision_out"])
                entry["same_as"] = "a"
            elif name == "g":
                a = results["a"]
                assert torch.equal(res["vision_out"], a["vision_out"]) and torch.equal(res["projected"], a["projected"])
                assert not close(lg, a["logits"], 1e-3)
                entry["inputs_from"] = "a"
                entry["vision_from"] = "a"
                tensors.update({f"g.tokens": tokens, "g.logits": lg[:, cols].contiguous(), "g.logit_columns": cols})
                tensors["g.greedy"] = torch.tensor(gr, dtype=torch.int64)
            else:
                tensors[f"{name}.tokens"] = tokens
                tensors[f"{name}.logit_columns"] = cols
                tensors[f"{name}.logits"] = lg[:, cols].contiguous()
                tensors[f"{name}.greedy"] = torch.tensor(gr, dtype=torch.int64)
                if files:
                    tensors[f"{name}.pixel_values"] = inputs["pixel_values"][0].float().contiguous()
                    tensors[f"{name}.aspect_ratio_ids"] = inputs["aspect_ratio_ids"][0].to(torch.int64)
                    tensors[f"{name}.aspect_ratio_mask"] = inputs["aspect_ratio_mask"][0].to(torch.int64)
                    tensors[f"{name}.cross_attention_mask"] = inputs["cross_attention_mask"][0].to(torch.int64)
                    tensors[f"{name}.vision_out"] = res["vision_out"].contiguous()
                    tensors[f"{name}.projected"] = res["projected"].contiguous()
            assert len(set(gr)) > 1, (name, gr)
            cases_json.append(entry)

        model, processor = loaded["tiny-mllama"]
        a = results["a"]
        ain = a["inputs"]
        first_image = int((ain["input_ids"][0] == IMAGE_TOKEN).nonzero()[0])

        # The image matters: the same tokens without it give other logits after the image.
        text_only = logits(model, {"input_ids": ain["input_ids"]})
        assert not close(a["logits"][first_image:], text_only[first_image:], 1e-2)
        # Rule 1: rows before the first image pass the cross-attention layers unchanged.
        assert close(a["logits"][:first_image], text_only[:first_image], 1e-6)

        # Each rule changes something.
        META_RULES = False
        plain_logits = logits(model, ain)
        plain_vision, _ = vision(model, ain)
        META_RULES = True
        assert not close(plain_logits[:first_image], a["logits"][:first_image], 1e-3), "rule 1 changed nothing"
        assert close(plain_vision[..., :32], a["vision_out"][..., :32], 0), "rule 2 touched the final output"
        assert not close(plain_vision[..., 32:], a["vision_out"][..., 32:], 1e-3), "rule 2 changed nothing"

        # The valid tile depends on the padding tiles (only pad-to-pad pairs are masked).
        poked = dict(ain)
        poked["pixel_values"] = ain["pixel_values"].clone()
        poked["pixel_values"][0, 0, 1:] = 0.5
        poked_vision, _ = vision(model, poked)
        assert not close(poked_vision[0, 0], a["vision_out"][0, 0], 1e-4), "padding tiles had no effect"

        # Case d: the rows after the two image tokens attend both images.
        d = results["d"]
        dmask = d["inputs"]["cross_attention_mask"][0]  # [T, 2, 4]
        dtok = d["inputs"]["input_ids"][0]
        p0, p1 = [int(i) for i in (dtok == IMAGE_TOKEN).nonzero()[:, 0]]
        assert p1 == p0 + 1
        assert bool((dmask[p1:, 0, :4] == 1).all()) and bool((dmask[p1:, 1, :2] == 1).all())
        assert bool((dmask[p0, 0, :4] == 1).all()) and bool((dmask[p0, 1] == 0).all())
        for which in (0, 1):
            imgs = [images["img-d1-100x100.png"], images["img-d2-64x48.png"]]
            arr = np.asarray(imgs[which]).copy()
            imgs[which] = Image.fromarray(255 - arr)
            changed = logits(model, prepare(processor, chat("<|image|><|image|>Describe both."), imgs))
            assert not close(changed[-1], d["logits"][-1], 1e-3), f"last row ignores image {which}"
        without_first = dict(d["inputs"])
        without_first["cross_attention_mask"] = d["inputs"]["cross_attention_mask"].clone()
        without_first["cross_attention_mask"][0, p1:, 0] = 0
        assert not close(logits(model, without_first)[-1], d["logits"][-1], 1e-3)

        # Case c: text after the second image attends only the second one.
        cmask = results["c"]["inputs"]["cross_attention_mask"][0]
        ctok = results["c"]["inputs"]["input_ids"][0]
        q0, q1 = [int(i) for i in (ctok == IMAGE_TOKEN).nonzero()[:, 0]]
        assert bool((cmask[q0:q1, 0, :4] == 1).all()) and bool((cmask[q0:q1, 1] == 0).all())
        assert bool((cmask[q1:, 0] == 0).all()) and bool((cmask[q1:, 1, :3] == 1).all())

        # The chat template gives case a's prompt.
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this."}]}]
        assert processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == chat("<|image|>Describe this.")

    save_file(dict(sorted(tensors.items())), str(HERE / "expected.safetensors"), metadata={"format": "pt"})
    doc = {
        "generator": "make_goldens.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "models": {m: {"sha256": digests[m]} for m in MODELS},
        "logit_rows": "every prompt position",
        "n_greedy": N_GREEDY,
        "cases": cases_json,
    }
    (HERE / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    for m in MODELS:
        print(f"{digests[m]}  {m}/model.safetensors")
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    print(f"wrote {HERE} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
