#!/usr/bin/env python3
"""SigLIP's sigmoid loss and its gradients in float64 with PyTorch autograd, as open_clip's
SigLipLoss computes it (one process): logits = exp(t) * norm(I) @ norm(T).T + b, labels 2*eye - 1,
loss = -logsigmoid(labels * logits).sum() / N. Writes OUT/siglip.txt for tests/test_train_mpi.cpp:
one line per array, "name value value ..." at full float64 precision (image, text: N x dim row
major; scalars: t, b, loss; grad_image, grad_text; grad_scalars: dt, db).

  /usr/bin/python3 tools/siglip_reference.py --out DIR [--n 6] [--dim 5] [--seed 1]
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--dim", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(a.seed)
    image = torch.randn(a.n, a.dim, generator=g, dtype=torch.float64, requires_grad=True)
    text = torch.randn(a.n, a.dim, generator=g, dtype=torch.float64, requires_grad=True)
    # Near open_clip's initial values (t = ln 10, b = -10), moved so every term matters.
    t = torch.tensor(np.log(10.0) + 0.3, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-2.5, dtype=torch.float64, requires_grad=True)
    logits = t.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T + b
    labels = 2 * torch.eye(a.n, dtype=torch.float64) - 1
    loss = -F.logsigmoid(labels * logits).sum() / a.n
    loss.backward()
    os.makedirs(a.out, exist_ok=True)
    rows = [("image", image.detach()), ("text", text.detach()), ("scalars", [t.item(), b.item(), loss.item()]),
            ("grad_image", image.grad), ("grad_text", text.grad), ("grad_scalars", [t.grad.item(), b.grad.item()])]
    tmp = os.path.join(a.out, "siglip.txt.tmp")
    with open(tmp, "w") as f:
        for name, x in rows:
            f.write(name + " " + " ".join(repr(float(v)) for v in np.asarray(x, dtype=np.float64).ravel()) + "\n")
    os.replace(tmp, os.path.join(a.out, "siglip.txt"))


if __name__ == "__main__":
    main()
