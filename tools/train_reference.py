#!/usr/bin/env python3
"""Reference debug state for contrastive training of a tiny ViT CLIP (issue 5).

A self-contained torch re-implementation of openai/CLIP's ViT CLIP (model.py semantics:
pre-LN residual blocks with nn.MultiheadAttention's packed in_proj, QuickGELU or GELU MLP,
additive causal mask in the text tower, ln_post on the class token, x @ proj, text pooled at
argmax(ids)), trained for a few steps exactly as open_clip does:

  * loss: the CLIP paper's pseudocode (L2-normalise both feature sets, logits =
    exp(t) * I @ T^T, mean of the image->text and text->image cross-entropies, labels arange);
  * torch.optim.AdamW, betas (0.9, 0.98), eps 1e-6, weight decay only for parameters that are
    NOT excluded by   p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n
                      or "logit_scale" in n or "embedding" in n
    (open_clip's rule plus embeddings, as issue 5 asks);
  * open_clip's cosine_lr schedule (linear warm-up base*(step+1)/warmup, then cosine);
  * torch.nn.utils.clip_grad_norm_ over all parameters;
  * logit_scale clamped to [0, ln 100] after every optimizer step.

The run is done twice from the same float32 initial parameters and inputs: in float32 (what
our C++ must match) and in float64 (the exact answer, to know the float32 noise floor).

Writes one safetensors file (written by hand: no safetensors package needed) holding
  input.pixels [B,3,H,W] F32, input.text [B,ctx] I32,
  param.<name>  initial parameters (F32),
  grad.<name>   gradient of the loss at the initial parameters, float32 run,
  final.<name>  parameters after `steps` optimizer steps, float32 run,
  grad64.<name>, final64.<name>  the same from the float64 run (rounded to F32),
  loss, loss64 [1]; step.loss, step.lr, step.grad_norm [steps] (float32 run);
and the configuration and hyper-parameters as JSON in the metadata ("config", "train").

With --vision resnet the image tower is openai/CLIP's ModifiedResNet (tools/reference_resnet.py,
weights perturbed away from CLIP's init, batch-norm running statistics far from (0, 1)),
trained in training mode (batch statistics, running averages updated with momentum 0.1);
the file then also holds
  buffer.<name>     initial batch-norm running_mean / running_var (F32),
  finalbuf.<name>, finalbuf64.<name>   the running statistics after the steps.

Run:  /usr/bin/python3 tools/train_reference.py --out tests/data/train/debug_state.safetensors
      /usr/bin/python3 tools/train_reference.py --vision resnet \
          --out tests/data/train/debug_state_resnet.safetensors
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
import torch.nn as nn
import torch.nn.functional as F


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, act, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU() if act == "quickgelu" else nn.GELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = nn.LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x):
        mask = self.attn_mask.to(dtype=x.dtype) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, act, attn_mask=None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, act, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, width, layers, heads, output_dim, act):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn((image_size // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, act)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


class CLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        v, t = cfg["vision"], cfg["text"]
        act = cfg["activation"]
        self.context_length = t["context_length"]
        if isinstance(v["layers"], list):  # ModifiedResNet
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from reference_resnet import ModifiedResNet
            self.visual = ModifiedResNet(v["layers"], cfg["embed_dim"], v["heads"], v["image_size"],
                                         v["width"])
        else:
            self.visual = VisionTransformer(v["image_size"], v["patch_size"], v["width"],
                                            v["layers"], v["heads"], cfg["embed_dim"], act)
        self.transformer = Transformer(t["width"], t["layers"], t["heads"], act,
                                       attn_mask=self.build_attention_mask())
        self.token_embedding = nn.Embedding(t["vocab_size"], t["width"])
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, t["width"]))
        self.ln_final = nn.LayerNorm(t["width"])
        self.text_projection = nn.Parameter(torch.empty(t["width"], cfg["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self):  # as openai/CLIP model.py
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = (self.transformer.width ** -0.5) * ((2 * self.transformer.layers) ** -0.5)
        attn_std = self.transformer.width ** -0.5
        fc_std = (2 * self.transformer.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    def build_attention_mask(self):
        mask = torch.empty(self.context_length, self.context_length)
        mask.fill_(float("-inf"))
        mask.triu_(1)
        return mask

    def encode_image(self, image):
        return self.visual(image)

    def encode_text(self, text):
        x = self.token_embedding(text)
        x = x + self.positional_embedding
        x = x.permute(1, 0, 2)
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def forward(self, image, text):
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        # The paper's pseudocode: I_e = l2_normalize(I_f), T_e = l2_normalize(T_f),
        # logits = I_e T_e^T exp(t), loss = (CE(logits, axis 0) + CE(logits, axis 1)) / 2.
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        labels = torch.arange(image.shape[0])
        return (F.cross_entropy(logits_per_image, labels) +
                F.cross_entropy(logits_per_image.t(), labels)) / 2


def excluded_from_decay(name, p):
    return (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
            or "logit_scale" in name or "embedding" in name)


def cosine_lr(base_lr, warmup, steps, step):  # open_clip's cosine_lr
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e = step - warmup
    es = steps - warmup
    return 0.5 * (1 + np.cos(np.pi * e / es)) * base_lr


def train(model, pixels, text, hp):
    named = list(model.named_parameters())
    decay = [p for n, p in named if not excluded_from_decay(n, p)]
    no_decay = [p for n, p in named if excluded_from_decay(n, p)]
    opt = torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0},
         {"params": decay, "weight_decay": hp["weight_decay"]}],
        lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    first_grads, losses, lrs, norms = None, [], [], []
    for step in range(hp["steps"]):
        lr = cosine_lr(hp["lr"], hp["warmup"], hp["steps"], step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = model(pixels, text)
        loss.backward()
        if step == 0:
            first_loss = loss.item()
            first_grads = {n: p.grad.detach().clone() for n, p in named}
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        lrs.append(lr)
        norms.append(norm.item())
    final = {n: p.detach().clone() for n, p in named}
    return first_loss, first_grads, final, losses, lrs, norms


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
    for name, arr in tensors.items():
        shape = list(arr.shape)  # before ascontiguousarray, which makes 0-d arrays 1-d
        arr = np.ascontiguousarray(arr)
        data = arr.tobytes()
        header[name] = {"dtype": codes[arr.dtype], "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--activation", default="quickgelu", choices=["quickgelu", "gelu"])
    ap.add_argument("--no-float64", action="store_true", help="skip the float64 run")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vision", default="vit", choices=["vit", "resnet"])
    args = ap.parse_args()

    cfg = {"embed_dim": 24, "activation": args.activation,
           "vision": {"image_size": 32, "patch_size": 8, "width": 40, "layers": 2, "heads": 2},
           "text": {"context_length": 16, "vocab_size": 100, "width": 32, "layers": 2,
                    "heads": 2}}
    if args.vision == "resnet":
        # Every block kind (stride 1 with and without a projection shortcut, anti-aliased
        # stride 2), a 2x2 final map under the attention pool; heads = 32 * width / 64.
        cfg["vision"] = {"image_size": 64, "layers": [2, 1, 1, 1], "width": 4, "heads": 2}
    hp = {"batch": 6, "steps": 5, "warmup": 2, "lr": 1e-3, "weight_decay": 0.2, "beta1": 0.9,
          "beta2": 0.98, "eps": 1e-6, "max_grad_norm": 1.0,
          "logit_scale_init": math.log(1 / 0.07)}

    torch.manual_seed(args.seed)
    model = CLIP(cfg)
    resnet = args.vision == "resnet"
    if resnet:  # perturbed weights and running statistics (reference_resnet.build_perturbed)
        from reference_resnet import build_perturbed
        v = cfg["vision"]
        model.visual = build_perturbed(v["layers"], v["width"], v["image_size"], cfg["embed_dim"],
                                       args.seed)
        for m in model.visual.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1  # torch's default (build_perturbed calibrated with None)
        model.train()
    # Move every parameter away from its init (LayerNorm gains != 1, biases != 0, ...) so no
    # gradient path is trivially zero or symmetric.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n == "logit_scale":
                p.fill_(hp["logit_scale_init"])
            else:
                p.add_(0.05 * torch.randn_like(p))
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = lambda m: {n: b.detach().clone() for n, b in m.named_buffers()
                       if n.endswith("running_mean") or n.endswith("running_var")}
    init_buffers = stats(model)

    B, v, t = hp["batch"], cfg["vision"], cfg["text"]
    pixels = torch.randn(B, 3, v["image_size"], v["image_size"])
    ctx, vocab = t["context_length"], t["vocab_size"]
    text = torch.zeros(B, ctx, dtype=torch.long)
    gen = np.random.default_rng(args.seed)
    for i in range(B):
        length = ctx if i == 0 else int(gen.integers(2, ctx))  # row 0: EOT at the last position
        text[i, 0] = vocab - 2                                   # start of text
        text[i, 1:length - 1] = torch.from_numpy(gen.integers(1, vocab - 2, length - 2))
        text[i, length - 1] = vocab - 1                          # end of text: the largest id

    loss32, grads32, final32, losses, lrs, norms = train(model, pixels, text, hp)
    final_buffers = stats(model)

    tensors = OrderedDict()
    tensors["input.pixels"] = pixels.numpy().astype(np.float32)
    tensors["input.text"] = text.numpy().astype(np.int32)
    tensors["loss"] = np.array([loss32], dtype=np.float32)
    tensors["step.loss"] = np.array(losses, dtype=np.float32)
    tensors["step.lr"] = np.array(lrs, dtype=np.float32)
    tensors["step.grad_norm"] = np.array(norms, dtype=np.float32)
    for n, p in init.items():
        tensors["param." + n] = p.numpy().astype(np.float32)
    for n, g in grads32.items():
        tensors["grad." + n] = g.numpy().astype(np.float32)
    for n, p in final32.items():
        tensors["final." + n] = p.numpy().astype(np.float32)
    for n, b in init_buffers.items():
        tensors["buffer." + n] = b.numpy().astype(np.float32)
    for n, b in final_buffers.items():
        tensors["finalbuf." + n] = b.numpy().astype(np.float32)

    noise = {}
    if not args.no_float64:
        model64 = CLIP(cfg).double()
        with torch.no_grad():
            for n, p in model64.named_parameters():
                p.copy_(init[n].double())
            for n, b in model64.named_buffers():
                if n in init_buffers:
                    b.copy_(init_buffers[n].double())
        model64.train()
        for blk in model64.transformer.resblocks:
            blk.attn_mask = blk.attn_mask.double()
        loss64, grads64, final64, _, _, _ = train(model64, pixels.double(), text, hp)
        for n, b in stats(model64).items():
            tensors["finalbuf64." + n] = b.numpy().astype(np.float32)
        tensors["loss64"] = np.array([loss64], dtype=np.float32)
        for n, g in grads64.items():
            tensors["grad64." + n] = g.numpy().astype(np.float32)
        for n, p in final64.items():
            tensors["final64." + n] = p.numpy().astype(np.float32)

        def worst(a32, a64):  # the smallest tolerance t for which |a-b| <= max(t|b|, 1e-7) holds
            w = 0.0
            for n in a32:
                a, b = a32[n].double(), a64[n]
                excess = ((a - b).abs() - 1e-7).clamp(min=0) / b.abs().clamp(min=1e-30)
                w = max(w, excess.max().item())
            return w

        def max_abs(a32, a64):
            return max((a32[n].double() - a64[n]).abs().max().item() for n in a32)

        noise = {"loss_rel": abs(loss32 - loss64) / abs(loss64),
                 "grad_worst_rel_with_1e-7_floor": worst(grads32, grads64),
                 "grad_max_abs": max_abs(grads32, grads64),
                 "final_max_abs": max_abs(final32, final64)}
        print("float32 torch vs float64 torch:", json.dumps(noise))

    n_params = sum(p.numel() for p in init.values())
    metadata = {"config": json.dumps(cfg), "train": json.dumps(hp),
                "float32_vs_float64": json.dumps(noise), "seed": str(args.seed),
                "torch": torch.__version__, "parameters": str(n_params)}
    write_safetensors(args.out, tensors, metadata)
    print(f"{n_params} parameters; loss {loss32:.8f}; step losses {losses}; lrs {lrs}; "
          f"grad norms {norms}; final logit_scale {final32['logit_scale'].item():.7f} "
          f"(ln 100 = {math.log(100):.7f})")


if __name__ == "__main__":
    main()
