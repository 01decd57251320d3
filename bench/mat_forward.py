"""Time MAT generator forwards and set them against this machine's own matmul ceiling.

Prints one table row per (variant, dtype, batch): seconds per image (median over runs / batch),
images/s, the model FLOP rate achieved, the large-matmul rate of the same dtype measured right before
each timed forward ("ceiling"), and the achieved rate as a share of it, paired run by run so that load
from other processes, which slows both, cancels out. Lower precisions run under `torch.autocast`, the path
the Inpainter uses.

    python bench/mat_forward.py                                  # 512², batch 1 and 4, fp32 and bf16, CPU
    python bench/mat_forward.py --resolution 256 --batch 1 --dtype fp32 --runs 5
    python bench/mat_forward.py --variant eager,compile          # also time torch.compile (slow to build)
    python bench/mat_forward.py --allocator retain               # glibc keeps freed memory (see NOTES.md)
    python bench/mat_forward.py --holes dense,line5,logo+line5,blob15,blob40 --threads 1 --clock cpu
                                                                 # hole-aware decoding (issue 14)

Hole rows (`--holes`): "dense" is the dense forward (the whole decoder, a large square hole); the others
are watermark-sized holes decoded hole-aware (`decode="auto"`): a line in a corner (5 % of the window),
a logo and a line in two corners (5 %), a 15 % and a 40 % disc, and letter-like text (3 %). Their `eff`
column is the *dense-equivalent efficiency*, the dense model's FLOPs / time / matmul ceiling: above 1.0
means faster than any dense forward could run on this machine; `vs dense` is the paired time ratio
against the dense row of the same dtype and batch.

The weights are random (speed does not depend on them). `bench/gpu.py` reuses these helpers.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcore.generator import Generator, sample_latents  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CEILING_SIZES = (2048, 4096)  # square matmuls; the fastest of these is taken as the machine's peak
SMALL_CEILING_SIZES = (256,)  # for smoke tests: exercises the code path, says nothing about the machine


@dataclass
class Row:
    variant: str
    dtype: str
    batch: int
    resolution: int
    seconds: list[float]  # per timed forward of the whole batch
    probes: list[float]  # matmul GFLOP/s measured right before each timed forward
    gflop_per_image: float

    @property
    def seconds_per_image(self) -> float:
        return statistics.median(self.seconds) / self.batch

    @property
    def images_per_second(self) -> float:
        return 1.0 / self.seconds_per_image

    @property
    def gflops(self) -> float:
        return self.gflop_per_image / self.seconds_per_image

    @property
    def ceiling_gflops(self) -> float:
        return statistics.median(self.probes)

    @property
    def percent_of_ceiling(self) -> float:
        return 100.0 * statistics.median(self.gflop_per_image * self.batch / s / p
                                         for s, p in zip(self.seconds, self.probes))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call by `clock` (wall by default; `time.process_time` for CPU time); measured with
    CUDA events on a GPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = clock()
    fn()
    return clock() - t0


class MatmulProbe:
    """The machine's attainable rate for one dtype, from large square matmuls, in GFLOP/s.

    `calibrate` picks the fastest of `sizes`; `sample` times one matmul of that size, cheap enough to run
    before every timed forward so that each forward gets a ceiling measured under the same load.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, sizes: Sequence[int] = CEILING_SIZES,
                 clock: Callable[[], float] = time.perf_counter):
        self.device, self.dtype, self.sizes, self.clock = device, dtype, tuple(sizes), clock
        self.size = self.sizes[-1]
        self._operands: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _rate(self, n: int) -> float:
        if n not in self._operands:
            g = torch.Generator().manual_seed(n)
            self._operands[n] = tuple(torch.randn(n, n, generator=g).to(self.device, self.dtype) for _ in range(2))
        a, b = self._operands[n]
        return 2 * n**3 / time_call(lambda: torch.mm(a, b), self.device, self.clock) / 1e9

    def calibrate(self, runs: int = 3) -> float:
        best = 0.0
        with torch.inference_mode():
            for n in self.sizes:
                self._rate(n)  # warm-up (and kernel selection)
                rate = statistics.median(self._rate(n) for _ in range(runs))
                if rate > best:
                    best, self.size = rate, n
        for n in [n for n in self._operands if n != self.size]:
            del self._operands[n]
        return best

    def sample(self) -> float:
        with torch.inference_mode():
            return self._rate(self.size)


def measure(fn: Callable[[], torch.Tensor], probe: MatmulProbe, runs: int,
            warmup: int) -> tuple[list[float], list[float], torch.Tensor]:
    """(seconds, ceiling probes, last output) for `runs` timed calls of `fn` after `warmup` untimed ones."""
    out = None
    for _ in range(warmup):
        out = fn()
    synchronize(probe.device)
    seconds, probes = [], []
    for _ in range(runs):
        probes.append(probe.sample())
        result: list[torch.Tensor] = []
        seconds.append(time_call(lambda: result.append(fn()), probe.device, probe.clock))
        out = result[0]
    return seconds, probes, out


