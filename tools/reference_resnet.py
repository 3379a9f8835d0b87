#!/usr/bin/env python3
"""Reference for the ModifiedResNet image encoder (openai/CLIP `clip/model.py`).

A self-contained re-implementation of CLIP's `Bottleneck`, `AttentionPool2d` and
`ModifiedResNet` (same module names, so `state_dict()` keys are OpenAI's), built with seeded
weights that are perturbed away from CLIP's initialisation (CLIP zero-initialises every
`bn3.weight`, which would switch the residual branches off) and with batch-norm running
statistics that are far from (0, 1): they are first calibrated on a random batch, so the
activations stay O(1) through the depth, and then perturbed per channel.

Writes, by hand (JSON header + raw little-endian bytes, no safetensors package needed):
  <out>/<name>.safetensors          the visual.* tensors with OpenAI names, F32
                                    (+ num_batches_tracked as I64, as real checkpoints carry)
                                    and, with --text-width, a tiny text tower so the file is a
                                    whole CLIP state dict that build_model-style loaders accept
  <out>/<name>_golden.safetensors   "pixels" [B,3,S,S], the per-stage activations "stem",
                                    "layer1".."layer4" (NCHW) and "features" [B, embed]

Run as:  /usr/bin/python3 tools/reference_resnet.py --preset tiny --out tests/data/resnet
         /usr/bin/python3 tools/reference_resnet.py --preset rn50 --out build-x/resnet
"""
import argparse
import json
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------
# openai/CLIP model.py, ModifiedResNet part (verbatim structure and names)
# ---------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        # all conv layers have stride 1. an avgpool is performed after the second convolution when stride > 1
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        self.stride = stride
        if stride > 1 or inplanes != planes * Bottleneck.expansion:
            # downsampling layer is prepended with an avgpool, and the subsequent convolution has stride 1
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu3(out)
        return out


class AttentionPool2d(nn.Module):
    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (HW+1)NC
        x = x + self.positional_embedding[:, None, :].to(x.dtype)  # (HW+1)NC
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x,
            embed_dim_to_check=x.shape[-1],
            num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True,
            training=self.training,
            need_weights=False,
        )
        return x.squeeze(0)


