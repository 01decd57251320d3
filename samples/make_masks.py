"""Make samples/masks/: one watermark-shaped hole mask per sample image (same stem, PNG, white = hole).

    python samples/make_masks.py [--images samples/images] [--masks samples/masks]

Each mask is rendered text, like a stock-photo watermark, in a corner of the image, grown by a few pixels
the way a watermark mask is drawn in practice (anti-aliased glyph edges must go too), and covers 3-8 % of
the image. Deterministic: text and corner follow the file's position in the sorted listing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
TEXTS = ("© matpipe", "SAMPLE", "© 2024 Photo", "PREVIEW", "stock.example", "DRAFT")
CORNERS = ("bottom-right", "top-left", "bottom-left", "top-right")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
GROW_PX = 3  # the hole extends this far beyond the glyphs
TARGET_COVERAGE = (0.03, 0.08)


def watermark_hole_mask(width: int, height: int, text: str, corner: str) -> np.ndarray:
    """bool height×width hole: `text` in `corner`, sized to cover about 5 % of the image once grown."""
    font_size = max(8, round(min(width, height) * 0.12))
    for _ in range(12):  # adjust the size until the coverage is inside the target range
        hole = _render(width, height, text, corner, font_size)
        coverage = hole.mean()
        if TARGET_COVERAGE[0] <= coverage <= TARGET_COVERAGE[1]:
            break
        font_size = max(8, round(font_size * (0.05 / max(coverage, 1e-3)) ** 0.5))
    return hole


def _render(width: int, height: int, text: str, corner: str, font_size: int) -> np.ndarray:
    font = ImageFont.load_default(size=font_size)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(4, width // 40)
    x = pad - left if "left" in corner else width - pad - right
    y = pad - top if "top" in corner else height - pad - bottom
    draw.text((x, y), text, fill=255, font=font)
    grown = canvas.filter(ImageFilter.MaxFilter(2 * GROW_PX + 1))
    return np.asarray(grown) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=HERE / "images")
    parser.add_argument("--masks", type=Path, default=HERE / "masks")
    args = parser.parse_args()
    args.masks.mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for index, path in enumerate(images):
        with Image.open(path) as image:
            width, height = image.size
        hole = watermark_hole_mask(width, height, TEXTS[index % len(TEXTS)], CORNERS[index % len(CORNERS)])
        target = args.masks / f"{path.stem}.png"
        Image.fromarray(hole).save(target, optimize=True)  # mode "1": white = hole, a few hundred bytes
        print(f"{target.name}: {hole.mean():.1%} of {width}×{height}")


if __name__ == "__main__":
    main()
