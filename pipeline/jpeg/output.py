"""How a restored JPEG is written: spliced into its source (the default), or re-encoded whole.

Re-encoding happens when asked for (`output.jpeg: reencode`, `--jpeg reencode`) or when splicing is
impossible (a source libjpeg cannot hand over coefficients for, a colour space or frame type we do not
splice, a restored image whose size does not match the stored one); `JpegWrite` says which and why, for
the output row.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.jpeg.splice import SpliceUnsupported, splice_jpeg

log = logging.getLogger(__name__)

JpegMode = Literal["splice", "reencode"]
JPEG_MODES: tuple[str, ...] = ("splice", "reencode")
SPLICED, REENCODED = "spliced", "reencoded"


@dataclass(frozen=True)
class JpegWrite:
    """Which way a restored JPEG was written ("spliced" | "reencoded") and why / what it cost."""

    method: str
    note: str


def check_jpeg_mode(mode: str) -> None:
    """Raise ValueError unless `mode` is one of JPEG_MODES."""
    if mode not in JPEG_MODES:
        raise ValueError(f"jpeg output must be one of {', '.join(JPEG_MODES)}, got {mode!r}")


def changed_pixels(original: np.ndarray | None, restored: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """bool H×W: the hole, plus any pixel the engine altered outside it (an engine's own dilation)."""
    changed = np.asarray(hole, bool)
    if original is not None and original.shape == restored.shape:
        changed = changed | (original != restored).any(axis=-1)
    return changed


def write_restored_jpeg(source: bytes, restored: np.ndarray, changed: np.ndarray, reencode: Callable[[], bytes],
                        mode: JpegMode = "splice") -> tuple[bytes, JpegWrite]:
    """(JPEG bytes, how they were written) for uint8 H×W×3 `restored` (as displayed) whose `changed` (bool
    H×W) pixels differ from `source`'s decode. `reencode()` is the whole-image encoder used otherwise."""
    check_jpeg_mode(mode)
    if mode == "reencode":
        return reencode(), JpegWrite(REENCODED, "output.jpeg is reencode")
    try:
        spliced = splice_jpeg(source, restored, changed)
    except SpliceUnsupported as exc:
        log.info("JPEG re-encoded: cannot splice (%s)", exc)
        return reencode(), JpegWrite(REENCODED, f"cannot splice: {exc}")
    return spliced.data, JpegWrite(SPLICED, spliced.describe())