class ModifiedResNet(nn.Module):
    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        # the 3-layer stem
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        # residual layers
        self._inplanes = width  # this is a *mutable* variable used during construction
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32  # the ResNet feature dimension
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        for _ in range(1, blocks):
            layers.append(Bottleneck(self._inplanes, planes))
        return nn.Sequential(*layers)

    def stem(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        return x

    def forward(self, x, stages=None):
        x = x.type(self.conv1.weight.dtype)
        x = self.stem(x)
        if stages is not None:
            stages["stem"] = x.clone()
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            if stages is not None:
                stages[name] = x.clone()
        x = self.attnpool(x)
        return x


def clip_initialize(model):
    """CLIP.initialize_parameters() for the visual ResNet part."""
    if model.attnpool is not None:
        std = model.attnpool.c_proj.in_features ** -0.5
        for lin in (model.attnpool.q_proj, model.attnpool.k_proj, model.attnpool.v_proj, model.attnpool.c_proj):
            nn.init.normal_(lin.weight, std=std)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for name, param in layer.named_parameters():
            if name.endswith("bn3.weight"):
                nn.init.zeros_(param)


@torch.no_grad()
def build_perturbed(layers, width, image_size, output_dim, seed):
    """A ModifiedResNet with seeded weights moved away from CLIP's initialisation.

    BN running statistics are calibrated on one random batch (so each stage's output is O(1),
    whatever the depth) and then perturbed per channel (mean shifted, variance scaled), and
    the affine parameters are random, so folding BN into the convolutions is really tested."""
    torch.manual_seed(seed)
    heads = width * 32 // 64
    model = ModifiedResNet(layers, output_dim, heads, image_size, width)
    clip_initialize(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.copy_(1.0 + 0.25 * torch.randn_like(bn.weight))
    # The last BN of each residual branch is damped (CLIP zero-initialises it, so trained
    # weights keep it small); otherwise the residual stream grows by one unit of variance
    # (and a ReLU's mean) per block and RN50's features end up O(100-1000), where a 1e-4
    # absolute tolerance would test 1e-7 relative precision instead of the usual 1e-5.
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            block.bn3.weight.mul_(0.25)
    for bn in bns:
        bn.bias.copy_(0.1 * torch.randn_like(bn.bias))
        bn.momentum = None  # cumulative average: running stats = stats of the calibration batch
        bn.reset_running_stats()
    for lin in (model.attnpool.q_proj, model.attnpool.k_proj, model.attnpool.v_proj, model.attnpool.c_proj):
        lin.bias.copy_(0.05 * torch.randn_like(lin.bias))
    model.attnpool.positional_embedding.mul_(2.0)
    model.train()
    calib = torch.randn(4, 3, image_size, image_size)
    model(calib)
    model.eval()
    for bn in bns:
        std = bn.running_var.sqrt()
        bn.running_mean.add_(0.2 * std * torch.randn_like(std))
        bn.running_var.mul_(torch.empty_like(std).uniform_(0.6, 1.6))
        bn.num_batches_tracked.fill_(12345)
    # Output scale like released CLIP features (O(1) per element), so that the 1e-4 absolute
    # tolerance on the features means ~1e-5 relative.
    rms = model(make_pixels(4, image_size, torch.Generator().manual_seed(seed + 3))).pow(2).mean().sqrt()
    model.attnpool.c_proj.weight.div_(rms)
    model.attnpool.c_proj.bias.div_(rms)
    return model


def make_pixels(batch, image_size, generator):
    # Normalised pixels are roughly N(0, 1) per channel; a smooth component keeps it image-like.
    pixels = torch.randn(batch, 3, image_size, image_size, generator=generator)
    yy = torch.linspace(-1, 1, image_size)
    pixels += 0.8 * torch.sin(3 * yy)[None, None, :, None] * torch.cos(2 * yy)[None, None, None, :]
    return pixels


# ---------------------------------------------------------------------------------------
# safetensors, written by hand
# ---------------------------------------------------------------------------------------
from safetensors_io import write_safetensors  # noqa: E402  (tools/ is on sys.path)


def tiny_text_tower(embed_dim, width, layers, seed):
    """A minimal text tower with OpenAI names, so the file is a whole CLIP state dict."""
    g = torch.Generator().manual_seed(seed)
    heads = max(1, width // 64)
    sd = OrderedDict()
    sd["positional_embedding"] = torch.randn(77, width, generator=g) * 0.01
    sd["text_projection"] = torch.randn(width, embed_dim, generator=g) * width ** -0.5
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    sd["token_embedding.weight"] = torch.randn(49408, width, generator=g) * 0.02
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        sd[p + "attn.in_proj_weight"] = torch.randn(3 * width, width, generator=g) * width ** -0.5
        sd[p + "attn.in_proj_bias"] = torch.zeros(3 * width)
        sd[p + "attn.out_proj.weight"] = torch.randn(width, width, generator=g) * width ** -0.5
        sd[p + "attn.out_proj.bias"] = torch.zeros(width)
        sd[p + "ln_1.weight"] = torch.ones(width)
        sd[p + "ln_1.bias"] = torch.zeros(width)
        sd[p + "mlp.c_fc.weight"] = torch.randn(4 * width, width, generator=g) * width ** -0.5
        sd[p + "mlp.c_fc.bias"] = torch.zeros(4 * width)
        sd[p + "mlp.c_proj.weight"] = torch.randn(width, 4 * width, generator=g) * (4 * width) ** -0.5
        sd[p + "mlp.c_proj.bias"] = torch.zeros(width)
        sd[p + "ln_2.weight"] = torch.ones(width)
        sd[p + "ln_2.bias"] = torch.zeros(width)
    sd["ln_final.weight"] = torch.ones(width)
    sd["ln_final.bias"] = torch.zeros(width)
    del heads
    return sd


PRESETS = {
    # name: (layers, width, image_size, output_dim, batch)
    "tiny": ((2, 1, 1, 1), 8, 64, 32, 2),
    "rn50": ((3, 4, 6, 3), 64, 224, 1024, 2),
    "rn101": ((3, 4, 23, 3), 64, 224, 512, 1),
    "rn50x4": ((4, 6, 10, 6), 80, 288, 640, 1),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", help="file name stem (default: the preset)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, help="golden batch size (default per preset)")
    ap.add_argument("--text-width", type=int, default=0,
                    help="also write a tiny text tower of this width (1 layer): a whole CLIP state dict")
    ap.add_argument("--no-golden", action="store_true", help="write only the weights")
    args = ap.parse_args()

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    layers, width, image_size, output_dim, batch = PRESETS[args.preset]
    if args.batch:
        batch = args.batch
    name = args.name or args.preset
    os.makedirs(args.out, exist_ok=True)

    model = build_perturbed(layers, width, image_size, output_dim, args.seed)
    sd = OrderedDict(("visual." + k, v) for k, v in model.state_dict().items())
    if args.text_width:
        sd.update(tiny_text_tower(output_dim, args.text_width, 1, args.seed + 1))
    meta = {"format": "pt", "source": "tools/reference_resnet.py", "preset": args.preset, "seed": args.seed}
    write_safetensors(os.path.join(args.out, name + ".safetensors"), sd, meta)

    if args.no_golden:
        return
    g = torch.Generator().manual_seed(args.seed + 7)
    pixels = make_pixels(batch, image_size, g)
    stages = OrderedDict()
    with torch.inference_mode():
        features = model(pixels, stages)
    golden = OrderedDict(pixels=pixels)
    golden.update(stages)
    golden["features"] = features
    write_safetensors(os.path.join(args.out, name + "_golden.safetensors"), golden, meta)
    print(f"{name}: layers={layers} width={width} image={image_size} embed={output_dim} "
          f"params={sum(v.numel() for k, v in sd.items() if k.startswith('visual.'))} "
          f"|features| max={features.abs().max().item():.3f} rms={features.pow(2).mean().sqrt().item():.3f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
