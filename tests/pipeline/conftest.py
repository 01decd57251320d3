"""Shared fixtures of the pipeline tests: small image/mask/dataset builders (the session's one Ray instance
is `ray_session` in tests/conftest.py). Everything is generated under pytest's tmp_path (nothing outside the repo)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]

def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth-but-textured uint8 H×W×3 picture (gradients + blobs + mild noise), like a photo crop."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([
        128 + 90 * np.sin(xx / (7 + seed % 5) + c) * np.cos(yy / (11 + c)) for c in range(3)
    ], axis=-1)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, image_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def hole_box(height: int, width: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """bool H×W with a rectangle (x0, y0, x1, y1) of hole; default: a centred quarter-size box."""
    x0, y0, x1, y1 = box or (width // 4, height // 3, width // 2, height // 2)
    hole = np.zeros((height, width), bool)
    hole[y0:y1, x0:x1] = True
    return hole


def write_mask(path: Path, hole: np.ndarray) -> None:
    """A given-mask PNG (white = hole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(path)


def make_image_folder(root: Path, names: list[str], size: tuple[int, int] = (48, 64), masks: Path | None = None,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Write images (format from the suffix) and, with `masks`, a mirrored mask per image.

    Returns {relative name: the pixels written}.
    """
    height, width = size
    written = {}
    for index, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        array = textured_image(height, width, seed + index)
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
               ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
        path.write_bytes(encode(array, fmt))
        written[name] = np.asarray(Image.open(path).convert("RGB"))
        if masks is not None:
            write_mask((masks / name).with_suffix(".png"), hole_box(height, width))
    return written


@pytest.fixture
def image_folder(tmp_path):
    """Six small images in two folders with given masks: (images root, masks root, {name: pixels})."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    names = ["a.png", "b.jpg", "sub/c.png", "sub/d.jpg", "sub/deeper/e.webp", "f.bmp"]
    pixels = make_image_folder(images, names, masks=masks)
    return images, masks, pixels
