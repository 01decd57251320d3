"""Encode stage: the output image in the input's format and the mask as PNG (bytes only leave it)."""
from __future__ import annotations

import pickle

import numpy as np

from pipeline.stages.common import (
    FAILED,
    NO_HOLE,
    NO_IMAGE,
    OK,
    Batch,
    ensure_row_columns,
    fail_row,
    float_column,
    objects,
    row_count,
    stage_error,
    stage_timer,
    text,
)


def encode_rgb(rgb: np.ndarray, alpha: np.ndarray, image_format: str, mode: str = "", save_info: bytes = b"",
               changed: np.ndarray | None = None, jpeg_tables: str = "high") -> bytes:
    """uint8 H×W×3 (+ alpha) → bytes like the input: its format, mode and metadata when `save_info`
    (from `decode_bytes`) is given, else plain `image_format` (PNG when unknown). `changed` (the hole)
    lets unchanged pixels keep the input's exact grey/palette/CMYK/16-bit values; `jpeg_tables` is
    pipeline.imageio.encode_image's."""
    from pipeline.imageio import DecodedImage, encode_image

    alpha_or_none = None if alpha is None or alpha.size == 0 else alpha
    if not save_info:
        return encode_image(rgb, alpha_or_none, like=image_format or "PNG")
    like = DecodedImage(rgb=rgb, alpha=alpha_or_none, format=image_format, mode=mode,
                        save=pickle.loads(save_info))  # produced by decode_bytes in this job, never read from disk
    return encode_image(rgb, alpha_or_none, like=like, changed=changed, jpeg_tables=jpeg_tables)


def encode_mask(hole: np.ndarray) -> bytes:
    """bool H×W hole → single-channel PNG, white = hole."""
    from pipeline.masks.maskio import encode_hole_png

    return encode_hole_png(hole)



class EncodeStage:
    """Encodes the output image in the input's format (`image_bytes`, with `image_path` its relative
    file name) and the mask as PNG; drops the decoded arrays so only bytes travel to the writer.

    Rows that were not inpainted (nothing to remove, skipped) keep their input bytes unchanged.
    `jpeg_tables`: "high" (quality 95, finer where the source was) or "source" (the source's own JPEG
    quantisation: same file sizes); see pipeline.imageio.encode_image.
    """

    ARRAY_COLUMNS = ("image", "alpha", "restored", "hole", "reference", "bytes", "reference_bytes", "save_info")

    def __init__(self, jpeg_tables: str = "high") -> None:
        from pipeline.imageio import check_jpeg_tables

        check_jpeg_tables(jpeg_tables)  # here, not on every row
        self.jpeg_tables = jpeg_tables

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.output.layout import image_file_name

        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        outputs, paths, masks = [None] * rows, [""] * rows, [None] * rows
        times = float_column(batch, "time_encode_s")
        for index in range(rows):
            status = text(batch["status"][index])
            if status == FAILED:
                continue
            with stage_timer(times, [index]):
                hole = np.asarray(batch["hole"][index], bool) if "hole" in batch else NO_HOLE
                restored = batch["restored"][index] if "restored" in batch else NO_IMAGE
                image_format = text(batch["format"][index]) if "format" in batch else ""
                try:
                    if hole.size:
                        masks[index] = encode_mask(hole)
                    if status == OK and np.asarray(restored).size:
                        outputs[index] = encode_rgb(
                            restored, batch["alpha"][index], image_format,
                            text(batch["mode"][index]) if "mode" in batch else "",
                            bytes(batch["save_info"][index]) if "save_info" in batch else b"", changed=hole,
                            jpeg_tables=self.jpeg_tables)
                    elif "bytes" in batch and batch["bytes"][index] is not None and len(batch["bytes"][index]):
                        outputs[index] = bytes(batch["bytes"][index])
                except Exception as exc:  # noqa: BLE001
                    fail_row(batch, index, stage_error("encode", exc))
                    outputs[index] = None
                    continue
                if outputs[index] is not None:
                    paths[index] = image_file_name(text(batch["id"][index]), image_format)
        for column in self.ARRAY_COLUMNS:
            batch.pop(column, None)
        batch.update(image_bytes=objects(outputs), image_path=objects(paths), mask=objects(masks),
                     time_encode_s=times)
        return batch
