"""Is bfloat16 faster than float32 for MAT on this CPU? Single-thread CPU seconds, so load from other
processes does not skew the ratio (it changes when our thread runs, not how much work it does).

    python bench/precision_cpu.py                 # MAT-256 forward, batch 1, 3 runs per precision
    python bench/precision_cpu.py --runs 1

Prints the CPU's bf16 capability as matcore.precision sees it, then one row per precision: the median
CPU seconds of a 1024² matmul and of a MAT-256 generator forward (random weights, autocast as the
Inpainter runs it), and the bf16/fp32 ratio. `engine.dtype: auto` picks bf16 on a CPU only where
matcore.precision.cpu_has_native_bf16() is true, which is where this ratio was measured below 1.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcore.generator import Generator, sample_latents  # noqa: E402
from matcore.precision import NATIVE_BF16_FLAGS, cpu_flags, cpu_has_native_bf16, resolve_precision  # noqa: E402


def cpu_seconds(fn, runs: int, warmup: bool = True) -> float:
    if warmup:
        fn()  # allocator, oneDNN primitive cache
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512))
    args = parser.parse_args()
    torch.set_num_threads(1)
    flags = sorted(flag for flag in cpu_flags() if flag in NATIVE_BF16_FLAGS or flag.startswith("avx512f"))
    print(f"# CPU capability {torch.backends.cpu.get_cpu_capability()}, flags {flags or 'no avx512/bf16'}; "
          f"native bf16: {cpu_has_native_bf16()}; auto on cpu = {resolve_precision('auto', 'cpu')}")
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    matmul = {name: cpu_seconds(lambda: a.to(dtype) @ b.to(dtype), 5)
              for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    print(f"# matmul 1024² CPU s: fp32 {matmul['float32']:.4f}, bf16 {matmul['bfloat16']:.4f}, "
          f"bf16/fp32 {matmul['bfloat16'] / matmul['float32']:.2f}", flush=True)
    torch.manual_seed(0)
    generator = Generator(args.resolution).eval().requires_grad_(False)
    images = torch.rand(1, 3, args.resolution, args.resolution) * 2 - 1
    masks = torch.ones(1, 1, args.resolution, args.resolution)
    masks[..., args.resolution // 4: args.resolution // 2, args.resolution // 4: args.resolution // 2] = 0
    z, k1, k2 = sample_latents([1])
    forward_s = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        autocast = (contextlib.nullcontext() if dtype == torch.float32
                    else torch.autocast("cpu", dtype=torch.bfloat16))

        def forward() -> None:
            with torch.inference_mode(), autocast:
                generator(images, masks, z, truncation_psi=1.0, noise_mode="const", keep_maps=(k1, k2))

        forward_s[name] = cpu_seconds(forward, args.runs, warmup=args.runs > 1)
        print(f"# MAT-{args.resolution} forward {name}: {forward_s[name]:.2f} CPU s", flush=True)
    print(f"\n| precision | matmul 1024² CPU s | MAT-{args.resolution} forward CPU s (1 thread) |")
    print("|---|---:|---:|")
    for name in ("float32", "bfloat16"):
        print(f"| {name} | {matmul[name]:.4f} | {forward_s[name]:.2f} |")
    print(f"| bf16 / fp32 | {matmul['bfloat16'] / matmul['float32']:.2f} | "
          f"{forward_s['bfloat16'] / forward_s['float32']:.2f} |")


if __name__ == "__main__":
    main()
