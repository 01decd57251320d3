"""Fitting the consistent-watermark masks once per job, before any shard is masked."""
from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.job.errors import JobError
from pipeline.job.plan import Plan
from pipeline.output.layout import TEMPLATE_FILE
from pipeline.stages import FAILED, DecodeStage, FetchStage, build_mask_generator, run_stages, text

log = logging.getLogger(__name__)


def _fit_sample_rows(listing: pa.Table, size: int) -> list[int]:
    """Rows spread evenly over the listing (deterministic), leaving out duplicates and unreadable rows."""
    usable = [i for i, (dup, err) in enumerate(zip(listing.column("duplicate_of").to_pylist(),
                                                   listing.column("listing_error").to_pylist())) if not dup and not err]
    if len(usable) <= size:
        return usable
    return [usable[int(k * len(usable) / size)] for k in range(size)]


def fit_consistent_masks(plan: Plan, options: Mapping[str, Any]) -> bytes:
    """Fit the consistent-watermark generator (with `options`) once per job on a sample; the template is
    saved with the output so a resumed job masks with exactly the same template."""
    if plan.root.exists(TEMPLATE_FILE):
        return plan.root.read_bytes(TEMPLATE_FILE)
    masks = plan.config.masks
    rows = _fit_sample_rows(plan.listing, masks.fit_sample_size)
    sample = plan.listing.take(rows).to_pydict()
    batch = {name: np.array(values, dtype=object) for name, values in sample.items()}
    batch["status"] = np.array([""] * len(rows), dtype=object)
    batch = run_stages(batch, [FetchStage(plan.config.inputs.allow_external_paths),
                               DecodeStage(max_pixels=plan.config.inputs.max_pixels)])
    images = [image for image, status in zip(batch["image"], batch["status"]) if text(status) != FAILED]
    log.info("fitting the consistent-watermark masks on %d images", len(images))
    generator = build_mask_generator("consistent", options)
    try:
        report = generator.fit(images)
    except Exception as exc:  # noqa: BLE001 - a failed fit makes the whole job pointless
        raise JobError(f"fitting the consistent-watermark masks failed on {len(images)} images: {exc}") from exc
    log.info("consistent-watermark fit: %s", getattr(report, "as_dict", lambda: report)())
    buffer = io.BytesIO()
    generator.template.save(buffer)
    template_npz = buffer.getvalue()
    if plan.config.engine.invert == "auto" and plan.config.masks.method == "consistent" \
            and generator.template.matte is None:
        # The generator estimates the matte itself (its `matte_check`); without it, estimate it here.
        from pipeline.watermark.fit import fit_matte_into_template

        if report.matte_error:
            warning: str | None = f"watermark inversion is off for this job (holes are inpainted): {report.matte_error}"
        else:
            template_npz, warning = fit_matte_into_template(generator, images, template_npz)
        if warning:
            log.warning("%s", warning)
            plan.warnings.append(warning)
    plan.root.write_bytes(TEMPLATE_FILE, template_npz)
    return template_npz
