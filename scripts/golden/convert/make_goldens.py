#!/usr/bin/env python3
"""Goldens for `edgellama convert`: what llama.cpp's convert_hf_to_gguf.py
writes for the tiny checkpoints of make_tiny_hf.py, and what llama.cpp
generates from its file and from ours.

    python make_goldens.py --llama-cpp DIR [--edgellama BIN] [--work DIR]

Run it with a Python that has the converter's requirements, pinned:

    python3 -m venv VENV
    VENV/bin/pip install torch==2.11.0 transformers==4.57.6 safetensors==0.7.0 \
        numpy==2.4.6 sentencepiece==0.2.1 protobuf==4.25.8 jinja2
    VENV/bin/python scripts/golden/convert/make_goldens.py \
        --llama-cpp .../llama_cpp_python-0.3.36/vendor/llama.cpp \
        --edgellama target/release/edgellama

DIR is the llama.cpp tree vendored in the llama-cpp-python==0.3.36 sdist (its
convert_hf_to_gguf.py and gguf-py are used as they are; commit in
goldens/convert.json), with llama-simple built in DIR/build/bin (commands in
scripts/golden/build_ref.sh). The test data (scripts/fetch-testdata.sh) gives
the tokenizer files.

Writes, beside this script:
  goldens/convert.json   for each checkpoint and --outtype (auto, f32, f16,
                         bf16, q8_0): the sha256 of each source tensor, and of
                         convert_hf_to_gguf.py's file: every metadata key with
                         its type and value (arrays: element type, length,
                         sha256 of their GGUF encoding), every tensor's name,
                         ggml shape, type, offset and the sha256 of its data.
  goldens/llama_outputs.json  (with --edgellama) the greedy continuations
                         llama-simple prints from the reference file and from
                         `edgellama convert`'s, and whether the two files are
                         byte-identical; edgellama's own greedy output from
                         `run -m DIR` and `run -m converted.gguf` (for the
                         default --outtype), compared with llama-simple's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUTTYPES = ["auto", "f32", "f16", "bf16", "q8_0"]
PROMPT = "The capital of France is"
N_PREDICT = 24

sys.path.insert(0, str(HERE))
import make_tiny_hf  # noqa: E402


def gguf_encode_array(field, gguf) -> bytes:
    """The elements of an array field as GGUF stores them (strings: u64 length
    + UTF-8 bytes; numbers little-endian)."""
    sub = gguf.GGUFValueType(field.types[1])
    out = bytearray()
    for idx in field.data:
        part = field.parts[idx]
        if sub == gguf.GGUFValueType.STRING:
            b = bytes(part)
            out += struct.pack("<Q", len(b)) + b
        else:
            out += part.tobytes()
    return bytes(out)


def dump(path: Path, gguf) -> dict:
    r = gguf.GGUFReader(str(path))
    meta = []
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        vt = gguf.GGUFValueType(f.types[0])
        if vt == gguf.GGUFValueType.ARRAY:
            sub = gguf.GGUFValueType(f.types[1])
            enc = gguf_encode_array(f, gguf)
            meta.append({
                "key": key, "type": "ARRAY", "element_type": sub.name, "len": len(f.data),
                "sha256": hashlib.sha256(enc).hexdigest(),
            })
        else:
            v = f.contents()
            meta.append({"key": key, "type": vt.name, "value": v})
    tensors = []
    for t in r.tensors:
        tensors.append({
            "name": t.name,
            "shape": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "offset": int(t.data_offset) - int(r.data_offset) if hasattr(r, "data_offset") else None,
            "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(),
        })
    return {
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "file_size": path.stat().st_size,
        "metadata": meta,
        "tensors": tensors,
    }


def run(cmd: list[str]) -> bytes:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True).stdout


def text(b: bytes) -> str:
    # Token pieces may split a UTF-8 character: keep the bytes visible.
    return b.decode("utf-8", errors="backslashreplace")


def llama_simple(bin_dir: Path, model: Path) -> bytes:
    """The greedy continuation llama-simple prints after its echo of the prompt."""
    out = run([bin_dir / "llama-simple", "-m", model, "-n", str(N_PREDICT), PROMPT])
    echo = ("<|begin_of_text|>" + PROMPT).encode()
    if not out.startswith(echo):
        raise RuntimeError(f"llama-simple did not echo the prompt: {out[:80]!r}")
    return out[len(echo):].rstrip(b"\n")


def edgellama_run(exe: Path, model: Path) -> bytes:
    out = run([exe, "run", "-m", model, "-p", PROMPT, "-n", str(N_PREDICT), "--temp", "0", "-t", "2"])
    return out.rstrip(b"\n")


def llama_commit(llama: Path) -> str:
    info = llama / "build" / "common" / "build-info.cpp"
    for line in info.read_text().splitlines() if info.is_file() else []:
        if "LLAMA_COMMIT" in line:
            return line.split('"')[1]
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", type=Path, required=True)
    ap.add_argument("--edgellama", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--testdata", type=Path, default=Path(os.environ.get("EDGELLAMA_TESTDATA", ROOT / ".cache" / "testdata")))
    args = ap.parse_args()
    llama = args.llama_cpp.resolve()
    sys.path.insert(1, str(llama / "gguf-py"))
    import gguf  # the tree's own gguf-py, as convert_hf_to_gguf.py uses

    work = (args.work or Path(tempfile.mkdtemp(prefix="convert-goldens-"))).resolve()
    hf = work / "hf"
    run([sys.executable, HERE / "make_tiny_hf.py", hf,
         "--tokenizer", args.testdata / "llama3.2-tokenizer.json",
         "--tokenizer-config", args.testdata / "llama3.2-tokenizer_config.json"])

    golden = {
        "generator": "scripts/golden/convert/make_goldens.py",
        "llama_cpp_commit": llama_commit(llama),
        "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "safetensors", "numpy")},
        "checkpoints": {},
    }
    outputs = {"prompt": PROMPT, "n_predict": N_PREDICT, "runs": []}
    for name in make_tiny_hf.VARIANTS:
        src = json.loads((hf / f"{name}.tensors.json").read_text())
        entry = {"source_tensors": src["tensors"], "conversions": {}}
        for outtype in OUTTYPES:
            ref = work / "ref" / f"{name}-{outtype}.gguf"
            ref.parent.mkdir(parents=True, exist_ok=True)
            run([sys.executable, llama / "convert_hf_to_gguf.py", hf / name, "--outfile", ref, "--outtype", outtype])
            entry["conversions"][outtype] = dump(ref, gguf)
            if args.edgellama is None:
                continue
            ours = work / "ours" / f"{name}-{outtype}.gguf"
            ours.parent.mkdir(parents=True, exist_ok=True)
            run([args.edgellama, "convert", hf / name, "-o", ours, "--outtype", outtype])
            ref_text = llama_simple(llama / "build" / "bin", ref)
            ours_text = llama_simple(llama / "build" / "bin", ours)
            rec = {
                "checkpoint": name,
                "outtype": outtype,
                "identical_files": ours.read_bytes() == ref.read_bytes(),
                "llama_simple_reference": text(ref_text),
                "llama_simple_ours": text(ours_text),
                "llama_simple_same": ref_text == ours_text,
            }
            if outtype == "auto":
                run_dir = edgellama_run(args.edgellama, hf / name)
                run_file = edgellama_run(args.edgellama, ours)
                rec["edgellama_run_dir"] = text(run_dir)
                rec["edgellama_run_converted"] = text(run_file)
                rec["edgellama_dir_same_as_converted"] = run_dir == run_file
                # llama-simple prints a token's bytes as they are; edgellama
                # prints U+FFFD for bytes that never become valid UTF-8.
                lossy = lambda b: b.decode("utf-8", errors="replace")  # noqa: E731
                rec["edgellama_same_as_llama_simple"] = lossy(run_dir) == lossy(ref_text)
            outputs["runs"].append(rec)
        golden["checkpoints"][name] = entry

    out = HERE / "goldens"
    out.mkdir(exist_ok=True)
    (out / "convert.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.edgellama is not None:
        (out / "llama_outputs.json").write_text(json.dumps(outputs, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"goldens in {out} (work files in {work})")


if __name__ == "__main__":
    main()
