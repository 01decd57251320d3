"""Text watermarks: a DB text detector shipped inside an OCR wheel (PP-OCRv6 small from `rapidocr` 3.x).

The detector runs one or more passes over each image (plain, inverted, contrast-normalised; large
images in tiles) and the passes' text-probability maps are merged by their maximum. Each region of the
merged map becomes a rotated box grown back to the full text extent (DB's "unclip"); boxes are
filtered by confidence, position and area, read by the recogniser of the same family of wheels
(textures fool the detector, not the recogniser; see `text_verify`), and then told apart as overlay
(watermark) or scene text (`text_overlay`). Text repeated in a grid over the picture is a tiled
watermark (`text_tiled`). The hole is the glyph strokes of each kept box plus a margin (default) or
the filled boxes. Every model file is part of an installed wheel, so this works offline.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .base import MaskResult, check_image, config_from_mapping
from .glyphs import POLARITIES, Polarity, glyph_strokes
from .text_detector import (
    CUDA_PROVIDER,
    DETECTOR_MODELS,
    DetectorModel,
    DetectorSessions,
    Device,
    network_size,
    resize_for_network,
    to_network_input,
)
from .text_overlay import OverlayRule, judge_regions
from .text_tiled import find_tiled_pattern

Position = Literal["anywhere", "corners", "edges"]
Fill = Literal["glyphs", "box"]
Pass = Literal["plain", "inverted", "contrast"]
PASSES = ("plain", "inverted", "contrast")
# Local contrast normalisation: window (Gaussian sigma) as a fraction of the network input's shorter
# side, and a floor on the local deviation so flat areas are not amplified into noise.
_CONTRAST_SIGMA_FRACTION = 0.04
_CONTRAST_FLOOR = 8.0
# Tiles of a large image overlap by this share of their side, so no word is only ever seen cut.
_TILE_OVERLAP = 0.125


@dataclass(frozen=True)
class TextMaskConfig:
    """Text detection settings.

    Attributes:
        detector: bundled detector, a key of `text_detector.DETECTOR_MODELS` ("ppocrv6-small" from
            rapidocr 3.x, the default: it covered more overlay text than "ppocrv4", see bench/).
        model_path: a DB detector ONNX file to use instead (normalised like `detector`).
        device: "auto" = onnxruntime's CUDA provider when it is installed and the process sees a GPU,
            else the CPU; "cpu"; "cuda" (an error when CUDA is not available).
        min_side: images are upscaled so their shorter side is at least this before detection (DB misses
            small text at low resolution); 0 = no upscaling.
        min_long_side: and so their longer side is at least this (a 481×321 photo is detected at 800×544
            instead of 704×480: tighter boxes and fewer junk regions on the benchmark's small photos; at
            960 the detector also found more small scene text); 0 = only `min_side` decides.
        max_side: and downscaled so their longer side is at most this (memory and time), unless `tile`.
        tile: images whose longer side exceeds `max_side` are detected in overlapping max_side tiles
            at full resolution instead of being downscaled (small text in large photos survives).
        single_view_max_pixels: with `tile`, a picture whose network input has at most this many pixels
            is detected in one full-resolution view even when its longer side exceeds max_side; 0 = off.
            1048576 (1024²) takes a 4:3 or 16:9 photo of ~1 MP in one forward instead of two tiles that
            overlap over most of it: 1.35-1.7× faster per mask, but two overlapping looks merged by
            their maximum find more on busy backgrounds (tuning photos at 0.98 MP: line F1 0.600 →
            0.576 busy, 0.544 → 0.542 calm, tiled 0.815 → 0.822; bench/text_one_view.py), hence off.
        passes: detector passes whose probability maps are merged: "plain", "inverted" (255 − image:
            dark text on a light busy background) and "contrast" (local contrast normalised: faint,
            semi-transparent text). Each pass costs one forward.
        pixel_threshold: text-probability level above which a pixel belongs to a text region.
        min_score: minimum mean text probability of a region (its confidence) to be kept.
        unclip_ratio: how far a region is grown back from DB's shrunk kernel to the full text extent.
        position: keep text "anywhere", only in the image "corners", or only near the "edges".
        position_margin: size of the corner/edge zones as a fraction of width and height.
        max_area_ratio: drop a region larger than this fraction of the image (a sign, not a watermark).
        fill: "glyphs" = the hole is the letters' strokes inside each box, grown by `glyph_margin_px`
            (falling back to the whole box where strokes cannot be separated); "box" = the whole box.
        glyph_margin_px: margin grown around the strokes in "glyphs" mode (anti-aliasing, shadows).
        glyph_polarity: which letters the strokes are: "auto" (per box, the polarity whose strokes fall
            into fewer pieces: the other one picks the gaps between the letters and the background's
            texture), or "bright" / "dark" for a dataset whose watermarks are known to be white / black.
        min_recognition_confidence: read each region with the bundled recogniser and drop regions read
            with lower confidence (textures the detector mistakes for text); 0 = detection only.
        keep_scene_text: leave text that belongs to the scene (signs, plates, lettering on objects)
            unmasked and remove only overlay text; the rule is `overlay` (see `text_overlay`).
        overlay: the thresholds of the overlay-vs-scene rule.
        find_tiled: recognise text repeated over the whole picture (stock-preview tiling) as a tiled
            watermark and keep all its repeats, whatever the scene rule says of each.
        sessions: ONNX Runtime sessions run in parallel by `generate_batch`.
        threads_per_session: intra-op threads per session; 0 = the CPU count divided among the sessions.
        batch_size: images of equal input size stacked into one forward.
    """

    detector: str = "ppocrv6-small"
    model_path: Path | None = None
    device: Device = "auto"
    min_side: int = 480
    min_long_side: int = 800
    max_side: int = 1024
    tile: bool = True
    single_view_max_pixels: int = 0
    passes: tuple[Pass, ...] = ("plain",)
    pixel_threshold: float = 0.3
    min_score: float = 0.5
    unclip_ratio: float = 1.6
    position: Position = "anywhere"
    position_margin: float = 0.25
    max_area_ratio: float = 0.5
    fill: Fill = "glyphs"
    glyph_margin_px: float = 4.0
    glyph_polarity: Polarity = "auto"
    min_recognition_confidence: float = 0.5
    keep_scene_text: bool = True
    overlay: OverlayRule = OverlayRule()
    find_tiled: bool = True
    sessions: int = 1
    threads_per_session: int = 0
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.detector not in DETECTOR_MODELS:
            raise ValueError(f"detector must be one of {', '.join(DETECTOR_MODELS)}, got {self.detector!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not self.passes or any(p not in PASSES for p in self.passes) or len(set(self.passes)) != len(self.passes):
            raise ValueError(f"passes must be distinct values among {', '.join(PASSES)}, got {self.passes!r}")
        if self.fill not in ("glyphs", "box"):
            raise ValueError(f"fill must be 'glyphs' or 'box', got {self.fill!r}")
        if not 0.0 <= self.min_recognition_confidence < 1.0:
            raise ValueError(f"min_recognition_confidence must be in [0, 1), got {self.min_recognition_confidence}")
        if self.glyph_margin_px < 0:
            raise ValueError(f"glyph_margin_px must be >= 0, got {self.glyph_margin_px}")
        if self.glyph_polarity not in POLARITIES:
            raise ValueError(f"glyph_polarity must be one of {', '.join(POLARITIES)}, got {self.glyph_polarity!r}")
        if self.position not in ("anywhere", "corners", "edges"):
            raise ValueError(f"position must be anywhere, corners or edges, got {self.position!r}")
        if not 0.0 < self.pixel_threshold < 1.0 or not 0.0 <= self.min_score < 1.0:
            raise ValueError("pixel_threshold must be in (0, 1) and min_score in [0, 1)")
        if not 0.0 < self.position_margin <= 0.5:
            raise ValueError(f"position_margin must be in (0, 0.5], got {self.position_margin}")
        if not 0.0 < self.max_area_ratio <= 1.0:
            raise ValueError(f"max_area_ratio must be in (0, 1], got {self.max_area_ratio}")
        if self.unclip_ratio < 0 or self.min_side < 0 or self.min_long_side < 0 or self.max_side < 64:
            raise ValueError("unclip_ratio, min_side and min_long_side must be >= 0 and max_side >= 64")
        if self.single_view_max_pixels < 0:
            raise ValueError(f"single_view_max_pixels must be >= 0 (0 = off), got {self.single_view_max_pixels}")
        if self.sessions < 1 or self.threads_per_session < 0 or self.batch_size < 1:
            raise ValueError("sessions and batch_size must be >= 1, threads_per_session >= 0")
        if isinstance(self.overlay, Mapping):  # from a mapping (CLI, YAML): unknown keys are errors
            object.__setattr__(self, "overlay", config_from_mapping(OverlayRule, self.overlay))
        if not isinstance(self.overlay, OverlayRule):
            raise ValueError(f"overlay must be a mapping of OverlayRule fields, got {type(self.overlay).__name__}")
        if self.model_path is not None and not Path(self.model_path).is_file():
            raise ValueError(f"text detector model {self.model_path} does not exist")


@dataclass(frozen=True)
class TextRegion:
    """One detected text region in image coordinates.

    polygon: float32 4×2 corners (x, y) of the rotated box; score: mean text probability inside it.
    """

    polygon: np.ndarray
    score: float

    @property
    def box(self) -> np.ndarray:
        """Axis-aligned (x0, y0, x1, y1) around the polygon."""
        return np.concatenate([self.polygon.min(axis=0), self.polygon.max(axis=0)]).astype(np.float32)


@dataclass(frozen=True)
class _View:
    """One detector input cut from an image: the window (y0, x0, y1, x1) it covers and its network size."""

    window: tuple[int, int, int, int]
    size: tuple[int, int]


def plan_views(shape: tuple[int, int], config: TextMaskConfig) -> tuple[list[_View], float]:
    """The windows an image of `shape` (H, W) is detected in, and the scale of its merged probability map.

    One view of the whole image (scaled up so the shorter side is >= min_side and the longer >=
    min_long_side, and down so the longer is <= max_side), or, for an image larger than max_side with
    `tile`, max_side tiles at full resolution.
    """
    height, width = shape
    scale = max(1.0, config.min_side / min(height, width), config.min_long_side / max(height, width))
    # Tiles only where the picture itself is larger than max_side; upscaled small pictures stay whole.
    if not config.tile or max(height, width) <= config.max_side * 1.01:
        scale = min(scale, config.max_side / max(height, width))
        return [_View((0, 0, height, width), _scaled_size(shape, scale))], scale
    # Optionally a picture of few enough pixels (a 1155×866 or 1280×720 photo) is detected whole at full
    # resolution: two overlapping tiles cost ~1.7× its one forward (see `single_view_max_pixels`).
    whole = _scaled_size(shape, scale)
    if whole[0] * whole[1] <= config.single_view_max_pixels:
        return [_View((0, 0, height, width), whole)], scale
    side = config.max_side
    step = int(side * (1 - _TILE_OVERLAP))
    starts_y, starts_x = _tile_starts(height, side, step), _tile_starts(width, side, step)
    views = []
    for y0 in starts_y:
        for x0 in starts_x:
            y1, x1 = min(y0 + side, height), min(x0 + side, width)
            views.append(_View((y0, x0, y1, x1), network_size((y1 - y0, x1 - x0), max(y1 - y0, x1 - x0))))
    return views, 1.0


def _scaled_size(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """(h, w) network size of a picture of `shape` (H, W) scaled by `scale`, in multiples of 32."""
    return (max(32, int(round(shape[0] * scale / 32)) * 32), max(32, int(round(shape[1] * scale / 32)) * 32))


def _tile_starts(length: int, side: int, step: int) -> list[int]:
    """Evenly spaced starts of the fewest `side` tiles, at most `step` apart, that cover `length`."""
    if length <= side:
        return [0]
    count = int(np.ceil((length - side) / step)) + 1
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def normalise_local_contrast(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 → uint8 H×W×3 with every neighbourhood stretched to a similar contrast.

    Semi-transparent text over a busy or dark region has little absolute contrast; dividing by the
    local standard deviation makes it as salient to the detector as opaque text.
    """
    values = image.astype(np.float32)
    sigma = _CONTRAST_SIGMA_FRACTION * min(image.shape[:2])
    mean = cv2.GaussianBlur(values, (0, 0), sigma)
    deviation = np.sqrt(cv2.GaussianBlur((values - mean) ** 2, (0, 0), sigma)) + _CONTRAST_FLOOR
    return np.clip(128.0 + 48.0 * (values - mean) / deviation, 0, 255).astype(np.uint8)


