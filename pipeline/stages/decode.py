"""Decode stage: encoded bytes → RGB pixels, alpha and the save info the encoder needs."""
from __future__ import annotations

import logging
import pickle

import numpy as np

from pipeline.stages.common import (
    NO_ALPHA,
    NO_IMAGE,
    Batch,
    ensure_row_columns,
    fail_row,
    float_column,
    objects,
    pending_rows,
    row_count,
    stage_error,
    stage_timer,
    text,
)

log = logging.getLogger(__name__)


def decode_bytes(data: bytes, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray, str, str, bytes]:
    """Encoded image → (uint8 H×W×3 RGB upright, uint8 H×W alpha or 0×0, format, mode, save info).

    The save info (pipeline.imageio.SaveInfo: mode, native pixels, palette, ICC/EXIF, JPEG settings)
    travels pickled so the encode task can write the output like its input without decoding it again.
    """
    from pipeline.imageio import decode_image

    decoded = decode_image(data) if max_pixels is None else decode_image(data, max_pixels=max_pixels)
    alpha = NO_ALPHA if decoded.alpha is None else np.ascontiguousarray(decoded.alpha)
    return (np.ascontiguousarray(decoded.rgb), alpha, decoded.format, decoded.mode,
            pickle.dumps(decoded.save, protocol=pickle.HIGHEST_PROTOCOL))



class DecodeStage:
    """Decodes `bytes` (and `reference_bytes`) into `image`, `alpha`, `format`, `width`, `height`.

    Corrupt, truncated, empty, non-image and oversized (decompression bomb) inputs fail with the
    decoder's reason; modes (16-bit, CMYK, palette, grayscale) become RGB and EXIF rotation is applied.
    """

    def __init__(self, bytes_column: str = "bytes", max_pixels: int | None = None) -> None:
        self.bytes_column = bytes_column
        self.max_pixels = max_pixels

    def __call__(self, batch: Batch) -> Batch:
        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        images, alphas = [NO_IMAGE] * rows, [NO_ALPHA] * rows
        references = [NO_IMAGE] * rows
        formats, modes, save_infos = [""] * rows, [""] * rows, [b""] * rows
        widths, heights = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
        times = float_column(batch, "time_decode_s")
        reference_bytes = batch.get("reference_bytes")
        for index in pending_rows(batch):
            with stage_timer(times, [index]):
                data = batch[self.bytes_column][index] if self.bytes_column in batch else None
                if data is None or len(data) == 0:
                    fail_row(batch, index, "decode: empty file (0 bytes)")
                    continue
                try:
                    images[index], alphas[index], formats[index], modes[index], save_infos[index] = decode_bytes(
                        bytes(data), self.max_pixels)
                except Exception as exc:  # noqa: BLE001 - any decoder failure is this row's failure
                    fail_row(batch, index, stage_error("decode", exc))
                    continue
                heights[index], widths[index] = images[index].shape[:2]
                if reference_bytes is not None and reference_bytes[index] is not None and len(reference_bytes[index]):
                    try:
                        references[index] = decode_bytes(bytes(reference_bytes[index]), self.max_pixels)[0]
                    except Exception as exc:  # noqa: BLE001 - a bad reference only loses PSNR/SSIM
                        log.warning("%s: reference image unreadable (%s); no PSNR/SSIM", text(batch["id"][index]), exc)
        batch.update(image=objects(images), alpha=objects(alphas), reference=objects(references),
                     format=objects(formats), mode=objects(modes), save_info=objects(save_infos),
                     width=widths, height=heights, time_decode_s=times)
        batch.pop("reference_bytes", None)
        return batch
