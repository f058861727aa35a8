#!/usr/bin/env python3
"""Times transformers' Llama 3.2 Vision tower and projector on one image, on the CPU.

    python3 bench/vision/torch_encode.py MODEL_DIR IMAGE [--dtype f32|bf16] [-t N] [-r REPS]
        [--attn sdpa|eager] [--dump-features FILE.npy]

The reference side of bench/vision/run.sh, for `edgellama bench --image`.
MODEL_DIR is a checkpoint directory in the hub layout (as
bench/vision/make-shaped-model.py writes it). Its vision_config builds
transformers' MllamaVisionModel and the projector an nn.Linear(vision_output_dim,
text hidden_size), exactly as MllamaModel holds them; both are created on the
meta device and take the tensors vision_model.* and multi_modal_projector.*
straight from model.safetensors (assign=True: no second copy of the weights
is ever made, and the text model is never read). --dtype f32 converts the BF16
weights to float32 (exact); --dtype bf16 keeps them in bfloat16, so the whole
forward runs in bfloat16 (the model casts the pixel values to its dtype).

Pixel values: the checkpoint's preprocessor_config.json through
AutoImageProcessor (MllamaImageProcessorPil when torchvision is absent, as in
the pinned environment), on the image file, once, untimed. Timed: one warm-up
forward, then REPS forwards of vision model + projector under
torch.inference_mode(), each a wall-clock interval (time.perf_counter_ns).
torch.set_num_threads(N); OMP_NUM_THREADS and MKL_NUM_THREADS are set to N
before torch is imported, and torch's inter-op pool to 1 thread.

Intermediate features: Meta's reference collects the INPUT of each layer named
by intermediate_layers_indices, transformers 5.25.0 its output; edgellama
follows Meta. MllamaVisionEncoder.forward is replaced by 5.25.0's loop with the
state recorded before each layer instead of after (the patch of
crates/models/tests/golden/mllama/make_goldens.py, rule 2), which computes the
same layers and keeps as many states, so the timing is transformers' own and
--dump-features gives values comparable with edgellama's.

Prints one JSON object: the timings (ns), the load and preprocessing times,
peak RSS (resource.getrusage ru_maxrss, KiB), versions and shapes.
--dump-features writes the warm-up forward's projected features of the
image's real tiles as a NumPy .npy array (float32, [tiles, tokens per tile,
text width]), the layout of `edgellama bench --dump-features`.

Environment: the venv that bench/vision/run.sh makes (torch==2.15.0,
transformers==5.25.0, numpy==2.4.6, pillow==12.3.0, safetensors==0.8.0).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("image", type=Path)
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="attention implementation")
    ap.add_argument("--dump-features", type=Path)
    a = ap.parse_args()
    if a.threads < 1 or a.reps < 1:
        ap.error("-t and -r must be at least 1")
    return a


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoImageProcessor, MllamaConfig  # noqa: E402
from transformers.modeling_outputs import BaseModelOutput  # noqa: E402
from transformers.models.mllama import modeling_mllama as mm  # noqa: E402


def vision_encoder_forward(self, hidden_states, attention_mask=None):
    # MllamaVisionEncoder.forward of 5.25.0, recording each layer's input
    # (Meta's intermediate features) instead of its output.
    states = ()
    for layer in self.layers:
        states += (hidden_states,)
        hidden_states = layer(hidden_states=hidden_states, attention_mask=attention_mask)
    return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=states)


mm.MllamaVisionEncoder.forward = vision_encoder_forward

PREFIXES = {
    # hub names, and transformers 5.x's in-memory names
    "vision_model.": "vision",
    "model.vision_model.": "vision",
    "multi_modal_projector.": "projector",
    "model.multi_modal_projector.": "projector",
}


def load(model_dir: Path, dtype: torch.dtype, attn: str):
    cfg = MllamaConfig.from_pretrained(model_dir)
    vcfg = cfg.vision_config
    vcfg._attn_implementation = attn
    with torch.device("meta"):
        vision = mm.MllamaVisionModel(vcfg)
        projector = torch.nn.Linear(vcfg.vision_output_dim, cfg.text_config.hidden_size, bias=True)
    state = {"vision": {}, "projector": {}}
    with safe_open(model_dir / "model.safetensors", framework="pt") as f:
        for name in f.keys():
            for prefix, part in PREFIXES.items():
                if name.startswith(prefix):
                    state[part][name[len(prefix) :]] = f.get_tensor(name).to(dtype)
                    break
    vision.load_state_dict(state["vision"], strict=True, assign=True)
    projector.load_state_dict(state["projector"], strict=True, assign=True)
    del state
    vision.eval()
    projector.eval()
    return vision, projector


def main() -> int:
    a = ARGS
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]

    t0 = time.perf_counter()
    vision, projector = load(a.model, dtype, a.attn)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter_ns()
    processor = AutoImageProcessor.from_pretrained(a.model)
    with Image.open(a.image) as im:
        im.load()
        width, height = im.size
        inputs = processor(images=[[im]], return_tensors="pt")
    prepare_ns = time.perf_counter_ns() - t0
    pixel_values = inputs["pixel_values"]
    ar_ids = inputs["aspect_ratio_ids"]
    ar_mask = inputs["aspect_ratio_mask"]
    n_tiles = int(ar_mask.sum())

    @torch.inference_mode()
    def encode() -> torch.Tensor:
        v = vision(pixel_values=pixel_values, aspect_ratio_ids=ar_ids, aspect_ratio_mask=ar_mask).last_hidden_state
        return projector(v)

    t0 = time.perf_counter_ns()
    out = encode()
    warmup_ns = time.perf_counter_ns() - t0
    shape = list(out.shape)  # [batch, images, tiles, tokens, text width]
    if a.dump_features:
        feats = out[0, 0, :n_tiles].float().numpy().astype(np.float32)
        np.save(a.dump_features, feats)
    del out
    samples = []
    for _ in range(a.reps):
        t0 = time.perf_counter_ns()
        out = encode()
        samples.append(time.perf_counter_ns() - t0)
        del out

    n_vision = sum(p.numel() for p in vision.parameters()) + sum(p.numel() for p in projector.parameters())
    result = {
        "impl": f"torch-{a.dtype}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": a.attn,
        "image_processor": type(processor).__name__,
        "n_threads": a.threads,
        "torch_threads": torch.get_num_threads(),
        "dtype": a.dtype,
        "vision_n_params": n_vision,
        "vision_n_layer": vision.config.num_hidden_layers,
        "vision_n_global": vision.config.num_global_layers,
        "image": str(a.image),
        "image_width": width,
        "image_height": height,
        "n_tiles": n_tiles,
        "pixel_values_shape": list(pixel_values.shape),
        "output_shape": shape,
        "load_s": load_s,
        "prepare_ns": prepare_ns,
        "warmup_ns": warmup_ns,
        "avg_ns": int(statistics.mean(samples)),
        "stddev_ns": int(statistics.stdev(samples)) if len(samples) > 1 else 0,
        "samples_ns": samples,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
