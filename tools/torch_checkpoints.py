#!/usr/bin/env python3
"""PyTorch checkpoint files of the reference model, for tests of clip's restricted reader
(src/core/torch_checkpoint.cpp), made with PyTorch itself (Debian's python3-torch):

  OUT/openai/model.safetensors   the reference weights (f32), as tools/reference_model.py writes
  OUT/openai_f16/model.safetensors  the same rounded to f16, stored as f16
  OUT/torch/model.pt             torch.save(state_dict), f32; text_projection saved as a
                                 non-contiguous (transposed-back) view of a larger storage
  OUT/torch/model_f16.pt         torch.save(state_dict) in f16
  OUT/torch/training.pt          {"epoch", "state_dict": {"module." + name: ...}}, as open_clip's
                                 training checkpoints (DistributedDataParallel names)
  OUT/torchscript/model.pt       torch.jit.trace_module(model, encode_image + encode_text) saved
                                 with torch.jit.save (the form of OpenAI's released .pt files)
  OUT/evil/model.pt              torch.save of an object whose unpickling calls os.system to
                                 create OUT/evil/PWNED: a reader that runs pickles would create it
  OUT/deep/model.pt              a zip whose data.pkl nests a tuple 2,000,000 deep (a reader must
                                 neither recurse that deep nor crash tearing it down)
  OUT/golden/{pixels,text_ids,image_features,text_features}.npy  (reference_model's goldens)

  python3 tools/torch_checkpoints.py --out DIR [--config tiny-vocab]
"""
import argparse
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as rm  # noqa: E402


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, ("touch " + self.path,))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="tiny-vocab", choices=sorted(rm.CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = rm.build_model(args.config, args.seed)
    rm.write_checkpoints(model, args.config, args.out, ["openai"], torch.float32, False)
    rm.write_goldens(model, args.config, args.out, 2, [5, 9, 3], args.seed)
    sd = rm.openai_state_dict(model, torch.float32)

    d = os.path.join(args.out, "torch")
    os.makedirs(d, exist_ok=True)
    strided = OrderedDict(sd)
    # A view whose storage is larger than it and whose strides are not row-major.
    w = sd["text_projection"]
    big = torch.zeros(w.shape[1] + 3, w.shape[0])
    big[2:2 + w.shape[1]] = w.t()
    strided["text_projection"] = big[2:2 + w.shape[1]].t()
    assert not strided["text_projection"].is_contiguous()
    torch.save(strided, os.path.join(d, "model.pt"))
    sd16 = rm.openai_state_dict(model, torch.float16)
    torch.save(sd16, os.path.join(d, "model_f16.pt"))
    torch.save({"epoch": 3, "name": "reference",
                "state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())},
               os.path.join(d, "training.pt"))
    # The f16-rounded weights as safetensors (f16), the reference for model_f16.pt.
    os.makedirs(os.path.join(args.out, "openai_f16"), exist_ok=True)
    rm.write_safetensors(os.path.join(args.out, "openai_f16", "model.safetensors"), sd16, {"format": "pt"})

    d = os.path.join(args.out, "torchscript")
    os.makedirs(d, exist_ok=True)
    cfg = rm.CONFIGS[args.config]
    gen = torch.Generator().manual_seed(1)
    pixels = rm.make_pixels(cfg, 1, gen)
    ids = rm.make_text_ids(cfg, [4], gen)
    with torch.no_grad():
        traced = torch.jit.trace_module(model, {"encode_image": pixels, "encode_text": ids}, check_trace=False)
    torch.jit.save(traced, os.path.join(d, "model.pt"))

    d = os.path.join(args.out, "deep")
    os.makedirs(d, exist_ok=True)
    import zipfile
    with zipfile.ZipFile(os.path.join(d, "model.pt"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("model/data.pkl", b"\x80\x02N" + b"\x85" * 2_000_000 + b".")

    d = os.path.join(args.out, "evil")
    os.makedirs(d, exist_ok=True)
    marker = os.path.join(d, "PWNED")
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"visual.proj": torch.zeros(2, 2), "payload": Evil(marker)}, os.path.join(d, "model.pt"))
    assert not os.path.exists(marker)


if __name__ == "__main__":
    main()
