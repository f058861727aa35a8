#!/usr/bin/env python3
"""A small safetensors file written by the reference implementation, for the
reader's tests (crates/convert/tests/safetensors_reference.rs).

    python3 scripts/golden/convert/make_reference_safetensors.py

Pinned: numpy==2.4.6, safetensors==0.7.0. Writes, beside this script:
  goldens/reference.safetensors       F32, F16, BF16, F64, I64 (a scalar), U8
                                      (an empty tensor) and BOOL tensors with
                                      __metadata__
  goldens/reference_safetensors.json  each tensor's dtype, shape and the
                                      sha256 of its bytes as the library reads
                                      them back (safe_open), and the metadata
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import safetensors
from safetensors import safe_open

HERE = Path(__file__).resolve().parent


def main() -> None:
    out = HERE / "goldens"
    out.mkdir(exist_ok=True)
    path = out / "reference.safetensors"
    bf16 = (np.array([1.5, -2.0, 3.140625], dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
    tensors = {
        "model.layers.0.weight": {"dtype": "float32", "shape": [2, 3],
                                  "data": np.arange(6, dtype="<f4").tobytes()},
        "half": {"dtype": "float16", "shape": [4], "data": np.array([0.5, -1, 65504, 1e-7], dtype="<f2").tobytes()},
        "brain": {"dtype": "bfloat16", "shape": [3], "data": bf16.tobytes()},
        "double": {"dtype": "float64", "shape": [2], "data": np.array([1.0, -0.25], dtype="<f8").tobytes()},
        "step": {"dtype": "int64", "shape": [], "data": np.array(7, dtype="<i8").tobytes()},
        "empty": {"dtype": "uint8", "shape": [0, 5], "data": b""},
        "mask": {"dtype": "bool", "shape": [3], "data": bytes([1, 0, 1])},
    }
    safetensors.serialize_file(tensors, str(path), metadata={"format": "pt", "note": "reference"})

    record = {"generator": "scripts/golden/convert/make_reference_safetensors.py",
              "safetensors": safetensors.__version__, "tensors": [], "metadata": None}
    with safe_open(str(path), framework="numpy") as f:
        record["metadata"] = f.metadata()
        for name in f.keys():
            sl = f.get_slice(name)
            dtype = sl.get_dtype()
            if dtype == "BF16":
                # numpy cannot hold bfloat16: the bytes are the ones written.
                data = tensors[name]["data"]
            else:
                data = f.get_tensor(name).tobytes()
            record["tensors"].append({"name": name, "dtype": dtype, "shape": sl.get_shape(),
                                      "sha256": hashlib.sha256(data).hexdigest()})
    (out / "reference_safetensors.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
