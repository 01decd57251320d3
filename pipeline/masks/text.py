"""Text watermarks: the PP-OCRv4 DB text detector shipped inside the `rapidocr-onnxruntime` wheel.

The network's text-probability map is binarised, each region becomes a rotated box grown back to the
full text extent (DB's "unclip"), boxes are filtered by confidence, position and area and, by default,
by whether the wheel's recogniser can read them (textures fool the detector, not the recogniser; see
`text_verify`). The hole is the glyph strokes of each kept box plus a margin (default) or the filled
boxes. The model files are part of the installed wheel, so this works offline.
"""
from __future__ import annotations

import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from .base import GeneratorSetupError, MaskResult, check_image
from .glyphs import glyph_hole

DETECTOR_FILENAME = "ch_PP-OCRv4_det_infer.onnx"
Position = Literal["anywhere", "corners", "edges"]
Fill = Literal["glyphs", "box"]
# Local contrast normalisation: window (Gaussian sigma) as a fraction of the network input's shorter
# side, and a floor on the local deviation so flat areas are not amplified into noise.
_CONTRAST_SIGMA_FRACTION = 0.04
_CONTRAST_FLOOR = 8.0


def bundled_detector_path() -> Path:
    """The DB text-detection model inside the installed `rapidocr-onnxruntime` wheel."""
    try:
        import rapidocr_onnxruntime
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise GeneratorSetupError("the text mask generator needs the 'rapidocr-onnxruntime' package") from exc
    path = Path(rapidocr_onnxruntime.__file__).parent / "models" / DETECTOR_FILENAME
    if not path.is_file():
        raise GeneratorSetupError(f"{path} is missing from the rapidocr-onnxruntime installation; reinstall the wheel")
    return path


@dataclass(frozen=True)
class TextMaskConfig:
    """Text detection settings.

    Attributes:
        model_path: DB detector ONNX file; None = the one bundled with rapidocr-onnxruntime.
        min_side: images are upscaled so their shorter side is at least this before detection (DB misses
            small text at low resolution); 0 = no upscaling.
        max_side: and downscaled so their longer side is at most this (memory and time).
        pixel_threshold: text-probability level above which a pixel belongs to a text region.
        min_score: minimum mean text probability of a region (its confidence) to be kept.
        unclip_ratio: how far a region is grown back from DB's shrunk kernel to the full text extent.
        position: keep text "anywhere", only in the image "corners", or only near the "edges".
        position_margin: size of the corner/edge zones as a fraction of width and height.
        max_area_ratio: drop a region larger than this fraction of the image (a sign, not a watermark).
        fill: "glyphs" = the hole is the letters' strokes inside each box, grown by `glyph_margin_px`
            (falling back to the whole box where strokes cannot be separated); "box" = the whole box.
        glyph_margin_px: margin grown around the strokes in "glyphs" mode (anti-aliasing, shadows); it
            may reach past the box by as much.
        local_contrast: normalise local contrast before detection; faint, semi-transparent text is
            found more often (see bench/watermarks.py).
        min_recognition_confidence: read each region with the recogniser bundled in the same wheel
            and drop regions read with lower confidence (textures the detector mistakes for text:
            54 % of the benchmark's clean photos get a mask without this check, 12 % with it);
            0 = detection only.
        sessions: ONNX Runtime sessions run in parallel by `generate_batch`.
        threads_per_session: intra-op threads per session; 0 = the CPU count divided among the sessions.
        batch_size: images of equal input size stacked into one forward.
    """

    model_path: Path | None = None
    min_side: int = 736
    max_side: int = 2048
    pixel_threshold: float = 0.3
    min_score: float = 0.5
    unclip_ratio: float = 1.6
    position: Position = "anywhere"
    position_margin: float = 0.25
    max_area_ratio: float = 0.5
    fill: Fill = "glyphs"
    glyph_margin_px: float = 4.0
    local_contrast: bool = True
    min_recognition_confidence: float = 0.5
    sessions: int = 1
    threads_per_session: int = 0
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.fill not in ("glyphs", "box"):
            raise ValueError(f"fill must be 'glyphs' or 'box', got {self.fill!r}")
        if not 0.0 <= self.min_recognition_confidence < 1.0:
            raise ValueError(f"min_recognition_confidence must be in [0, 1), got {self.min_recognition_confidence}")
        if self.glyph_margin_px < 0:
            raise ValueError(f"glyph_margin_px must be >= 0, got {self.glyph_margin_px}")
        if self.position not in ("anywhere", "corners", "edges"):
            raise ValueError(f"position must be anywhere, corners or edges, got {self.position!r}")
        if not 0.0 < self.pixel_threshold < 1.0 or not 0.0 <= self.min_score < 1.0:
            raise ValueError("pixel_threshold must be in (0, 1) and min_score in [0, 1)")
        if not 0.0 < self.position_margin <= 0.5:
            raise ValueError(f"position_margin must be in (0, 0.5], got {self.position_margin}")
        if not 0.0 < self.max_area_ratio <= 1.0:
            raise ValueError(f"max_area_ratio must be in (0, 1], got {self.max_area_ratio}")
        if self.unclip_ratio < 0 or self.min_side < 0 or self.max_side < 32:
            raise ValueError("unclip_ratio and min_side must be >= 0 and max_side >= 32")
        if self.sessions < 1 or self.threads_per_session < 0 or self.batch_size < 1:
            raise ValueError("sessions and batch_size must be >= 1, threads_per_session >= 0")
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


