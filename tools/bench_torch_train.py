#!/usr/bin/env python3
"""PyTorch baseline for one CLIP training step (docs/BENCHMARKS.md, "Training speed").

The step is the one bench/bench_train_step.cpp times: forward of both towers, the symmetric
contrastive loss, backward, torch.nn.utils.clip_grad_norm_(1.0), torch.optim.AdamW (open_clip's
two weight-decay groups) and the logit_scale clamp, on random pixels and random token ids built
the same way (start token, random ids, end-of-text token at position 1 + b % (ctx - 1)). The
model is tools/train_reference.py's torch re-implementation of openai/CLIP's ViT CLIP
(nn.MultiheadAttention, pre-LN blocks, QuickGELU, causal text mask, argmax pooling).

Each configuration runs in its own process, so the peak RSS (getrusage ru_maxrss) is that
configuration's. Reports the median and best step time over --steps steps after --warmup
warm-up steps, samples/s from the median, and the peak RSS.

With --cpp-bench build/bench/bench_train_step it then runs our benchmark (also one process per
configuration; it reports samples/s from the median step and its own peak RSS) and prints a
table with both and the ratio. Run on a quiet machine, both with OMP_WAIT_POLICY=PASSIVE:

  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tools/bench_torch_train.py \
      --configs tiny6,tiny64,cifar128,vitb32 --cpp-bench build/bench/bench_train_step
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    # name: (model config, batch, google-benchmark name in bench_train_step)
    "tiny6": ("tiny", 6, "BM_TrainStepTiny"),
    "tiny64": ("tiny", 64, "BM_TrainStepTinyBatch64"),
    "cifar128": ("cifar_w128_l4", 128, "BM_TrainStepCifarW128L4Batch128"),
    "cifar256": ("cifar_w256_l6", 256, "BM_TrainStepCifarW256L6Batch256"),
    "vitb32": ("vit_b32", 32, "BM_TrainStepViTB32Batch32"),
}


def model_config(name):
    """The same sizes as bench/bench_train_step.cpp (mlp = 4 * width, heads = width / 64)."""
    if name == "tiny":
        return {"embed_dim": 24, "activation": "quickgelu",
                "vision": {"image_size": 32, "patch_size": 8, "width": 40, "layers": 2, "heads": 2},
                "text": {"context_length": 16, "vocab_size": 100, "width": 32, "layers": 2, "heads": 2}}
    if name.startswith("cifar"):
        w, l = {"cifar_w128_l4": (128, 4), "cifar_w256_l6": (256, 6)}[name]
        tw, tl, ctx = (128, 3, 16) if w == 128 else (256, 4, 24)
        return {"embed_dim": 256, "activation": "quickgelu",
                "vision": {"image_size": 32, "patch_size": 4, "width": w, "layers": l, "heads": w // 64},
                "text": {"context_length": ctx, "vocab_size": 2048, "width": tw, "layers": tl,
                         "heads": tw // 64}}
    if name == "vit_b32":
        return {"embed_dim": 512, "activation": "quickgelu",
                "vision": {"image_size": 224, "patch_size": 32, "width": 768, "layers": 12, "heads": 12},
                "text": {"context_length": 77, "vocab_size": 49408, "width": 512, "layers": 12,
                         "heads": 8}}
    raise SystemExit(f"unknown model {name}")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_torch(config, batch, steps, warmup, threads):
    """One configuration in this process; returns a dict of results."""
    import numpy as np
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_reference import CLIP, excluded_from_decay  # noqa: E402

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    cfg = model_config(config)
    model = CLIP(cfg)
    model.train()
    named = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for n, p in named if excluded_from_decay(n, p)], "weight_decay": 0.0},
         {"params": [p for n, p in named if not excluded_from_decay(n, p)], "weight_decay": 0.2}],
        lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    v, t = cfg["vision"], cfg["text"]
    pixels = torch.randn(batch, 3, v["image_size"], v["image_size"])
    ctx, vocab = t["context_length"], t["vocab_size"]
    gen = np.random.default_rng(1)
    text = torch.zeros(batch, ctx, dtype=torch.long)
    for b in range(batch):
        length = 2 + b % (ctx - 1)
        text[b, 0] = vocab - 2
        if length > 2:
            text[b, 1:length - 1] = torch.from_numpy(gen.integers(1, vocab - 2, length - 2))
        text[b, length - 1] = vocab - 1

    def step():
        opt.zero_grad(set_to_none=False)
        loss = model(pixels, text)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss.item()

    for _ in range(warmup):
        step()
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    return {"config": config, "batch": batch, "median_s": med, "best_s": min(times),
            "samples_per_s": batch / med, "best_samples_per_s": batch / min(times),
            "cpu_s": statistics.median(cpu), "peak_rss_mb": peak_rss_mb(), "steps": steps, "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters())}


def run_cpp(binary, bench_name, steps, threads):
    """Our benchmark, one configuration per process: CLIP_TRAIN_STEPS timed steps after one
    warm-up step; it reports the median and best step time and its peak RSS as counters."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), CLIP_TRAIN_STEPS=str(steps))
    cmd = [binary, f"--benchmark_filter=^{bench_name}/", "--benchmark_format=json"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    runs = [b for b in json.loads(res.stdout)["benchmarks"] if b.get("run_type") == "iteration"]
    if not runs:
        sys.exit(f"{' '.join(cmd)}: no benchmark matched")
    r = runs[0]
    return {"median_s": r["median_ms"] * 1e-3, "best_s": r["best_ms"] * 1e-3, "cpu_s": r["cpu_ms"] * 1e-3,
            "peak_rss_mb": r["peak_RSS_MB"], "activation_mb": r.get("activation_MB", float("nan"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny6,tiny64,cifar128,vitb32",
                    help="comma-separated: " + ",".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 20, 3 for vitb32)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cpp-bench", help="bench_train_step to run on the same configurations afterwards")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = ap.parse_args()

    def steps_for(name):
        return args.steps or (3 if name == "vitb32" else 20)

    if args.one:
        model, batch, _ = CONFIGS[args.one]
        print(json.dumps(run_torch(model, batch, steps_for(args.one), args.warmup, args.threads)))
        return

    names = args.configs.split(",")
    for n in names:
        if n not in CONFIGS:
            sys.exit(f"unknown configuration {n} (known: {', '.join(CONFIGS)})")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, threads {args.threads}, "
          f"load {open('/proc/loadavg').read().split()[:3]}")
    results = {}
    for n in names:
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", n,
                              "--threads", str(args.threads), "--warmup", str(args.warmup),
                              "--steps", str(steps_for(n))], capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"torch {n} failed:\n{res.stderr}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        results[n] = {"torch": r}
        print(f"torch {r['torch']} {n:9s} batch {r['batch']:3d}: median {r['median_s'] * 1e3:9.1f} ms "
              f"best {r['best_s'] * 1e3:9.1f} ms  cpu {r['cpu_s'] * 1e3:9.1f} ms  {r['samples_per_s']:8.1f} samples/s  "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB  ({r['params']:,} parameters)", flush=True)
        if args.cpp_bench:
            c = run_cpp(args.cpp_bench, CONFIGS[n][2], steps_for(n), args.threads)
            results[n]["clip"] = c
            print(f"clip        {n:9s} batch {r['batch']:3d}: median {c['median_s'] * 1e3:9.1f} ms "
                  f"best {c['best_s'] * 1e3:9.1f} ms  cpu {c['cpu_s'] * 1e3:9.1f} ms  {r['batch'] / c['median_s']:8.1f} samples/s  "
                  f"peak RSS {c['peak_rss_mb']:7.0f} MB", flush=True)
    if args.cpp_bench:
        print()
        # ratio of medians (the figure), of the best steps, and of the CPU time per step (all
        # threads; the least load-sensitive of the three on a shared machine)
        print("| config | batch | clip samples/s | PyTorch samples/s | ratio: median; best; CPU | peak RSS clip / PyTorch (MB) |")
        print("|---|---:|---:|---:|---:|---:|")
        for n in names:
            t, c = results[n]["torch"], results[n]["clip"]
            b = t["batch"]
            print(f"| {n} | {b} | {b / c['median_s']:.1f} | {t['samples_per_s']:.1f} | "
                  f"**{t['median_s'] / c['median_s']:.2f}×**; {t['best_s'] / c['best_s']:.2f}×; "
                  f"{t['cpu_s'] / c['cpu_s']:.2f}× | {c['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
