#!/usr/bin/env python3
"""PyTorch baseline for the ModifiedResNet image encoder (docs/benchmarks/resnet.md).

Times openai/CLIP's ModifiedResNet (the re-implementation in tools/reference_resnet.py) on the
weights of a safetensors file with OpenAI names, at the given batch sizes, with
torch.inference_mode and torch.set_num_threads(threads); prints per-batch wall time, images/s
and per-stage times. With --cpp-bench, then runs the C++ benchmark (bench_model_resnet) on the
same weights in the same run and prints both side by side.

Run with OMP_WAIT_POLICY=PASSIVE (as the C++ side is) on an otherwise idle machine:
  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tools/bench_torch_resnet.py \
      --weights build/resnet-bench/rn50.safetensors --cpp-bench build/bench/bench_model_resnet
(the weights come from: /usr/bin/python3 tools/reference_resnet.py --preset rn50 --no-golden
 --text-width 64 --out build/resnet-bench; the tiny text tower makes it a whole CLIP state
 dict, which the C++ loader wants)
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_resnet import ModifiedResNet  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


def build(sd):
    """openai/CLIP build_model's shape inference for the visual ResNet."""
    layers = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4))
    width = sd["visual.layer1.0.conv1.weight"].shape[0]
    spatial = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
    out_dim = sd["visual.attnpool.c_proj.weight"].shape[0]
    model = ModifiedResNet(layers, out_dim, width * 32 // 64, spatial * 32, width)
    visual = {k[len("visual."):]: v.float() if v.is_floating_point() else v for k, v in sd.items() if k.startswith("visual.")}
    model.load_state_dict(visual)
    return model.eval(), spatial * 32


def time_torch(model, size, batch, iters, min_time):
    x = torch.randn(batch, 3, size, size)
    stage_names = ["stem", "layer1", "layer2", "layer3", "layer4", "attnpool"]
    with torch.inference_mode():
        model(x)  # warm-up (oneDNN primitive creation)
        times, cpu = [], []
        stage_sum = dict.fromkeys(stage_names, 0.0)
        start = time.perf_counter()
        while len(times) < iters or time.perf_counter() - start < min_time:
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        # per-stage split, on separate runs (synchronous CPU execution: wall time per stage)
        runs = max(1, min(len(times), 5))
        for _ in range(runs):
            t = time.perf_counter()
            y = model.stem(x.type(model.conv1.weight.dtype))
            t1 = time.perf_counter(); stage_sum["stem"] += t1 - t; t = t1
            for name in ("layer1", "layer2", "layer3", "layer4"):
                y = getattr(model, name)(y)
                t1 = time.perf_counter(); stage_sum[name] += t1 - t; t = t1
            model.attnpool(y)
            t1 = time.perf_counter(); stage_sum["attnpool"] += t1 - t
    stages = {k: v / runs for k, v in stage_sum.items()}
    return statistics.median(times), min(times), len(times), stages, statistics.median(cpu)


def run_cpp(binary, weights, batches, min_time, threads):
    env = dict(os.environ, CLIP_RESNET_WEIGHTS=weights, OMP_NUM_THREADS=str(threads))
    flt = "BM_ResNetEncode/(" + "|".join(str(b) for b in batches) + ")/0/"  # fp32
    cmd = [binary, f"--benchmark_filter={flt}", f"--benchmark_min_time={min_time}",
           "--benchmark_format=json"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    out = {}
    for b in json.loads(res.stdout)["benchmarks"]:
        batch = int(b["name"].split("/")[1])
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        out[batch] = (b["real_time"] * scale, {k: b[k] for k in b if k.startswith("ms_")}, b["cpu_time"] * scale)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per batch size, at least")
    ap.add_argument("--cpp-bench", help="path of bench_model_resnet to run on the same weights afterwards")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    model, size = build(read_safetensors(args.weights))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, mkldnn {torch.backends.mkldnn.is_available()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, image {size}")
    torch_res = {}
    for b in batches:
        med, best, n, stages, cpu = time_torch(model, size, b, args.iters, args.min_time)
        torch_res[b] = (med, stages, cpu)
        print(f"torch batch {b:3d}: median {med * 1e3:9.1f} ms  best {best * 1e3:9.1f} ms  cpu {cpu * 1e3:9.1f} ms  ({n} runs)  "
              f"{b / med:7.2f} img/s  stages ms: " + " ".join(f"{k} {v * 1e3:.1f}" for k, v in stages.items()))
    if args.cpp_bench:
        cpp = run_cpp(args.cpp_bench, args.weights, batches, args.min_time, args.threads)
        print()
        # CPU time: all threads for PyTorch (process time); the calling thread only for the
        # C++ benchmark, so it compares like for like only with --threads 1.
        print("| batch | threads | PyTorch 1.13 (ms) | clip (ms) | speed-up | PyTorch img/s | clip img/s | CPU ms PyTorch / clip |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for b in batches:
            t, c = torch_res[b][0], cpp[b][0]
            print(f"| {b} | {args.threads} | {t * 1e3:.1f} | {c * 1e3:.1f} | {t / c:.2f}x | {b / t:.2f} | {b / c:.2f} | "
                  f"{torch_res[b][2] * 1e3:.0f} / {cpp[b][2] * 1e3:.0f} |")
        print()
        print("Per stage (ms per batch; clip: mean over the benchmark's iterations):")
        print("| batch | stage | PyTorch | clip |")
        print("|---:|---|---:|---:|")
        for b in batches:
            for k in ("stem", "layer1", "layer2", "layer3", "layer4", "attnpool"):
                print(f"| {b} | {k} | {torch_res[b][1][k] * 1e3:.1f} | {cpp[b][1].get('ms_' + k, float('nan')):.1f} |")


if __name__ == "__main__":
    main()
