#!/usr/bin/env python3
"""Goldens for crates/models/src/mllama/preprocess.rs, from the Hugging Face
transformers mllama image processor (PIL backend, `MllamaImageProcessorPil`).

Pinned (the script refuses other versions, since the bits depend on them):
    python 3.12, transformers==5.25.0, pillow==12.3.0, numpy==2.4.6 (no torch:
    the PIL backend runs on numpy alone)

Set up and run from the repository root:
    python3.12 -m venv .cache/venv-preprocess
    .cache/venv-preprocess/bin/pip install transformers==5.25.0 pillow==12.3.0 numpy==2.4.6
    .cache/venv-preprocess/bin/python crates/models/tests/golden/mllama_preprocess/make_goldens.py

What it writes beside itself:
  - the input images (generated deterministically below: gradients, odd-period
    checkers for sharp edges, a seeded noise patch), one file per case;
  - for lossy inputs (JPEG, lossy WebP) also `<name>.pil.png`: Pillow's decoded
    RGB after the processor's RGB conversion, stored losslessly, because another
    JPEG/WebP decoder may legitimately round its IDCT or upsampling differently;
  - `preprocessor_config.json`, the Llama 3.2 Vision Instruct processor config;
  - `cases.json`: per case the processor's outputs.

Why hashes and not the tensors: pixel_values is [max_tiles, 3, T, T] f32, 15 MB
for one 560 image, far too big to commit. The Rust pipeline is meant to be bit
identical (integer resampler copied from Pillow, f32 arithmetic in numpy's
order), so a sha256 of the exact little-endian f32 bytes catches any single
wrong bit. To say *where* a mismatch is, each case also stores the sha256 of
the decoded RGB (before resizing) and of the resized uint8 image (before
padding), their sizes, and 100 sampled f32 values as raw bit patterns.
"""

import hashlib
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import transformers
from PIL import Image
from transformers import MllamaImageProcessorPil
from transformers.models.mllama.image_processing_pil_mllama import (
    get_all_supported_aspect_ratios,
    get_image_size_fit_to_canvas,
    get_optimal_tiled_canvas,
)
from transformers.image_transforms import convert_to_rgb

PINNED = {"transformers": "5.25.0", "PIL": "12.3.0", "numpy": "2.4.6"}
for mod in (transformers, PIL, np):
    want = PINNED[mod.__name__]
    if mod.__version__ != want:
        sys.exit(f"{mod.__name__} {mod.__version__} installed, goldens need {want}")

OUT = Path(__file__).resolve().parent

# The processor config shipped with Llama-3.2-11B-Vision-Instruct.
LLAMA32_VISION_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "MllamaImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_image_tiles": 4,
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 560, "width": 560},
}


def processor(tile, max_tiles):
    cfg = dict(LLAMA32_VISION_CONFIG)
    cfg["size"] = {"height": tile, "width": tile}
    cfg["max_image_tiles"] = max_tiles
    cfg.pop("image_processor_type")
    return MllamaImageProcessorPil(**cfg)


# ---------------------------------------------------------------- images


