"""Poisson reconstruction: the image whose gradients best match a given gradient field.

Used to turn the median watermark gradients of the consistent generator into a watermark template.
Solved exactly with the discrete cosine transform (Neumann boundary), implemented with numpy's FFT on
a mirrored grid so no SciPy is needed.
"""
from __future__ import annotations

import numpy as np


def forward_gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences of a float H×W(×C) array: gx[y, x] = I[y, x+1] − I[y, x], 0 on the last column.

    Returns (gx, gy) with the same shape as `image`. These are the gradients `poisson_reconstruct`
    inverts exactly.
    """
    gx = np.zeros_like(image, dtype=np.float32)
    gy = np.zeros_like(image, dtype=np.float32)
    gx[:, :-1] = image[:, 1:] - image[:, :-1]
    gy[:-1] = image[1:] - image[:-1]
    return gx, gy


def poisson_reconstruct(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The zero-mean float H×W image u minimising ‖∇u − (gx, gy)‖² with forward differences.

    gx, gy: float H×W forward-difference gradients (last column of gx and last row of gy are ignored,
    as they have no neighbour). If (gx, gy) are the gradients of an image, u is that image minus its
    mean, up to float rounding.
    """
    if gx.shape != gy.shape or gx.ndim != 2:
        raise ValueError(f"gx and gy must be equal H×W arrays, got {gx.shape} and {gy.shape}")
    height, width = gx.shape
    gx = gx.astype(np.float64).copy()
    gy = gy.astype(np.float64).copy()
    gx[:, -1] = 0.0
    gy[-1, :] = 0.0
    # Divergence with backward differences: the adjoint of the forward-difference gradient, so that
    # div(∇u) is the Neumann Laplacian of u.
    divergence = gx.copy()
    divergence[:, 1:] -= gx[:, :-1]
    divergence += gy
    divergence[1:, :] -= gy[:-1, :]
    # A half-sample mirror extension turns the Neumann problem into a periodic one the FFT diagonalises.
    mirrored = np.concatenate([divergence, divergence[:, ::-1]], axis=1)
    mirrored = np.concatenate([mirrored, mirrored[::-1, :]], axis=0)
    spectrum = np.fft.fft2(mirrored)
    ky = np.arange(2 * height)[:, None]
    kx = np.arange(2 * width)[None, :]
    eigenvalues = 2 * np.cos(np.pi * kx / width) + 2 * np.cos(np.pi * ky / height) - 4
    eigenvalues[0, 0] = 1.0  # the mean is undetermined; fixed to zero below
    spectrum /= eigenvalues
    spectrum[0, 0] = 0.0
    return np.real(np.fft.ifft2(spectrum))[:height, :width].astype(np.float32)
