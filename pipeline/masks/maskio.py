"""Reading images for the mask generators and reading/writing hole masks as PNG.

Mask files follow IOPaint's convention by default: single-channel PNG, white (255) = hole.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

HoleValue = Literal["white", "black"]
MaskChannel = Literal["luma", "alpha"]


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to uint8 H×W×3 RGB, EXIF orientation applied, with the project decoder
    (`pipeline.imageio.decode_image`), so masks line up with what the inpainting stage sees."""
    from pipeline.imageio import decode_image

    return np.ascontiguousarray(decode_image(Path(path).read_bytes()).rgb)


def hole_from_mask_image(
    image: Image.Image, *, hole_value: HoleValue = "white", threshold: int = 127, channel: MaskChannel = "luma"
) -> np.ndarray:
    """Convert a mask image to a bool H×W hole mask.

    hole_value "white": pixels brighter than `threshold` are hole; "black": darker or equal are hole.
    channel "alpha" reads the alpha channel instead of the luminance (masks painted on transparency).
    """
    if channel == "alpha":
        if "A" not in image.getbands():
            raise ValueError(f"mask has no alpha channel (mode {image.mode})")
        values = np.asarray(image.getchannel("A"))
    else:
        values = np.asarray(image.convert("L"))
    bright = values > threshold
    return bright if hole_value == "white" else ~bright


def decode_mask_bytes(
    data: bytes, *, hole_value: HoleValue = "white", threshold: int = 127, channel: MaskChannel = "luma"
) -> np.ndarray:
    """Decode encoded mask bytes (PNG, ...) to a bool H×W hole mask."""
    with Image.open(io.BytesIO(data)) as image:
        return hole_from_mask_image(image, hole_value=hole_value, threshold=threshold, channel=channel)


def read_mask_file(
    path: str | os.PathLike[str], *, hole_value: HoleValue = "white", threshold: int = 127,
    channel: MaskChannel = "luma",
) -> np.ndarray:
    """Read a mask file to a bool H×W hole mask."""
    with Image.open(path) as image:
        return hole_from_mask_image(image, hole_value=hole_value, threshold=threshold, channel=channel)


def encode_hole_png(hole: np.ndarray) -> bytes:
    """bool H×W hole mask → single-channel PNG bytes, white (255) = hole."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_hole_png(path: str | os.PathLike[str], hole: np.ndarray) -> None:
    """Write a hole mask as PNG (white = hole) atomically: temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(encode_hole_png(hole))
    os.replace(temporary, path)


def resize_hole(hole: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool hole mask to `shape` (H, W); nearest keeps it binary."""
    image = Image.fromarray(hole.astype(np.uint8) * 255)
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 127
