"""MAT forward throughput on a CUDA GPU: batch 1/8/32 in fp32/bf16/fp16, against the GPU's own bf16 rate.

For each (dtype, batch) it prints ms per image, images/s, the model TFLOP/s achieved and that rate as a
share of the bf16 matmul rate measured in the same run (8192^3, re-measured before every timed batch),
the peak memory, and how far the output is from the float32 output on the same inputs (rel-L2). Timing
uses CUDA events after warm-up; reduced precisions run under `torch.autocast`, as the Inpainter does.

    python bench/gpu.py                                   # on a CUDA machine
    python bench/gpu.py --device cpu --resolution 256 --batch 1 --runs 1 --warmup 0 \\
        --dtype fp32,bf16 --small-ceiling                 # smoke test (tests/bench/test_gpu_bench.py)
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mat_forward import (  # noqa: E402
    DTYPES, MatmulProbe, build_generator, build_parser, check_dtypes, count_gflop, describe_machine, forward_fn,
    make_inputs, measure, parse_list, rel_l2, retain_freed_memory,
)

GPU_CEILING_SIZES = (4096, 8192)
SMALL_CEILING_SIZES = (256,)


def format_row(variant: str, dtype: str, batch: int, seconds: list[float], probes: list[float], gflop: float,
               peak_gib: float | None, error: float | None) -> str:
    per_image = statistics.median(seconds) / batch
    rate = gflop / per_image
    share = statistics.median(gflop * batch / s / p for s, p in zip(seconds, probes))
    peak = "n/a" if peak_gib is None else f"{peak_gib:.1f}"
    err = "ref" if error is None else f"{error:.1e}"
    return (f"{variant:<8} {dtype:<5} {batch:>5} {per_image * 1e3:>9.1f} {1 / per_image:>9.3g} {rate / 1e3:>9.2f} "
            f"{100 * share:>8.1f}% {peak:>8} {err:>9} {len(seconds):>4}")


HEADER = (f"{'variant':<8} {'dtype':<5} {'batch':>5} {'ms/image':>9} {'images/s':>9} {'TFLOP/s':>9} {'% bf16':>9} "
          f"{'peak GiB':>8} {'rel-L2':>9} {'runs':>4}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(__doc__)
    parser.set_defaults(device="cuda", batch="1,8,32", dtype="fp32,bf16,fp16", runs=10, warmup=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu for a smoke test", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.allocator == "retain" and not retain_freed_memory():
        parser.error("--allocator retain needs glibc")
    dtypes = parse_list(args.dtype)
    check_dtypes(parser, dtypes)
    # float32 first: it is the reference every other dtype is checked against, batch by batch.
    dtypes.sort(key=lambda d: d != "fp32")
    variants = parse_list(args.variant)
    if any(v not in ("eager", "compile") for v in variants):
        parser.error(f"unknown variant in {variants}; choose from eager, compile")

    print(f"# MAT-{args.resolution} forward on {describe_machine(device)}")
    if device.type == "cuda":
        print(f"# cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} "
              f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} (PyTorch defaults unless changed)")
    probe = MatmulProbe(device, torch.bfloat16, SMALL_CEILING_SIZES if args.small_ceiling else GPU_CEILING_SIZES)
    print(f"# bf16 matmul ceiling: {probe.calibrate() / 1e3:.2f} TFLOP/s at {probe.size}^3; re-measured before every "
          "timed batch, and '% bf16' pairs each forward with its own measurement")
    gflop = count_gflop(args.resolution)
    print(f"# model: {gflop:.1f} GFLOP per image; rel-L2 is against the float32 output of the same inputs")
    generator = build_generator(args.resolution, device)

    print(HEADER)
    print("-" * len(HEADER))
    references: dict[int, torch.Tensor] = {}
    worst: dict[str, float] = {}
    all_finite = True
    for variant in variants:
        model = torch.compile(generator) if variant == "compile" else generator
        for dtype_name in dtypes:
            for batch in parse_list(args.batch, int):
                inputs = make_inputs(batch, args.resolution, device)
                run = forward_fn(model, inputs, device, DTYPES[dtype_name])
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    with torch.inference_mode():
                        seconds, probes, out = measure(run, probe, args.runs, args.warmup)
                except torch.cuda.OutOfMemoryError:
                    print(f"{variant:<8} {dtype_name:<5} {batch:>5} out of memory")
                    torch.cuda.empty_cache()
                    continue
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
                finite = bool(torch.isfinite(out).all())
                all_finite &= finite
                error = None
                if dtype_name == "fp32" and batch not in references:
                    references[batch] = out.float()
                elif batch in references:
                    error = rel_l2(out.float(), references[batch]) if finite else float("inf")
                    key = f"{variant} {dtype_name}"
                    worst[key] = max(worst.get(key, 0.0), error)
                print(format_row(variant, dtype_name, batch, seconds, probes, gflop, peak, error), flush=True)
                del out
    for dtype_name, error in worst.items():
        print(f"# {dtype_name}: worst rel-L2 against float32 {error:.2e}")
    if not all_finite:
        print("# FAILED: some outputs were not finite", file=sys.stderr)
    return 0 if all_finite else 1


if __name__ == "__main__":
    raise SystemExit(main())
