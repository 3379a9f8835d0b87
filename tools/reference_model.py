#!/usr/bin/env python3
"""The PyTorch reference for clip's encoders, and the writer of their test checkpoints.

A self-contained re-implementation of openai/CLIP's model.py (the ViT CLIP: LayerNorm computed
in fp32, QuickGELU, nn.MultiheadAttention with packed in_proj, pre-LN residual blocks, class
token, ln_post + proj, causal text transformer pooled at argmax(ids)), built from seeded random
weights that are perturbed away from their initialisation (LayerNorm weights != 1, biases != 0,
logit_scale != ln(1/0.07)) so that a wrong bias, norm or scale cannot go unnoticed.

`write` saves the checkpoint as model directories in the three naming schemes, with safetensors
written by hand (JSON header + raw little-endian bytes; no safetensors package needed):
    OUT/openai/model.safetensors                         OpenAI state-dict names
    OUT/openclip/open_clip_model.safetensors + open_clip_config.json
    OUT/hf/model.safetensors + config.json               transformers' CLIPModel names
and, with --goldens, reference inputs and outputs as float32 .npy files in OUT/golden/:
    pixels.npy [B,3,S,S], text_ids.npy [N,ctx] (token ids stored as float32, exact < 2^24),
    image_features.npy, text_features.npy (unnormalised), logit_scale.npy [1],
    logits_per_image.npy [B, N] (exp(logit_scale) * cosine similarities),
    act_<name>.npy: vision.embed, vision.ln_pre, vision.block.<i>, vision.ln_post,
    vision.output, text.embed, text.block.<i> (all ctx positions), text.ln_final (pooled rows),
    text.output.

Run with Debian's interpreter: /usr/bin/python3 tools/reference_model.py write --config tiny --out DIR
"""
import argparse
import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

# ---- configs (open_clip vocabulary: width, layers, heads, patch, image size) ----
CONFIGS = {
    # Small enough to commit (f16 weights), still with 2 heads and 2 layers per tower.
    "tiny": dict(embed_dim=64, image_size=32, patch_size=8, vision_width=128, vision_layers=2,
                 vision_heads=2, context_length=16, vocab_size=256, text_width=128,
                 text_heads=2, text_layers=2),
    # Sizes unlike the released models (patch 14 as in L/14, 3 heads, odd token counts).
    "odd": dict(embed_dim=96, image_size=42, patch_size=14, vision_width=192, vision_layers=3,
                vision_heads=3, context_length=20, vocab_size=300, text_width=192,
                text_heads=3, text_layers=2),
    # tiny towers with OpenAI's full vocabulary and context, so real prompts tokenized by the
    # OpenAI BPE can run through it (library API and CLI tests; generated, not committed).
    "tiny-vocab": dict(embed_dim=64, image_size=32, patch_size=8, vision_width=128,
                       vision_layers=2, vision_heads=2, context_length=77, vocab_size=49408,
                       text_width=128, text_heads=2, text_layers=2),
    "ViT-B-32": dict(embed_dim=512, image_size=224, patch_size=32, vision_width=768,
                     vision_layers=12, vision_heads=12, context_length=77, vocab_size=49408,
                     text_width=512, text_heads=8, text_layers=12),
    "ViT-B-16": dict(embed_dim=512, image_size=224, patch_size=16, vision_width=768,
                     vision_layers=12, vision_heads=12, context_length=77, vocab_size=49408,
                     text_width=512, text_heads=8, text_layers=12),
    "ViT-L-14": dict(embed_dim=768, image_size=224, patch_size=14, vision_width=1024,
                     vision_layers=24, vision_heads=16, context_length=77, vocab_size=49408,
                     text_width=768, text_heads=12, text_layers=12),
    "ViT-L-14-336": dict(embed_dim=768, image_size=336, patch_size=14, vision_width=1024,
                         vision_layers=24, vision_heads=16, context_length=77,
                         vocab_size=49408, text_width=768, text_heads=12, text_layers=12),
}

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# ---- the model (openai/CLIP model.py, ViT path) ----
class LayerNorm(nn.LayerNorm):
    """Subclass torch's LayerNorm to handle fp16 (computes in fp32)."""

    def forward(self, x):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, attn_mask=None, gelu=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", nn.GELU() if gelu else QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x):
        mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None, gelu=False):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, attn_mask, gelu) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, gelu=False):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, gelu=gelu)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)  # [*, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


