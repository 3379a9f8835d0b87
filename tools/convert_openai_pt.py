#!/usr/bin/env python3
"""Convert a PyTorch CLIP checkpoint (.pt / .bin) to .safetensors that `clip` loads.

OpenAI's released files (ViT-B-32.pt, RN50.pt, ...) are TorchScript archives; open_clip's and
Hugging Face's .bin files are pickled state dicts. Both are read with PyTorch (this is the only
place the project needs it for real weights) and written with the tensor names unchanged, in
their stored dtype (OpenAI's are mostly float16, which `clip` accepts), with integer buffers
such as num_batches_tracked kept (the loader ignores them). A Hugging Face .bin keeps its names,
so put the result beside its config.json.

    /usr/bin/python3 tools/convert_openai_pt.py ViT-B-32.pt ViT-B-32.safetensors

The safetensors file is written by tools/safetensors_io.py (no extra package needed), atomically.
"""
import argparse
import sys

import torch

from safetensors_io import write_safetensors


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help=".pt (TorchScript or pickled state dict) or .bin")
    ap.add_argument("output", help=".safetensors to write")
    args = ap.parse_args()
    sd = load_state_dict(args.input)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()
          if isinstance(v, torch.Tensor)}
    # OpenAI's TorchScript models carry these scalars, which clip.load's build_model deletes too.
    for key in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(key, None)
    write_safetensors(args.output, sd, {"format": "pt", "converted_by": "clip tools/convert_openai_pt.py"})
    print(f"wrote {len(sd)} tensors to {args.output}")


if __name__ == "__main__":
    main()
