#!/usr/bin/env python3
"""Runs llama_ref (llama.cpp) on the test models and writes the forward-pass
goldens to crates/models/tests/golden/. Called by make_forward_goldens.sh,
which builds llama_ref first; see that script for how to rerun everything.

    python3 scripts/golden/forward_goldens.py --llama-ref BIN --llama-commit SHA \\
        [--testdata DIR] [--out DIR]

Pinned: llama.cpp as vendored in llama-cpp-python==0.3.36 (git commit
0c1e57098bba43ac29e6e3b677cdceebdd22334f); models from scripts/fetch-testdata.sh
(the tiny ones from scripts/make-tiny-models.py with numpy==2.4.6 gguf==0.19.0).

Every model is run twice, and both runs are written with the same schema:
  NAME.json                llama.cpp's defaults: flash attention "auto" (it
                           resolves to enabled on CPU) and an F16 KV cache. The
                           CPU flash-attention kernel rounds Q to F16 and sums
                           softmax(QK)·V in an F16 accumulator.
  NAME.fa-off-kv-f32.json  flash attention off, F32 KV cache: attention in F32,
                           the closer reference for an engine that keeps
                           attention in F32.
With --portable-ref (llama_ref built against llama.cpp without x86 SIMD, see
build_ref.sh) a third run is written:
  NAME.portable.json       llama.cpp's defaults on its portable C kernels. Our
                           scalar kernels follow the same arithmetic, so this is
                           the reference they are held to most tightly.
Each file's `settings_spread` says how far the other run lands (largest
logit difference over the recorded ids, and how many greedy tokens agree):
llama.cpp's own numerics move the logits that much, a floor under any
tolerance a comparison uses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

MODELS = [
    # (golden file, model file, prompt set)
    ("smollm2-135m-q4_1.json", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2"),
    ("tiny-llama32-f32.json", "tiny-llama32-f32.gguf", "tiny-llama32"),
    ("tiny-llama32-q8_0.json", "tiny-llama32-q8_0.gguf", "tiny-llama32"),
    ("tiny-llama32-q4_k.json", "tiny-llama32-q4_k.gguf", "tiny-llama32"),
]
N_CTX = 512
N_THREADS = 2
N_PREDICT = 32


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_ref(binary: Path, model: Path, prompts: list[str], extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pfile = Path(tmp) / "prompts.bin"
        pfile.write_bytes(b"\0".join(p.encode("utf-8") for p in prompts))
        out = Path(tmp) / "out.json"
        cmd = [str(binary), "-m", str(model), "-p", str(pfile), "-o", str(out)]
        cmd += ["-c", str(N_CTX), "-t", str(N_THREADS), "-n", str(N_PREDICT)] + extra
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text(encoding="ascii"))


def flash_attn_resolved(log: str) -> str:
    if "Flash Attention enabled" in log:
        return "enabled"
    if "Flash Attention not supported" in log or "flash_attn            = disabled" in log:
        return "disabled"
    raise RuntimeError(f"cannot tell from llama.cpp's log whether flash attention was used:\n{log}")


def recorded_ids(case: dict) -> dict[int, float]:
    return {int(i): float(v) for i, v in case["last_logits_top"] + case["last_logits_sample"]}


def dump(doc: dict) -> str:
    """JSON with one line per field of a case: readable diffs, modest size."""
    lines = ["{"]
    top = [k for k in doc if k != "cases"]
    for k in top:
        lines.append(f"  {json.dumps(k)}: {json.dumps(doc[k], ensure_ascii=False)},")
    lines.append('  "cases": [')
    for ci, case in enumerate(doc["cases"]):
        lines.append("    {")
        keys = list(case)
        for ki, k in enumerate(keys):
            sep = "," if ki + 1 < len(keys) else ""
            lines.append(f"      {json.dumps(k)}: {json.dumps(case[k], ensure_ascii=False)}{sep}")
        lines.append("    }" + ("," if ci + 1 < len(doc["cases"]) else ""))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-ref", type=Path, required=True)
    ap.add_argument("--llama-commit", required=True)
    ap.add_argument("--portable-ref", type=Path, help="llama_ref built against the portable (no SIMD) build")
    ap.add_argument("--testdata", type=Path, default=ROOT / ".cache" / "testdata")
    ap.add_argument("--out", type=Path, default=ROOT / "crates" / "models" / "tests" / "golden")
    args = ap.parse_args()

    prompt_sets = json.loads((HERE / "prompts.json").read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)

    for golden_name, model_name, set_name in MODELS:
        model = args.testdata / model_name
        if not model.is_file():
            sys.exit(f"{model} is missing: run scripts/fetch-testdata.sh")
        prompts = prompt_sets[set_name]

        t0 = time.monotonic()
        runs = {
            "default": run_ref(args.llama_ref, model, prompts, []),
            "fa-off-kv-f32": run_ref(args.llama_ref, model, prompts, ["-fa", "off", "-kv", "f32"]),
        }
        pairs = [("default", "fa-off-kv-f32"), ("fa-off-kv-f32", "default")]
        if args.portable_ref:
            runs["portable"] = run_ref(args.portable_ref, model, prompts, [])
            pairs.append(("portable", "default"))
        elapsed = time.monotonic() - t0
        for label, other_label in pairs:
            doc = make_doc(model, model_name, prompts, runs[label], runs[other_label], other_label, args.llama_commit)
            name = golden_name if label == "default" else golden_name.replace(".json", f".{label}.json")
            (args.out / name).write_text(dump(doc), encoding="utf-8")
            spread = doc["settings_spread"]
            print(
                f"{name}: flash_attn {doc['flash_attn']}, {doc['kv_type']}, "
                f"min margin {doc['min_greedy_top2_margin']:.4g}, spread vs {other_label} "
                f"{spread['max_abs_dlogit_last']:.4g}, greedy agree {spread['greedy_agree_prefix']}"
            )
        print(f"{model_name}: {elapsed:.1f}s for {len(runs)} runs")


def make_doc(
    model: Path, model_name: str, prompts: list[str], ref: dict, other: dict, other_label: str, commit: str
) -> dict:
    cases = []
    spread_max = 0.0
    agree = []
    for prompt, c, a in zip(prompts, ref["cases"], other["cases"], strict=True):
        if bytes.fromhex(c["prompt_hex"]).decode("utf-8") != prompt:
            raise RuntimeError("llama_ref returned the prompts out of order")
        mine, theirs = recorded_ids(c), recorded_ids(a)
        spread_max = max(spread_max, max(abs(mine[i] - theirs[i]) for i in mine if i in theirs))
        prefix = 0
        for x, y in zip(c["greedy_tokens"], a["greedy_tokens"]):
            if x != y:
                break
            prefix += 1
        agree.append(prefix)
        text = bytes.fromhex(c["greedy_text_hex"])
        cases.append(
            {
                "prompt": prompt,
                "prompt_tokens": c["prompt_tokens"],
                "last_logits_top": c["last_logits_top"],
                "last_logits_sample": c["last_logits_sample"],
                "greedy_tokens": c["greedy_tokens"],
                "greedy_top2_margins": [
                    float(f"{t1 - t2:.7g}") for t1, t2 in zip(c["greedy_top1_logits"], c["greedy_top2_logits"])
                ],
                "greedy_top1_logits": c["greedy_top1_logits"],
                "greedy_top2_logits": c["greedy_top2_logits"],
                "greedy_top2_tokens": c["greedy_top2_tokens"],
                # Lossy where a continuation ends inside a UTF-8 character;
                # the hex is the exact byte string.
                "greedy_text": text.decode("utf-8", errors="replace"),
                "greedy_text_hex": c["greedy_text_hex"],
            }
        )

    margins = [m for c in cases for m in c["greedy_top2_margins"]]
    return {
        "model": model_name,
        "model_sha256": sha256(model),
        "llama_cpp": f"llama-cpp-python 0.3.36 vendored tree, commit {commit}",
        "n_ctx": ref["n_ctx"],
        "n_threads": ref["n_threads"],
        "n_batch": ref["n_batch"],
        "n_ubatch": ref["n_ubatch"],
        "flash_attn": flash_attn_resolved(ref["context_log"]),
        "flash_attn_setting": ref["flash_attn_type"],
        "kv_type": f'K {ref["type_k"]}, V {ref["type_v"]}',
        "n_vocab": ref["n_vocab"],
        "add_bos": ref["add_bos"],
        "system_info": ref["system_info"].strip(),
        "notes": (
            "Logits at the last prompt position, then 32 greedy steps (first maximum wins) that do not "
            "stop at end-of-generation tokens. last_logits_sample ids are floor(i*(n_vocab-1)/255) "
            "for i in 0..256. greedy_top2_margins[i] = top-1 minus top-2 logit before greedy token i. "
            "settings_spread compares with the same llama.cpp run under other attention settings."
        ),
        "min_greedy_top2_margin": min(margins),
        "settings_spread": {
            "compared_with": other_label,
            "max_abs_dlogit_last": float(f"{spread_max:.6g}"),
            "greedy_agree_prefix": agree,
        },
        "cases": cases,
    }


if __name__ == "__main__":
    main()
