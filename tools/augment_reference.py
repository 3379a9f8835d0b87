#!/usr/bin/env python3
"""Goldens for the photometric training augmentations (src/data/augment.h) from torchvision's
own functional transforms on float tensors.

    augment_reference.py INPUT.f32 SIZE OUT_DIR

INPUT.f32: 3 x SIZE x SIZE little-endian float32 values in [0, 1] (R, G, B planes). Writes one
OUT_DIR/<case>.f32 per case below (the same layout), and OUT_DIR/cases.txt listing them as
"<case> <op> <arguments...>", which the C++ test reads to apply the same operation.
"""
import os
import sys

import numpy as np
import torch
import torchvision.transforms.functional as F

CASES = [
    ("brightness_0.6", "brightness", 0.6),
    ("brightness_1.35", "brightness", 1.35),
    ("contrast_0.2", "contrast", 0.2),
    ("contrast_1.7", "contrast", 1.7),
    ("saturation_0.0", "saturation", 0.0),
    ("saturation_1.5", "saturation", 1.5),
    ("grayscale", "grayscale"),
    ("blur_k3_s0.5", "blur", 3, 0.5),
    ("blur_k5_s1.2", "blur", 5, 1.2),
    ("blur_k7_s2.0", "blur", 7, 2.0),
]


def apply(img, case):
    op = case[1]
    if op == "brightness":
        return F.adjust_brightness(img, case[2])
    if op == "contrast":
        return F.adjust_contrast(img, case[2])
    if op == "saturation":
        return F.adjust_saturation(img, case[2])
    if op == "grayscale":
        return F.rgb_to_grayscale(img, num_output_channels=3)
    if op == "blur":
        return F.gaussian_blur(img, [case[2], case[2]], [case[3], case[3]])
    raise ValueError(op)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    img = torch.from_numpy(np.fromfile(src, dtype="<f4").reshape(3, size, size).copy())
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cases.txt"), "w") as listing:
        for case in CASES:
            apply(img, case).numpy().astype("<f4").tofile(os.path.join(out, case[0] + ".f32"))
            listing.write(" ".join(str(c) for c in (case[0],) + case[1:]) + "\n")


if __name__ == "__main__":
    main()
