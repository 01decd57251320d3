"""Make samples/watermarked/: the bundled photos stamped with a visible watermark, for the demo.

    python samples/stamp_watermarks.py [--images samples/images] [--output samples/watermarked]

Every photo gets the same stock-photo style overlay, anchored to its bottom-right corner: a logo
repeated in a row (a ring around a bold "m", at 55 % opacity) and a text line under it. The same
overlay at the same place on every photo is what `--masks consistent` learns from the dataset (Dekel et
al., CVPR 2017); the text line is what `--masks text` reads. The clean originals in samples/images/
stay as they are (tests and the given-mask examples use them with samples/masks/).

Deterministic: the overlay depends on nothing but the constants below and Pillow's bundled font, and
the JPEGs are written at quality 95.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

TEXT_LINE = "© matpipe stock"
LOGO_REPEATS = 3
LOGO_PX = 34          # side of one logo stamp
TEXT_PX = 20          # font size of the text line
MARGIN_PX = 10        # from the right and bottom edges
OPACITY = 0.55        # alpha of the white overlay (semi-transparent: the scene shows through)
SHADOW_OPACITY = 0.35  # a dark outline under the white marks, so they read on bright skies too


def _logo(size: int) -> Image.Image:
    """An L-mode alpha stamp: a ring with a bold "m" inside, 255 = fully covered."""
    stamp = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(stamp)
    width = max(2, size // 10)
    draw.ellipse((1, 1, size - 2, size - 2), outline=255, width=width)
    font = ImageFont.load_default(size=int(size * 0.62))
    draw.text((size / 2, size / 2), "m", fill=255, font=font, anchor="mm", stroke_width=1, stroke_fill=255)
    return stamp


def overlay_alpha(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(white alpha, dark alpha), float32 height×width in [0, 1]: where the overlay covers the photo."""
    marks = Image.new("L", (width, height), 0)
    font = ImageFont.load_default(size=TEXT_PX)
    draw = ImageDraw.Draw(marks)
    left, top, right, bottom = draw.textbbox((0, 0), TEXT_LINE, font=font)
    text_x = width - MARGIN_PX - right
    text_y = height - MARGIN_PX - bottom
    draw.text((text_x, text_y), TEXT_LINE, fill=255, font=font)
    logo = _logo(LOGO_PX)
    gap = LOGO_PX // 3
    row_width = LOGO_REPEATS * LOGO_PX + (LOGO_REPEATS - 1) * gap
    logo_y = text_y + top - gap - LOGO_PX
    for index in range(LOGO_REPEATS):
        marks.paste(255, (width - MARGIN_PX - row_width + index * (LOGO_PX + gap), logo_y), logo)
    white = np.asarray(marks, dtype=np.float32) / 255.0
    # The shadow is the marks grown by one pixel: a thin dark rim, like most stock watermarks have.
    from PIL import ImageFilter

    grown = np.asarray(marks.filter(ImageFilter.MaxFilter(3)), dtype=np.float32) / 255.0
    dark = np.clip(grown - white, 0.0, 1.0)
    return white * OPACITY, dark * SHADOW_OPACITY


def stamp(image: Image.Image) -> Image.Image:
    """The photo with the overlay alpha-blended in: J = α·W + (1 − α)·I."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    white, dark = overlay_alpha(image.width, image.height)
    blended = rgb * (1.0 - white[..., None]) + 255.0 * white[..., None]
    blended = blended * (1.0 - dark[..., None])
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=HERE / "images")
    parser.add_argument("--output", type=Path, default=HERE / "watermarked")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        with Image.open(path) as image:
            stamped = stamp(image)
        target = args.output / f"{path.stem}.jpg"
        stamped.save(target, quality=95)
        print(f"{target.name}: {stamped.width}×{stamped.height}")


if __name__ == "__main__":
    main()