def retain_freed_memory() -> bool:
    """Ask glibc to serve every allocation from its heap and to keep freed memory instead of returning it.

    By default glibc maps each buffer over 32 MB afresh and unmaps it on free, so every large activation
    is zero-filled by the kernel one 4 KiB page fault at a time (~0.5 ms per MB here). Process-wide, and the
    resident size then stays at its peak: a deployment choice (the same as MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ in the environment), not something a library should do behind a user's back.
    Returns False where this is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    largest = ctypes.c_int(2**31 - 1)
    return bool(mallopt(m_mmap_threshold, largest)) and bool(mallopt(m_trim_threshold, largest))


def build_generator(resolution: int, device: torch.device, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(resolution).eval().to(device)


def _disc(keep: torch.Tensor, cy: float, cx: float, radius: float) -> None:
    r = keep.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
    keep[..., (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 0


def hole_mask(name: str, resolution: int, index: int = 0) -> torch.Tensor:
    """Keep mask 1×R×R (1 keep, 0 hole) of a named hole shape; `index` moves it a little, so that the
    windows of one batch have different boxes. Areas are shares of the R×R window."""
    r = resolution
    s = r / 512  # shapes are drawn for 512² and scaled
    keep = torch.ones(1, r, r)
    jy, jx = (index * 7) % 23, (index * 13) % 29  # up to ~5 % of the side

    def rect(y0, y1, x0, x1):
        keep[:, int(y0 * s):int(y1 * s), int(x0 * s):int(x1 * s)] = 0

    if name == "dense":  # the dense rows' large square hole (the historical bench input)
        top, left = (index * 37) % (r // 4), (index * 53) % (r // 4)
        keep[:, r // 4 + top: r // 2 + top + r // 8, r // 4 + left: r // 2 + left + r // 8] = 0
    elif name == "line5":  # 32 × 410 in the bottom-right corner: 5.0 %
        rect(470 - jy, 502 - jy, 92 - jx, 502 - jx)
    elif name == "logo+line5":  # an 80 × 80 logo top-left and a 20 × 335 line bottom-right: 5.0 %
        rect(12 + jy, 92 + jy, 12 + jx, 92 + jx)
        rect(480 - jy, 500 - jy, 165 - jx, 500 - jx)
    elif name == "blob15":  # a disc of radius 112 off-centre: 15 %
        _disc(keep, (200 + jy) * s, (300 - jx) * s, 112 * s)
    elif name == "blob40":  # a disc of radius 183: 40 %
        _disc(keep, (256 + jy) * s, (256 - jx) * s, 183 * s)
    elif name == "text3":  # 14 letter-like blocks of 18 × 12, 6 px apart, in two lines: ~3 % (held out)
        for line in range(2):
            for letter in range(14):
                y0, x0 = 400 + 26 * line + jy, 60 + 18 * letter + jx
                rect(y0, y0 + 18, x0, x0 + 12)
                rect(y0 + 18, y0 + 22, x0 + 2, x0 + 10)  # a descender
    else:
        raise ValueError(f"unknown hole shape {name!r}")
    return keep


HOLE_SHAPES = ("dense", "line5", "logo+line5", "blob15", "blob40", "text3")


def make_inputs(batch: int, resolution: int, device: torch.device, seed: int = 0, hole: str = "dense"):
    """Images in [-1, 1], keep-masks with one named hole per image (`hole_mask`), and seeded latents."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1
    masks = torch.stack([hole_mask(hole, resolution, i) for i in range(batch)])
    z, k1, k2 = sample_latents(range(seed, seed + batch))
    return tuple(t.to(device) for t in (images, masks, z, k1, k2))


def precision(device: torch.device, dtype: torch.dtype):
    """The mixed-precision context for `dtype` (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def forward_fn(model: Callable, inputs, device: torch.device, dtype: torch.dtype,
               decode: str = "dense") -> Callable[[], torch.Tensor]:
    """One forward of `inputs`; decode="dense" by default, so that rows stay comparable with the dense
    forward's history (the hole rows pass "auto")."""
    images, masks, z, k1, k2 = inputs

    def run() -> torch.Tensor:
        with precision(device, dtype):
            return model(images, masks, z, keep_maps=(k1, k2), decode=decode)

    return run


