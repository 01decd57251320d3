"""Write stage: a group's final rows become a Parquet part file (and image files) under the output root,
written by the worker that made them; only their statistics leave it.

The part files of a shard are joined into `data/<shard>.parquet` once every group is written
(pipeline.output.writer.assemble_shard); the driver then writes the shard's marker.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.config import OutputConfig
from pipeline.output.layout import image_file, part_file, shard_name
from pipeline.output.root import OutputRoot
from pipeline.output.writer import STATS_DROP, batch_to_table
from pipeline.stages.common import Batch, row_count


class WriteStage:
    """Writes one group of final rows (`shard` and `group` columns set, one value each) and returns their
    statistics columns as an Arrow table: everything but the image, mask, provenance and source bytes,
    plus `image_path` (the row's image file name, null when it has no image)."""

    def __init__(self, output: OutputConfig) -> None:
        self.output = output
        self.root: OutputRoot | None = None  # opened on first use: the constructor may run on the driver

    def __call__(self, batch: Batch) -> pa.Table:
        if self.root is None:
            self.root = OutputRoot(self.output.uri)
        shards, groups = np.unique(np.asarray(batch["shard"])), np.unique(np.asarray(batch["group"]))
        if len(shards) != 1 or len(groups) != 1:
            raise ValueError(f"a write batch holds one group of one shard, got shards {shards} groups {groups}")
        table = batch_to_table(batch)
        if self.output.write_images:
            for image in table.column("image").to_pylist():
                if image is not None:
                    self.root.write_bytes(image_file(image["path"]), image["bytes"])
        self.root.write_parquet(part_file(shard_name(int(shards[0])), int(groups[0])), table, compression="none")
        stats = table.drop_columns(list(STATS_DROP))
        paths = [None if image is None else image["path"] for image in table.column("image").to_pylist()]
        stats = stats.append_column("image_path", pa.array(paths, pa.string()))
        stats = stats.append_column("shard", pa.array(np.asarray(batch["shard"]), pa.int32()))
        assert stats.num_rows == row_count(batch)
        return stats