class CLIP(nn.Module):
    def __init__(self, embed_dim, image_size, patch_size, vision_width, vision_layers,
                 vision_heads, context_length, vocab_size, text_width, text_heads, text_layers,
                 gelu=False):
        super().__init__()
        self.context_length = context_length
        self.visual = VisionTransformer(image_size, patch_size, vision_width, vision_layers,
                                        vision_heads, embed_dim, gelu)
        self.transformer = Transformer(text_width, text_layers, text_heads,
                                       self.build_attention_mask(), gelu)
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, text_width))
        self.ln_final = LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.empty(text_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self):
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
        mask.triu_(1)  # zero out the lower diagonal
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


def perturb_(model, gen):
    """Moves every parameter away from its initialisation: LayerNorm weights around 1 with
    spread, all biases and the class token non-zero, logit_scale off ln(1/0.07)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or \
                    ".ln_" in name and name.endswith(".weight") or name.startswith("ln_final.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.add_(0.05 * noise)
            elif name == "logit_scale":
                p.add_(0.3 * noise)
            else:
                p.mul_(1.0 + 0.1 * noise)


def build_model(cfg_name, seed, gelu=False):
    torch.manual_seed(seed)
    model = CLIP(**CONFIGS[cfg_name], gelu=gelu)
    perturb_(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


# ---- safetensors by hand ----
from safetensors_io import read_safetensors as read_stored, write_safetensors  # noqa: E402  (tools/ is on sys.path)


def read_safetensors(path):
    """name -> float32 torch tensor of every floating tensor, for the benchmarks."""
    return {k: v.float() for k, v in read_stored(path).items() if v.is_floating_point()}


def load_model_from_openai_safetensors(path, cfg_name, gelu=False):
    model = CLIP(**CONFIGS[cfg_name], gelu=gelu)
    sd = read_safetensors(path)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{path}: missing {missing}, unexpected {unexpected}")
    return model.eval()


# ---- naming schemes ----
def openai_state_dict(model, dtype):
    return OrderedDict((k, v.detach().to(dtype)) for k, v in model.state_dict().items())


def hf_state_dict(model, dtype):
    sd = openai_state_dict(model, dtype)
    out = OrderedDict()

    def blocks(src_prefix, dst_prefix, layers):
        for i in range(layers):
            s, d = f"{src_prefix}.{i}.", f"{dst_prefix}.{i}."
            w, b = sd[s + "attn.in_proj_weight"], sd[s + "attn.in_proj_bias"]
            for j, n in enumerate("qkv"):
                out[d + f"self_attn.{n}_proj.weight"] = w.chunk(3, dim=0)[j].clone()
                out[d + f"self_attn.{n}_proj.bias"] = b.chunk(3, dim=0)[j].clone()
            out[d + "self_attn.out_proj.weight"] = sd[s + "attn.out_proj.weight"]
            out[d + "self_attn.out_proj.bias"] = sd[s + "attn.out_proj.bias"]
            for a, h in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[d + h + ".weight"] = sd[s + a + ".weight"]
                out[d + h + ".bias"] = sd[s + a + ".bias"]

    out["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    out["text_model.embeddings.position_ids"] = torch.arange(sd["positional_embedding"].shape[0]).unsqueeze(0)
    blocks("transformer.resblocks", "text_model.encoder.layers", model.transformer.layers)
    out["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    out["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    out["text_projection.weight"] = sd["text_projection"].t().contiguous()
    out["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    out["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    out["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    out["vision_model.embeddings.position_ids"] = torch.arange(sd["visual.positional_embedding"].shape[0]).unsqueeze(0)
    out["vision_model.pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]
    out["vision_model.pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
    blocks("visual.transformer.resblocks", "vision_model.encoder.layers", model.visual.transformer.layers)
    out["vision_model.post_layernorm.weight"] = sd["visual.ln_post.weight"]
    out["vision_model.post_layernorm.bias"] = sd["visual.ln_post.bias"]
    out["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    out["logit_scale"] = sd["logit_scale"]
    return out


def openclip_config(cfg, gelu):
    return {
        "model_cfg": {
            "embed_dim": cfg["embed_dim"],
            "quick_gelu": not gelu,
            "vision_cfg": {"image_size": cfg["image_size"], "layers": cfg["vision_layers"],
                           "width": cfg["vision_width"], "patch_size": cfg["patch_size"],
                           "head_width": cfg["vision_width"] // cfg["vision_heads"]},
            "text_cfg": {"context_length": cfg["context_length"], "vocab_size": cfg["vocab_size"],
                         "width": cfg["text_width"], "heads": cfg["text_heads"],
                         "layers": cfg["text_layers"]},
        },
        "preprocess_cfg": {"mean": list(MEAN), "std": list(STD)},
    }


def hf_config(cfg, gelu):
    act = "gelu" if gelu else "quick_gelu"
    return {
        "architectures": ["CLIPModel"], "model_type": "clip",
        "projection_dim": cfg["embed_dim"], "logit_scale_init_value": 2.6592,
        "text_config": {"hidden_size": cfg["text_width"], "intermediate_size": 4 * cfg["text_width"],
                        "num_attention_heads": cfg["text_heads"], "num_hidden_layers": cfg["text_layers"],
                        "max_position_embeddings": cfg["context_length"], "vocab_size": cfg["vocab_size"],
                        "hidden_act": act, "layer_norm_eps": 1e-5, "projection_dim": cfg["embed_dim"],
                        "bos_token_id": cfg["vocab_size"] - 2, "eos_token_id": cfg["vocab_size"] - 1},
        "vision_config": {"hidden_size": cfg["vision_width"], "intermediate_size": 4 * cfg["vision_width"],
                          "num_attention_heads": cfg["vision_heads"], "num_hidden_layers": cfg["vision_layers"],
                          "image_size": cfg["image_size"], "patch_size": cfg["patch_size"], "num_channels": 3,
                          "hidden_act": act, "layer_norm_eps": 1e-5, "projection_dim": cfg["embed_dim"]},
    }


def write_checkpoints(model, cfg_name, out, schemes, dtype, gelu):
    cfg = CONFIGS[cfg_name]
    meta = {"format": "pt", "clip_reference": f"{cfg_name} random weights (tools/reference_model.py)"}
    if "openai" in schemes:
        os.makedirs(os.path.join(out, "openai"), exist_ok=True)
        write_safetensors(os.path.join(out, "openai", "model.safetensors"), openai_state_dict(model, dtype), meta)
    if "openclip" in schemes:
        d = os.path.join(out, "openclip")
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "open_clip_model.safetensors"), openai_state_dict(model, dtype), meta)
        with open(os.path.join(d, "open_clip_config.json"), "w") as f:
            json.dump(openclip_config(cfg, gelu), f, indent=2)
    if "hf" in schemes:
        d = os.path.join(out, "hf")
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), hf_state_dict(model, dtype), meta)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(cfg, gelu), f, indent=2)


# ---- inputs ----
def make_text_ids(cfg, lengths, gen):
    """Rows of [SOT] + random tokens + [EOT] + zero padding; SOT/EOT are the two largest ids
    (49406/49407 for the real vocabulary), so argmax finds the end of text."""
    ctx, vocab = cfg["context_length"], cfg["vocab_size"]
    ids = torch.zeros(len(lengths), ctx, dtype=torch.int64)
    for r, n in enumerate(lengths):
        n = min(n, ctx)  # total tokens including SOT and EOT
        ids[r, 0] = vocab - 2
        if n > 2:
            ids[r, 1:n - 1] = torch.randint(1, vocab - 2, (n - 2,), generator=gen)
        ids[r, n - 1] = vocab - 1
    return ids


def make_pixels(cfg, batch, gen):
    return torch.randn(batch, 3, cfg["image_size"], cfg["image_size"], generator=gen)


# ---- goldens ----
def save_npy(path, t):
    np.save(path, np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32)))


def write_goldens(model, cfg_name, out, image_batch, text_lengths, seed):
    cfg = CONFIGS[cfg_name]
    gen = torch.Generator().manual_seed(seed + 2)
    pixels = make_pixels(cfg, image_batch, gen)
    ids = make_text_ids(cfg, text_lengths, gen)
    acts = OrderedDict()
    hooks = []
    v = model.visual
    hooks.append(v.ln_pre.register_forward_pre_hook(lambda m, a: acts.__setitem__("vision.embed", a[0].clone())))
    hooks.append(v.ln_pre.register_forward_hook(lambda m, a, o: acts.__setitem__("vision.ln_pre", o.clone())))
    for i, blk in enumerate(v.transformer.resblocks):
        hooks.append(blk.register_forward_hook(
            lambda m, a, o, i=i: acts.__setitem__(f"vision.block.{i}", o.permute(1, 0, 2).clone())))
    hooks.append(v.ln_post.register_forward_hook(lambda m, a, o: acts.__setitem__("vision.ln_post", o.clone())))
    t = model.transformer
    hooks.append(t.resblocks[0].register_forward_pre_hook(
        lambda m, a: acts.__setitem__("text.embed", a[0].permute(1, 0, 2).clone())))
    for i, blk in enumerate(t.resblocks):
        hooks.append(blk.register_forward_hook(
            lambda m, a, o, i=i: acts.__setitem__(f"text.block.{i}", o.permute(1, 0, 2).clone())))
    hooks.append(model.ln_final.register_forward_hook(lambda m, a, o: acts.__setitem__(
        "text.ln_final", o[torch.arange(o.shape[0]), ids.argmax(dim=-1)].clone())))
    with torch.no_grad():
        image_features = model.encode_image(pixels)
        text_features = model.encode_text(ids)
    for h in hooks:
        h.remove()
    acts["vision.output"] = image_features
    acts["text.output"] = text_features
    g = os.path.join(out, "golden")
    os.makedirs(g, exist_ok=True)
    save_npy(os.path.join(g, "pixels.npy"), pixels)
    save_npy(os.path.join(g, "text_ids.npy"), ids.to(torch.float32))
    save_npy(os.path.join(g, "image_features.npy"), image_features)
    save_npy(os.path.join(g, "text_features.npy"), text_features)
    save_npy(os.path.join(g, "logit_scale.npy"), model.logit_scale.detach().reshape(1))
    # model.py CLIP.forward: logits_per_image = exp(logit_scale) * norm(I) @ norm(T).T
    with torch.no_grad():
        i = image_features / image_features.norm(dim=1, keepdim=True)
        t = text_features / text_features.norm(dim=1, keepdim=True)
        save_npy(os.path.join(g, "logits_per_image.npy"), model.logit_scale.exp() * i @ t.t())
    for name, a in acts.items():
        save_npy(os.path.join(g, f"act_{name}.npy"), a)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write checkpoints (and goldens)")
    w.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    w.add_argument("--out", required=True)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--schemes", default="openai,openclip,hf")
    w.add_argument("--dtype", default="f32", choices=["f32", "f16"],
                   help="stored dtype; with f16 the reference itself uses the f16-rounded weights")
    w.add_argument("--gelu", action="store_true", help="exact GELU instead of QuickGELU")
    w.add_argument("--goldens", action="store_true")
    w.add_argument("--image-batch", type=int, default=2)
    w.add_argument("--text-lengths", default="5,9,3",
                   help="tokens per text row including start and end of text")
    w.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.config, args.seed, args.gelu)
    dtype = torch.float16 if args.dtype == "f16" else torch.float32
    if dtype == torch.float16:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    write_checkpoints(model, args.config, args.out, args.schemes.split(","), dtype, args.gelu)
    if args.goldens:
        write_goldens(model, args.config, args.out, args.image_batch,
                      [int(x) for x in args.text_lengths.split(",")], args.seed)


if __name__ == "__main__":
    main()