def pattern(h, w, seed):
    """RGB uint8: gradients, an odd-period checker (sharp edges at phases that
    do not line up with any tile or scale), a diagonal line and a noise patch.
    Compresses well, so the committed files stay small."""
    y, x = np.mgrid[0:h, 0:w]
    r = x * 255 // max(w - 1, 1)
    g = y * 255 // max(h - 1, 1)
    b = ((x // 7 + y // 5) % 2) * 200 + 30
    img = np.stack([r, g, b], axis=-1).astype(np.uint8)
    img[np.abs(x * h - y * w) < max(h, w)] = (255, 255, 0)
    rng = np.random.default_rng(seed)
    ph, pw = min(h, 24), min(w, 24)
    img[h - ph :, w - pw :] = rng.integers(0, 256, (ph, pw, 3), dtype=np.uint8)
    return img


def alpha_plane(h, w, seed):
    """Alpha with every kind of value: 0, 255 and partial, in bands and noise."""
    y, x = np.mgrid[0:h, 0:w]
    a = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    a[(y // 9) % 3 == 0] = 0
    a[(y // 9) % 3 == 1] = 255 - a[(y // 9) % 3 == 1]
    rng = np.random.default_rng(seed + 1)
    ph, pw = min(h, 16), min(w, 16)
    a[:ph, :pw] = rng.integers(0, 256, (ph, pw), dtype=np.uint8)
    return a


def pil_bytes(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_raw(width, height, bit_depth, color_type, rows, plte=None, trns=None):
    """A minimal PNG writer, for the layouts Pillow will not write (16-bit RGB,
    16-bit RGBA and LA, 2-bit grey, colour-key transparency). `rows` is a list
    of already packed scanlines (big-endian samples)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(raw, 9))
    out += chunk(b"IEND", b"")
    return out


def rows16(arr):
    """[h, w, c] uint16 -> big-endian scanlines."""
    return [r.astype(">u2").tobytes() for r in arr]


def gif_animated(h, w, seed):
    a = Image.fromarray(pattern(h, w, seed)).quantize(colors=64, dither=Image.Dither.NONE)
    b = Image.fromarray(pattern(h, w, seed + 7)[::-1]).quantize(colors=64, dither=Image.Dither.NONE)
    # Index 0 transparent in the first frame, so the white compositing shows.
    return pil_bytes(a, "GIF", save_all=True, append_images=[b], duration=100, loop=0, transparency=0)


def rgba(h, w, seed):
    return Image.fromarray(np.dstack([pattern(h, w, seed), alpha_plane(h, w, seed)]), "RGBA")


def rgb(h, w, seed):
    return Image.fromarray(pattern(h, w, seed), "RGB")


def grey(h, w, seed):
    return Image.fromarray(pattern(h, w, seed)[..., 0] // 2 + pattern(h, w, seed)[..., 2] // 2, "L")


def make_inputs():
    """name -> (encoded bytes, file extension, lossy?)"""
    cases = {}

    def add(name, data, ext, lossy=False):
        cases[name] = (data, ext, lossy)

    png = lambda im: pil_bytes(im, "PNG", optimize=True)
    add("tiny_1x1", png(rgb(1, 1, 1)), "png")
    add("tiny_3x7", png(rgb(7, 3, 2)), "png")  # 3 wide, 7 tall
    add("exact_560", png(rgb(560, 560, 3)), "png")
    add("small_300x200", png(rgb(200, 300, 4)), "png")  # upscale path
    add("large_2000x1500", png(rgb(1500, 2000, 5)), "png")  # shrink, antialiased
    add("wide_3000x100", png(rgb(100, 3000, 6)), "png")
    add("tall_100x3000", png(rgb(3000, 100, 7)), "png")
    # Taller than 100x its width and shrunk: Pillow resizes vertically first.
    add("very_tall_10x5000", png(rgb(5000, 10, 8)), "png")
    add("ar_1x1_500x400", png(rgb(400, 500, 9)), "png")
    add("ar_1x2_1000x500", png(rgb(500, 1000, 10)), "png")
    add("ar_2x1_500x1000", png(rgb(1000, 500, 11)), "png")
    add("ar_1x3_1500x500", png(rgb(500, 1500, 12)), "png")
    add("ar_3x1_500x1500", png(rgb(1500, 500, 13)), "png")
    add("ar_1x4_2000x500", png(rgb(500, 2000, 14)), "png")
    add("ar_4x1_500x2000", png(rgb(2000, 500, 15)), "png")
    add("ar_2x2_1234x1111", png(rgb(1111, 1234, 16)), "png")
    add("rgba_partial_700x500", png(rgba(500, 700, 17)), "png")
    add("grey_l_640x480", png(grey(480, 640, 18)), "png")
    la = Image.merge("LA", (grey(300, 420, 19), Image.fromarray(alpha_plane(300, 420, 19))))
    add("grey_la_420x300", png(la), "png")
    add("palette_p_500x350", png(rgb(350, 500, 20).quantize(colors=50, dither=Image.Dither.NONE)), "png")
    p = rgb(260, 390, 21).quantize(colors=32, dither=Image.Dither.NONE)
    add("palette_trns_390x260", pil_bytes(p, "PNG", transparency=bytes(range(0, 256, 8))), "png")
    add("jpeg_420_320x240", pil_bytes(rgb(240, 320, 22), "JPEG", quality=90), "jpg", lossy=True)
    add("jpeg_444_173x229", pil_bytes(rgb(229, 173, 23), "JPEG", quality=92, subsampling=0), "jpg", lossy=True)
    add("jpeg_grey_200x150", pil_bytes(grey(150, 200, 24), "JPEG", quality=90), "jpg", lossy=True)
    add("webp_lossless_500x300", pil_bytes(rgb(300, 500, 25), "WEBP", lossless=True), "webp")
    add("webp_lossless_rgba_300x420", pil_bytes(rgba(420, 300, 26), "WEBP", lossless=True, exact=True), "webp")
    add("webp_lossy_300x200", pil_bytes(rgb(200, 300, 27), "WEBP", quality=80), "webp", lossy=True)
    add("gif_animated_320x240", gif_animated(240, 320, 28), "gif")

    # Layouts written by hand. Small, since 16-bit samples compress poorly.
    h, w = 110, 150
    y, x = np.mgrid[0:h, 0:w]
    base = pattern(h, w, 29).astype(np.uint16)
    # Low bytes that vary, so taking the high byte is told apart from rounding.
    low = ((x[..., None] * 37 + y[..., None] * 11 + np.arange(3) * 85) % 256).astype(np.uint16)
    rgb16 = base * 256 + low
    add("png16_rgb_150x110", png_raw(w, h, 16, 2, rows16(rgb16)), "png")
    a16 = alpha_plane(h, w, 30).astype(np.uint16)[..., None] * 256 + low[..., :1]
    add("png16_rgba_150x110", png_raw(w, h, 16, 6, rows16(np.dstack([rgb16, a16]))), "png")
    add("png16_la_150x110", png_raw(w, h, 16, 4, rows16(np.dstack([rgb16[..., :1], a16]))), "png")
    # 16-bit grey spanning 0..65535: Pillow keeps it as I;16 and clips to 255
    # when converting to RGB, so half of this image turns white.
    g16 = ((x * 3 + y) % 512).astype(np.uint16)
    g16[: h // 2] *= 128
    add("png16_grey_150x110", png_raw(w, h, 16, 0, rows16(g16[..., None])), "png")
    g2 = ((x // 11 + y // 13) % 4).astype(np.uint8)
    packed = [np.packbits(np.unpackbits(r[:, None], axis=1)[:, 6:].reshape(-1)).tobytes() for r in g2]
    add("png2_grey_150x110", png_raw(w, h, 2, 0, packed), "png")
    # Colour keys where Pillow's rule (compare the key's low byte with the
    # pixel after its 8-bit conversion) differs from comparing stored samples.
    sh, sw = 40, 60
    sy, sx = np.mgrid[0:sh, 0:sw]
    g2k = ((sx // 5 + sy // 3) % 4).astype(np.uint8)
    packed = [np.packbits(np.unpackbits(r[:, None], axis=1)[:, 6:].reshape(-1)).tobytes() for r in g2k]
    add("png2_grey_trns_60x40", png_raw(sw, sh, 2, 0, packed, trns=struct.pack(">H", 1)), "png")
    g16k = ((sx * 7 + sy * 3) % 400).astype(np.uint16)
    g16k[::4, ::5] = 336  # the key itself; its low byte is 80
    add("png16_grey_trns_60x40", png_raw(sw, sh, 16, 0, rows16(g16k[..., None]), trns=struct.pack(">H", 336)), "png")
    c16k = pattern(sh, sw, 34).astype(np.uint16) * 257
    c16k[::3, ::4] = (0x1234, 0x5678, 0x9ABC)  # the key
    c16k[1::3, ::4] = (0x3400, 0x7811, 0xBC22)  # high bytes = the key's low bytes
    add(
        "png16_rgb_trns_60x40",
        png_raw(sw, sh, 16, 2, rows16(c16k), trns=struct.pack(">HHH", 0x1234, 0x5678, 0x9ABC)),
        "png",
    )
    # Grey and RGB with a colour key (tRNS): matching pixels become transparent.
    g8 = grey(330, 450, 31)
    add("png8_grey_trns_450x330", pil_bytes(g8, "PNG", optimize=True, transparency=int(np.asarray(g8)[5, 5])), "png")
    c8 = pattern(330, 450, 32)
    key = tuple(int(v) for v in c8[165, 150])
    add("png8_rgb_trns_450x330", pil_bytes(Image.fromarray(c8), "PNG", optimize=True, transparency=key), "png")
    return cases


# (case, tile, max_tiles): most at the Instruct setting, some at other tiles.
def case_settings(names):
    out = [(n, 560, 4) for n in names]
    for n in ("large_2000x1500", "ar_1x3_1500x500", "rgba_partial_700x500", "tiny_3x7", "very_tall_10x5000"):
        out.append((n, 448, 4))
    for n in ("exact_560", "ar_2x2_1234x1111", "gif_animated_320x240", "small_300x200", "wide_3000x100"):
        out.append((n, 56, 4))
    return out


def sha(b):
    return hashlib.sha256(b).hexdigest()


def run_case(name, data, tile, max_tiles, rng):
    proc = processor(tile, max_tiles)
    im = Image.open(io.BytesIO(data))
    im.load()
    # What the processor does first (PilBackend.process_image -> convert_to_rgb).
    decoded = convert_to_rgb(im, return_numpy=True)
    assert decoded.dtype == np.uint8 and decoded.shape[2] == 3
    h, w = decoded.shape[:2]
    canvas = get_optimal_tiled_canvas(h, w, max_tiles, tile)
    new_h, new_w = get_image_size_fit_to_canvas(h, w, canvas[0], canvas[1], tile)
    resized = np.asarray(Image.fromarray(decoded).resize((new_w, new_h), Image.Resampling.BILINEAR))

    out = proc(images=[[Image.open(io.BytesIO(data))]], return_tensors="np")
    pv = np.ascontiguousarray(out["pixel_values"][0, 0], dtype="<f4")
    assert pv.shape == (max_tiles, 3, tile, tile)
    flat = pv.reshape(-1).view("<u4")
    n = flat.size
    per = 3 * tile * tile
    idx = {0, n - 1}
    for t in range(max_tiles):
        for c in range(3):
            idx.add(t * per + c * tile * tile)
            idx.add(t * per + (c + 1) * tile * tile - 1)
    idx.update(int(i) for i in rng.integers(0, n, 100 - len(idx)))
    samples = [[i, int(flat[i])] for i in sorted(idx)]
    rows, cols = int(canvas[0]) // tile, int(canvas[1]) // tile
    return {
        "name": f"{name}@{tile}x{max_tiles}",
        "file": name,
        "tile_size": tile,
        "max_num_tiles": max_tiles,
        "decoded": {"width": w, "height": h, "sha256": sha(decoded.tobytes())},
        "resized": {"width": int(new_w), "height": int(new_h), "sha256": sha(np.ascontiguousarray(resized).tobytes())},
        "aspect_ratio": [rows, cols],
        "aspect_ratio_id": int(out["aspect_ratio_ids"][0, 0]),
        "aspect_ratio_mask": [int(v) for v in out["aspect_ratio_mask"][0, 0]],
        "num_tiles": int(out["num_tiles"][0][0]),
        "pixel_values_sha256": sha(pv.tobytes()),
        "samples": samples,
    }


def canvas_table(rng):
    """get_optimal_tiled_canvas / get_image_size_fit_to_canvas on many sizes,
    edge cases included: checks the canvas arithmetic apart from any pixels."""
    sizes = [(1, 1), (1, 10000), (10000, 1), (560, 560), (559, 561), (561, 559), (1120, 560), (560, 1120)]
    sizes += [(int(a), int(b)) for a, b in rng.integers(1, 4000, (150, 2))]
    rows = []
    for tile, max_tiles in ((560, 4), (448, 4), (56, 4), (560, 1), (560, 6), (336, 8)):
        for h, w in sizes:
            ch, cw = get_optimal_tiled_canvas(h, w, max_tiles, tile)
            nh, nw = get_image_size_fit_to_canvas(h, w, int(ch), int(cw), tile)
            rows.append([h, w, tile, max_tiles, int(ch), int(cw), int(nh), int(nw)])
    return rows


def dump(golden):
    """JSON with one case, file or table row a line: small and diffable."""
    c = lambda v: json.dumps(v, separators=(",", ":"))
    parts = []
    for key, value in golden.items():
        if isinstance(value, list):
            body = "[\n" + ",\n".join("  " + c(v) for v in value) + "\n ]"
        elif isinstance(value, dict) and key != "versions":
            body = "{\n" + ",\n".join(f"  {c(k)}: {c(v)}" for k, v in value.items()) + "\n }"
        else:
            body = c(value)
        parts.append(f" {c(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main():
    rng = np.random.default_rng(1234)
    inputs = make_inputs()
    for old in OUT.iterdir():
        if old.suffix in (".png", ".jpg", ".webp", ".gif"):
            old.unlink()
    files = {}
    for name, (data, ext, lossy) in inputs.items():
        fname = f"{name}.{ext}"
        (OUT / fname).write_bytes(data)
        entry = {"path": fname, "sha256": sha(data), "lossy": lossy}
        if lossy:
            pil_rgb = convert_to_rgb(Image.open(io.BytesIO(data)), return_numpy=True)
            ref = f"{name}.pil.png"
            (OUT / ref).write_bytes(pil_bytes(Image.fromarray(pil_rgb), "PNG", optimize=True))
            entry["pil_decoded"] = ref
        files[name] = entry
    cases = [run_case(n, inputs[n][0], t, m, rng) for n, t, m in case_settings(list(inputs))]
    golden = {
        "generator": "make_goldens.py",
        "versions": {k: v for k, v in PINNED.items()},
        "files": files,
        "cases": cases,
        "supported_aspect_ratios": {str(m): [list(r) for r in get_all_supported_aspect_ratios(m)] for m in range(1, 9)},
        "canvas": canvas_table(rng),
    }
    (OUT / "cases.json").write_text(dump(golden))
    (OUT / "preprocessor_config.json").write_text(json.dumps(LLAMA32_VISION_CONFIG, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(cases)} cases, {len(files)} files, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
