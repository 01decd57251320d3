"""Image fields for finding a watermark by its edges: colour gradients, sign-free edge orientation,
and the normalised correlation used to match a template of them (see `consistent`).
"""
from __future__ import annotations

import cv2
import numpy as np

_EPS = 1e-6


def color_gradients(image: np.ndarray) -> np.ndarray:
    """Forward-difference gradients of a uint8 H×W×3 image: float32 H×W×6 (gx R,G,B then gy R,G,B)."""
    values = image.astype(np.float32)
    gradients = np.zeros((*image.shape[:2], 6), np.float32)
    gradients[:, :-1, :3] = values[:, 1:] - values[:, :-1]
    gradients[:-1, :, 3:] = values[1:] - values[:-1]
    return gradients


def orientation_field(gradients: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Sign-free edge orientation: float32 H×W×2, Σ_channels (gx² − gy², 2·gx·gy) / |g|.

    Each channel's gradient is mapped to its doubled angle with its magnitude as length, so an edge
    and the same edge with inverted contrast (a white logo over a bright or a dark scene) look alike,
    while random scene edges of random orientation average out. gradients: H×W×6 from `color_gradients`.
    """
    gx, gy = gradients[..., :3], gradients[..., 3:]
    magnitude = np.sqrt(gx * gx + gy * gy) + _EPS
    field = np.stack([((gx * gx - gy * gy) / magnitude).sum(-1), ((2 * gx * gy) / magnitude).sum(-1)], axis=-1)
    if blur > 0:
        field = cv2.GaussianBlur(field, (0, 0), blur)
    return np.ascontiguousarray(field, dtype=np.float32)


def normalised_correlation(field: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Cosine similarity of `template` (h×w×C) with every h×w window of `field` (H×W×C).

    Returns float32 (H−h+1)×(W−w+1); 0 where the window has no energy. Channels are summed, as in
    OpenCV's TM_CCORR_NORMED for colour images.
    """
    height, width = template.shape[:2]
    scores = None
    energy = None
    for channel in range(field.shape[2]):
        plane = np.ascontiguousarray(field[..., channel])
        response = cv2.matchTemplate(plane, np.ascontiguousarray(template[..., channel]), cv2.TM_CCORR)
        window_energy = cv2.boxFilter(plane * plane, -1, (width, height), normalize=False,
                                      anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
        window_energy = window_energy[: response.shape[0], : response.shape[1]]
        scores = response if scores is None else scores + response
        energy = window_energy if energy is None else energy + window_energy
    template_norm = float(np.sqrt((template.astype(np.float64) ** 2).sum()))
    return (scores / (np.sqrt(np.maximum(energy, 0)) * template_norm + _EPS)).astype(np.float32)
