"""Optional check that a detected text region really holds text: read it with the recogniser shipped in
the same `rapidocr-onnxruntime` wheel and keep its confidence.

Textured scenes (bark, foliage, gravel) make the DB detector fire on roughly half of the clean photos
of the benchmark; the recogniser reads those regions with low confidence (median 0.17) while real
text reads with high confidence (median 0.97), so a confidence floor removes most false holes.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .base import GeneratorSetupError

RECOGNIZER_FILENAME = "ch_PP-OCRv4_rec_infer.onnx"
# The recogniser's input: 48 px high text lines (PaddleOCR v4 recognition shape), at most 6 per batch.
_LINE_SHAPE = [3, 48, 320]
_BATCH = 6


def _bundled_recognizer_path() -> Path:
    import rapidocr_onnxruntime

    path = Path(rapidocr_onnxruntime.__file__).parent / "models" / RECOGNIZER_FILENAME
    if not path.is_file():
        raise GeneratorSetupError(f"{path} is missing from the rapidocr-onnxruntime installation; reinstall the wheel")
    return path


def rectified_crop(image: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """The rotated box `polygon` (4×2 x, y) of a uint8 H×W×3 image warped to an upright h×w×3 crop.

    Boxes taller than wide are turned a quarter, since the recogniser reads horizontal lines.
    """
    (center, size, angle) = cv2.minAreaRect(polygon.astype(np.float32))
    corners = cv2.boxPoints((center, size, angle))
    sums, differences = corners.sum(axis=1), np.diff(corners, axis=1).ravel()
    top_left, bottom_right = corners[np.argmin(sums)], corners[np.argmax(sums)]
    top_right, bottom_left = corners[np.argmin(differences)], corners[np.argmax(differences)]
    width = max(1, round(max(np.linalg.norm(top_right - top_left), np.linalg.norm(bottom_right - bottom_left))))
    height = max(1, round(max(np.linalg.norm(bottom_left - top_left), np.linalg.norm(bottom_right - top_right))))
    transform = cv2.getPerspectiveTransform(
        np.float32([top_left, top_right, bottom_right, bottom_left]),
        np.float32([[0, 0], [width, 0], [width, height], [0, height]]),
    )
    crop = cv2.warpPerspective(image, transform, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(np.rot90(crop) if height > 1.5 * width else crop)


class TextVerifier:
    """Recognition confidence (mean character probability, 0 when nothing is read) of text regions."""

    def __init__(self, threads: int = 0, *, use_cuda: bool = False) -> None:
        """threads: intra-op threads (0 = all CPUs); use_cuda: run on onnxruntime's CUDA provider, as the
        detector does when it found one (rapidocr falls back to the CPU, with a warning, without it)."""
        try:
            from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise GeneratorSetupError("text verification needs the 'rapidocr-onnxruntime' package") from exc
        self._recognizer = TextRecognizer({
            "model_path": str(_bundled_recognizer_path()),
            "rec_img_shape": _LINE_SHAPE,
            "rec_batch_num": _BATCH,
            "use_cuda": use_cuda,
            "use_dml": False,
            "intra_op_num_threads": threads or max(1, os.cpu_count() or 1),
            "inter_op_num_threads": 1,
        })

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider the recogniser really runs on ("unknown" when the installed
        rapidocr keeps its session elsewhere: provenance must not break a mask)."""
        session = getattr(getattr(self._recognizer, "session", None), "session", None)
        providers = session.get_providers() if hasattr(session, "get_providers") else []
        return providers[0] if providers else "unknown"

    def read(self, image: np.ndarray, polygons: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, confidence in [0, 1]) per polygon (4×2) of the uint8 H×W×3 RGB image; ("", 0) when
        nothing is read."""
        if not polygons:
            return []
        # PaddleOCR's recogniser, like its detector, was trained on BGR input.
        crops = [rectified_crop(image, polygon)[:, :, ::-1].copy() for polygon in polygons]
        readings, _ = self._recognizer(crops)
        return [(str(text), float(confidence)) if text else ("", 0.0) for text, confidence in readings]

    def confidences(self, image: np.ndarray, polygons: list[np.ndarray]) -> list[float]:
        """One confidence in [0, 1] per polygon (4×2) of the uint8 H×W×3 RGB image."""
        return [confidence for _, confidence in self.read(image, polygons)]
