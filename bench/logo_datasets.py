"""Datasets that share a logo the way photographers and stock sites apply one, for `consistent` rows.

A dataset is a list of photos of mixed sizes and orientations; each (or most) carries the same logo,
anchored to a corner or the centre at an offset proportional to the image, with per-image position
jitter, a logo size proportional to the image width (times a random scale), a plain colour without
keyline at a given opacity, and optional JPEG re-encoding. Logos are drawn in code: an outline shape
and letters, several designs. Tiled datasets repeat a logo in a (possibly staggered) grid; lattice
datasets (`LogoCondition.lattice`) repeat it on one lattice shared by the dataset the way stock previews
do: anchored to a corner or the centre, spacing in proportion to the image width, no jitter.

Hold-out (used only for the final table, never while tuning): the photos listed by `photo_split`
as "held out" (the last 20 of cbsd68 and the last 16 of the ~1024 px scenes, in sorted name order)
and the logo design "hexagon" (`HELD_OUT_LOGO`).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
HELD_OUT_LOGO = "hexagon"
_HELD_OUT_COUNTS = {"cbsd68": 20, "scenes": 16}
GT_ALPHA_THRESHOLD = 0.2


def photo_split(folder: str, part: str) -> list[Path]:
    """Sorted photos of `SHARED/folder`: part "tuning" (all but the last few) or "held out" (those)."""
    photos = sorted(p for p in (SHARED / folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    held = _HELD_OUT_COUNTS[folder]
    return photos[-held:] if part == "held out" else photos[:-held]


def _font(size: int, bold: bool = True) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSerif.ttf")
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size=size)


def draw_logo(design: str, width: int = 240) -> np.ndarray:
    """Coverage alpha (float h×w in [0, 1]) of logo `design`, `width` px wide: an outline shape + letters."""
    height = round(width * 0.32)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    side = height - 6
    stroke = max(2, round(height / 14))
    box = (3, 3, 3 + side, 3 + side)
    word, bold = "LUMEN", True
    if design == "ring":
        draw.ellipse(box, outline=255, width=stroke)
        cx, cy, r = 3 + side / 2, 3 + side / 2, side * 0.28
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=255)
    elif design == "shield":
        x0, y0, x1, y1 = box
        draw.line([(x0, y0), (x1, y0), (x1, y0 + side * 0.55), ((x0 + x1) / 2, y1), (x0, y0 + side * 0.55),
                   (x0, y0)], fill=255, width=stroke, joint="curve")
        word, bold = "NORTH", False
    elif design == "square":
        draw.rounded_rectangle(box, radius=side // 5, outline=255, width=stroke)
        draw.text((3 + side / 2, 3 + side / 2), "P", fill=255, font=_font(round(side * 0.6)), anchor="mm")
        word = "PIXVLT"
    elif design == "hexagon":
        cx, cy, r = 3 + side / 2, 3 + side / 2, side / 2
        points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 7)[:-1]]
        draw.polygon(points, outline=255, width=stroke)
        draw.ellipse((cx - r / 4, cy - r / 4, cx + r / 4, cy + r / 4), fill=255)
        word, bold = "KOWALSKI", False
    else:
        raise ValueError(f"unknown logo design {design!r}")
    text_box = (side + 12, 0, width - 3, height)
    size = round(height * 0.62)
    font = _font(size, bold)
    while font.getlength(word) > text_box[2] - text_box[0] and size > 8:
        size -= 1
        font = _font(size, bold)
    draw.text((text_box[0], height / 2), word, fill=255, font=font, anchor="lm")
    return np.asarray(canvas, np.float32) / 255.0


LOGO_DESIGNS = ("ring", "shield", "square", HELD_OUT_LOGO)


@dataclass(frozen=True)
class LogoCondition:
    """How a dataset's logo is applied.

    anchor: "top-left", …, "bottom-right" or "center"; jitter: ± fraction of each image side;
    width_fraction: logo width / image width; scale_jitter: ± random relative scale per image;
    opacity: (low, high) drawn per dataset; color: "white" or "black"; jpeg: (low, high) quality or
    None; absent: share of images without the logo; tiled: repeat the logo in a staggered grid at a
    random offset per image; lattice: "grid" (rows and columns) or "diagonal" (every row shifted by half
    a column, the logo turned by `lattice_angle` degrees) repeats it on a lattice fixed across the dataset,
    with a lattice point `width_fraction`·0.25 of the width from `anchor` (the centre: a logo centred).
    """

    anchor: str = "bottom-right"
    jitter: float = 0.05
    width_fraction: float = 0.3
    scale_jitter: float = 0.0
    opacity: tuple[float, float] = (0.5, 0.5)
    color: str = "white"
    jpeg: tuple[int, int] | None = None
    absent: float = 0.0
    tiled: bool = False
    lattice: str = ""
    lattice_angle: float = 30.0


@dataclass
class LogoSample:
    """uint8 H×W×3 watermarked image and its bool H×W logo support (all False without the logo);
    alpha: float32 H×W, the blend weight applied (logo α × the dataset's opacity); clean: the photo."""

    name: str
    image: np.ndarray
    support: np.ndarray
    alpha: np.ndarray | None = None
    clean: np.ndarray | None = None


def _encode_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def _paste(weight: np.ndarray, tile: np.ndarray, y: int, x: int) -> None:
    height, width = weight.shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + tile.shape[0], height), min(x + tile.shape[1], width)
    if y1 > y0 and x1 > x0:
        np.maximum(weight[y0:y1, x0:x1], tile[y0 - y : y1 - y, x0 - x : x1 - x], out=weight[y0:y1, x0:x1])


