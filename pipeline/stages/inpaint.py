"""Inpaint stage: fills each row's hole with an engine (MAT or OpenCV) from matcore.build, one per actor."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from matcore.pinned import CheckpointRef
from pipeline.config import EngineConfig
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


def limit_threads(threads: int) -> None:
    """Bound the compute threads of the libraries the engine uses (those this process has imported): on a
    CPU node several actors and the decode/encode tasks share the cores."""
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


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


def _record_busy(folder: str, started: float, ended: float, rows: int) -> None:
    """Append one simulated model call (wall-clock start, end, rows) to this actor's busy log."""
    with open(os.path.join(folder, f"busy-{os.getpid()}"), "a") as handle:
        handle.write(f"{started:.4f} {ended:.4f} {rows}\n")


class InpaintStage:
    """Fills each pending row's hole with the engine, built once per actor by matcore.build.

    `config` is the job's engine section, passed whole: its name ("mat" or "opencv"; "auto" is decided
    here when no `checkpoint` is given), device, precision (`dtype`), options, base seed and
    `batch_across_images`. `checkpoint` is the driver's pinned checkpoint: each actor fetches it into
    its own node's cache (`config.cache_dir`, else the node's default) and checks its sha256.
    Each row uses its own seed (`seed` column, else derived from the id) and records the engine, the
    precision it ran in and the checkpoint's sha256. Rows go to the engine one image per call (its
    windows still batch together), which keeps outputs independent of how rows are batched;
    `batch_across_images` sends the whole batch in one call instead (GPU throughput) and falls back to
    one by one when that call fails, so only the culprit row fails. `threads` bounds torch/OpenCV
    threads on CPU actors.
    `fault_injection` is a test and bench hook: {"exit_once_marker": path} kills the actor process the
    first time a batch arrives (once per marker file), {"delay_s": x} slows every batch down by x seconds
    and {"delay_per_row_s": x} by x per row of the batch (a simulated model of fixed latency), with
    {"delay_from_shard": k} only batches holding a row of shard index k or later;
    {"count_loads_dir": path} leaves one file there per engine built (to count model loads);
    {"busy_log_dir": path} logs each delayed call's wall-clock start and end there (a bench's timeline).
    """

    def __init__(self, config: EngineConfig | None = None, checkpoint: CheckpointRef | None = None, *,
                 threads: int | None = None, fault_injection: Mapping[str, Any] | None = None,
                 template_npz: bytes | Sequence[Any] | None = None) -> None:
        from matcore.build import EngineChoice, build_engine, choose_engine

        config = config if config is not None else EngineConfig()
        if checkpoint is not None:
            choice = EngineChoice("mat" if config.name == "auto" else config.name, checkpoint)
        else:  # used on its own, not by the job: decide here what the driver would have
            choice = choose_engine(config.name, config.checkpoint, cache_dir=config.cache_dir,
                                   checkpoint_sha256=config.checkpoint_sha256)
            if choice.warning:
                log.warning(choice.warning)
        self.config = config
        self.batch_across_images = config.batch_across_images
        self.base_seed = config.seed
        self.checkpoint_sha256 = choice.checkpoint.sha256 if choice.checkpoint else ""
        self.fault_injection = dict(fault_injection or {})
        options = config.options if config.options_engine == choice.name else {}
        self.engine = build_engine(choice.name, options, checkpoint=choice.checkpoint, device=config.device,
                                   precision=config.dtype, cache_dir=config.cache_dir)
        self.info = self.engine.info  # engine name, device and the precision actually used
        if threads:
            limit_threads(threads)
        if self.fault_injection.get("count_loads_dir"):
            _record_load(str(self.fault_injection["count_loads_dir"]))
        if self.fault_injection.get("busy_log_dir"):  # when this actor was ready (a zero-length call)
            _record_busy(str(self.fault_injection["busy_log_dir"]), time.time(), time.time(), 0)
        # An alpha-blended watermark whose matte came with the template is inverted first; the engine
        # only fills what inversion cannot recover (pipeline.watermark).
        from pipeline.stages.mask import template_bytes
        from pipeline.watermark.restore import InversionStep

        self.inversion = (InversionStep.from_template(template_bytes(template_npz), config.invert_options)
                          if config.invert == "auto" else None)

    def _inpaint(self, images: list[np.ndarray], holes: list[np.ndarray], seeds: list[int]) -> list[Any]:
        if self.batch_across_images and len(images) > 1:
            try:
                return list(self.engine.inpaint(images, holes, seeds))
            except Exception:  # noqa: BLE001 - retry row by row so one bad row does not fail the batch
                log.debug("batch inpaint failed, retrying rows one by one:\n%s", traceback.format_exc())
        results: list[Any] = []
        for image, hole, seed in zip(images, holes, seeds):
            try:
                results.append(self.engine.inpaint([image], [hole], [seed])[0])
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    def _confirm_unmatched(self, batch: Batch) -> dict[int, Any]:
        """Rows whose consistent mask is empty because the template matched below its threshold get a
        second opinion from the watermark's matte at the best match and at the fit's size and offset; where
        the matte confirms the watermark, the row is inverted there and its hole becomes the footprint
        touched (the mask column then says so).
        Returns those rows' InversionOutcome by index; the batch's hole columns are updated in place."""
        if self.inversion is None or "mask_method" not in batch or "mask_details" not in batch or "hole" not in batch:
            return {}
        done = {}
        holes, details = object_column(batch, "hole", None), object_column(batch, "mask_details", "")
        ratios = float_column(batch, "hole_ratio")
        for index in pending_rows(batch):
            if np.asarray(holes[index]).any():  # matched: inverted by `_invert` with the other holes
                continue
            try:
                found = self.inversion.confirm_unmatched(batch["image"][index], text(batch["mask_method"][index]),
                                                         text(details[index]))
            except Exception as exc:  # noqa: BLE001 - the row stays as the mask left it (untouched)
                log.warning("%s: %s; left untouched", text(batch["id"][index]), stage_error("invert", exc))
                continue
            if found is None:
                continue
            hole, outcome = found
            provenance = json.loads(text(details[index]) or "{}")
            holes[index], ratios[index] = hole, float(hole.mean())
            provenance.setdefault("details", {})["matched"] = "matte"
            provenance["hole_ratio"] = round(float(hole.mean()), 6)
            details[index] = json.dumps(provenance)
            done[index] = outcome
        if done:
            batch.update(hole=holes, mask_details=details, hole_ratio=ratios)
        return done

    def _invert(self, batch: Batch, images: dict[int, np.ndarray], holes: dict[int, np.ndarray],
                confirmed: Mapping[int, Any]) -> dict[int, Any]:
        """Invert the rows whose watermark allows it, replacing their entries in `images` / `holes` by the
        inverted image and the hole still to inpaint. Returns those rows' InversionOutcome by index.
        `confirmed` are rows `_confirm_unmatched` inverted already."""
        for index, outcome in confirmed.items():
            if index in images:
                images[index], holes[index] = outcome.image, outcome.inpaint_hole
        if self.inversion is None or "mask_method" not in batch:
            return dict(confirmed)
        done = dict(confirmed)
        for index in images:
            if index in confirmed:
                continue
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
                started = time.time()
                time.sleep(delay)
                if self.fault_injection.get("busy_log_dir"):
                    _record_busy(str(self.fault_injection["busy_log_dir"]), started, time.time(), row_count(batch))
        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        restored = object_column(batch, "restored", NO_IMAGE)
        engines, shas = object_column(batch, "engine", ""), object_column(batch, "checkpoint_sha256", "")
        precisions = object_column(batch, "precision", "")
        seeds = (np.asarray(batch["seed"], np.int64).copy() if "seed" in batch else
                 np.array([row_seed(self.base_seed, text(i)) for i in batch["id"]], np.int64))
        times = float_column(batch, "time_inpaint_s")
        counts = {name: float_column(batch, name) for name in ("hole_inverted_px", "hole_inpainted_px", "invert_residual")}
        confirmed = self._confirm_unmatched(batch)
        pending = [i for i in pending_rows(batch) if "hole" in batch and np.asarray(batch["hole"][i]).any()]
        with stage_timer(times, pending):
            images = {i: batch["image"][i] for i in pending}
            holes = {i: np.asarray(batch["hole"][i], bool) for i in pending}
            inverted = self._invert(batch, images, holes, confirmed)
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
            engines[index], precisions[index], shas[index] = self.info.engine, self.info.dtype, self.checkpoint_sha256
            outcome = inverted.get(index)
            counts["hole_inverted_px"][index] = outcome.inverted_px if outcome else 0
            counts["hole_inpainted_px"][index] = outcome.inpainted_px if outcome else int(holes[index].sum())
            if outcome:
                counts["invert_residual"][index] = outcome.residual
                engines[index] = f"invert+{self.info.engine}" if outcome.inpainted_px else "invert"
                shas[index] = self.checkpoint_sha256 if outcome.inpainted_px else ""
            batch["status"][index] = OK
        batch.update(restored=restored, engine=engines, precision=precisions, checkpoint_sha256=shas, seed=seeds,
                     time_inpaint_s=times, **counts)
        assert row_count(batch) == rows
        return batch
