#!/usr/bin/env python3
"""Convert a PyTorch CLIP checkpoint (.pt / .bin) to .safetensors that `clip` loads.

OpenAI's released files (ViT-B-32.pt, RN50.pt, ...) are TorchScript archives; open_clip's and
Hugging Face's .bin files are pickled state dicts. Both are read with PyTorch (this is the only
place the project needs it for real weights) and written with the tensor names unchanged, in
their stored dtype (OpenAI's are mostly float16, which `clip` accepts), with integer buffers
such as num_batches_tracked kept (the loader ignores them). A Hugging Face .bin keeps its names,
so put the result beside its config.json.

    /usr/bin/python3 tools/convert_openai_pt.py ViT-B-32.pt ViT-B-32.safetensors

The safetensors file is written by hand (JSON header + raw little-endian bytes, 8-byte aligned
header as the reference writer pads it) so no extra package is needed, and atomically.
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
          torch.uint8: "U8", torch.bool: "BOOL"}


def load_state_dict(path):
    try:  # OpenAI's releases: TorchScript archives
        return torch.jit.load(path, map_location="cpu").state_dict()
    except Exception:
        pass
    obj = torch.load(path, map_location="cpu")
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        sys.exit(f"{path}: not a state dict or TorchScript model")
    return obj


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype not in DTYPES:
            sys.exit(f"{name}: unsupported dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt", "converted_by": "clip tools/convert_openai_pt.py"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help=".pt (TorchScript or pickled state dict) or .bin")
    ap.add_argument("output", help=".safetensors to write")
    args = ap.parse_args()
    sd = load_state_dict(args.input)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()
          if isinstance(v, torch.Tensor)}
    write_safetensors(args.output, sd)
    print(f"wrote {len(sd)} tensors to {args.output}")


if __name__ == "__main__":
    main()