def pass_input(resized: np.ndarray, kind: Pass) -> np.ndarray:
    """The uint8 h×w×3 network-size image a pass of `kind` shows the detector."""
    if kind == "inverted":
        return 255 - resized
    if kind == "contrast":
        return normalise_local_contrast(resized)
    return resized


def regions_from_probability(
    probability: np.ndarray, *, pixel_threshold: float, min_score: float, unclip_ratio: float
) -> list[TextRegion]:
    """DB post-processing. probability: float32 h×w text map → regions in map coordinates."""
    bitmap = (probability > pixel_threshold).astype(np.uint8)
    # A 2×2 dilation joins strokes the binarisation split, as the reference DB post-processing does.
    bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    regions: list[TextRegion] = []
    for contour in contours:
        (center_x, center_y), (width, height), angle = cv2.minAreaRect(contour)
        if min(width, height) < 3:
            continue
        score = _mean_inside(probability, contour)
        if score < min_score:
            continue
        # DB trains on kernels shrunk by D = A·(1 − r²)/L; growing by D' = A·unclip/L restores the text box.
        grow = width * height * unclip_ratio / (2.0 * (width + height))
        grown = ((center_x, center_y), (width + 2 * grow, height + 2 * grow), angle)
        if min(grown[1]) < 5:
            continue
        regions.append(TextRegion(polygon=cv2.boxPoints(grown).astype(np.float32), score=score))
    return regions