def count_gflop(resolution: int) -> float:
    """Model GFLOP per image (a multiply-add counts 2), counted by PyTorch on a batch-1 forward over
    shapes only (meta tensors: no arithmetic is done, so counting is instant on any machine)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    with meta:
        generator = Generator(resolution).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        forward_fn(generator, make_inputs(1, resolution, meta), meta, torch.float32)()
    return counter.get_total_flops() / 1e9


def rel_l2(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double(), ref.double()
    return float((ours - ref).norm() / ref.norm())


def format_table(rows: Sequence[Row], holes: Sequence[str] | None = None,
                 vs_dense: Sequence[float | None] | None = None) -> str:
    """The table; with `holes`, two more columns: the hole shape (and its share of the window) and the
    paired time ratio against the dense row (`vs_dense`, None where there is none)."""
    header = (f"{'variant':<14} {'dtype':<5} {'res':>4} {'batch':>5} {'s/image':>8} {'images/s':>8} "
              f"{'GFLOP/s':>8} {'ceiling':>8} {'% ceil':>6} {'runs':>4}")
    if holes is not None:
        header += f" {'hole':<17} {'eff':>5} {'vs dense':>8}"
    lines = [header, "-" * len(header)]
    for i, r in enumerate(rows):
        line = (f"{r.variant:<14} {r.dtype:<5} {r.resolution:>4} {r.batch:>5} {r.seconds_per_image:>8.3f} "
                f"{r.images_per_second:>8.2f} {r.gflops:>8.0f} {r.ceiling_gflops:>8.0f} "
                f"{r.percent_of_ceiling:>5.0f}% {len(r.seconds):>4}")
        if holes is not None:
            ratio = vs_dense[i] if vs_dense is not None else None
            line += (f" {holes[i]:<17} {r.percent_of_ceiling / 100:>5.2f} "
                     f"{'-' if ratio is None else f'{ratio:.2f}x':>8}")
        lines.append(line)
    return "\n".join(lines)


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def parse_list(text: str, cast=str) -> list:
    return [cast(x) for x in text.split(",") if x]


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=512, choices=(256, 512))
    parser.add_argument("--batch", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--dtype", default="fp32,bf16", help=f"comma-separated, of {','.join(DTYPES)}")
    parser.add_argument("--runs", type=int, default=5, help="timed forwards per row (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards before each row")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--variant", default="eager", help="comma-separated, of eager,compile")
    parser.add_argument("--allocator", default="default", choices=("default", "retain"),
                        help="'retain': glibc keeps freed memory for reuse (process-wide; see retain_freed_memory)")
    parser.add_argument("--holes", default=None,
                        help=f"comma-separated hole shapes, of {','.join(HOLE_SHAPES)} (adds hole columns)")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="'cpu': process CPU time (with --threads 1: robust to other processes' load)")
    parser.add_argument("--small-ceiling", action="store_true",
                        help="measure the ceiling with tiny matmuls (smoke tests; the %% column is then meaningless)")
    return parser


def check_dtypes(parser: argparse.ArgumentParser, dtypes: Sequence[str]) -> None:
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown dtype(s) {unknown}; choose from {list(DTYPES)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    dtypes = parse_list(args.dtype)
    check_dtypes(parser, dtypes)
    variants = parse_list(args.variant)
    if any(v not in ("eager", "compile") for v in variants):
        parser.error(f"unknown variant in {variants}; choose from eager, compile")

    suffix = ""
    if args.allocator == "retain":
        if not retain_freed_memory():
            parser.error("--allocator retain needs glibc")
        suffix = "+retain"
    print(f"# MAT-{args.resolution} forward on {describe_machine(device)}; allocator: {args.allocator}")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    holes = parse_list(args.holes) if args.holes else None
    if holes and any(h not in HOLE_SHAPES for h in holes):
        parser.error(f"unknown hole shape in {holes}; choose from {', '.join(HOLE_SHAPES)}")
    probes = {d: MatmulProbe(device, DTYPES[d], SMALL_CEILING_SIZES if args.small_ceiling else CEILING_SIZES, clock)
              for d in dtypes}
    calibrated = {d: probe.calibrate() for d, probe in probes.items()}
    print("# matmul ceiling at start, GFLOP/s: "
          + ", ".join(f"{d} {c:.0f} ({probes[d].size}^3)" for d, c in calibrated.items())
          + "; re-measured before every timed forward ('ceiling' = their median)")
    gflop = count_gflop(args.resolution)
    generator = build_generator(args.resolution, device)
    print(f"# model: {gflop:.1f} GFLOP per image (counted; the dense forward's, also for hole rows); "
          f"s/image = median over runs / batch; clock: {args.clock}")
    if holes:
        print(f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    print(format_table([], holes=[] if holes else None))
    for variant in variants:
        model: Callable = torch.compile(generator) if variant == "compile" else generator
        for dtype_name in dtypes:
            for batch in parse_list(args.batch, int):
                dense_seconds = None
                for hole in holes or ["dense"]:
                    inputs = make_inputs(batch, args.resolution, device, hole=hole)
                    decode = "dense" if hole == "dense" else "auto"
                    run = forward_fn(model, inputs, device, DTYPES[dtype_name], decode=decode)
                    with torch.inference_mode():
                        seconds, ceiling, _ = measure(run, probes[dtype_name], args.runs, args.warmup)
                    row = Row(variant + suffix, dtype_name, batch, args.resolution, seconds, ceiling, gflop)
                    if hole == "dense":
                        dense_seconds = statistics.median(seconds)
                    ratio = None if dense_seconds is None else dense_seconds / statistics.median(seconds)
                    label = f"{hole} {100 * float((inputs[1] == 0).float().mean()):.1f}%"
                    line = format_table([row], holes=[label] if holes else None, vs_dense=[ratio])
                    print(line.splitlines()[-1], flush=True)
    if holes:
        print(f"# load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
