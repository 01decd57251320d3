"""Writing the output: one Parquet file per shard (Hugging Face `datasets`-loadable), optional image
files mirroring the input tree, and the atomic file primitives the commit protocol is built on.

Nothing here ever writes outside the output root: every relative name is sanitised (`safe_relative_path`)
and, on local disks, checked against the resolved root after symlinks.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import OutputConfig
from pipeline.sources import resolve_filesystem

DATA_DIR = "data"
IMAGES_DIR = "images"

# Per-stage wall time spent on a row (batched stages: the batch's time shared evenly).
TIMING_COLUMNS = ("time_decode_s", "time_mask_s", "time_inpaint_s", "time_metrics_s", "time_encode_s")
# Quality figures, null where they do not apply (no hole, failed row, no reference image).
METRIC_COLUMNS = (
    "seam_score", "color_delta_e", "texture_ratio", "residual_hole_ratio", "rerun_hole_ratio", "psnr", "ssim",
)

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("image", IMAGE_STRUCT),         # restored image (Hugging Face Image struct), null when failed
        ("mask", pa.binary()),           # PNG, white = hole
        ("mask_method", pa.string()),
        ("mask_details", pa.string()),   # JSON provenance: boxes, scores, generator details, flag
        ("hole_ratio", pa.float32()),
        ("status", pa.string()),         # ok | failed | skipped
        ("error", pa.string()),          # why a row failed or was skipped; null when ok
        ("engine", pa.string()),
        ("checkpoint_sha256", pa.string()),
        ("seed", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),         # the input's image format (JPEG, PNG, ...); the output keeps it
    ]
    + [(name, pa.float32()) for name in TIMING_COLUMNS]
    + [(name, pa.float32()) for name in METRIC_COLUMNS]
    # Watermark inversion (pipeline.watermark): hole pixels recovered by inverting the blend vs filled
    # by the engine, and the watermark outline still visible after inversion (null: not inverted).
    + [("hole_inverted_px", pa.int64()), ("hole_inpainted_px", pa.int64()), ("invert_residual", pa.float32())]
)

_ARROW_TO_HF_DTYPE = {
    pa.string(): "string", pa.binary(): "binary", pa.float32(): "float32", pa.int64(): "int64", pa.int32(): "int32",
}


def huggingface_metadata(schema: pa.Schema = OUTPUT_SCHEMA) -> bytes:
    """The `huggingface` schema metadata that makes `datasets` load `image` as an Image feature.

    Every column is described (not only the image) because older `datasets` versions take the feature
    list from this metadata verbatim.
    """
    features: dict[str, Any] = {}
    for item in schema:
        if item.type == IMAGE_STRUCT:
            features[item.name] = {"_type": "Image"}
        else:
            features[item.name] = {"dtype": _ARROW_TO_HF_DTYPE[item.type], "_type": "Value"}
    return json.dumps({"info": {"features": features}}, separators=(",", ":")).encode()


def output_schema() -> pa.Schema:
    """OUTPUT_SCHEMA with the Hugging Face metadata attached."""
    return OUTPUT_SCHEMA.with_metadata({b"huggingface": huggingface_metadata()})


# --------------------------------------------------------------------------------------------------
# Safe names

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_COMPONENT_BYTES = 200  # below every common filesystem's 255-byte limit, with room for suffixes


def safe_relative_path(name: str) -> str:
    """Map any id or path onto a relative posix path that cannot leave a root.

    Ordinary relative paths come back normalised (`a/./b.jpg` → `a/b.jpg`). Anything hostile or
    unrepresentable (absolute paths, drive letters, `..`, control characters, over-long components,
    empty names) is defused and moved under `_unsafe/` with a hash of the original name in the file
    name, so two different hostile names never land on the same file and never on a legitimate one.
    """
    text = name.replace("\\", "/")
    hostile = (
        text.startswith("/") or bool(_DRIVE.match(text)) or bool(_CONTROL.search(text))
        or any(part == ".." for part in text.split("/"))
    )
    parts = [_CONTROL.sub("", part) for part in _DRIVE.sub("", text).split("/")]
    parts = [part for part in parts if part not in ("", ".", "..")]
    if any(len(part.encode()) > _MAX_COMPONENT_BYTES for part in parts):
        hostile = True
        parts = [part.encode()[:_MAX_COMPONENT_BYTES].decode("utf-8", "ignore") for part in parts]
    if not parts:
        hostile, parts = True, ["unnamed"]
    if not hostile:
        return "/".join(parts)
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem, suffix = posixpath.splitext(parts[-1])
    parts[-1] = f"{stem}.{digest}{suffix}"
    return "/".join(["_unsafe", *parts])


_FORMAT_SUFFIXES = {
    "JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif", "MPO": ".jpg",
}


def image_file_name(row_id: str, image_format: str | None) -> str:
    """The relative name of a row's image file: its id made safe, with a suffix matching its format."""
    relative = safe_relative_path(row_id)
    suffix = _FORMAT_SUFFIXES.get((image_format or "").upper())
    if suffix and not relative.lower().endswith(_suffixes_of(suffix)):
        relative += suffix
    return relative


