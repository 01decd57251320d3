"""Restored JPEGs spliced into their source vs re-encoded whole: bit-identity, file size and time.

    python bench/jpeg_splice.py [--split dev|held-out|all] [--limit N]

Photos: ../shared/datasets/cbsd68 (68 photos, 481×321), decoded and saved with Pillow at quality 75 and 95,
4:2:0 and 4:4:4 (4 × 68 sources). Each gets watermark-sized holes drawn from a per-photo seed: a logo box in
a random corner and a text line (together 3-8 % of the image), filled two ways as engine stand-ins:
"telea" (OpenCV's inpainting: smooth, cheaper to code than the photo it replaces) and "clone" (the photo's
own texture copied from half an image away: as costly to code as photo content, like a generative fill).
Every restored image is then written three ways:

    splice           pipeline.jpeg (the default): source blocks kept, changed ones re-coded
    reencode high    the old default (quality 95, or the source's entries where finer)
    reencode source  the old `--jpeg-tables source` (the source's own tables)

and, as a control of the splicing machinery alone, "splice, no fill": the same holes re-coded from the
source's own pixels (the size can then only move by what re-coding itself costs).

and compared with the source's decode. "identical outside touched MCUs" is the fraction of the pixels
outside the splice's touched MCUs (the hole's MCUs plus the one-pixel ring chroma upsampling reaches) that
decode bit-identical to the source; the re-encodes are scored on the same pixels. Sizes are output/source.
Times are single-thread CPU time (`time.process_time`) per image, median, for the write alone (the
decode and the fill are shared). The photos are split by index: even = "dev" (used while building),
odd = "held-out" (first run for the final table).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Run as a script from anywhere: the repository first, and not bench/ itself (bench/pipeline.py would
# shadow the package).
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "bench")]

from matcore.classical import ClassicalInpainter  # noqa: E402
from pipeline.imageio import decode_image, encode_image  # noqa: E402
from pipeline.jpeg import splice_jpeg  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "datasets" / "cbsd68"
SOURCES = {"q75 4:2:0": dict(quality=75, subsampling=2), "q75 4:4:4": dict(quality=75, subsampling=0),
           "q95 4:2:0": dict(quality=95, subsampling=2), "q95 4:4:4": dict(quality=95, subsampling=0)}
WRITERS = ("splice", "reencode high", "reencode source")
FILLS = ("telea", "clone")
CONTROL = ("-", "splice, no fill")


def watermark_hole(height: int, width: int, seed: int) -> np.ndarray:
    """A corner logo box and a text line, 3-8 % of the image together."""
    rng = np.random.default_rng(seed)
    hole = np.zeros((height, width), bool)
    box_h, box_w = int(height * rng.uniform(0.12, 0.2)), int(width * rng.uniform(0.15, 0.25))
    margin = int(rng.integers(0, 12))
    top = margin if rng.random() < 0.5 else height - margin - box_h
    left = margin if rng.random() < 0.5 else width - margin - box_w
    hole[top:top + box_h, left:left + box_w] = True
    line_h, line_w = int(rng.integers(8, 16)), int(width * rng.uniform(0.4, 0.7))
    line_top, line_left = int(rng.integers(0, height - line_h)), int(rng.integers(0, width - line_w))
    hole[line_top:line_top + line_h, line_left:line_left + line_w] = True
    return hole


@dataclass
class Figures:
    identical: list[float] = field(default_factory=list)        # outside touched MCUs
    identical_outside_hole: list[float] = field(default_factory=list)
    mean_abs_outside_hole: list[float] = field(default_factory=list)
    max_abs_outside_hole: list[int] = field(default_factory=list)
    size_ratio: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


def decoded(data: bytes) -> np.ndarray:
    return decode_image(data).rgb


def timed(write) -> tuple[bytes | object, float]:
    start = time.process_time()
    result = write()
    return result, time.process_time() - start


def clone_fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The hole filled with the photo's own texture from half an image away (rows and columns)."""
    height, width = hole.shape
    rows, cols = np.nonzero(hole)
    restored = image.copy()
    restored[rows, cols] = image[(rows + height // 2) % height, (cols + width // 2) % width]
    return restored


def measure(photos: list[Path]) -> dict[tuple[str, str, str], Figures]:
    engine = ClassicalInpainter()
    figures = {(source, fill, writer): Figures() for source in SOURCES for fill in FILLS for writer in WRITERS}
    figures.update({(source, *CONTROL): Figures() for source in SOURCES})
    for index, path in enumerate(photos):
        pixels = Image.open(path).convert("RGB")
        for source_name, options in SOURCES.items():
            buffer = io.BytesIO()
            pixels.save(buffer, "JPEG", **options)
            source = buffer.getvalue()
            original = decode_image(source)
            hole = watermark_hole(*original.shape, seed=index)
            fills = {"telea": engine.inpaint_results([original.rgb], [hole], [0])[0].image,
                     "clone": clone_fill(original.rgb, hole)}
            runs = [(fill, writer, restored) for fill, restored in fills.items() for writer in WRITERS]
            for fill, writer, restored in runs + [(*CONTROL, original.rgb)]:
                if writer.startswith("splice"):
                    spliced, seconds = timed(lambda: splice_jpeg(source, restored, hole))
                    data, outside = spliced.data, ~spliced.touched_pixels()
                else:
                    tables = writer.split()[-1]
                    data, seconds = timed(
                        lambda: encode_image(restored, None, original, changed=hole, jpeg_tables=tables))
                after = decoded(data).astype(np.int16)
                diff = np.abs(after - original.rgb).max(axis=-1)
                row = figures[(source_name, fill, writer)]
                row.identical.append(float((diff[outside] == 0).mean()))  # the splice's touched MCUs, same fill
                row.identical_outside_hole.append(float((diff[~hole] == 0).mean()))
                row.mean_abs_outside_hole.append(float(np.abs(after - original.rgb)[~hole].mean()))
                row.max_abs_outside_hole.append(int(diff[~hole].max()))
                row.size_ratio.append(len(data) / len(source))
                row.cpu_s.append(seconds)
        print(f"  {index + 1}/{len(photos)} {path.name}", file=sys.stderr, flush=True)
    return figures


def report(figures: dict[tuple[str, str, str], Figures], label: str, count: int) -> None:
    print(f"\n{label}: {count} photos × {len(SOURCES)} source kinds, watermark-sized holes\n")
    header = ("source", "fill", "written by", "identical outside touched MCUs", "identical outside hole",
              "mean |Δ| outside hole", "max |Δ|", "size ratio mean [min, max]", "within ±3 %",
              "CPU ms/image", "vs reencode high")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for source in SOURCES:
        reference = statistics.median(figures[(source, "telea", "reencode high")].cpu_s)
        for fill, writer in [(fill, writer) for fill in FILLS for writer in WRITERS] + [CONTROL]:
            row = figures[(source, fill, writer)]
            ratio = np.array(row.size_ratio)
            cpu = statistics.median(row.cpu_s)
            print(" | ".join([
                source, fill, writer, f"{100 * np.mean(row.identical):.3f} % (min {100 * min(row.identical):.2f} %)",
                f"{100 * np.mean(row.identical_outside_hole):.2f} %", f"{np.mean(row.mean_abs_outside_hole):.3f}",
                str(max(row.max_abs_outside_hole)), f"{ratio.mean():.3f} [{ratio.min():.3f}, {ratio.max():.3f}]",
                f"{int((np.abs(ratio - 1) <= 0.03).sum())}/{ratio.size}", f"{1000 * cpu:.1f}",
                f"{cpu / reference:.1f}×"]))
    print("\n'vs reencode high': CPU time over the same source's telea re-encode at quality 95.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("dev", "held-out", "all"), default="all")
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos (quick runs)")
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"no photos at {PHOTOS} (the shared datasets folder beside the repository)")
    photos = sorted(PHOTOS.glob("*.jpg"))
    if args.split != "all":
        photos = photos[0 if args.split == "dev" else 1::2]
    photos = photos[:args.limit]
    report(measure(photos), f"split {args.split}", len(photos))


if __name__ == "__main__":
    main()
