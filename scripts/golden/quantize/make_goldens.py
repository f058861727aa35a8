#!/usr/bin/env python3
"""Regenerates quantize.json beside this script: what llama.cpp's llama-quantize
writes for SmolLM2-135M-Instruct at every type edgellama supports, and which type
it gives each tensor of a few other model shapes.

    LLAMA_CPP_DIR=/path/to/llama.cpp python3 scripts/golden/quantize/make_goldens.py

Needs:
- LLAMA_CPP_DIR: the llama.cpp tree vendored in llama-cpp-python==0.3.36 (git
  commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f), built with its tools in
  $LLAMA_CPP_DIR/build (targets llama-quantize and llama-perplexity; commands in
  scripts/golden/build_ref.sh);
- the test data from scripts/fetch-testdata.sh (EDGELLAMA_TESTDATA, default
  .cache/testdata): SmolLM2-135M-Instruct.Q4_1.gguf, tiny-llama32-f32.gguf and
  shakespeare-hamlet.txt;
- python3 with gguf==0.19.0 (gguf-py) and numpy==2.4.6.

What it does, all with 2 threads:
1. llama-quantize --allow-requantize SmolLM2-135M-Instruct.Q4_1.gguf smollm2-f16.gguf F16
   (dequantizing Q4_1/Q8_0 to F16 is exact), then llama-quantize smollm2-f16.gguf
   out.gguf TYPE for every TYPE below. For the F16 file and each output it records
   the file size and sha256, llama-quantize's fallback count, each tensor's type
   and the first 16 hex digits of the sha256 of its bytes (in file order), and
   the perplexity from
   llama-perplexity -m out.gguf -f shakespeare-hamlet.txt -c 128 --chunks 8 -t 2.
2. llama-quantize --dry-run TYPE on tiny-llama32-f32.gguf and on small synthetic
   models written here with gguf-py (random data; only names, shapes and
   hyperparameters matter): an untied output matrix with 8-way grouped-query
   attention and rows of 96 and 100 elements, an 80-block llama (the "70B" rule),
   an 8-expert mixture of experts, and a falcon model. It records the order
   llama-quantize visits the tensors in, the type it prints for each and the
   fallback count; for the synthetic models also their hyperparameters and
   tensor list, and for the first one also Q4_K_M and Q2_K with --pure and with
   --leave-output-tensor.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

TYPES = [
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
    "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "F16", "BF16", "F32",
]
THREADS = "2"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def run(cmd, cwd=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        die(f"{' '.join(map(str, cmd))} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def n_fallback(log):
    m = re.search(r"WARNING: (\d+) of \d+ tensor\(s\) required fallback", log)
    return int(m.group(1)) if m else 0


def describe(path):
    """Size, sha256 and per-tensor (name, type, sha256[:16]) in file order."""
    r = gguf.GGUFReader(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = []
    for t in r.tensors:
        start = int(t.data_offset)
        raw = data[start:start + int(t.n_bytes)].tobytes()
        tensors.append((t.name, t.tensor_type.name.lower().replace("_k", "_K"),
                        hashlib.sha256(raw).hexdigest()[:16]))
    return {
        "size": os.path.getsize(path),
        "sha256": sha256_file(path),
        "tensors": tensors,
    }


def perplexity(bin_dir, model, testdata):
    log = run([bin_dir / "llama-perplexity", "-m", model, "-f", "shakespeare-hamlet.txt",
               "-c", "128", "--chunks", "8", "-t", THREADS], cwd=testdata)
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    if not m:
        die(f"no perplexity in the log of {model}:\n{log}")
    return float(m.group(1)), float(m.group(2))


LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s+(\S+), size =\s+[0-9.]+ MiB(?: ->\s+[0-9.]+ MiB \((\S+)\))?")


def dry_run(bin_dir, model, qtype, flags=()):
    log = run([bin_dir / "llama-quantize", "--dry-run", *flags, model, qtype, THREADS])
    names, types = [], []
    for line in log.splitlines():
        m = LINE.match(line)
        if m:
            name, src, dst = m.groups()
            names.append(name)
            types.append(dst or src)
    if not names:
        die(f"no tensor lines in the dry run of {model} {qtype}:\n{log}")
    return names, {"n_fallback": n_fallback(log), "tensor_types": types}


def dry_runs(bin_dir, model, types=TYPES, flags=()):
    """The write order (same for every type) and each type's plan."""
    order, plans = None, {}
    for qtype in types:
        names, plan = dry_run(bin_dir, model, qtype, flags)
        if order is not None and names != order:
            die(f"{model}: the tensor order of {qtype} differs from {TYPES[0]}")
        order, plans[qtype] = names, plan
    return {"tensor_names": order, "types": plans}


