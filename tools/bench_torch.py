#!/usr/bin/env python3
"""PyTorch's speed on the same ViT-B/32 weights and inputs as bench/bench_model_encoders.cpp.

Loads MODEL/openai/model.safetensors into the reference CLIP (tools/reference_model.py,
openai/CLIP's model.py), f32, torch.inference_mode(), N threads (default 2), and times
encode_image at batch 1 and 32 and encode_text at batch 1 and 32 (the reference always runs
all 77 positions). Prints one JSON object per case.

OMP_WAIT_POLICY=PASSIVE is set before torch is imported: otherwise torch's OpenMP threads
spin while OpenBLAS's threads work and everything looks ~3x slower on 2 cores.

  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tools/bench_torch.py --model /tmp/clip_bench_vitb32
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model  # noqa: E402


def timeit(fn, min_time, min_reps=3):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/tmp/clip_bench_vitb32")
    ap.add_argument("--config", default="ViT-B-32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = reference_model.load_model_from_openai_safetensors(
        os.path.join(args.model, "openai", "model.safetensors"), args.config)
    pixels = torch.from_numpy(np.load(os.path.join(args.model, "golden", "pixels.npy")))
    ids = torch.from_numpy(np.load(os.path.join(args.model, "golden", "text_ids.npy"))).long()
    want_img = np.load(os.path.join(args.model, "golden", "image_features.npy"))
    want_txt = np.load(os.path.join(args.model, "golden", "text_features.npy"))
    with torch.inference_mode():
        assert np.abs(model.encode_image(pixels[:2]).numpy() - want_img[:2]).max() < 1e-4
        assert np.abs(model.encode_text(ids[:2]).numpy() - want_txt[:2]).max() < 1e-4
        for what, batch in (("image", 1), ("image", 32), ("text", 1), ("text", 32)):
            if what == "image":
                x = pixels[:batch]
                fn = lambda: model.encode_image(x)  # noqa: E731
            else:
                x = ids[:batch]
                fn = lambda: model.encode_text(x)  # noqa: E731
            t, reps = timeit(fn, args.min_time)
            print(json.dumps({"impl": "torch", "what": what, "batch": batch, "seconds": t,
                              "ms_per_item": 1e3 * t / batch, "reps": reps,
                              "threads": args.threads, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
