#!/usr/bin/env python3
"""Reference side of the safetensors tests (run as /usr/bin/python3 tools/safetensors_reference.py).

Uses the reference implementation (PyPI `safetensors`, its Rust core) without torch, so it
starts fast:
  write OUT      writes the fixed tensor set below with the reference writer
  write1 OUT     the same with a single metadata key (byte-for-byte comparable: the reference
                 keeps metadata in a hash map, so several keys have no fixed order)
  dump IN        reads IN with the reference reader; prints JSON {name: {dtype, shape, values}}
                 plus "__metadata__"
  validate IN..  for each file prints "ok" or "error" (does the reference reader accept it?)

The C++ tests build the same fixed set and compare bytes and values with what this prints.
"""
import json
import sys

import numpy as np
from safetensors import TensorSpec, deserialize, serialize_file


def bf16_bits(values):
    # The values are exact in bfloat16, so truncating float32 bits is exact.
    return (np.array(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def fixed_tensors():
    """name -> (safetensors dtype name, shape, numpy array holding the little-endian bytes)."""
    return {
        "weight": ("float32", [2, 3], np.arange(6, dtype=np.float32) * 0.5 - 1.0),
        "half": ("float16", [5], np.array([0.0, -1.5, 65504.0, 6.1035156e-05, 1.0 / 3.0], dtype=np.float16)),
        "brain": ("bfloat16", [3], bf16_bits([1.0, -2.5, 3.140625])),
        "steps": ("int64", [4], np.array([0, 1, -2, 1 << 40], dtype=np.int64)),
        "scalar": ("float64", [], np.array(2.5, dtype=np.float64)),
        "empty": ("float32", [0, 3], np.zeros((0, 3), dtype=np.float32)),
        "bytes": ("uint8", [3], np.array([1, 2, 255], dtype=np.uint8)),
    }


def write(path, metadata):
    arrays = fixed_tensors()
    specs = {
        name: TensorSpec(dtype=dtype, shape=shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
        for name, (dtype, shape, a) in arrays.items()
    }
    serialize_file(specs, path, metadata=metadata)


NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def values_of(dtype, data):
    if dtype in ("BF16", "bfloat16"):
        bits = np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64).tolist()
    key = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
           "int8": "I8", "uint8": "U8", "bool": "BOOL"}.get(dtype, dtype)
    a = np.frombuffer(data, dtype=NUMPY_DTYPES[key])
    return (a.astype(np.float64) if a.dtype.kind == "f" else a).tolist()


def main():
    mode = sys.argv[1]
    if mode == "write":
        write(sys.argv[2], {"format": "pt", "note": "reference"})
    elif mode == "write1":
        write(sys.argv[2], {"format": "pt"})
    elif mode == "dump":
        raw = open(sys.argv[2], "rb").read()
        n = int.from_bytes(raw[:8], "little")
        out = {"__metadata__": json.loads(raw[8:8 + n]).get("__metadata__", {})}
        for name, t in deserialize(raw):
            out[name] = {"dtype": t["dtype"], "shape": list(t["shape"]), "values": values_of(t["dtype"], t["data"])}
        print(json.dumps(out))
    elif mode == "validate":
        for path in sys.argv[2:]:
            try:
                deserialize(open(path, "rb").read())
                print("ok")
            except Exception:  # noqa: BLE001 -- any rejection counts
                print("error")
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
