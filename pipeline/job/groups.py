"""Model batches as the unit of work between the job's stages.

A shard is cut into groups of `execution.batch_size.inpaint` consecutive rows. Each group travels through
Ray Data as ONE row whose `payload` holds the group's whole column batch (pickled): Ray may merge or split
blocks as it likes, it never splits a row, so every stage sees whole groups. The inpainting actor then
batches exactly the windows of one group in one forward: the batch composition is a function of the shard,
not of Ray's scheduling, and a retried or resumed shard is byte-identical to an uninterrupted run.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.stages import Batch, objects

PAYLOAD = "payload"
# Descriptor columns each group row carries next to its payload (for logs and the driver's bookkeeping).
GROUP_COLUMNS = ("shard", "group")


def pack(batch: Batch) -> bytes:
    """A flat column batch → bytes (protocol 5: numpy arrays are copied as raw buffers, not re-encoded)."""
    return pickle.dumps(batch, protocol=5)


def unpack(payload: bytes) -> Batch:
    """The inverse of `pack`; payloads are made by this job's own stages, never read from disk."""
    return pickle.loads(payload)


class GroupStage:
    """Runs a flat-batch stage (pipeline.stages) on each group row of a Ray batch.

    Ray Data builds it once per task or actor, so a model stage's model loads once per actor per job.
    `stage` is the stage class and `kwargs` its constructor arguments.
    """

    def __init__(self, stage: Callable[..., Callable[[Batch], Any]], kwargs: Mapping[str, Any] | None = None) -> None:
        self.stage = stage(**dict(kwargs or {}))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = [pack(self.stage(unpack(bytes(payload)))) for payload in batch[PAYLOAD]]
        return {**{name: np.asarray(batch[name]) for name in GROUP_COLUMNS}, PAYLOAD: objects(payloads)}


class GroupSink:
    """The last stage: runs a stage returning a small Arrow table per group (the write stage) and hands
    the driver those tables, one row per input row, with no image bytes."""

    def __init__(self, stage: Callable[..., Callable[[Batch], pa.Table]], kwargs: Mapping[str, Any] | None = None) -> None:
        self.stage = stage(**dict(kwargs or {}))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> pa.Table:
        return pa.concat_tables([self.stage(unpack(bytes(payload))) for payload in batch[PAYLOAD]])
