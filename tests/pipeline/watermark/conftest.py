"""Known-answer data for the watermark tests: crops of the bundled photos (real scenes, so the
natural-image prior the estimation relies on holds), a small logo, and an exact alpha blend."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[3]
PHOTOS = sorted((REPO_ROOT / "samples" / "images").glob("*.jpg")) + sorted(
    (REPO_ROOT / "tests" / "fixtures" / "cbsd68").glob("*.jpg"))
CROP = (96, 128)
LOGO_AT = (58, 58)  # nominal top-left of the logo in each crop


def logo_coverage() -> np.ndarray:
    """float32 30×64 coverage in [0, 1]: a ring and a bar, anti-aliased (no keyline)."""
    canvas = np.zeros((30 * 4, 64 * 4), np.uint8)
    cv2.circle(canvas, (60, 60), 44, 255, 24, lineType=cv2.LINE_AA)
    cv2.rectangle(canvas, (128, 36), (244, 84), 255, -1, lineType=cv2.LINE_AA)
    return cv2.resize(canvas, (64, 30), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


@dataclass
class Blended:
    clean: list[np.ndarray]        # uint8 H×W×3 scenes
    marked: list[np.ndarray]       # uint8, the watermark blended in
    alpha: list[np.ndarray]        # float32 H×W, the exact α of each image
    offsets: list[tuple[int, int]]  # the logo's true top-left in each image
    coverage: np.ndarray
    color: np.ndarray              # float32 3


def scenes(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` different CROP-sized scenes cut from the bundled photos (flipped copies add variety)."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in PHOTOS]
    out = []
    for index in range(count):
        photo = photos[index % len(photos)]
        if (index // len(photos)) % 2:
            photo = photo[:, ::-1]
        y = int(rng.integers(0, photo.shape[0] - CROP[0]))
        x = int(rng.integers(0, photo.shape[1] - CROP[1]))
        out.append(np.ascontiguousarray(photo[y : y + CROP[0], x : x + CROP[1]]))
    return out


def blend(clean: list[np.ndarray], *, opacity: float | list[float], color=(255, 255, 255), jitter: int = 2,
          seed: int = 1, present: list[bool] | None = None) -> Blended:
    """The logo blended exactly (J = α·W + (1 − α)·I, rounded to uint8) at LOGO_AT ± jitter."""
    rng = np.random.default_rng(seed)
    coverage = logo_coverage()
    color_array = np.asarray(color, np.float32)
    opacities = opacity if isinstance(opacity, list) else [opacity] * len(clean)
    marked, alphas, offsets = [], [], []
    for index, image in enumerate(clean):
        y, x = (LOGO_AT[0] + int(rng.integers(-jitter, jitter + 1)), LOGO_AT[1] + int(rng.integers(-jitter, jitter + 1)))
        alpha = np.zeros(image.shape[:2], np.float32)
        if present is None or present[index]:
            alpha[y : y + coverage.shape[0], x : x + coverage.shape[1]] = coverage * opacities[index]
        out = image * (1 - alpha[..., None]) + color_array * alpha[..., None]
        marked.append(np.clip(np.rint(out), 0, 255).astype(np.uint8))
        alphas.append(alpha)
        offsets.append((y, x))
    return Blended(clean, marked, alphas, offsets, coverage, color_array)


TILED_SHAPE = (240, 360)
TILED_OPACITY = 0.45


def _tiled(clean: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ring-and-bar logo (no keyline), white at TILED_OPACITY, on one grid from the top-left corner in
    every image, blended exactly: (marked images, exact α of each)."""
    tile = cv2.resize(logo_coverage(), (72, 34), interpolation=cv2.INTER_AREA)
    marked, alphas = [], []
    for image in clean:
        alpha = np.zeros(TILED_SHAPE, np.float32)
        for y in range(12, TILED_SHAPE[0], 82):
            for x in range(12, TILED_SHAPE[1], 122):
                piece = tile[: TILED_SHAPE[0] - y, : TILED_SHAPE[1] - x]
                alpha[y : y + piece.shape[0], x : x + piece.shape[1]] = piece * TILED_OPACITY
        out = image * (1 - alpha[..., None]) + 255.0 * alpha[..., None]
        marked.append(np.clip(np.rint(out), 0, 255).astype(np.uint8))
        alphas.append(alpha)
    return marked, alphas


def tiled_scenes(count: int) -> list[np.ndarray]:
    """`count` TILED_SHAPE crops of the bundled photos (portrait ones turned; flipped copies add variety)."""
    rng = np.random.default_rng(5)
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in PHOTOS]
    photos = [np.rot90(p) if p.shape[0] > p.shape[1] else p for p in photos]
    out = []
    for index in range(count):
        photo = photos[index % len(photos)]
        photo = photo[:, ::-1] if (index // len(photos)) % 2 else photo
        y, x = int(rng.integers(0, photo.shape[0] - TILED_SHAPE[0])), int(rng.integers(0, photo.shape[1] - TILED_SHAPE[1]))
        out.append(np.ascontiguousarray(photo[y : y + TILED_SHAPE[0], x : x + TILED_SHAPE[1]]))
    return out


def tiled_blend(count: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(clean scenes, the same under the tiled logo, exact α of each): TILED_SHAPE images."""
    clean = tiled_scenes(count)
    return (clean, *_tiled(clean))


def footprint_psnr(restored: np.ndarray, clean: np.ndarray, alpha: np.ndarray) -> float:
    zone = alpha > 0.01
    error = ((restored.astype(np.float64) - clean) ** 2)[zone].mean()
    return float(10 * np.log10(255.0**2 / max(error, 1e-10)))


@pytest.fixture(scope="module")
def many_scenes() -> list[np.ndarray]:
    return scenes(40)


def template_npz_bytes(support: np.ndarray) -> bytes:
    """A consistent-generator template `.npz` with this support (the rest is irrelevant to inversion)."""
    import io

    from pipeline.masks.consistent import WatermarkTemplate
    from pipeline.masks.frames import Frame

    shape = support.shape
    template = WatermarkTemplate(gradients=np.zeros((*shape, 6), np.float32), support=support,
                                 orientation=np.zeros((*shape, 2), np.float32), frame=Frame("bottom-right", "pixels", 1.0),
                                 offsets=np.zeros((1, 2)), scales=np.ones(1), match_threshold=0.3)
    buffer = io.BytesIO()
    template.save(buffer)
    return buffer.getvalue()
