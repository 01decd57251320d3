"""The README's before/after picture of watermark inversion (docs/watermark_inversion.jpg).

Watermarks the 40 development photos of cbsd68 (see bench/restore_quality.py) with a plain white logo at
opacity 0.5 (JPEG 95, ±6 px jitter), fits the consistent template and the matte on them, and shows for
one photo, around the logo: watermarked | OpenCV inpainting of the exact mask | our inversion | clean.

    PYTHONPATH=. /work/main/.venv/bin/python bench/inversion_figure.py [--out docs/watermark_inversion.jpg]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from restore_quality import DEV_COUNT, PHOTOS, logo_coverage, make_samples, scores, true_hole  # noqa: E402

from matcore.classical import ClassicalInpainter  # noqa: E402
from pipeline.masks import ConsistentWatermarkGenerator, default_postprocess, postprocess  # noqa: E402
from pipeline.watermark.fit import fit_matte  # noqa: E402
from pipeline.watermark.restore import InversionStep  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "watermark_inversion.jpg")
    parser.add_argument("--index", type=int, default=3, help="which development photo to show")
    args = parser.parse_args(argv)
    names = sorted(PHOTOS.glob("*.jpg"))[:DEV_COUNT]
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in names]
    samples = make_samples(photos, logo_coverage(), (255, 255, 255), 0.5, 95, True, seed=0)
    generator = ConsistentWatermarkGenerator()
    generator.fit([s.marked for s in samples])
    step = InversionStep(fit_matte(generator, [s.marked for s in samples]).matte)
    sample = samples[args.index]
    mask = postprocess(generator(sample.marked), default_postprocess("consistent"))
    import json

    outcome = step(sample.marked, mask.hole, "consistent", json.dumps(mask.provenance(), default=str))
    engine = ClassicalInpainter()
    inverted = outcome.image if outcome is not None else sample.marked
    if outcome is not None and outcome.inpaint_hole.any():
        inverted = engine.inpaint([inverted], [outcome.inpaint_hole], [0])[0]
    inpainted = engine.inpaint([sample.marked], [true_hole(sample)], [0])[0]
    ys, xs = np.nonzero(sample.alpha > 0.01)
    y0, y1 = max(ys.min() - 24, 0), min(ys.max() + 24, sample.clean.shape[0])
    x0, x1 = max(xs.min() - 24, 0), min(xs.max() + 24, sample.clean.shape[1])
    panels = [("watermarked", sample.marked), ("OpenCV inpainting", inpainted), ("inverted (ours)", inverted),
              ("clean photo", sample.clean)]
    tiles = []
    for title, image in panels:
        psnr_db = scores(image, sample)[0] if title != "clean photo" else None
        tile = Image.fromarray(image[y0:y1, x0:x1]).resize(((x1 - x0) * 2, (y1 - y0) * 2), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (tile.width, tile.height + 22), "white")
        canvas.paste(tile, (0, 22))
        label = title + (f"  {psnr_db:.1f} dB" if psnr_db is not None else "")
        ImageDraw.Draw(canvas).text((4, 4), label, fill="black")
        tiles.append(canvas)
    width = sum(t.width for t in tiles) + 6 * (len(tiles) - 1)
    figure = Image.new("RGB", (width, tiles[0].height), "white")
    offset = 0
    for tile in tiles:
        figure.paste(tile, (offset, 0))
        offset += tile.width + 6
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, "JPEG", quality=88)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB) from {names[args.index].name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
