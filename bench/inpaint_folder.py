"""Throughput of `matpipe inpaint` on a folder of photos with a watermark-sized hole: MAT vs OpenCV.

    /work/venv/bin/python bench/inpaint_folder.py [--n 20] [--engines mat opencv] [--batch-size 4]
                                                  [--device cpu] [--dtype float32]

Photos: the first N of ../shared/datasets/cbsd68 (481×321), else samples/images repeated. Each gets a
rendered-text watermark hole in a corner (3-8 % of the image, samples/make_masks.py). MAT runs a
randomly-weighted 512² generator saved as a temporary safetensors checkpoint (speed does not depend on
the weights). Times are wall-clock for the whole command, model loading included; "steady" is the
command's own images/s over the processing loop. "as PNG" is what the same outputs weigh written as
PNG, the only format of IOPaint's batch mode.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from pipeline.cli import main  # noqa: E402

SHARED_PHOTOS = ROOT.parent / "shared" / "datasets" / "cbsd68"
SAMPLE_PHOTOS = ROOT / "samples" / "images"
SUMMARY = re.compile(r"(\d+) done, (\d+) skipped, (\d+) failed in ([\d.]+) s \(([\d.]+) images/s\); "
                     r"engine (.*), (\d+) windows")
# IOPaint's MAT on this reference CPU (DESIGN.md): 6.3-6.9 s per 512² image, sequential, PNG output.
IOPAINT_SECONDS_PER_IMAGE = (6.3, 6.9)


def load_make_masks():
    spec = importlib.util.spec_from_file_location("make_masks", ROOT / "samples" / "make_masks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_folder(root: Path, count: int) -> tuple[Path, Path, str]:
    """images/ and masks/ with `count` photos and their watermark holes; returns (images, masks, source)."""
    make_masks = load_make_masks()
    source_dir = SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else SAMPLE_PHOTOS
    photos = sorted(p for p in source_dir.iterdir() if p.suffix.lower() == ".jpg")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(count):
        photo = photos[index % len(photos)]
        name = f"{index:03d}_{photo.stem}"
        shutil.copyfile(photo, images / f"{name}.jpg")
        with Image.open(photo) as image:
            width, height = image.size
        text = make_masks.TEXTS[index % len(make_masks.TEXTS)]
        corner = make_masks.CORNERS[index % len(make_masks.CORNERS)]
        hole = make_masks.watermark_hole_mask(width, height, text, corner)
        Image.fromarray(hole).save(masks / f"{name}.png")
    return images, masks, str(source_dir)


def write_random_checkpoint(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from matcore import Generator

    torch.manual_seed(0)
    save_file({k: v.contiguous().clone() for k, v in Generator(512).state_dict().items()}, str(path))


def run_engine(engine: str, images: Path, masks: Path, output: Path, options: list[str]) -> dict:
    stdout = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        code = main(["inpaint", "--image", str(images), "--mask", str(masks), "--output", str(output),
                     "--engine", engine, *options])
    wall = time.perf_counter() - started
    match = SUMMARY.search(stdout.getvalue())
    if code != 0 or match is None:
        raise SystemExit(f"{engine} run failed (exit {code}): {stdout.getvalue()}")
    done, _, failed, _, steady, engine_text, windows = match.groups()
    outputs = [p for p in output.rglob("*") if p.is_file()]
    return dict(engine=engine_text, done=int(done), failed=int(failed), wall=wall, steady=float(steady),
                windows=int(windows), output_mb=sum(p.stat().st_size for p in outputs) / 1e6,
                as_png_mb=sum(len(png_bytes(p)) for p in outputs) / 1e6)


def png_bytes(path: Path) -> bytes:
    """The image re-encoded as PNG, as a PNG-only batch tool would write it."""
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="number of photos")
    parser.add_argument("--engines", nargs="+", choices=("mat", "opencv"), default=["mat", "opencv"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="matpipe-bench-") as temporary:
        root = Path(temporary)
        images, masks, source = build_folder(root, args.n)
        holes = [np.asarray(Image.open(p)).mean() for p in sorted(masks.iterdir())]
        rows = []
        for engine in args.engines:
            options = ["--batch-size", str(args.batch_size)]
            if engine == "mat":
                checkpoint = root / "mat512-random.safetensors"
                write_random_checkpoint(checkpoint)
                options += ["--checkpoint", str(checkpoint), "--device", args.device, "--dtype", args.dtype]
            rows.append(run_engine(engine, images, masks, root / f"out-{engine}", options))

    print(f"\n{args.n} photos from {source}; watermark holes {min(holes):.1%}-{max(holes):.1%} of each image; "
          f"batch size {args.batch_size}\n")
    header = (f"| {'engine':<34} | images | windows | wall s | images/s (wall) | images/s (steady) | output MB "
              f"| as PNG MB |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['engine']:<34} | {row['done']:>6} | {row['windows']:>7} | {row['wall']:>6.1f} | "
              f"{row['done'] / row['wall']:>15.3f} | {row['steady']:>17.3f} | {row['output_mb']:>9.2f} "
              f"| {row['as_png_mb']:>9.2f} |")
    low, high = IOPAINT_SECONDS_PER_IMAGE
    print(f"\nreference, not measured here: IOPaint's MAT on this CPU ≈ {1 / high:.3f}-{1 / low:.3f} images/s "
          f"({low}-{high} s per image, DESIGN.md)")


if __name__ == "__main__":
    main_bench()
