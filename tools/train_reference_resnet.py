#!/usr/bin/env python3
"""Gradient reference for training the ModifiedResNet image tower (issue 6).

The model is openai/CLIP model.py's ModifiedResNet as re-implemented in
tools/reference_resnet.py (same modules and names, so the state-dict keys are OpenAI's), built
by its `build_perturbed`: seeded weights moved away from CLIP's initialisation (batch-norm
affine parameters random, every bn3 weight non-zero, attention-pool biases non-zero) and
batch-norm running statistics far from (0, 1). Batch norm is then switched back to torch's
defaults (momentum 0.1) and the model is put in training mode, as `clip train` would run it.

One training forward/backward on a batch of random pixels: the CLIP contrastive loss
(L2-normalised features, logits = exp(t) * I @ T^T, mean of the two cross-entropies with
labels arange(B)) of the image features against fixed random text features, t = logit_scale.
Done twice from the same float32 start: in float64 (the exact answer) and in float32 (to
measure torch's own float32 error, the noise floor any float32 implementation has).

Writes one safetensors file (through tools/safetensors_io.py):
  input.pixels [B,3,S,S] F32, input.text [B,E] F32, input.logit_scale [] F32
  init.<name>        the visual state dict before the step (parameters F32, running stats
                     F32, num_batches_tracked I64), OpenAI names ("visual.layer1.0.conv1.weight")
  grad64.<name>      d loss / d parameter, float64 run (rounded to F32: 6e-8 relative)
  grad64.logit_scale
  stats64.<bn>.running_mean / .running_var   after the training forward (momentum 0.1,
                     unbiased variance), float64 run, F32
  features64 [B,E], features_eval64 [B,E] (evaluation mode with the updated running
                     statistics), loss64 [] : F64
  features32 [B,E], loss32 [] : the float32 run, F32
and as JSON metadata "config" (the architecture and batch) and "float32_vs_float64" (per
tensor, max |torch float32 - torch float64| of the gradients, running statistics and
features: torch's own float32 error; "grad_l2" = ||g32 - g64||_2 over all parameter
gradients and "grad_norm" = ||g64||_2).

Run:  /usr/bin/python3 tools/train_reference_resnet.py --out tests/data/train/resnet_grad.safetensors
      /usr/bin/python3 tools/train_reference_resnet.py --preset small --out build-x/resnet_small.safetensors
"""
import argparse
import copy
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_resnet import build_perturbed, make_pixels  # noqa: E402
from safetensors_io import write_safetensors  # noqa: E402

PRESETS = {
    # name: (layers, width, image_size, embed_dim, batch)
    # tiny: every block kind (stride-1 projection shortcut, identity shortcut, stride-2 blocks),
    # a 2x2 final map (5 attention-pool tokens); small enough to commit (< 1 MB).
    "tiny": ((2, 1, 1, 1), 4, 64, 16, 4),
    "small": ((2, 2, 2, 2), 8, 96, 32, 6),
    "rn50": ((3, 4, 6, 3), 64, 224, 1024, 4),
}


def clip_loss(image, text, logit_scale):
    i = image / image.norm(dim=-1, keepdim=True)
    t = text / text.norm(dim=-1, keepdim=True)
    logits = logit_scale.exp() * i @ t.t()
    labels = torch.arange(image.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def run(model, pixels, text, logit_scale, dtype):
    m = copy.deepcopy(model).to(dtype)
    m.train()
    t = logit_scale.detach().clone().to(dtype).requires_grad_()
    features = m(pixels.to(dtype))
    loss = clip_loss(features, text.to(dtype), t)
    loss.backward()
    grads = {"visual." + n: p.grad.detach().clone() for n, p in m.named_parameters()}
    grads["logit_scale"] = t.grad.detach().clone()
    stats = {"visual." + n: b.detach().clone() for n, b in m.named_buffers()}
    m.eval()
    with torch.no_grad():
        features_eval = m(pixels.to(dtype))
    return loss.detach(), features.detach(), grads, stats, features_eval


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--out", required=True, help="output .safetensors file")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    layers, width, image_size, embed, batch = PRESETS[args.preset]
    model = build_perturbed(layers, width, image_size, embed, args.seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 0.1  # build_perturbed calibrates with a cumulative average
    heads = model.attnpool.num_heads
    g = torch.Generator().manual_seed(args.seed + 11)
    pixels = make_pixels(batch, image_size, g)
    text = torch.randn(batch, embed, generator=g)
    logit_scale = torch.tensor(math.log(1 / 0.07) - 0.3)
    init = {"visual." + k: v.detach().clone() for k, v in model.state_dict().items()}

    loss64, feat64, grads64, stats64, eval64 = run(model, pixels, text, logit_scale, torch.float64)
    loss32, feat32, grads32, stats32, eval32 = run(model, pixels, text, logit_scale, torch.float32)

    out = {"input.pixels": pixels, "input.text": text, "input.logit_scale": logit_scale}
    for k, v in init.items():
        out["init." + k] = v
    for k, v in grads64.items():
        out["grad64." + k] = v.float()
    for k, v in stats64.items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            out["stats64." + k] = v.float()
    out["features64"] = feat64
    out["features_eval64"] = eval64
    out["loss64"] = loss64
    out["features32"] = feat32
    out["loss32"] = loss32

    err = {}
    for k in grads64:
        err["grad." + k] = (grads32[k].double() - grads64[k]).abs().max().item()
    for k in stats64:
        if k.endswith("running_mean") or k.endswith("running_var"):
            err["stats." + k] = (stats32[k].double() - stats64[k]).abs().max().item()
    # Normwise: ||g32 - g64||_2 and ||g64||_2 over all parameter gradients.
    err["grad_l2"] = math.sqrt(sum(float((grads32[k].double() - grads64[k]).pow(2).sum())
                                   for k in grads64 if k != "logit_scale"))
    err["grad_norm"] = math.sqrt(sum(float(grads64[k].pow(2).sum()) for k in grads64 if k != "logit_scale"))
    err["features"] = (feat32.double() - feat64).abs().max().item()
    err["features_eval"] = (eval32.double() - eval64).abs().max().item()
    err["loss"] = abs(loss32.item() - loss64.item())
    config = {"layers": list(layers), "width": width, "image_size": image_size, "embed_dim": embed,
              "heads": heads, "batch": batch, "bn_momentum": 0.1, "bn_eps": 1e-5, "seed": args.seed}
    meta = {"source": "tools/train_reference_resnet.py", "preset": args.preset,
            "config": json.dumps(config), "float32_vs_float64": json.dumps(err)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_safetensors(args.out, out, meta)
    nparams = sum(p.numel() for p in model.parameters())
    gmax = max(v.abs().max().item() for v in grads64.values())
    print(f"{args.preset}: layers={layers} width={width} image={image_size} embed={embed} heads={heads} "
          f"batch={batch} params={nparams} loss={loss64.item():.6f} max|grad|={gmax:.4g} "
          f"torch f32 max grad err={max(v for k, v in err.items() if k.startswith('grad.')):.3g} "
          f"-> {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