def detector_input_size(shape: tuple[int, int], min_side: int, max_side: int) -> tuple[int, int]:
    """(H, W) the detector runs at for an image of `shape`: scaled, then rounded to multiples of 32."""
    height, width = shape
    scale = max(1.0, min_side / min(height, width)) if min_side else 1.0
    scale = min(scale, max_side / max(height, width))
    return (max(32, int(round(height * scale / 32)) * 32), max(32, int(round(width * scale / 32)) * 32))


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


def _to_network_input(image: np.ndarray, size: tuple[int, int], local_contrast: bool) -> np.ndarray:
    """uint8 H×W×3 RGB → float32 3×h×w in [-1, 1] (PaddleOCR normalisation: mean 0.5, std 0.5).

    PaddleOCR's detector was trained on BGR input (OpenCV-decoded), hence the channel flip.
    """
    resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if local_contrast:
        resized = normalise_local_contrast(resized)
    bgr = resized[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray((bgr / 127.5 - 1.0).transpose(2, 0, 1))


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


class _SessionPool:
    """ONNX Runtime sessions shared by worker threads; `run` borrows one for the duration of a forward.

    Each session is single-stream, so parallelism comes from several sessions with a share of the CPU
    threads each (ONNX Runtime releases the GIL while it computes).
    """

    def __init__(self, model_path: Path, sessions: int, threads_per_session: int) -> None:
        import onnxruntime as ort

        threads = threads_per_session or max(1, (os.cpu_count() or 1) // sessions)
        self._idle: queue.Queue[Any] = queue.Queue()
        for _ in range(sessions):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # the model's unused-initialiser warnings are noise to users
            session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
            self._idle.put(session)
        self.input_name = session.get_inputs()[0].name
        self.size = sessions

    def run(self, batch: np.ndarray) -> np.ndarray:
        """batch: float32 N×3×h×w → text probability N×h×w."""
        session = self._idle.get()
        try:
            return session.run(None, {self.input_name: batch})[0][:, 0]
        finally:
            self._idle.put(session)


class TextMaskGenerator:
    """Hole mask = the filled boxes of text the DB detector finds (see `TextMaskConfig`)."""

    method = "text"

    def __init__(self, config: TextMaskConfig | None = None) -> None:
        self.config = config or TextMaskConfig()
        self.model_path = Path(self.config.model_path) if self.config.model_path else bundled_detector_path()
        self._pool = _SessionPool(self.model_path, self.config.sessions, self.config.threads_per_session)
        self._verifier = None
        if self.config.min_recognition_confidence > 0:
            from .text_verify import TextVerifier

            self._verifier = TextVerifier(self.config.threads_per_session)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[TextRegion]]:
        """Text regions of each uint8 H×W×3 image, in its own pixel coordinates, unfiltered by position."""
        sizes = [detector_input_size(check_image(image).shape[:2], self.config.min_side, self.config.max_side)
                 for image in images]
        # Only images with the same network input size can share a forward.
        chunks: list[list[int]] = []
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            by_size.setdefault(size, []).append(index)
        for indices in by_size.values():
            for start in range(0, len(indices), self.config.batch_size):
                chunks.append(indices[start : start + self.config.batch_size])

        def run_chunk(indices: list[int]) -> list[tuple[int, np.ndarray]]:
            batch = np.stack([_to_network_input(images[i], sizes[i], self.config.local_contrast) for i in indices])
            return list(zip(indices, self._pool.run(batch)))

        probabilities: dict[int, np.ndarray] = {}
        if self._pool.size > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=self._pool.size) as executor:
                for pairs in executor.map(run_chunk, chunks):
                    probabilities.update(pairs)
        else:
            for chunk in chunks:
                probabilities.update(run_chunk(chunk))

        results = []
        for index, image in enumerate(images):
            probability = probabilities[index]
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
        dropped = {"position": 0, "area": 0, "unreadable": 0}
        for region in regions:
            if not _position_ok(region.box, shape, self.config.position, self.config.position_margin):
                dropped["position"] += 1
            elif cv2.contourArea(region.polygon) / image_area > self.config.max_area_ratio:
                dropped["area"] += 1
            else:
                kept.append(region)
        readability: list[float] = []
        if self._verifier is not None and kept:
            confidences = self._verifier.confidences(image, [r.polygon for r in kept])
            readable = [c >= self.config.min_recognition_confidence for c in confidences]
            dropped["unreadable"] = readable.count(False)
            kept = [r for r, ok in zip(kept, readable) if ok]
            readability = [round(c, 4) for c, ok in zip(confidences, readable) if ok]
        if self.config.fill == "glyphs":
            hole = np.zeros(shape, bool)
            filled_boxes = 0
            for region in kept:
                crop, (y0, x0), used_box = glyph_hole(image, region.polygon, margin_px=self.config.glyph_margin_px)
                hole[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] |= crop
                filled_boxes += int(used_box)
        else:
            boxes = np.zeros(shape, np.uint8)
            cv2.fillPoly(boxes, [np.round(r.polygon).astype(np.int32) for r in kept], 1)
            hole, filled_boxes = boxes > 0, len(kept)
        return MaskResult(
            hole=hole,
            method=self.method,
            boxes=np.array([r.box for r in kept], np.float32).reshape(-1, 4),
            scores=np.array([r.score for r in kept], np.float32),
            details={
                "polygons": [np.round(r.polygon, 1).tolist() for r in kept],
                "dropped": dropped,
                "fill": self.config.fill,
                "boxes_filled_whole": filled_boxes,
                "detector": self.model_path.name,
                **({"recognition_confidence": readability} if self._verifier is not None else {}),
            },
        )

    def __call__(self, image: np.ndarray, *, key: str | None = None) -> MaskResult:
        """image: uint8 H×W×3 RGB → MaskResult with the H×W hole of the kept text regions."""
        return self._result(image, self.detect([image])[0])

    def generate_batch(
        self, images: Sequence[np.ndarray], keys: Sequence[str | None] | None = None
    ) -> list[MaskResult]:
        """Like calling the generator on each image, but batched and spread over the session pool."""
        return [self._result(image, regions) for image, regions in zip(images, self.detect(images))]
