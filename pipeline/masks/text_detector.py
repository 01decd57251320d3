"""The DB text detectors shipped inside OCR wheels, run with ONNX Runtime on the CPU or a GPU.

A detector turns an image into a text-probability map (PaddleOCR's DB networks). The model files are
part of installed wheels (`rapidocr` 3.x bundles PP-OCRv6 small, `rapidocr-onnxruntime` PP-OCRv4), so
nothing is downloaded at run time: we open the ONNX file ourselves and never call the wheels' own
engines, which may fetch other models from a hub.
"""
from __future__ import annotations

import importlib.util
import os
import queue
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from .base import GeneratorSetupError

Device = Literal["auto", "cpu", "cuda"]
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class DetectorModel:
    """A DB detector inside an installed wheel, with the input normalisation it was trained with.

    package: the importable package holding the file; relative_path: the file inside it; mean / std:
    per-channel normalisation of BGR values in [0, 1].
    """

    name: str
    package: str
    relative_path: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def path(self) -> Path:
        """The model file of the installed wheel; a clear error when the wheel or the file is absent."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise GeneratorSetupError(
                f"the {self.name!r} text detector ships in the {self.package!r} package; install it "
                f"(pip install {self.package.replace('_', '-')})")
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        if not path.is_file():
            raise GeneratorSetupError(f"{path} is missing from the {self.package} installation; reinstall the wheel")
        return path


# PP-OCRv6's own inference.yml normalises with ImageNet statistics; PP-OCRv4's rapidocr config uses 0.5.
DETECTOR_MODELS: dict[str, DetectorModel] = {
    model.name: model
    for model in (
        DetectorModel("ppocrv6-small", "rapidocr", "models/PP-OCRv6_det_small.onnx",
                      (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        DetectorModel("ppocrv4", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
                      (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    )
}


def select_providers(device: Device, available: Sequence[str]) -> list[str]:
    """ONNX Runtime execution providers for `device`, given the providers this onnxruntime offers.

    "auto" takes CUDA when the installed onnxruntime has it and the process sees a GPU (a Ray actor
    without `num_gpus` gets CUDA_VISIBLE_DEVICES="" and stays on the CPU); "cuda" insists on it.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    has_cuda = CUDA_PROVIDER in available and os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() != ""
    if device == "cuda" and not has_cuda:
        raise GeneratorSetupError(
            f"device 'cuda' asked for, but onnxruntime offers {', '.join(available) or 'no providers'} "
            "(install onnxruntime-gpu, and give the process a GPU)")
    if device != "cpu" and has_cuda:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def to_network_input(image: np.ndarray, model: DetectorModel) -> np.ndarray:
    """uint8 h×w×3 RGB (already at network size) → float32 3×h×w, normalised for `model`.

    PaddleOCR's detectors were trained on BGR input (OpenCV-decoded), hence the channel flip.
    """
    # Channel by channel straight into the planar layout: the same float32 operations as
    # `(bgr / 255 − mean) / std` on the whole image, without its full-size temporaries and transpose.
    height, width = image.shape[:2]
    planes = np.empty((3, height, width), np.float32)
    for channel in range(3):
        plane = planes[channel]
        np.multiply(image[:, :, 2 - channel], np.float32(1.0 / 255.0), out=plane, dtype=np.float32)
        plane -= np.float32(model.mean[channel])
        plane /= np.float32(model.std[channel])
    return planes


def network_size(shape: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(h, w) the detector runs at for an image of `shape` (H, W): longer side `long_side`, multiples of 32."""
    height, width = shape
    scale = long_side / max(height, width)
    return (max(32, int(round(height * scale / 32)) * 32), max(32, int(round(width * scale / 32)) * 32))


def resize_for_network(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 H×W×3 → uint8 h×w×3; area averaging when shrinking (no aliasing of thin strokes)."""
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class DetectorSessions:
    """ONNX Runtime sessions of one detector shared by worker threads; `run` borrows one per forward.

    Each session is single-stream, so CPU parallelism comes from several sessions with a share of the
    CPU threads each (ONNX Runtime releases the GIL while it computes). On a GPU one session is enough.
    """

    def __init__(self, model_path: Path, *, sessions: int, threads_per_session: int, device: Device) -> None:
        import onnxruntime as ort

        self.providers = select_providers(device, ort.get_available_providers())
        if self.providers[0] == CUDA_PROVIDER:
            sessions = 1
        threads = threads_per_session or max(1, (os.cpu_count() or 1) // sessions)
        self._idle: queue.Queue[Any] = queue.Queue()
        for _ in range(sessions):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # the models' unused-initialiser warnings are noise to users
            try:
                session = ort.InferenceSession(str(model_path), options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
                raise GeneratorSetupError(f"cannot load the text detector {model_path}: {exc}") from exc
            self._idle.put(session)
        # What really runs: onnxruntime silently drops a provider it cannot initialise.
        self.active_provider = session.get_providers()[0]
        self.input_name = session.get_inputs()[0].name
        self.size = sessions

    def run(self, batch: np.ndarray) -> np.ndarray:
        """batch: float32 N×3×h×w → text probability float32 N×h×w."""
        session = self._idle.get()
        try:
            return session.run(None, {self.input_name: batch})[0][:, 0]
        finally:
            self._idle.put(session)
