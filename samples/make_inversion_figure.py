"""A small before/after picture of watermark inversion for the README (docs/watermark_inversion.jpg),
cheap enough to redraw anywhere: 40 crops of the bundled photos (samples/images, tests/fixtures) carry a
plain white logo at opacity 0.5 (JPEG 95); the matte is estimated from them with placements off by up to
a pixel (what the consistent locator gives), then one crop is restored. Panels: watermarked | OpenCV
inpainting of the exact mask | inverted | clean, each with its PSNR inside the watermark's footprint.
(bench/inversion_figure.py draws the same from the full pipeline on cbsd68, consistent fit included.)

    PYTHONPATH=. /work/main/.venv/bin/python samples/make_inversion_figure.py
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matcore.classical import ClassicalInpainter  # noqa: E402
from pipeline.watermark import Placement, align_watermark, estimate_matte, invert_watermark  # noqa: E402
from tests.pipeline.watermark.conftest import blend, footprint_psnr, scenes  # noqa: E402


def main() -> int:
    data = blend(scenes(40), opacity=0.5, jitter=2)
    marked = []
    for image in data.marked:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=95)
        marked.append(np.asarray(Image.open(buffer).convert("RGB")))
    rng = np.random.default_rng(3)
    rough = [Placement(y + int(rng.integers(-1, 2)), x + int(rng.integers(-1, 2))) for y, x in data.offsets]
    fit = estimate_matte(marked, rough, data.coverage > 0.2)
    # Show the crop whose scene under the logo is busiest: on flat sky any inpainting looks fine.
    index = int(np.argmax([clean[alpha > 0].std() for clean, alpha in zip(data.clean, data.alpha)]))
    hole = data.alpha[index] > 0
    aligned = align_watermark(marked[index], fit.matte, rough[index])
    result = invert_watermark(marked[index], hole, fit.matte, aligned)
    engine = ClassicalInpainter()
    inverted = engine.inpaint([result.restored], [result.inpaint], [0])[0] if result.inpaint.any() else result.restored
    inpainted = engine.inpaint([marked[index]], [hole], [0])[0]
    clean = data.clean[index]
    tiles = []
    for title, image in (("watermarked", marked[index]), ("OpenCV inpaint", inpainted), ("inverted", inverted),
                         ("clean", clean)):
        label = title if title == "clean" else f"{title} {footprint_psnr(image, clean, data.alpha[index]):.1f} dB"
        tile = Image.fromarray(image).resize((image.shape[1] * 3, image.shape[0] * 3), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (tile.width, tile.height + 20), "white")
        canvas.paste(tile, (0, 20))
        ImageDraw.Draw(canvas).text((4, 4), label, fill="black")
        tiles.append(canvas)
    figure = Image.new("RGB", (sum(t.width for t in tiles) + 18, tiles[0].height), "white")
    offset = 0
    for tile in tiles:
        figure.paste(tile, (offset, 0))
        offset += tile.width + 6
    out = ROOT / "docs" / "watermark_inversion.jpg"
    out.parent.mkdir(exist_ok=True)
    figure.save(out, "JPEG", quality=88)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
