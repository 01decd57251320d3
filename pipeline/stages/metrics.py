"""Metrics stage: quality figures of restored rows, and the mask generator re-run on them."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.stages.common import OK, Batch, ensure_row_columns, float_column, row_count, stage_error, stage_timer, text
from pipeline.stages.mask import postprocess_config, build_mask_generator

log = logging.getLogger(__name__)


class MetricsStage:
    """Quality figures of restored rows (see pipeline.metrics), and the mask generator re-run.

    `rerun_method` (with its options/postprocess/template) re-detects on the restored image: what is
    still found inside the old hole is `residual_hole_ratio`. PSNR/SSIM need a `reference` column.
    """

    def __init__(self, ring_px: int = 12, rerun_method: str | None = None,
                 rerun_options: Mapping[str, Any] | None = None, rerun_postprocess: Mapping[str, Any] | None = None,
                 template_npz: bytes | None = None) -> None:
        self.ring_px = ring_px
        self.rerun = build_mask_generator(rerun_method, rerun_options, template_npz) if rerun_method else None
        self.rerun_postprocess = postprocess_config(rerun_method, rerun_postprocess) if rerun_method else None

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.masks import postprocess
        from pipeline.metrics import residual_detection, restoration_metrics

        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        columns = {name: float_column(batch, name) for name in (
            "seam_score", "color_delta_e", "texture_ratio", "residual_hole_ratio", "rerun_hole_ratio", "psnr", "ssim")}
        times = float_column(batch, "time_metrics_s")
        done = [i for i in range(rows) if text(batch["status"][i]) == OK and "restored" in batch
                and np.asarray(batch["restored"][i]).size]
        for index in done:
            with stage_timer(times, [index]):
                restored, hole = batch["restored"][index], np.asarray(batch["hole"][index], bool)
                reference = batch["reference"][index] if "reference" in batch else None
                reference = reference if reference is not None and np.asarray(reference).size else None
                if reference is not None and reference.shape != restored.shape:
                    log.warning("%s: reference size differs from the image; no PSNR/SSIM", text(batch["id"][index]))
                    reference = None
                try:
                    figures = dataclasses.asdict(restoration_metrics(restored, hole, ring_px=self.ring_px,
                                                                     reference=reference))
                    if self.rerun is not None:
                        found = postprocess(self.rerun(restored, key=text(batch["id"][index])), self.rerun_postprocess)
                        figures["residual_hole_ratio"] = residual_detection(hole, found.hole)
                        figures["rerun_hole_ratio"] = found.hole_ratio
                except Exception as exc:  # noqa: BLE001 - metrics never fail a restored row
                    log.warning("%s: metrics failed: %s", text(batch["id"][index]), stage_error("metrics", exc))
                    continue
                for name, value in figures.items():
                    columns[name][index] = np.nan if value is None else value
        batch.update(columns)
        batch["time_metrics_s"] = times
        return batch
