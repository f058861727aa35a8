#!/usr/bin/env python3
"""Golden files for the edgellama-gguf tests, produced with gguf-py (the GGUF
reader/writer maintained in the llama.cpp repository) as the independent reference.

Rerun from the repository root (after scripts/fetch-testdata.sh):

    python3 crates/gguf/tests/golden/make_golden.py

Pinned versions used for the committed files: Python 3.11, gguf==0.19.0, numpy==2.4.6.
The test data directory is $EDGELLAMA_TESTDATA (default .cache/testdata).

Outputs, next to this script:
  smollm2_q4_1.json  what gguf-py reads from SmolLM2-135M-Instruct.Q4_1.gguf: header
                     numbers, every metadata key with its type and value (arrays: element
                     type, length, first elements, last element), every tensor's name, dims
                     (ggml order), type, offset, byte size and a few data bytes.
  all_types.gguf     a small file written by gguf-py's GGUFWriter: every metadata value
                     type, arrays of every type, nested arrays, an empty string, tensors of
                     several ggml types, alignment 64.
  all_types.json     the content given to GGUFWriter for all_types.gguf (values exactly as
                     stored, e.g. f32 values rounded to f32), with the tensor offsets and
                     data offset gguf-py's reader reports for the written file.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType as VT, GGUFWriter, GGMLQuantizationType as QT

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
TESTDATA = Path(os.environ.get("EDGELLAMA_TESTDATA", ROOT / ".cache" / "testdata"))

HEAD = 8  # array elements and tensor bytes recorded from the start


def scalar_json(vtype, value):
    if vtype == VT.FLOAT32:
        return float(np.float32(value))
    if vtype == VT.BOOL:
        return bool(value)
    if vtype == VT.STRING:
        return value if isinstance(value, str) else bytes(value).decode("utf-8")
    if vtype == VT.FLOAT64:
        return float(value)
    return int(value)


def dump_smollm2():
    path = TESTDATA / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        sys.exit(f"{path} missing: run scripts/fetch-testdata.sh")
    r = GGUFReader(path)
    meta = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        t = field.types[0]
        entry = {"key": key, "type": t.name}
        if t == VT.ARRAY:
            if len(field.types) != 2:
                sys.exit(f"{key}: nested arrays are not expected in this file")
            sub = field.types[1]
            values = field.contents()
            entry["element_type"] = sub.name
            entry["len"] = len(values)
            entry["head"] = [scalar_json(sub, v) for v in values[:HEAD]]
            entry["last"] = scalar_json(sub, values[-1]) if values else None
        else:
            entry["value"] = scalar_json(t, field.contents())
        meta.append(entry)
    tensors = []
    for t in r.tensors:
        raw = np.frombuffer(r.data, dtype=np.uint8, count=t.n_bytes, offset=t.data_offset)
        tensors.append({
            "name": t.name,
            "dims": [int(d) for d in t.shape],
            "type": int(t.tensor_type),
            "type_name": t.tensor_type.name,
            "offset": int(t.field.parts[-1][0]),
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
            "head_hex": raw[:HEAD].tobytes().hex(),
            "tail_hex": raw[-HEAD:].tobytes().hex(),
            "byte_sum": int(raw.sum(dtype=np.uint64)),
        })
    out = {
        "file": path.name,
        "file_len": path.stat().st_size,
        "version": int(r.fields["GGUF.version"].contents()),
        "tensor_count": int(r.fields["GGUF.tensor_count"].contents()),
        "kv_count": int(r.fields["GGUF.kv_count"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": tensors,
    }
    (HERE / "smollm2_q4_1.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


# (key, type, value, array element type) for all_types.gguf, in file order after the
# keys GGUFWriter adds itself (general.architecture) and general.alignment.
ALL_TYPES_KV = [
    ("test.u8", VT.UINT8, 200, None),
    ("test.i8", VT.INT8, -100, None),
    ("test.u16", VT.UINT16, 60000, None),
    ("test.i16", VT.INT16, -30000, None),
    ("test.u32", VT.UINT32, 4_000_000_000, None),
    ("test.i32", VT.INT32, -2_000_000_000, None),
    ("test.f32", VT.FLOAT32, 0.1, None),
    ("test.bool_true", VT.BOOL, True, None),
    ("test.bool_false", VT.BOOL, False, None),
    ("test.string", VT.STRING, "h\u00e9llo w\u00f6rld \u2713 \U0001f999", None),
    ("test.string_empty", VT.STRING, "", None),
    ("test.u64", VT.UINT64, 2**64 - 1, None),
    ("test.i64", VT.INT64, -(2**63), None),
    ("test.f64", VT.FLOAT64, 3.141592653589793, None),
    ("test.arr.u8", VT.ARRAY, [0, 1, 255], VT.UINT8),
    ("test.arr.i8", VT.ARRAY, [-128, 0, 127], VT.INT8),
    ("test.arr.u16", VT.ARRAY, [0, 65535], VT.UINT16),
    ("test.arr.i16", VT.ARRAY, [-32768, 32767], VT.INT16),
    ("test.arr.u32", VT.ARRAY, [0, 4294967295, 7], VT.UINT32),
    ("test.arr.i32", VT.ARRAY, [-2147483648, 2147483647, 1], VT.INT32),
    ("test.arr.f32", VT.ARRAY, [0.5, -1.25, 1e-5], VT.FLOAT32),
    ("test.arr.bool", VT.ARRAY, [True, False, True], VT.BOOL),
    ("test.arr.string", VT.ARRAY, ["a", "", "\u00fc", "<|eot_id|>"], VT.STRING),
    ("test.arr.u64", VT.ARRAY, [0, 2**64 - 1], VT.UINT64),
    ("test.arr.i64", VT.ARRAY, [-(2**63), 2**63 - 1], VT.INT64),
    ("test.arr.f64", VT.ARRAY, [1e300, -0.0, 2.5], VT.FLOAT64),
    # gguf-py infers the element types of inner arrays: int -> INT32, str -> STRING,
    # float -> FLOAT32.
    ("test.nested.i32", VT.ARRAY, [[1, 2, 3], [4]], VT.ARRAY),
    ("test.nested.string", VT.ARRAY, [["x", "y"], ["z"]], VT.ARRAY),
    ("test.nested.f32", VT.ARRAY, [[0.5], [1.5, 2.5]], VT.ARRAY),
    ("test.nested.three_levels", VT.ARRAY, [[[1], [2, 3]], [[4]]], VT.ARRAY),
]


def inferred_type(v):
    return gguf.GGUFValueType.get_type(v)


def typed_json(vtype, value, sub_type=None):
    if vtype != VT.ARRAY:
        return {"type": vtype.name, "value": scalar_json(vtype, value)}
    elem = sub_type if sub_type is not None else inferred_type(value[0])
    if elem == VT.ARRAY:
        values = [typed_json(VT.ARRAY, v) for v in value]
    else:
        values = [scalar_json(elem, v) for v in value]
    return {"type": "ARRAY", "element_type": elem.name, "values": values}


def make_all_types():
    rng = np.random.default_rng(20240901)
    raw = lambda shape: rng.integers(0, 256, size=shape, dtype=np.uint8)  # noqa: E731
    # (name, array given to GGUFWriter, raw ggml type or None for float arrays)
    tensors = [
        ("f32.matrix", np.arange(15, dtype=np.float32).reshape(3, 5) / 4, None),
        ("f16.vector", rng.standard_normal(7).astype(np.float16), None),
        ("bf16.raw", raw((2, 16)), QT.BF16),
        ("q8_0.weight", raw((2, 68)), QT.Q8_0),
        ("q4_0.weight", raw((1, 18)), QT.Q4_0),
        ("q4_1.weight", raw((3, 20)), QT.Q4_1),
        ("q4_k.weight", raw((1, 144)), QT.Q4_K),
        ("q6_k.weight", raw((2, 210)), QT.Q6_K),
        ("f32.4d", rng.standard_normal((2, 1, 3, 4)).astype(np.float32), None),
    ]

    out_path = HERE / "all_types.gguf"
    w = GGUFWriter(out_path, arch="edgellama-test")
    w.add_custom_alignment(64)
    for key, vtype, value, sub in ALL_TYPES_KV:
        w.add_key_value(key, value, vtype, sub_type=sub)
    for name, arr, qtype in tensors:
        w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = GGUFReader(out_path)
    meta = [
        {"key": "general.architecture", **typed_json(VT.STRING, "edgellama-test")},
        {"key": "general.alignment", **typed_json(VT.UINT32, 64)},
    ] + [{"key": k, **typed_json(t, v, s)} for k, t, v, s in ALL_TYPES_KV]
    read_keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert read_keys == [m["key"] for m in meta], read_keys
    for m in meta:
        field = r.fields[m["key"]]
        assert field.types[0].name == m["type"], m["key"]
        if m["type"] != "ARRAY":
            assert scalar_json(field.types[0], field.contents()) == m["value"], m["key"]
        elif m["element_type"] != "ARRAY":
            got = [scalar_json(field.types[1], v) for v in field.contents()]
            assert got == m["values"], m["key"]

    by_name = {t.name: t for t in r.tensors}
    tensor_json = []
    for name, arr, qtype in tensors:
        t = by_name[name]
        data = arr.tobytes()
        assert t.n_bytes == len(data), name
        assert bytes(np.frombuffer(r.data, np.uint8, t.n_bytes, t.data_offset)) == data, name
        tensor_json.append({
            "name": name,
            "dims": [int(d) for d in t.shape],
            "type": int(t.tensor_type),
            "type_name": t.tensor_type.name,
            "offset": int(t.data_offset - r.data_offset),
            "n_bytes": int(t.n_bytes),
            "data_hex": data.hex(),
        })
    out = {
        "file": out_path.name,
        "file_len": out_path.stat().st_size,
        "version": int(r.fields["GGUF.version"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": tensor_json,
    }
    (HERE / "all_types.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    dump_smollm2()
    make_all_types()
    print("wrote goldens to", HERE)
