#!/usr/bin/env python3
"""PyTorch baseline for one training step of the ModifiedResNet image tower.

The step bench/bench_train_resnet.cpp times: openai/CLIP's ModifiedResNet (the
re-implementation in tools/reference_resnet.py) in training mode (batch statistics, running
statistics updated), forward on random pixels, the CLIP contrastive loss against fixed random
text features, backward into the parameter gradients (no optimizer). Reports the median and
best step, forward and backward medians and samples/s over --steps steps after one warm-up.

With --cpp-bench build/bench/bench_train_resnet it runs our benchmark on the same
configuration afterwards (alternating with torch --rounds times, so both see the same machine
load) and prints both. Run on a quiet machine, both with OMP_WAIT_POLICY=PASSIVE:

  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tools/bench_torch_train_resnet.py \
      --config rn50_b32 --cpp-bench build/bench/bench_train_resnet
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_resnet import ModifiedResNet  # noqa: E402

CONFIGS = {
    # name: (layers, width, image_size, embed_dim, batch, google-benchmark name)
    "tiny": ((2, 1, 1, 1), 4, 64, 16, 4, "BM_TrainResNetTiny"),
    "rn50_b8": ((3, 4, 6, 3), 64, 224, 1024, 8, "BM_TrainResNetRN50Batch8"),
    "rn50_b32": ((3, 4, 6, 3), 64, 224, 1024, 32, "BM_TrainResNetRN50Batch32"),
}


def time_torch(cfg, steps):
    layers, width, size, embed, batch, _ = CONFIGS[cfg]
    torch.manual_seed(1)
    model = ModifiedResNet(layers, embed, width * 32 // 64, size, width).train()
    pixels = torch.randn(batch, 3, size, size)
    text = F.normalize(torch.randn(batch, embed), dim=-1)
    labels = torch.arange(batch)
    scale = torch.tensor(2.659)
    fwd, bwd, total = [], [], []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        feats = model(pixels)
        t1 = time.perf_counter()
        img = feats / feats.norm(dim=-1, keepdim=True)
        logits = scale.exp() * img @ text.t()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        loss.backward()
        t2 = time.perf_counter()
        if i > 0:  # the first step is the warm-up
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            total.append(t2 - t0)
    return {"median_ms": statistics.median(total) * 1e3, "best_ms": min(total) * 1e3,
            "forward_ms": statistics.median(fwd) * 1e3, "backward_ms": statistics.median(bwd) * 1e3,
            "samples/s": batch / statistics.median(total),
            "peak_RSS_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_cpp(binary, cfg, steps):
    env = dict(os.environ, CLIP_TRAIN_STEPS=str(steps))
    cmd = [binary, f"--benchmark_filter=^{CONFIGS[cfg][5]}/", "--benchmark_format=json"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    b = json.loads(res.stdout)["benchmarks"][0]
    return {k: b[k] for k in ("median_ms", "best_ms", "forward_ms", "backward_ms", "samples/s", "peak_RSS_MB")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="rn50_b32")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="torch / C++ alternations")
    ap.add_argument("--cpp-bench", help="path of bench_train_resnet")
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.torch_only:
        print(json.dumps(time_torch(args.config, args.steps)))
        return
    print(f"torch {torch.__version__}, threads {args.threads}, mkldnn {torch.backends.mkldnn.is_available()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, config {args.config}, "
          f"load average {os.getloadavg()[0]:.1f}")
    keys = ("median_ms", "best_ms", "forward_ms", "backward_ms", "samples/s", "peak_RSS_MB")
    print("| round | impl | " + " | ".join(keys) + " |")
    print("|---|---|" + "---:|" * len(keys))
    for r in range(args.rounds):
        # torch in its own process too, so its peak RSS is this configuration's alone.
        cmd = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--steps", str(args.steps),
               "--threads", str(args.threads), "--torch-only"]
        t = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(f"| {r} | PyTorch | " + " | ".join(f"{t[k]:.2f}" for k in keys) + " |", flush=True)
        if args.cpp_bench:
            c = run_cpp(args.cpp_bench, args.config, args.steps)
            print(f"| {r} | clip | " + " | ".join(f"{c[k]:.2f}" for k in keys) + " |", flush=True)


if __name__ == "__main__":
    main()
