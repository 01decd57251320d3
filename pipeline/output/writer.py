"""Writing a shard: one Parquet file (Hugging Face `datasets`-loadable) and, optionally, image files
mirroring the input tree."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import OutputConfig
from pipeline.output.layout import data_file, image_file, part_file, parts_dir
from pipeline.output.root import OutputRoot, WrittenFile

# Columns a shard's statistics never need: the bulky ones.
STATS_DROP = ("image", "mask", "mask_details", "source")
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
        ("precision", pa.string()),      # what the engine computed in: float32, bfloat16, ... (uint8: OpenCV)
        ("checkpoint_sha256", pa.string()),
        ("seed", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),         # the input's image format (JPEG, PNG, ...); the output keeps it
        ("image_write", pa.string()),    # how `image` was written: spliced | reencoded | encoded | copied
        ("image_write_note", pa.string()),  # why (re-encoded JPEGs), or what splicing re-coded
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
        self.relative = data_file(shard_name)
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
            self.root.write_bytes(image_file(image["path"]), image["bytes"])
            self.image_files += 1

    def write_table(self, table: pa.Table) -> None:
        """Add final rows already in OUTPUT_SCHEMA form (their image files, if any, are written)."""
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.config.row_group_size:
            self._flush()

    def _flush(self, final: bool = False) -> None:
        """Write the buffered rows in whole row groups (all of them when `final`): the file's layout then
        depends on its rows only, not on how they arrived."""
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        size = self.config.row_group_size
        whole = table.num_rows if final else table.num_rows - table.num_rows % size
        if whole:
            self._writer.write_table(table.slice(0, whole), row_group_size=size)
        rest = table.slice(whole)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> ShardFiles:
        """Finish the Parquet file and move it into place."""
        self._flush(final=True)
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


def assemble_shard(output: OutputConfig, shard: str, groups: int) -> ShardFiles:
    """Join the shard's part files (groups 0 … `groups`-1, in row order) into `data/<shard>.parquet`,
    atomically, then delete them. Runs on a worker: the rows go from the output filesystem back to it,
    never through the driver. Memory holds one part and one row group at a time."""
    root = OutputRoot(output.uri)
    writer = ShardWriter(root, shard, output)
    images = 0
    try:
        for group in range(groups):
            table = root.read_parquet(part_file(shard, group)).replace_schema_metadata(None)
            images += table.num_rows - table.column("image").null_count if output.write_images else 0
            writer.write_table(table.cast(output_schema()))
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    root.delete_dir(parts_dir(shard))
    return ShardFiles(files.parquet, files.rows, images)

