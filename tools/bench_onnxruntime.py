#!/usr/bin/env python3
"""ONNX Runtime's speed on the same ViT-B/32 weights and inputs as bench/bench_model_encoders.cpp,
fp32 and dynamically quantized int8 (what Immich ships: onnxruntime.quantization.quantize_dynamic).

Two steps, because Debian's torch (the exporter) and PyPI's onnxruntime may live in different
Pythons:

  # 1. export the reference model's image and text encoders (tools/reference_model.py weights)
  /usr/bin/python3 tools/bench_onnxruntime.py export --model /tmp/clip_bench_vitb32
  # 2. quantize (weights per channel, int8; activations per tensor, uint8, computed at run time)
  #    and time batch 1 and 32 on N threads; prints one JSON object per case and the min
  #    cosine of each to the reference features
  python3 -m pip install onnxruntime onnx    # any Python with them
  python3 tools/bench_onnxruntime.py run --model /tmp/clip_bench_vitb32
"""
import argparse
import json
import os
import sys
import time


def export(args):
    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference_model

    model = reference_model.load_model_from_openai_safetensors(
        os.path.join(args.model, "openai", "model.safetensors"), args.config)
    model.eval()
    pixels = torch.from_numpy(np.load(os.path.join(args.model, "golden", "pixels.npy")))
    ids = torch.from_numpy(np.load(os.path.join(args.model, "golden", "text_ids.npy"))).long()

    class Encoder(torch.nn.Module):  # one tower of the model as its own graph
        def __init__(self, m, method):
            super().__init__()
            self.m, self.method = m, method

        def forward(self, x):
            return getattr(self.m, self.method)(x)

    out = os.path.join(args.model, "onnx")
    os.makedirs(out, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(Encoder(model, "encode_image"), pixels[:1], os.path.join(out, "image.onnx"), opset_version=14,
                          input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
        torch.onnx.export(Encoder(model, "encode_text"), ids[:1], os.path.join(out, "text.onnx"), opset_version=14,
                          input_names=["ids"], output_names=["features"],
                          dynamic_axes={"ids": {0: "batch"}, "features": {0: "batch"}})
    print("wrote", out)


def timeit(fn, min_time, min_reps=3):
    import numpy as np
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def min_cosine(a, b):
    import numpy as np
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def run(args):
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    d = os.path.join(args.model, "onnx")
    pixels = np.load(os.path.join(args.model, "golden", "pixels.npy")).astype(np.float32)
    ids = np.load(os.path.join(args.model, "golden", "text_ids.npy")).astype(np.int64)
    want = {"image": np.load(os.path.join(args.model, "golden", "image_features.npy")),
            "text": np.load(os.path.join(args.model, "golden", "text_features.npy"))}
    for what in args.what:
        fp32 = os.path.join(d, what + ".onnx")
        int8 = os.path.join(d, what + ".int8.onnx")
        if not os.path.exists(int8):
            t0 = time.perf_counter()
            quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)
            print(json.dumps({"quantize": what, "seconds": time.perf_counter() - t0}), flush=True)
        for precision, path in (("fp32", fp32), ("int8", int8)):
            if precision not in args.precision:
                continue
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            x_all = pixels if what == "image" else ids
            cos = min_cosine(sess.run(None, {name: x_all})[0], want[what])
            for batch in (1, 32):
                x = x_all[:batch]
                t, reps = timeit(lambda: sess.run(None, {name: x}), args.min_time)
                print(json.dumps({"impl": "onnxruntime", "precision": precision, "what": what,
                                  "batch": batch, "seconds": t, "ms_per_item": 1e3 * t / batch,
                                  "reps": reps, "threads": args.threads, "min_cosine": cos,
                                  "onnxruntime": ort.__version__}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["export", "run"])
    ap.add_argument("--model", default="/tmp/clip_bench_vitb32")
    ap.add_argument("--config", default="ViT-B-32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--what", nargs="+", default=["image", "text"], choices=["image", "text"])
    ap.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    args = ap.parse_args()
    export(args) if args.step == "export" else run(args)


if __name__ == "__main__":
    main()
