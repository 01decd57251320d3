"""Ray Data stages of the restoration job, usable on their own in any `map_batches` pipeline.

Each stage is a callable class, constructed once per task or actor with its configuration passed in,
whose `__call__(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]` keeps every row: a row that
fails gets `status = "failed"` and an `error` naming the stage and the reason, and later stages pass
it through untouched. Stateless stages (fetch, decode, encode) are cheap to pickle and run as Ray
tasks; model stages (mask, inpaint, metrics) load their model in `__init__` and run in actor pools.

Columns (all optional ones are created when missing, so `read_binary_files` output works as is):

    id, status, error         row id; "" (pending) → "ok" | "failed" | "skipped"; reason
    bytes                     encoded input image (FetchStage, or `read_binary_files`)
    image, alpha, format      decoded uint8 H×W×3 RGB, H×W alpha (0×0 when none), input format
    hole, hole_ratio, ...     bool H×W hole mask (True = remove) and its provenance
    restored                  uint8 H×W×3 after inpainting (pixels outside the hole unchanged)
    image_bytes, mask         the encoded output image (input's format) and the PNG mask
    time_<stage>_s            seconds each stage spent on the row (batched stages: shared evenly)

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    ds = ds.map_batches(DecodeStage())
    ds = ds.map_batches(MaskStage, fn_constructor_kwargs={"method": "text"},
                        compute=ray.data.ActorPoolStrategy(size=1), batch_size=8)
    ds = ds.map_batches(InpaintStage, fn_constructor_kwargs={"engine": "opencv"},
                        compute=ray.data.ActorPoolStrategy(size=1), batch_size=4)
    ds = ds.map_batches(EncodeStage())
"""
from __future__ import annotations
from pipeline.stages.common import (
    FAILED,
    FAULT_INJECTION_ENV,
    NO_ALPHA,
    NO_HOLE,
    NO_IMAGE,
    OK,
    PENDING,
    SKIPPED,
    Batch,
    ensure_row_columns,
    objects,
    row_count,
    row_seed,
    run_stages,
    stage_error,
    text,
)
from pipeline.stages.decode import DecodeStage, decode_bytes
from pipeline.stages.encode import EncodeStage, encode_mask, encode_rgb
from pipeline.stages.fetch import FetchStage
from pipeline.stages.inpaint import Engine, InpaintStage
from pipeline.stages.mask import DETECTING_METHODS, MaskStage, build_mask_generator, consistent_fit_options
from pipeline.stages.metrics import MetricsStage

__all__ = [
    "FAILED", "FAULT_INJECTION_ENV", "NO_ALPHA", "NO_HOLE", "NO_IMAGE", "OK", "PENDING", "SKIPPED", "Batch",
    "DETECTING_METHODS", "DecodeStage", "EncodeStage", "Engine", "FetchStage", "InpaintStage", "MaskStage",
    "MetricsStage", "build_mask_generator", "consistent_fit_options", "decode_bytes", "encode_mask", "encode_rgb",
    "ensure_row_columns", "objects", "row_count", "row_seed", "run_stages", "stage_error", "text",
]
