"""Synthetic images with known answers for the mask generator tests: text and a logo painted on a photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

PHOTO = Path(__file__).resolve().parents[2] / "fixtures" / "masks" / "photo.jpg"


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """uint8 321×481×3 RGB photograph (no text in it)."""
    with Image.open(PHOTO) as image:
        return np.asarray(image.convert("RGB")).copy()


def paint_text(image: np.ndarray, text: str, xy: tuple[int, int], *, size: int = 28,
               color: tuple[int, int, int] = (255, 255, 255), opacity: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Composite `text` onto a copy of `image`; returns (image, bool support of the glyphs)."""
    coverage = Image.new("L", (image.shape[1], image.shape[0]), 0)
    ImageDraw.Draw(coverage).text(xy, text, fill=255, font=ImageFont.load_default(size=size))
    alpha = np.asarray(coverage, np.float32)[..., None] / 255.0 * opacity
    painted = image * (1 - alpha) + np.array(color, np.float32) * alpha
    return np.clip(painted + 0.5, 0, 255).astype(np.uint8), alpha[..., 0] > 0.2 * opacity


def logo_alpha() -> np.ndarray:
    """Coverage (float 40×96 in [0, 1]) of a logo: a ring, a bar and a block letter."""
    canvas = Image.new("L", (96, 40), 0)
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((2, 2, 36, 36), outline=255, width=5)
    draw.rectangle((14, 14, 24, 24), fill=255)
    draw.rectangle((44, 6, 90, 12), fill=255)
    draw.polygon([(46, 34), (60, 16), (74, 34)], fill=255)
    draw.rectangle((78, 16, 90, 34), fill=255)
    return np.asarray(canvas, np.float32) / 255.0


def plain_logo_alpha(width: int) -> np.ndarray:
    """Coverage (float h×w in [0, 1], h = 0.3·width) of a keyline-free logo: a ring outline and a word."""
    height = round(0.3 * width)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = max(2, height // 10)
    draw.ellipse((1, 1, height - 2, height - 2), outline=255, width=stroke)
    draw.rectangle((height // 3, height // 3, height - height // 3, height - height // 3), fill=255)
    draw.text((height + 4, height // 2), "LUMA", fill=255, anchor="lm",
              font=ImageFont.load_default(size=round(0.7 * height)))
    return np.asarray(canvas, np.float32) / 255.0


def paint_logo(image: np.ndarray, alpha: np.ndarray, top_left: tuple[int, int], *, opacity: float = 0.6,
               color: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, np.ndarray]:
    """Composite the logo at (y, x); returns (image, bool support of the logo in image coordinates)."""
    y, x = top_left
    h, w = alpha.shape
    weight = np.zeros(image.shape[:2], np.float32)
    weight[y : y + h, x : x + w] = alpha * opacity
    painted = image * (1 - weight[..., None]) + np.array(color, np.float32) * weight[..., None]
    support = np.zeros(image.shape[:2], bool)
    support[y : y + h, x : x + w] = alpha > 0.2
    return np.clip(painted + 0.5, 0, 255).astype(np.uint8), support


def scenes(photo: np.ndarray, count: int, shape: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """`count` different uint8 scenes of `shape`: random crops of the photo, flipped and recoloured."""
    rng = np.random.default_rng(seed)
    height, width = shape
    result = []
    for _ in range(count):
        y = int(rng.integers(0, photo.shape[0] - height + 1))
        x = int(rng.integers(0, photo.shape[1] - width + 1))
        crop = photo[y : y + height, x : x + width].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        crop = crop[..., rng.permutation(3)] * rng.uniform(0.6, 1.2) + rng.uniform(-30, 30)
        result.append(np.clip(crop, 0, 255).astype(np.uint8))
    return result


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