def _suffixes_of(suffix: str) -> tuple[str, ...]:
    return {".jpg": (".jpg", ".jpeg"), ".tif": (".tif", ".tiff")}.get(suffix, (suffix,))


# --------------------------------------------------------------------------------------------------
# Output root and atomic writes


class _HashingSink(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.target.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()


@dataclass(frozen=True)
class WrittenFile:
    """A file committed under the output root."""

    path: str      # relative to the output root, posix
    size: int
    sha256: str


class OutputRoot:
    """The output folder (local or remote): containment-checked paths and atomic writes.

    Atomic means: the content goes to a hidden temporary name next to the target, is flushed (and
    fsynced with its folder on local disks), then renamed over the target. Readers see the old file or
    the complete new one, never a prefix. Object stores have no rename; there `move` is a copy, which
    is why commits never rely on a data file's presence alone (see pipeline.shards).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.filesystem, self.root = resolve_filesystem(uri)
        self.is_local = isinstance(self.filesystem, pafs.LocalFileSystem)
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
            self.root = os.path.realpath(self.root)
        else:
            self.filesystem.create_dir(self.root, recursive=True)

    def path(self, relative: str) -> str:
        """The absolute path of `relative` (already sanitised by the caller or a fixed layout name)."""
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"refusing a path outside the output root: {relative!r}")
        return posixpath.join(self.root, relative) if not self.is_local else os.path.join(self.root, relative)

    def _checked_local_parent(self, target: str) -> str:
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        real_parent = os.path.realpath(parent)
        # A symlinked folder inside the output could still point elsewhere: check after resolution.
        if os.path.commonpath([real_parent, self.root]) != self.root:
            raise ValueError(f"refusing to write {target}: it resolves outside the output root {self.root}")
        return real_parent

    @contextlib.contextmanager
    def open_atomic(self, relative: str) -> Iterator[_HashingSink]:
        """Write a file atomically; yields a binary sink. On an exception the target is left untouched."""
        target = self.path(relative)
        name = os.path.basename(target)
        if self.is_local:
            parent = self._checked_local_parent(target)
            temporary = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
            handle: BinaryIO = open(temporary, "wb")
            try:
                sink = _HashingSink(handle)
                yield sink
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                os.replace(temporary, os.path.join(parent, name))
                _fsync_dir(parent)
            except BaseException:
                handle.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        else:
            parent = posixpath.dirname(target)
            self.filesystem.create_dir(parent, recursive=True)
            temporary = posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
            stream = self.filesystem.open_output_stream(temporary)
            try:
                sink = _HashingSink(stream)
                yield sink
                stream.close()
                self.filesystem.move(temporary, target)
            except BaseException:
                if not stream.closed:
                    stream.close()
                with contextlib.suppress(OSError):
                    self.filesystem.delete_file(temporary)
                raise

    def write_bytes(self, relative: str, data: bytes) -> WrittenFile:
        """Write `data` to `relative` atomically."""
        with self.open_atomic(relative) as sink:
            sink.write(data)
        return WrittenFile(relative, sink.size, sink.digest.hexdigest())

    def write_json(self, relative: str, data: Mapping[str, Any]) -> WrittenFile:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
        return self.write_bytes(relative, text.encode())

    def read_bytes(self, relative: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def read_json(self, relative: str) -> Any:
        return json.loads(self.read_bytes(relative))

    def size(self, relative: str) -> int | None:
        """The file's size, or None when it does not exist."""
        info = self.filesystem.get_file_info(self.path(relative))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, relative: str) -> bool:
        return self.filesystem.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def list_files(self, relative_dir: str) -> list[str]:
        """Relative paths of the files directly inside `relative_dir` (empty when it does not exist)."""
        base = self.path(relative_dir)
        if self.filesystem.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.filesystem.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(posixpath.join(relative_dir, posixpath.basename(info.path))
                      for info in infos if info.type == pafs.FileType.File)

    def delete(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.filesystem.delete_file(self.path(relative))


def _fsync_dir(path: str) -> None:
    """Make a rename in `path` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------------------------------
# Shard Parquet


def _column(batch: Mapping[str, np.ndarray], name: str, rows: int) -> list[Any]:
    values = batch.get(name)
    if values is None:
        return [None] * rows
    out = []
    for value in values:
        if isinstance(value, (float, np.floating)) and np.isnan(value):
            out.append(None)  # numpy batches carry missing numbers and all-null columns as NaN
        elif isinstance(value, np.generic):
            out.append(value.item())
        elif isinstance(value, str) and value == "":
            out.append(None)
        else:
            out.append(value)
    return out


def batch_to_table(batch: Mapping[str, np.ndarray]) -> pa.Table:
    """Turn a final pipeline batch (numpy columns, see pipeline.stages) into OUTPUT_SCHEMA rows.

    The `image` struct is built from `image_bytes` and `image_path`; empty strings and NaN become nulls.
    """
    rows = len(batch["id"])
    arrays = {}
    image_bytes = _column(batch, "image_bytes", rows)
    image_path = _column(batch, "image_path", rows)
    arrays["image"] = pa.array(
        [None if data is None else {"bytes": bytes(data), "path": path} for data, path in zip(image_bytes, image_path)],
        type=IMAGE_STRUCT,
    )
    for item in OUTPUT_SCHEMA:
        if item.name == "image":
            continue
        values = _column(batch, item.name, rows)
        if item.name == "mask":
            values = [None if value is None else bytes(value) for value in values]
        arrays[item.name] = pa.array(values, type=item.type)
    return pa.table([arrays[name] for name in OUTPUT_SCHEMA.names], schema=output_schema())


@dataclass(frozen=True)
class ShardFiles:
    """What a finished ShardWriter wrote."""

    parquet: WrittenFile
    rows: int
    image_files: int


class ShardWriter:
    """Streams one shard's rows into `data/<shard>.parquet`, committed atomically on `close`.

    Rows are buffered up to one row group, so memory holds at most `row_group_size` encoded images.
    With `write_images`, each row's output image is also written (atomically) to
    `images/<safe id>` in the input's format.
    """

    def __init__(self, root: OutputRoot, shard_name: str, config: OutputConfig) -> None:
        self.root = root
        self.config = config
        self.relative = f"{DATA_DIR}/{shard_name}.parquet"
        self._context = root.open_atomic(self.relative)
        self._sink = self._context.__enter__()
        compression = None if config.compression == "none" else config.compression
        self._writer = pq.ParquetWriter(self._sink, output_schema(), compression=compression)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0
        self.image_files = 0
        self._closed = False

    def write_batch(self, batch: Mapping[str, np.ndarray]) -> pa.Table:
        """Add a batch of final rows; returns them as an Arrow table (for statistics)."""
        table = batch_to_table(batch)
        if self.config.write_images:
            self._write_image_files(table)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.config.row_group_size:
            self._flush()
        return table

    def _write_image_files(self, table: pa.Table) -> None:
        for image in table.column("image").to_pylist():
            if image is None:
                continue
            self.root.write_bytes(f"{IMAGES_DIR}/{image['path']}", image["bytes"])
            self.image_files += 1

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._writer.write_table(table, row_group_size=self.config.row_group_size)
        self._pending, self._pending_rows = [], 0

    def close(self) -> ShardFiles:
        """Finish the Parquet file and move it into place."""
        self._flush()
        self._writer.close()
        self._context.__exit__(None, None, None)
        self._closed = True
        return ShardFiles(WrittenFile(self.relative, self._sink.size, self._sink.digest.hexdigest()),
                          self.rows, self.image_files)

    def abort(self) -> None:
        """Drop the temporary file; the shard's previous state (if any) is untouched."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._writer.close()
        error = RuntimeError("shard aborted")
        with contextlib.suppress(RuntimeError):
            self._context.__exit__(type(error), error, None)
