"""Inpaint stage: fills each row's hole with an engine (MAT or OpenCV), one model per actor."""
from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.stages.common import (
    NO_IMAGE,
    OK,
    Batch,
    ensure_row_columns,
    fail_row,
    float_column,
    object_column,
    pending_rows,
    row_count,
    row_seed,
    stage_error,
    stage_timer,
    text,
)

log = logging.getLogger(__name__)


class Engine:
    """An inpainting engine behind one call: `inpaint(images, holes, seeds) -> restored images`."""

    def __init__(self, name: str, checkpoint: str | None = None, *, device: str = "cpu", dtype: str = "float32",
                 options: Mapping[str, Any] | None = None) -> None:
        self.name = name
        options = dict(options or {})
        if name == "mat":
            import torch

            from matcore import load_generator
            from matcore.inpainter import Inpainter

            if checkpoint is None:
                raise ValueError("the MAT engine needs a checkpoint")
            generator = load_generator(checkpoint, device)
            self._impl = Inpainter(generator, device=torch.device(device), dtype=getattr(torch, dtype), **options)
        elif name == "opencv":
            from matcore.classical import ClassicalInpainter

            self._impl = ClassicalInpainter(**options)
        else:
            raise ValueError(f"unknown engine {name!r} (expected 'mat' or 'opencv')")

    def inpaint(self, images: list[np.ndarray], holes: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        return list(self._impl.inpaint(images, holes, seeds=seeds))



def _exit_once(marker: str) -> None:
    """Kill this process the first time any process gets here (the marker file makes it once)."""
    try:
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(descriptor, str(os.getpid()).encode())
    os.close(descriptor)
    log.error("fault injection: inpainting actor %d exits now", os.getpid())
    os._exit(17)


def _record_load(folder: str) -> None:
    """One file per engine built in this process (fault-injection hook `count_loads_dir`)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"load-{os.getpid()}-{uuid.uuid4().hex[:8]}"), "w") as handle:
        handle.write(f"{os.getpid()}\n")


class InpaintStage:
    """Fills each pending row's hole with the engine (model loaded once per actor).

    `engine` is "mat" (with `checkpoint`) or "opencv". Each row uses its own seed (`seed` column, else
    derived from the id). Rows go to the engine one image per call (its windows still batch together),
    which keeps outputs independent of how rows are batched; `batch_across_images` sends the whole batch
    in one call instead (GPU throughput) and falls back to one by one when that call fails, so only
    the culprit row fails. `threads` bounds torch/OpenCV threads on CPU actors.
    `fault_injection` is a test and bench hook: {"exit_once_marker": path} kills the actor process the
    first time a batch arrives (once per marker file), {"delay_s": x} slows every batch down by x seconds
    and {"delay_per_row_s": x} by x per row of the batch (a simulated model of fixed latency), with
    {"delay_from_shard": k} only batches holding a row of shard index k or later;
    {"count_loads_dir": path} leaves one file there per engine built (to count model loads).
    """

    def __init__(self, engine: str, checkpoint: str | None = None, *, checkpoint_sha256: str = "",
                 device: str = "auto", dtype: str = "float32", options: Mapping[str, Any] | None = None,
                 threads: int | None = None, base_seed: int = 0, batch_across_images: bool = False,
                 fault_injection: Mapping[str, Any] | None = None, template_npz: bytes | None = None,
                 invert: str = "auto", invert_options: Mapping[str, Any] | None = None) -> None:
        if threads:
            import cv2

            cv2.setNumThreads(threads)
        if engine == "mat":
            import torch

            if threads:
                torch.set_num_threads(threads)
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cpu":
                dtype = "float32"  # bf16/fp16 on CPU is slower and less exact
        else:
            device = "cpu"
        self.batch_across_images = batch_across_images
        self.engine_name = engine
        self.checkpoint_sha256 = checkpoint_sha256
        self.base_seed = base_seed
        self.fault_injection = dict(fault_injection or {})
        self.engine = Engine(engine, checkpoint, device=device, dtype=dtype, options=options)
        if self.fault_injection.get("count_loads_dir"):
            _record_load(str(self.fault_injection["count_loads_dir"]))
        # An alpha-blended watermark whose matte came with the template is inverted first; the engine
        # only fills what inversion cannot recover (pipeline.watermark).
        from pipeline.watermark.restore import InversionStep

        self.inversion = InversionStep.from_template(template_npz, invert_options) if invert == "auto" else None

    def _inpaint(self, images: list[np.ndarray], holes: list[np.ndarray], seeds: list[int]) -> list[Any]:
        if self.batch_across_images and len(images) > 1:
            try:
                return self.engine.inpaint(images, holes, seeds)
            except Exception:  # noqa: BLE001 - retry row by row so one bad row does not fail the batch
                log.debug("batch inpaint failed, retrying rows one by one:\n%s", traceback.format_exc())
        results: list[Any] = []
        for image, hole, seed in zip(images, holes, seeds):
            try:
                results.append(self.engine.inpaint([image], [hole], [seed])[0])
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    def _invert(self, batch: Batch, images: dict[int, np.ndarray], holes: dict[int, np.ndarray]) -> dict[int, Any]:
        """Invert the rows whose watermark allows it, replacing their entries in `images` / `holes` by the
        inverted image and the hole still to inpaint. Returns those rows' InversionOutcome by index."""
        if self.inversion is None or "mask_method" not in batch:
            return {}
        done = {}
        for index in images:
            try:
                outcome = self.inversion(images[index], holes[index], text(batch["mask_method"][index]),
                                         text(batch["mask_details"][index]) if "mask_details" in batch else "")
            except Exception as exc:  # noqa: BLE001 - the engine then fills the whole hole, as without inversion
                log.warning("%s: %s; inpainting the whole hole", text(batch["id"][index]), stage_error("invert", exc))
                continue
            if outcome is not None and outcome.inverted_px:
                images[index], holes[index] = outcome.image, outcome.inpaint_hole
                done[index] = outcome
        return done

    def _delays(self, batch: Batch) -> bool:
        first = self.fault_injection.get("delay_from_shard")
        return first is None or "shard" not in batch or bool((np.asarray(batch["shard"]) >= int(first)).any())

    def __call__(self, batch: Batch) -> Batch:
        if self.fault_injection.get("exit_once_marker"):
            _exit_once(str(self.fault_injection["exit_once_marker"]))
        if self._delays(batch):
            delay = float(self.fault_injection.get("delay_s") or 0.0)
            delay += float(self.fault_injection.get("delay_per_row_s") or 0.0) * row_count(batch)
            if delay:
                time.sleep(delay)
        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        restored = object_column(batch, "restored", NO_IMAGE)
        engines, shas = object_column(batch, "engine", ""), object_column(batch, "checkpoint_sha256", "")
        seeds = (np.asarray(batch["seed"], np.int64).copy() if "seed" in batch else
                 np.array([row_seed(self.base_seed, text(i)) for i in batch["id"]], np.int64))
        times = float_column(batch, "time_inpaint_s")
        counts = {name: float_column(batch, name) for name in ("hole_inverted_px", "hole_inpainted_px", "invert_residual")}
        pending = [i for i in pending_rows(batch) if "hole" in batch and np.asarray(batch["hole"][i]).any()]
        with stage_timer(times, pending):
            images = {i: batch["image"][i] for i in pending}
            holes = {i: np.asarray(batch["hole"][i], bool) for i in pending}
            inverted = self._invert(batch, images, holes)
            # What inversion recovered becomes the engine's input; it fills only what is left.
            to_engine = [i for i in pending if holes[i].any()]
            outputs = dict(zip(to_engine, self._inpaint([images[i] for i in to_engine], [holes[i] for i in to_engine],
                                                        [int(seeds[i]) for i in to_engine]))) if to_engine else {}
        for index in pending:
            output = outputs.get(index, images[index])
            if isinstance(output, BaseException):
                fail_row(batch, index, stage_error("inpaint", output))
                continue
            restored[index] = np.ascontiguousarray(output, dtype=np.uint8)
            engines[index], shas[index] = self.engine_name, self.checkpoint_sha256
            outcome = inverted.get(index)
            counts["hole_inverted_px"][index] = outcome.inverted_px if outcome else 0
            counts["hole_inpainted_px"][index] = outcome.inpainted_px if outcome else int(holes[index].sum())
            if outcome:
                counts["invert_residual"][index] = outcome.residual
                engines[index] = f"invert+{self.engine_name}" if outcome.inpainted_px else "invert"
                shas[index] = self.checkpoint_sha256 if outcome.inpainted_px else ""
            batch["status"][index] = OK
        batch.update(restored=restored, engine=engines, checkpoint_sha256=shas, seed=seeds, time_inpaint_s=times,
                     **counts)
        assert row_count(batch) == rows
        return batch