def _mean_inside(probability: np.ndarray, contour: np.ndarray) -> float:
    """Mean of `probability` inside the filled `contour`, computed on the contour's bounding crop."""
    x, y, w, h = cv2.boundingRect(contour)
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [contour.reshape(-1, 2) - (x, y)], 1)
    return float(cv2.mean(probability[y : y + h, x : x + w], mask=inside)[0])


def _position_ok(box: np.ndarray, shape: tuple[int, int], position: Position, margin: float) -> bool:
    """Whether the region's centre lies in the wanted zone of an image of `shape` (H, W)."""
    if position == "anywhere":
        return True
    height, width = shape
    center_x, center_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    near_left_right = center_x < margin * width or center_x > (1 - margin) * width
    near_top_bottom = center_y < margin * height or center_y > (1 - margin) * height
    if position == "corners":
        return near_left_right and near_top_bottom
    return near_left_right or near_top_bottom


class TextMaskGenerator:
    """Hole mask = the strokes (or boxes) of the overlay text the detector finds (see `TextMaskConfig`)."""

    method = "text"

    def __init__(self, config: TextMaskConfig | None = None) -> None:
        self.config = config or TextMaskConfig()
        self.model: DetectorModel = DETECTOR_MODELS[self.config.detector]
        self.model_path = Path(self.config.model_path) if self.config.model_path else self.model.path()
        self._pool = DetectorSessions(self.model_path, sessions=self.config.sessions,
                                      threads_per_session=self.config.threads_per_session, device=self.config.device)
        self._verifier = None
        if self.config.min_recognition_confidence > 0:
            from .text_verify import TextVerifier

            # On the detector's device: on a GPU actor the recogniser is most of a tiled mask's CPU time.
            self._verifier = TextVerifier(self.config.threads_per_session,
                                          use_cuda=self._pool.active_provider == CUDA_PROVIDER)

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider the detector runs on (CUDA or CPU)."""
        return self._pool.active_provider

    def probability_maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Merged text probability of each uint8 H×W×3 image: float32 h×w at the image's map scale."""
        plans = [plan_views(check_image(image).shape[:2], self.config) for image in images]
        # Every (image, view, pass) is one network input; only equal sizes can share a forward.
        jobs = [(index, view, kind) for index, (views, _) in enumerate(plans) for view in views
                for kind in self.config.passes]
        by_size: dict[tuple[int, int], list[int]] = {}
        for number, (_, view, _) in enumerate(jobs):
            by_size.setdefault(view.size, []).append(number)
        chunks = [numbers[start : start + self.config.batch_size]
                  for numbers in by_size.values() for start in range(0, len(numbers), self.config.batch_size)]

        def run_chunk(numbers: list[int]) -> list[tuple[int, np.ndarray]]:
            inputs = []
            for number in numbers:
                index, view, kind = jobs[number]
                y0, x0, y1, x1 = view.window
                resized = resize_for_network(images[index][y0:y1, x0:x1], view.size)
                inputs.append(to_network_input(pass_input(resized, kind), self.model))
            return list(zip(numbers, self._pool.run(np.stack(inputs))))

        outputs: dict[int, np.ndarray] = {}
        if self._pool.size > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=self._pool.size) as executor:
                for pairs in executor.map(run_chunk, chunks):
                    outputs.update(pairs)
        else:
            for chunk in chunks:
                outputs.update(run_chunk(chunk))

        maps = []
        for index, (image, (_, scale)) in enumerate(zip(images, plans)):
            height, width = image.shape[:2]
            merged = np.zeros((max(1, round(height * scale)), max(1, round(width * scale))), np.float32)
            for number, (owner, view, _) in enumerate(jobs):
                if owner != index:
                    continue
                y0, x0, y1, x1 = (round(v * scale) for v in view.window)
                window = merged[y0:y1, x0:x1]
                probability = outputs[number]
                if probability.shape != window.shape:
                    probability = cv2.resize(probability, (window.shape[1], window.shape[0]),
                                             interpolation=cv2.INTER_LINEAR)
                np.maximum(window, probability, out=window)
            maps.append(merged)
        return maps

    def detect(self, images: Sequence[np.ndarray]) -> list[list[TextRegion]]:
        """Text regions of each uint8 H×W×3 image, in its own pixel coordinates, unfiltered."""
        results = []
        for image, probability in zip(images, self.probability_maps(images)):
            regions = regions_from_probability(
                probability,
                pixel_threshold=self.config.pixel_threshold,
                min_score=self.config.min_score,
                unclip_ratio=self.config.unclip_ratio,
            )
            scale = np.array([image.shape[1] / probability.shape[1], image.shape[0] / probability.shape[0]],
                             np.float32)
            results.append([TextRegion(polygon=r.polygon * scale, score=r.score) for r in regions])
        return results

    def _result(self, image: np.ndarray, regions: list[TextRegion]) -> MaskResult:
        shape = image.shape[:2]
        image_area = float(shape[0] * shape[1])
        kept: list[TextRegion] = []
        dropped = {"position": 0, "area": 0, "unreadable": 0, "scene": 0}
        for region in regions:
            if not _position_ok(region.box, shape, self.config.position, self.config.position_margin):
                dropped["position"] += 1
            elif cv2.contourArea(region.polygon) / image_area > self.config.max_area_ratio:
                dropped["area"] += 1
            else:
                kept.append(region)
        readings: list[tuple[str, float]] = [("", 1.0)] * len(kept)
        if self._verifier is not None and kept:
            all_readings = self._verifier.read(image, [r.polygon for r in kept])
            readable = [c >= self.config.min_recognition_confidence for _, c in all_readings]
            dropped["unreadable"] = readable.count(False)
            kept = [r for r, ok in zip(kept, readable) if ok]
            readings = [reading for reading, ok in zip(all_readings, readable) if ok]

        # Strokes once per region: the scene rule reads them bare, the hole grows them by the margin.
        glyphs = [glyph_strokes(image, region.polygon, polarity=self.config.glyph_polarity) for region in kept]
        tiled = find_tiled_pattern([r.polygon for r in kept], [text for text, _ in readings], shape) \
            if self.config.find_tiled else None
        judgements = judge_regions(image, [r.polygon for r in kept], [g.hole(0.0) for g in glyphs],
                                   self.config.overlay, tiled=tiled.members if tiled else frozenset())
        regions_report = []
        holes_from: list[int] = []
        for number, (region, (text, confidence), judgement) in enumerate(zip(kept, readings, judgements)):
            keep = judgement.overlay or not self.config.keep_scene_text
            regions_report.append({
                "box": [round(float(v), 1) for v in region.box], "text": text,
                "recognition_confidence": round(confidence, 4), "kept": keep,
                "strokes": glyphs[number].polarity,
                "reason": judgement.reason if judgement.overlay or not keep
                else f"kept anyway (keep_scene_text off); {judgement.reason}",
                "cues": judgement.cues,
            })
            if keep:
                holes_from.append(number)
            else:
                dropped["scene"] += 1
        final = [kept[i] for i in holes_from]

        hole = np.zeros(shape, bool)
        filled_boxes = 0
        if self.config.fill == "glyphs":
            for number in holes_from:
                crop, (y0, x0), used_box = glyphs[number].hole(self.config.glyph_margin_px)
                hole[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] |= crop
                filled_boxes += int(used_box)
        else:
            boxes = np.zeros(shape, np.uint8)
            cv2.fillPoly(boxes, [np.round(r.polygon).astype(np.int32) for r in final], 1)
            hole, filled_boxes = boxes > 0, len(final)
        details = {
            "polygons": [np.round(r.polygon, 1).tolist() for r in final],
            "dropped": dropped,
            "regions": regions_report,
            "keep_scene_text": self.config.keep_scene_text,
            "fill": self.config.fill,
            "boxes_filled_whole": filled_boxes,
            "detector": self.model_path.name,
            "provider": self.provider,
            "passes": list(self.config.passes),
        }
        # How the detector saw the picture: > 1 = upscaled (min_side / min_long_side), several views = tiles.
        views, scale = plan_views(shape, self.config)
        details["detector_scale"] = round(float(scale), 3)
        details["detector_views"] = len(views)
        if self._verifier is not None:
            details["recognizer_provider"] = self._verifier.provider
            details["recognition_confidence"] = [round(readings[i][1], 4) for i in holes_from]
        if tiled is not None:
            details["tiled"] = tiled.describe()
        return MaskResult(
            hole=hole,
            method=self.method,
            boxes=np.array([r.box for r in final], np.float32).reshape(-1, 4),
            scores=np.array([r.score for r in final], np.float32),
            details=details,
        )

    def __call__(self, image: np.ndarray, *, key: str | None = None) -> MaskResult:
        """image: uint8 H×W×3 RGB → MaskResult with the H×W hole of the kept text regions."""
        return self._result(image, self.detect([image])[0])

    def generate_batch(
        self, images: Sequence[np.ndarray], keys: Sequence[str | None] | None = None
    ) -> list[MaskResult]:
        """Like calling the generator on each image, but batched and spread over the session pool."""
        return [self._result(image, regions) for image, regions in zip(images, self.detect(images))]