def _paste_lattice(alpha: np.ndarray, tile: np.ndarray, condition: LogoCondition) -> None:
    """Paste `tile` at every point of the dataset's lattice that touches `alpha` (partial tiles included)."""
    if condition.lattice not in ("grid", "diagonal"):
        raise ValueError(f"unknown lattice {condition.lattice!r}")
    tile_width = tile.shape[1]
    if condition.lattice == "diagonal":
        height, width = tile.shape
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), condition.lattice_angle, 1.0)
        cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
        size = (round(width * cos + height * sin), round(width * sin + height * cos))
        turn[0, 2] += size[0] / 2 - width / 2
        turn[1, 2] += size[1] / 2 - height / 2
        tile = cv2.warpAffine(tile, turn, size, flags=cv2.INTER_LINEAR)
    rows, cols = alpha.shape
    # The spacing follows the image width exactly (the tile's size is rounded to whole pixels).
    exact_width = condition.width_fraction * cols
    step_x = 1.6 * exact_width * tile.shape[1] / tile_width
    step_y = (2.2 if condition.lattice == "grid" else 1.3) * exact_width * tile.shape[0] / tile_width
    shift = 0.5 * step_x if condition.lattice == "diagonal" else 0.0
    margin = 0.25 * condition.width_fraction * cols
    vertical, _, horizontal = condition.anchor.partition("-")
    y0 = {"top": margin, "bottom": rows - margin - tile.shape[0]}.get(vertical, (rows - tile.shape[0]) / 2)
    x0 = {"left": margin, "right": cols - margin - tile.shape[1]}.get(horizontal or vertical,
                                                                     (cols - tile.shape[1]) / 2)
    first_row = -int(np.ceil((y0 + tile.shape[0]) / step_y))
    for row in range(first_row, int((rows - y0) / step_y) + 2):
        y = y0 + row * step_y
        offset = x0 + row * shift
        for col in range(-int(np.ceil((offset + tile.shape[1]) / step_x)), int((cols - offset) / step_x) + 2):
            _paste(alpha, tile, round(y), round(offset + col * step_x))


def logo_dataset(photos: list[np.ndarray], design: str, condition: LogoCondition, seed: int) -> list[LogoSample]:
    """The photos with the logo applied per `condition` (one draw of placement/scale per image)."""
    rng = np.random.default_rng(seed)
    base = draw_logo(design, 400)
    opacity = float(rng.uniform(*condition.opacity))
    color = 255.0 if condition.color == "white" else 0.0
    absent = set(rng.choice(len(photos), round(condition.absent * len(photos)), replace=False).tolist())
    samples = []
    for index, photo in enumerate(photos):
        height, width = photo.shape[:2]
        scale = 1.0 + float(rng.uniform(-condition.scale_jitter, condition.scale_jitter))
        logo_width = max(16, round(condition.width_fraction * width * scale))
        tile = cv2.resize(base, (logo_width, max(4, round(base.shape[0] * logo_width / base.shape[1]))),
                          interpolation=cv2.INTER_AREA)
        alpha = np.zeros((height, width), np.float32)
        if index not in absent:
            if condition.lattice:
                _paste_lattice(alpha, tile, condition)
            elif condition.tiled:
                step_x, step_y = round(tile.shape[1] * 1.5), round(tile.shape[0] * 2.5)
                oy, ox = int(rng.integers(0, step_y)), int(rng.integers(0, step_x))
                for row, y in enumerate(range(-oy, height, step_y)):
                    for x in range(-ox - (row % 2) * step_x // 2, width, step_x):
                        _paste(alpha, tile, y, x)
            else:
                margin_y, margin_x = round(0.06 * height), round(0.06 * width)
                vertical, _, horizontal = condition.anchor.partition("-")
                free_y, free_x = height - tile.shape[0], width - tile.shape[1]
                y = {"top": margin_y, "bottom": free_y - margin_y}.get(vertical, free_y // 2)
                x = {"left": margin_x, "right": free_x - margin_x}.get(horizontal or vertical, free_x // 2)
                y += round(float(rng.uniform(-condition.jitter, condition.jitter)) * height)
                x += round(float(rng.uniform(-condition.jitter, condition.jitter)) * width)
                _paste(alpha, tile, int(np.clip(y, 0, free_y)), int(np.clip(x, 0, free_x)))
        weight = (alpha * opacity)[..., None]
        image = np.clip(photo.astype(np.float32) * (1 - weight) + color * weight + 0.5, 0, 255).astype(np.uint8)
        if condition.jpeg is not None:
            image = _encode_jpeg(image, int(rng.integers(condition.jpeg[0], condition.jpeg[1] + 1)))
        samples.append(LogoSample(name=str(index), image=image, support=alpha > GT_ALPHA_THRESHOLD,
                                  alpha=alpha * opacity, clean=photo))
    return samples
