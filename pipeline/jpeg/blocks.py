"""8×8 block transforms, and the box test that maps pixels onto blocks and MCUs.

JPEG's DCT (ITU T.81 A.3.3) is the orthonormal 2-D DCT-II of the level-shifted samples, so
`forward_dct(inverse_dct(c)) == c` up to float rounding. Coefficient blocks are in natural (row-major)
order, rows = vertical frequency, as libjpeg and jpeglib store them.
"""
from __future__ import annotations

import numpy as np

BLOCK = 8
LEVEL_SHIFT = 128.0  # 8-bit samples


def _dct_matrix() -> np.ndarray:
    frequency = np.arange(BLOCK)[:, None]
    position = np.arange(BLOCK)[None, :]
    matrix = np.sqrt(2.0 / BLOCK) * np.cos(np.pi * (2 * position + 1) * frequency / (2 * BLOCK))
    matrix[0] /= np.sqrt(2.0)
    return matrix


DCT_MATRIX = _dct_matrix()  # rows: frequencies, columns: sample positions


def forward_dct(samples: np.ndarray) -> np.ndarray:
    """float …×8×8 samples (0..255 scale) → …×8×8 DCT coefficients (not quantised)."""
    return DCT_MATRIX @ (samples - LEVEL_SHIFT) @ DCT_MATRIX.T


def inverse_dct(coefficients: np.ndarray) -> np.ndarray:
    """…×8×8 dequantised DCT coefficients → float …×8×8 samples (0..255 scale, not clipped)."""
    return DCT_MATRIX.T @ coefficients @ DCT_MATRIX + LEVEL_SHIFT


def quantise(coefficients: np.ndarray, table: np.ndarray) -> np.ndarray:
    """…×8×8 DCT coefficients ÷ the 8×8 quantisation table, rounded to the nearest integer (int16)."""
    return np.clip(np.rint(coefficients / table), -32767, 32767).astype(np.int16)


def box_any(mask: np.ndarray, factor_y: int, factor_x: int) -> np.ndarray:
    """True for each factor_y×factor_x box holding any True (no edge replication: outside is False)."""
    if factor_y == factor_x == 1:
        return mask
    height, width = mask.shape
    padded = np.pad(mask, ((0, -height % factor_y), (0, -width % factor_x)))
    rows, cols = padded.shape[0] // factor_y, padded.shape[1] // factor_x
    return padded.reshape(rows, factor_y, cols, factor_x).any(axis=(1, 3))
