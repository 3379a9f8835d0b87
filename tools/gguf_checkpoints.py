#!/usr/bin/env python3
"""clip.cpp-style GGUF files of the reference model, for tests of clip's GGUF reader
(src/core/gguf.cpp), written with PyPI's `gguf` package (llama.cpp's own writer) and laid out
as clip.cpp's models/convert_hf_to_gguf.py lays them out (docs/weights.md lists the rules):

  OUT/hf/model.safetensors, OUT/hf/config.json   the reference weights (Hugging Face names, f32)
  OUT/gguf/model-f32.gguf    file_type 0: every tensor F32 except the 4-D patch embedding (F16)
  OUT/gguf/model-f16.gguf    file_type 1: 2-D *.weight and the patch embedding F16, the rest F32
  OUT/gguf/model-q8_0.gguf, -q4_0, -q4_1, -q5_0, -q5_1
                             the f16 file with every 2-D weight quantized (gguf.quants, the same
                             block formats as ggml's quantize)
  OUT/gguf/model-QUANT.attn_q.npy  gguf-py's dequantization of t.blk.0.attn_q.weight of each
                             quantized file
  OUT/gguf/model-tokens.json the token list stored in the files (vocab.json's order)

  python3 tools/gguf_checkpoints.py --out DIR [--config tiny-vocab]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as rm  # noqa: E402
import gguf  # noqa: E402  (pip install gguf)

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def gguf_name(hf):
    """Hugging Face tensor name -> clip.cpp's (its converter's chain of replacements; note that
    fc1 becomes ffn_down and fc2 ffn_up)."""
    if "projection" in hf:
        return hf
    for a, b in [("text_model", "t"), ("vision_model", "v"), ("encoder.layers", "blk"), ("embeddings.", ""),
                 ("_proj", ""), ("self_attn.", "attn_"), ("layer_norm", "ln"), ("layernorm", "ln"),
                 ("mlp.fc1", "ffn_down"), ("mlp.fc2", "ffn_up"), ("embedding", "embd"), ("final", "post"),
                 ("layrnorm", "ln")]:
        hf = hf.replace(a, b)
    return hf


def write(path, sd, cfg_hf, tokens, ftype, quant=None):
    w = gguf.GGUFWriter(path, "clip")
    w.add_bool("clip.has_text_encoder", True)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_file_type(ftype)
    w.add_name("reference")
    w.add_description("two-tower CLIP model")
    t, v = cfg_hf["text_config"], cfg_hf["vision_config"]

    def tower(prefix, h):  # the keys both towers have, in the converter's order
        w.add_uint32(prefix + "embedding_length", h["hidden_size"])
        w.add_uint32(prefix + "feed_forward_length", h["intermediate_size"])
        w.add_uint32(prefix + "projection_dim", h["projection_dim"])
        w.add_uint32(prefix + "attention.head_count", h["num_attention_heads"])
        w.add_float32(prefix + "attention.layer_norm_epsilon", h["layer_norm_eps"])
        w.add_uint32(prefix + "block_count", h["num_hidden_layers"])

    w.add_uint32("clip.text.context_length", t["max_position_embeddings"])
    tower("clip.text.", t)
    w.add_token_list(tokens)
    w.add_uint32("clip.vision.image_size", v["image_size"])
    w.add_uint32("clip.vision.patch_size", v["patch_size"])
    tower("clip.vision.", v)
    w.add_array("clip.vision.image_mean", list(rm.MEAN))
    w.add_array("clip.vision.image_std", list(rm.STD))
    w.add_bool("clip.use_gelu", v["hidden_act"] == "gelu")
    for name, tensor in sd.items():
        if name in ("logit_scale", "text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"):
            continue
        n = gguf_name(name)
        data = tensor.float().numpy().squeeze()
        if data.ndim == 4:
            data = data.astype(np.float16)
        elif ftype == 1 and n.endswith(".weight") and data.ndim == 2:
            data = data.astype(np.float16)
        else:
            data = data.astype(np.float32)
        if quant is not None and data.ndim == 2 and n.endswith(".weight"):
            # from the f32 weights (not their f16 rounding), as `clip convert --type` does
            q = gguf.quants.quantize(tensor.float().numpy().squeeze().astype(np.float32), quant)
            w.add_tensor(n, q, raw_dtype=quant)  # shape: the byte shape, as gguf-py expects
        else:
            w.add_tensor(n, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="tiny-vocab", choices=sorted(rm.CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = rm.build_model(args.config, args.seed)
    rm.write_checkpoints(model, args.config, args.out, ["hf"], rm.torch.float32, False)
    cfg_hf = rm.hf_config(rm.CONFIGS[args.config], False)
    sd = rm.hf_state_dict(model, rm.torch.float32)
    vocab_size = rm.CONFIGS[args.config]["vocab_size"]
    if vocab_size == 49408:
        with open(os.path.join(SHARED, "clip_vocab", "hf_clip_tokenizer", "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        tokens = sorted(vocab, key=lambda k: vocab[k])  # id order
    else:
        tokens = [f"tok{i}" for i in range(vocab_size)]
    d = os.path.join(args.out, "gguf")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model-tokens.json"), "w", encoding="utf-8") as f:
        json.dump(tokens, f)
    write(os.path.join(d, "model-f32.gguf"), sd, cfg_hf, tokens, 0)
    write(os.path.join(d, "model-f16.gguf"), sd, cfg_hf, tokens, 1)
    Q = gguf.GGMLQuantizationType
    for name, q in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1), ("q5_0", Q.Q5_0), ("q5_1", Q.Q5_1)]:
        path = os.path.join(d, f"model-{name}.gguf")
        write(path, sd, cfg_hf, tokens, 1, q)
        # gguf-py's own dequantization of one tensor, for the reader's block decoding.
        t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "t.blk.0.attn_q.weight")
        np.save(os.path.join(d, f"model-{name}.attn_q.npy"), gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32))


if __name__ == "__main__":
    main()
