"""Masks the user already has: files next to (or mirroring) the images, or a Parquet column.

Rows are matched by key: the image's path relative to the input root (posix separators). A Parquet
key column may hold such relative paths or bare file names; a bare file name matches when it is unique.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from .base import BatchMixin, MaskGenerationError, MaskResult, check_image
from .keys import KeyIndex, normalise_key
from .maskio import HoleValue, MaskChannel, decode_mask_bytes, read_mask_file, resize_hole


# Lossless formats first: when both `x.png` and `x.jpg` exist the PNG is the mask someone meant.
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg")


@dataclass(frozen=True)
class GivenMaskConfig:
    """Where the given masks live and how to read them.

    Attributes:
        mask_dir: folder mirroring the image tree; the mask of `a/b.jpg` is `a/b{suffix}.png` (or another
            image format) under it.
        parquet: a Parquet file with one row per image instead of `mask_dir`.
        column: the Parquet column holding the mask: encoded bytes or a Hugging Face Image struct
            `{bytes, path}`.
        key_column: the Parquet column holding the image's relative path or file name.
        suffix: appended to the image stem to name its mask file (e.g. "_mask").
        hole_value: "white" = bright pixels are hole (IOPaint's convention), "black" = dark pixels are.
        threshold: grey level separating hole from keep (0–254).
        channel: "luma" reads brightness, "alpha" reads the alpha channel.
        size_mismatch: "error" refuses a mask whose size differs from the image; "resize" resizes it
            (nearest neighbour) and records that in the provenance.
        missing: "error" fails the row when no mask exists; "empty" returns an empty hole instead.
    """

    mask_dir: Path | None = None
    parquet: Path | None = None
    column: str = "mask"
    key_column: str = "path"
    suffix: str = ""
    hole_value: HoleValue = "white"
    threshold: int = 127
    channel: MaskChannel = "luma"
    size_mismatch: Literal["error", "resize"] = "error"
    missing: Literal["error", "empty"] = "error"

    def __post_init__(self) -> None:
        if (self.mask_dir is None) == (self.parquet is None):
            raise ValueError("given masks need exactly one of mask_dir or parquet")
        if self.hole_value not in ("white", "black"):
            raise ValueError(f"hole_value must be 'white' or 'black', got {self.hole_value!r}")
        if self.channel not in ("luma", "alpha"):
            raise ValueError(f"channel must be 'luma' or 'alpha', got {self.channel!r}")
        if self.size_mismatch not in ("error", "resize"):
            raise ValueError(f"size_mismatch must be 'error' or 'resize', got {self.size_mismatch!r}")
        if self.missing not in ("error", "empty"):
            raise ValueError(f"missing must be 'error' or 'empty', got {self.missing!r}")
        if not 0 <= self.threshold <= 254:
            raise ValueError(f"threshold must be in [0, 254], got {self.threshold}")
        if self.mask_dir is not None and not Path(self.mask_dir).is_dir():
            raise ValueError(f"mask_dir {self.mask_dir} is not a directory")
        if self.parquet is not None and not Path(self.parquet).is_file():
            raise ValueError(f"parquet file {self.parquet} does not exist")


class _ParquetMasks:
    """Encoded masks of a Parquet file, indexed by key; decoding happens per lookup."""

    def __init__(self, path: Path, column: str, key_column: str) -> None:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        for name in (column, key_column):
            if name not in schema.names:
                raise ValueError(f"{path} has no column {name!r} (columns: {', '.join(schema.names)})")
        table = pq.read_table(path, columns=[key_column, column])
        self._values = table.column(column)
        keys = table.column(key_column).to_pylist()
        self._rows: KeyIndex[int] = KeyIndex((str(key), row) for row, key in enumerate(keys) if key is not None)

    def lookup(self, key: str) -> bytes | None:
        row = self._rows.get(key)
        if row is None:
            return None
        value: Any = self._values[row].as_py()
        if isinstance(value, dict):  # Hugging Face Image struct
            value = value.get("bytes")
        if value is None:
            return None
        if not isinstance(value, (bytes, bytearray)):
            raise MaskGenerationError(f"mask column holds {type(value).__name__}, expected encoded image bytes")
        return bytes(value)


class GivenMaskGenerator(BatchMixin):
    """Reads the hole mask of each row from `mask_dir` or a Parquet column (see `GivenMaskConfig`)."""

    method = "given"

    def __init__(self, config: GivenMaskConfig) -> None:
        self.config = config
        self._parquet = (
            _ParquetMasks(Path(config.parquet), config.column, config.key_column) if config.parquet else None
        )

    def mask_file(self, key: str) -> Path | None:
        """The mask file of the image with relative path `key` under `mask_dir`, or None."""
        assert self.config.mask_dir is not None
        relative = PurePosixPath(normalise_key(key))
        folder = Path(self.config.mask_dir) / relative.parent
        stem = relative.stem + self.config.suffix
        for suffix in MASK_SUFFIXES:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
        return None

    def _read(self, key: str) -> tuple[np.ndarray | None, str]:
        options = dict(
            hole_value=self.config.hole_value, threshold=self.config.threshold, channel=self.config.channel
        )
        if self._parquet is not None:
            data = self._parquet.lookup(key)
            source = f"{self.config.parquet}:{self.config.column}"
            return (decode_mask_bytes(data, **options) if data is not None else None), source
        path = self.mask_file(key)
        return (read_mask_file(path, **options) if path is not None else None), str(path)

    def __call__(self, image: np.ndarray, *, key: str | None = None) -> MaskResult:
        """image: uint8 H×W×3; key: the image's relative path. Returns its given mask as H×W bool."""
        check_image(image)
        if key is None:
            raise MaskGenerationError("given masks are looked up by key (the image's relative path); none passed")
        shape = image.shape[:2]
        hole, source = self._read(key)
        if hole is None:
            if self.config.missing == "empty":
                return MaskResult(hole=np.zeros(shape, bool), method=self.method, details={"missing": True})
            raise MaskGenerationError(f"no given mask for {key!r}")
        details: dict[str, Any] = {"source": source}
        if hole.shape != shape:
            if self.config.size_mismatch == "error":
                raise MaskGenerationError(
                    f"mask for {key!r} is {hole.shape[1]}×{hole.shape[0]} but the image is {shape[1]}×{shape[0]} "
                    "(use size_mismatch='resize' to resize masks)"
                )
            details["resized_from"] = [int(hole.shape[0]), int(hole.shape[1])]
            hole = resize_hole(hole, shape)
        return MaskResult(hole=hole, method=self.method, boxes=_bounding_box(hole), scores=_ones_if(hole),
                          details=details)


def _bounding_box(hole: np.ndarray) -> np.ndarray:
    """The (x0, y0, x1, y1) box around all hole pixels, as a 1×4 array (0×4 if there are none)."""
    ys, xs = np.nonzero(hole)
    if len(xs) == 0:
        return np.zeros((0, 4), np.float32)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)


def _ones_if(hole: np.ndarray) -> np.ndarray:
    return np.ones(1 if hole.any() else 0, np.float32)