def write_synthetic(path, arch, kv, tensors, seed):
    """tensors: (name, ggml dims, dtype); data is random, only shapes matter."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in kv.items():
        full = f"{arch}.{key}"
        if isinstance(value, float):
            w.add_float32(full, value)
        else:
            w.add_uint32(full, value)
    for name, dims, dtype in tensors:
        w.add_tensor(name, rng.standard_normal(tuple(reversed(dims))).astype(dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_blocks(n_layer, n_embd, n_kv, n_ff, extra=None):
    t = []
    for i in range(n_layer):
        b = f"blk.{i}."
        t += [
            (b + "attn_norm.weight", [n_embd], np.float32),
            (b + "attn_q.weight", [n_embd, n_embd], np.float16),
            (b + "attn_k.weight", [n_embd, n_kv], np.float16),
            (b + "attn_v.weight", [n_embd, n_kv], np.float16),
            (b + "attn_output.weight", [n_embd, n_embd], np.float16),
            (b + "ffn_norm.weight", [n_embd], np.float32),
        ]
        t += extra(b) if extra else [
            (b + "ffn_gate.weight", [n_embd, n_ff], np.float16),
            (b + "ffn_up.weight", [n_embd, n_ff], np.float16),
            (b + "ffn_down.weight", [n_ff, n_embd], np.float16),
        ]
    return t


def synthetic_models():
    """name -> (arch, metadata, tensors)."""
    models = {}

    # Untied output, 8-way GQA (n_gqa >= 4 rules), odd row lengths.
    kv = {"context_length": 256, "embedding_length": 256, "block_count": 8,
          "feed_forward_length": 512, "attention.head_count": 32,
          "attention.head_count_kv": 4, "attention.layer_norm_rms_epsilon": 1e-5}
    t = [("token_embd.weight", [256, 320], np.float16),
         ("output_norm.weight", [256], np.float32),
         ("output.weight", [256, 320], np.float16)]
    t += llama_blocks(8, 256, 32, 512)
    t += [("blk.0.ffn_gate_shexp.weight", [96, 8], np.float16),   # 32-block fallbacks
          ("blk.0.ffn_up_shexp.weight", [100, 8], np.float16),    # F16 fallback
          ("blk.1.ffn_up.bias", [512], np.float32)]
    models["llama-untied-gqa8"] = ("llama", kv, t)

    # 80 blocks with GQA: llama.cpp's LLM_TYPE_70B.
    kv = {"context_length": 256, "embedding_length": 256, "block_count": 80,
          "feed_forward_length": 256, "attention.head_count": 8,
          "attention.head_count_kv": 1, "attention.layer_norm_rms_epsilon": 1e-5}
    t = [("token_embd.weight", [256, 16], np.float16),
         ("output_norm.weight", [256], np.float32),
         ("output.weight", [256, 16], np.float16)]
    for i in range(80):  # only what the rules look at
        t += [(f"blk.{i}.attn_q.weight", [256, 8], np.float16),
              (f"blk.{i}.attn_v.weight", [256, 8], np.float16),
              (f"blk.{i}.ffn_down.weight", [256, 8], np.float16)]
    models["llama-80-blocks"] = ("llama", kv, t)

    # Mixture of 8 experts (Mixtral-like): expert tensors are 3-D.
    kv = {"context_length": 256, "embedding_length": 256, "block_count": 4,
          "feed_forward_length": 256, "attention.head_count": 8,
          "attention.head_count_kv": 8, "attention.layer_norm_rms_epsilon": 1e-5,
          "expert_count": 8, "expert_used_count": 2}

    def experts(b):
        return [(b + "ffn_gate_inp.weight", [256, 8], np.float32),
                (b + "ffn_gate_exps.weight", [256, 64, 8], np.float16),
                (b + "ffn_up_exps.weight", [256, 64, 8], np.float16),
                (b + "ffn_down_exps.weight", [256, 64, 8], np.float16)]
    t = [("token_embd.weight", [256, 16], np.float16),
         ("output_norm.weight", [256], np.float32),
         ("output.weight", [256, 16], np.float16)]
    t += llama_blocks(4, 256, 256, 256, experts)
    models["llama-moe-8"] = ("llama", kv, t)

    # Falcon: fused QKV and its own rules.
    kv = {"context_length": 256, "embedding_length": 256, "block_count": 16,
          "feed_forward_length": 512, "attention.head_count": 8,
          "attention.head_count_kv": 1, "attention.layer_norm_epsilon": 1e-5}
    t = [("token_embd.weight", [256, 16], np.float16),
         ("output_norm.weight", [256], np.float32),
         ("output_norm.bias", [256], np.float32),
         ("output.weight", [256, 16], np.float16)]
    for i in range(16):
        b = f"blk.{i}."
        t += [(b + "attn_norm.weight", [256], np.float32),
              (b + "attn_norm.bias", [256], np.float32),
              (b + "attn_qkv.weight", [256, 320], np.float16),
              (b + "attn_output.weight", [256, 256], np.float16),
              (b + "ffn_up.weight", [256, 32], np.float16),
              (b + "ffn_down.weight", [512, 8], np.float16)]
    models["falcon"] = ("falcon", kv, t)
    return models


def main():
    llama_dir = os.environ.get("LLAMA_CPP_DIR")
    if not llama_dir:
        die("set LLAMA_CPP_DIR to the llama.cpp tree (see scripts/golden/build_ref.sh)")
    bin_dir = Path(llama_dir) / "build" / "bin"
    for exe in ("llama-quantize", "llama-perplexity"):
        if not os.access(bin_dir / exe, os.X_OK):
            die(f"{bin_dir / exe} is missing: build llama.cpp's tools (see scripts/golden/build_ref.sh)")
    testdata = Path(os.environ.get("EDGELLAMA_TESTDATA", ROOT / ".cache" / "testdata"))
    for f in ("SmolLM2-135M-Instruct.Q4_1.gguf", "tiny-llama32-f32.gguf", "shakespeare-hamlet.txt"):
        if not (testdata / f).is_file():
            die(f"{testdata / f} is missing: run scripts/fetch-testdata.sh")
    commit = subprocess.run(["git", "-C", llama_dir, "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    if not commit:
        info = (Path(llama_dir) / "build" / "common" / "build-info.cpp").read_text()
        commit = re.search(r'LLAMA_COMMIT = "([^"]*)"', info).group(1)

    golden = {
        "generated_by": "scripts/golden/quantize/make_goldens.py",
        "llama_cpp_commit": commit,
        "gguf_py": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
        "perplexity_command": "llama-perplexity -m MODEL -f shakespeare-hamlet.txt -c 128 --chunks 8 -t 2",
        "tensor_hash": "first 16 hex digits of the sha256 of the tensor's bytes",
    }
    quantize = bin_dir / "llama-quantize"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f16 = tmp / "smollm2-f16.gguf"
        log = run([quantize, "--allow-requantize", testdata / "SmolLM2-135M-Instruct.Q4_1.gguf",
                   f16, "F16", THREADS])
        d = describe(f16)
        names = [n for n, _, _ in d["tensors"]]
        smollm2 = {
            "source": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "tensor_names": names,
            "f16": {"size": d["size"], "sha256": d["sha256"], "n_fallback": n_fallback(log),
                    "tensor_types": [t for _, t, _ in d["tensors"]],
                    "tensor_hashes": [h for _, _, h in d["tensors"]]},
            "types": {},
        }
        smollm2["f16"]["perplexity"], smollm2["f16"]["perplexity_err"] = perplexity(bin_dir, f16, testdata)
        for qtype in TYPES:
            out = tmp / f"smollm2-{qtype}.gguf"
            log = run([quantize, f16, out, qtype, THREADS])
            d = describe(out)
            if [n for n, _, _ in d["tensors"]] != names:
                die(f"{qtype}: tensor order differs from the F16 file")
            ppl, err = perplexity(bin_dir, out, testdata)
            smollm2["types"][qtype] = {
                "size": d["size"], "sha256": d["sha256"], "n_fallback": n_fallback(log),
                "perplexity": ppl, "perplexity_err": err,
                "tensor_types": [t for _, t, _ in d["tensors"]],
                "tensor_hashes": [h for _, _, h in d["tensors"]],
            }
            out.unlink()
            print(f"smollm2 {qtype}: {d['size']} bytes, ppl {ppl}", file=sys.stderr)
        golden["smollm2"] = smollm2

        plans = {}
        plans["tiny-llama32-f32"] = {"file": "tiny-llama32-f32.gguf",
                                     **dry_runs(bin_dir, testdata / "tiny-llama32-f32.gguf")}
        for i, (name, (arch, kv, tensors)) in enumerate(synthetic_models().items()):
            path = tmp / f"{name}.gguf"
            write_synthetic(path, arch, kv, tensors, seed=i)
            plans[name] = {
                "arch": arch,
                "metadata": kv,
                "tensors": [[n, dims, "f32" if dt is np.float32 else "f16"] for n, dims, dt in tensors],
                **dry_runs(bin_dir, path),
            }
            if name == "llama-untied-gqa8":
                for flag in ("--pure", "--leave-output-tensor"):
                    plans[name][flag] = dry_runs(bin_dir, path, ("Q4_K_M", "Q2_K"), (flag,))["types"]
            print(f"plans {name}: done", file=sys.stderr)
        golden["plans"] = plans

    out = HERE / "quantize.json"
    with open(out, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
