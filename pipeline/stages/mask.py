"""Mask stage: each row's hole mask from a pipeline.masks generator, post-processed."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.stages.common import (
    NO_HOLE,
    OK,
    SKIPPED,
    Batch,
    ensure_row_columns,
    fail_row,
    float_column,
    object_column,
    pending_rows,
    row_count,
    stage_error,
    stage_timer,
    text,
)

log = logging.getLogger(__name__)

# Mask methods whose generator detects (rather than looks up) what to remove: re-running them on the
# restored image tells whether the watermark is really gone.
DETECTING_METHODS = ("text", "consistent")


def postprocess_config(method: str, overrides: Mapping[str, Any] | None) -> Any:
    from pipeline.masks import default_postprocess

    return dataclasses.replace(default_postprocess(method), **dict(overrides or {}))


def template_bytes(template_npz: bytes | Sequence[Any] | None) -> bytes | None:
    """The fitted template's bytes, given as is or as a one-element list holding their ObjectRef.

    The job passes the list: Ray would put the bytes (large) in its object store itself and then warn
    that a restarted actor could lose its constructor arguments; a reference inside a list travels
    inline, the driver keeps the object alive, and each actor fetches it here.
    """
    if isinstance(template_npz, (list, tuple)):
        import ray

        return ray.get(template_npz[0])
    return template_npz


def build_mask_generator(method: str, options: Mapping[str, Any] | None = None,
                         template_npz: bytes | None = None) -> Any:
    """The named generator from pipeline.masks, fitted with `template_npz` when given: the consistent
    generator itself, or the consistent box source of a SAM generator that refines its boxes."""
    from pipeline import masks

    generator = masks.build_mask_generator(method, options)
    template_npz = template_bytes(template_npz)
    if template_npz is not None:
        from pipeline.masks.consistent import WatermarkTemplate

        fitted = getattr(generator, "box_source", None) if method == "sam" else generator
        if fitted is None or not hasattr(fitted, "template"):
            raise ValueError(f"a consistent-watermark template was given to {method!r} masks, which do not use one")
        fitted.template = WatermarkTemplate.load(io.BytesIO(template_npz))
    return generator


def consistent_fit_options(method: str, options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Options of the consistent generator a job must fit before masking (None: nothing to fit).

    That is the `consistent` method itself, or `sam` refining the boxes of a `consistent` generator.
    """
    options = dict(options or {})
    if method == "consistent":
        return options
    if method == "sam" and options.get("refine") == "consistent":
        return dict(options.get("refine_options") or {})
    return None


def _generate(generator: Any, images: list[np.ndarray], keys: list[str]) -> list[Any]:
    """Run a generator on several images: its batched path when it has one."""
    if hasattr(generator, "generate_batch"):
        return list(generator.generate_batch(images, keys))
    return [generator(image, key=key) for image, key in zip(images, keys)]


class MaskStage:
    """Makes each pending row's hole mask with a pipeline.masks generator, then post-processes it.

    A row whose final hole is empty has nothing to remove: it becomes `ok` and keeps its input image.
    A row flagged by the hole-ratio guard becomes `skipped` (it must not be inpainted blindly).
    """

    def __init__(self, method: str, options: Mapping[str, Any] | None = None,
                 postprocess: Mapping[str, Any] | None = None, template_npz: bytes | None = None,
                 key_column: str = "id") -> None:
        self.method = method
        self.generator = build_mask_generator(method, options, template_npz)
        self.postprocess = postprocess_config(method, postprocess)
        self.key_column = key_column

    def _results(self, batch: Batch, indices: list[int]) -> Iterator[tuple[int, Any]]:
        images = [batch["image"][i] for i in indices]
        # A listing saved before the `key` column existed (a resumed job) matches on ids, as it did then.
        key_column = self.key_column if self.key_column in batch else "id"
        keys = [text(batch[key_column][i]) or text(batch["id"][i]) for i in indices]
        try:
            yield from zip(indices, _generate(self.generator, images, keys))
            return
        except Exception:  # noqa: BLE001 - isolate the bad row below rather than fail the batch
            log.debug("batch masking failed, retrying rows one by one:\n%s", traceback.format_exc())
        for index, image, key in zip(indices, images, keys):
            try:
                yield index, self.generator(image, key=key)
            except Exception as exc:  # noqa: BLE001
                yield index, exc

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.masks import postprocess

        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        holes = object_column(batch, "hole", NO_HOLE)
        methods, details = object_column(batch, "mask_method", ""), object_column(batch, "mask_details", "")
        ratios = float_column(batch, "hole_ratio")
        times = float_column(batch, "time_mask_s")
        pending = pending_rows(batch)
        with stage_timer(times, pending):
            results = list(self._results(batch, pending)) if pending else []
        for index, result in results:
            if isinstance(result, BaseException):
                fail_row(batch, index, stage_error("mask", result))
                continue
            try:
                result = postprocess(result, self.postprocess)
            except Exception as exc:  # noqa: BLE001
                fail_row(batch, index, stage_error("mask", exc))
                continue
            holes[index] = result.hole
            methods[index] = result.method
            details[index] = json.dumps(result.provenance(), sort_keys=True, default=str)
            ratios[index] = result.hole_ratio
            if result.flag:
                batch["status"][index], batch["error"][index] = SKIPPED, f"mask: {result.flag}"
            elif not result.hole.any():
                batch["status"][index] = OK  # nothing to remove: the input is already clean
        batch.update(hole=holes, mask_method=methods, mask_details=details, hole_ratio=ratios, time_mask_s=times)
        assert row_count(batch) == rows
        return batch
