"""EXIF orientation as exact array operations, so a restored image can be spliced in the orientation its
source stores (the decoder shows it upright by applying the tag; the output keeps the tag).

Orientations 2-8 are flips and quarter turns: moving pixels between stored and upright loses nothing.
`to_upright` does what `PIL.ImageOps.exif_transpose` does; `to_stored` undoes it.
"""
from __future__ import annotations

import numpy as np

ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_STORED = {**_UPRIGHT, 6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1)}


def normal_orientation(value: object) -> int:
    """The EXIF orientation 1-8 that Pillow applies; anything else (absent, 0, 9, text) is 1."""
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def to_upright(stored: np.ndarray, orientation: int) -> np.ndarray:
    """H×W[×C] as stored → as displayed (contiguous)."""
    return np.ascontiguousarray(_UPRIGHT[orientation](stored))


def to_stored(upright: np.ndarray, orientation: int) -> np.ndarray:
    """H×W[×C] as displayed → as stored (contiguous)."""
    return np.ascontiguousarray(_STORED[orientation](upright))
