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

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]

PENDING, OK, FAILED, SKIPPED = "", "ok", "failed", "skipped"
NO_ALPHA = np.zeros((0, 0), np.uint8)
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
NO_HOLE = np.zeros((0, 0), bool)
# Mask methods whose generator detects (rather than looks up) what to remove: re-running them on the
# restored image tells whether the watermark is really gone.
DETECTING_METHODS = ("text", "consistent")
FAULT_INJECTION_ENV = "MATPIPE_FAULT_INJECTION"


# --------------------------------------------------------------------------------------------------
# Batch helpers


def objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding `values` as they are (np.array would stack equal-shape arrays)."""
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array


def text(value: Any) -> str:
    """A string cell as str: Ray turns all-null string columns into float NaN, bytes stay bytes."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def row_count(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def ensure_row_columns(batch: Batch) -> Batch:
    """Add `id`, `status` and `error` when a batch comes from elsewhere (e.g. `read_binary_files`)."""
    rows = row_count(batch)
    if "id" not in batch:
        batch["id"] = objects([text(p) for p in batch["path"]]) if "path" in batch else objects(
            [str(i) for i in range(rows)])
    for column in ("status", "error"):
        if column not in batch:
            batch[column] = objects([""] * rows)
        else:
            batch[column] = objects([text(value) for value in batch[column]])
    return batch


def stage_error(stage: str, exc: BaseException) -> str:
    """One line: which stage, which exception, why — what a person needs to triage a failed row."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{stage}: {type(exc).__name__}: {message}"[:500] if message else f"{stage}: {type(exc).__name__}"


def _pending(batch: Batch) -> list[int]:
    return [index for index, status in enumerate(batch["status"]) if text(status) == PENDING]


def _fail(batch: Batch, index: int, reason: str) -> None:
    batch["status"][index] = FAILED
    batch["error"][index] = reason


def _column(batch: Batch, name: str, fill: Any) -> np.ndarray:
    """The column `name` as a mutable object array, created with `fill` when absent."""
    if name in batch:
        return objects(list(batch[name]))
    return objects([fill] * row_count(batch))


def _float_column(batch: Batch, name: str) -> np.ndarray:
    if name in batch:
        return np.asarray(batch[name], dtype=np.float64).copy()
    return np.full(row_count(batch), np.nan)


def row_seed(base_seed: int, row_id: str) -> int:
    """The row's seed: a hash of the job seed and the row id, so it does not depend on batching."""
    digest = hashlib.sha256(f"{base_seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@contextlib.contextmanager
def _timer(times: np.ndarray, rows: Sequence[int]) -> Iterator[None]:
    """Add the block's wall time to `times`, shared evenly between `rows`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if rows:
            share = (time.perf_counter() - start) / len(rows)
            for index in rows:
                times[index] = (0.0 if np.isnan(times[index]) else times[index]) + share


# --------------------------------------------------------------------------------------------------
# Adapters over the image codec (pipeline.imageio) and the engines (matcore.inpainter,
# matcore.classical): the stages depend on these few calls only.


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


# --------------------------------------------------------------------------------------------------
# Stages


class FetchStage:
    """Reads the encoded bytes of listed rows (see pipeline.sources) into `bytes` / `reference_bytes`.

    Rows that already carry bytes in a `data` column (read on the driver, e.g. from a process-local
    filesystem) keep them. A row that cannot be read fails with the reason.
    """

    def __init__(self, allow_external_paths: bool = False) -> None:
        self.allow_external_paths = allow_external_paths

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.sources import fetch_rows

        batch = ensure_row_columns(batch)
        data = _column(batch, "bytes", b"")
        reference = _column(batch, "reference_bytes", b"")
        times = _float_column(batch, "time_decode_s")
        carried = batch.pop("data", None)
        to_fetch = []
        for index in _pending(batch):
            if carried is not None and carried[index] is not None and len(carried[index]):
                data[index] = bytes(carried[index])
            else:
                to_fetch.append(index)
        with _timer(times, to_fetch):
            listed = [{name: (text(batch[name][i]) if name in _TEXT_LOCATOR_COLUMNS else batch[name][i])
                       for name in _LOCATOR_COLUMNS if name in batch} for i in to_fetch]
            fetched = fetch_rows(listed, self.allow_external_paths) if listed else []
        for index, result in zip(to_fetch, fetched):
            if result.error:
                _fail(batch, index, f"read: {result.error}")
                continue
            data[index] = result.data
            reference[index] = result.reference or b""
        batch.update(bytes=data, reference_bytes=reference, time_decode_s=times)
        return batch


_TEXT_LOCATOR_COLUMNS = ("listing_error", "kind", "fs_uri", "path", "column", "reference_column", "source")
_LOCATOR_COLUMNS = (*_TEXT_LOCATOR_COLUMNS, "row_group", "row_in_group")


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
        times = _float_column(batch, "time_decode_s")
        reference_bytes = batch.get("reference_bytes")
        for index in _pending(batch):
            with _timer(times, [index]):
                data = batch[self.bytes_column][index] if self.bytes_column in batch else None
                if data is None or len(data) == 0:
                    _fail(batch, index, "decode: empty file (0 bytes)")
                    continue
                try:
                    images[index], alphas[index], formats[index], modes[index], save_infos[index] = decode_bytes(
                        bytes(data), self.max_pixels)
                except Exception as exc:  # noqa: BLE001 - any decoder failure is this row's failure
                    _fail(batch, index, stage_error("decode", exc))
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


def _postprocess_config(method: str, overrides: Mapping[str, Any] | None) -> Any:
    from pipeline.masks import default_postprocess

    return dataclasses.replace(default_postprocess(method), **dict(overrides or {}))


def build_mask_generator(method: str, options: Mapping[str, Any] | None = None,
                         template_npz: bytes | None = None) -> Any:
    """The named generator from pipeline.masks, fitted with `template_npz` when given: the consistent
    generator itself, or the consistent box source of a SAM generator that refines its boxes."""
    from pipeline import masks

    generator = masks.build_mask_generator(method, options)
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
        self.postprocess = _postprocess_config(method, postprocess)
        self.key_column = key_column

    def _results(self, batch: Batch, indices: list[int]) -> Iterator[tuple[int, Any]]:
        images = [batch["image"][i] for i in indices]
        keys = [text(batch[self.key_column][i]) for i in indices]
        try:
            yield from zip(indices, _generate(self.generator, images, keys))
            return
        except Exception:  # noqa: BLE001 - isolate the bad row below rather than fail the batch
            pass
        for index, image, key in zip(indices, images, keys):
            try:
                yield index, self.generator(image, key=key)
            except Exception as exc:  # noqa: BLE001
                yield index, exc

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.masks import postprocess

        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        holes = _column(batch, "hole", NO_HOLE)
        methods, details = _column(batch, "mask_method", ""), _column(batch, "mask_details", "")
        ratios = _float_column(batch, "hole_ratio")
        times = _float_column(batch, "time_mask_s")
        pending = _pending(batch)
        with _timer(times, pending):
            results = list(self._results(batch, pending)) if pending else []
        for index, result in results:
            if isinstance(result, BaseException):
                _fail(batch, index, stage_error("mask", result))
                continue
            try:
                result = postprocess(result, self.postprocess)
            except Exception as exc:  # noqa: BLE001
                _fail(batch, index, stage_error("mask", exc))
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


def _fault_injection() -> dict[str, Any]:
    """Test hook (set by the driver from $MATPIPE_FAULT_INJECTION, a JSON object): see InpaintStage."""
    raw = os.environ.get(FAULT_INJECTION_ENV)
    return json.loads(raw) if raw else {}


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


class InpaintStage:
    """Fills each pending row's hole with the engine (model loaded once per actor).

    `engine` is "mat" (with `checkpoint`) or "opencv". Each row uses its own seed (`seed` column, else
    derived from the id). Rows go to the engine one image per call (its windows still batch together),
    which keeps outputs independent of how rows are batched; `batch_across_images` sends the whole batch
    in one call instead (GPU throughput) and falls back to one by one when that call fails, so only
    the culprit row fails. `threads` bounds torch/OpenCV threads on CPU actors.
    `fault_injection` is a test hook: {"exit_once_marker": path} kills the actor process the first
    time a batch arrives (once per marker file), {"delay_s": x} slows every batch down, and with
    {"delay_from_shard": k} only batches holding a row of shard index k or later.
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
        # Alpha-blended watermarks with a matte saved in the template are inverted first; the engine
        # only fills what inversion cannot recover (see pipeline.watermark).
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

    def _invert(self, batch: Batch, pending: list[int], images: dict[int, np.ndarray], holes: dict[int, np.ndarray],
                inverted_px: np.ndarray, inpainted_px: np.ndarray, residuals: np.ndarray) -> set[int]:
        """Invert the watermark of the rows that allow it: their image becomes the inverted one and their
        hole what is left for the engine (in `images`/`holes`, in place). Returns the rows inverted."""
        done: set[int] = set()
        if self.inversion is None or "mask_method" not in batch:
            return done
        for index in pending:
            try:
                outcome = self.inversion(images[index], holes[index], text(batch["mask_method"][index]),
                                         text(batch["mask_details"][index]) if "mask_details" in batch else "")
            except Exception as exc:  # noqa: BLE001 - the engine still fills the whole hole
                log.warning("%s: watermark inversion failed, inpainting instead: %s", text(batch["id"][index]),
                            stage_error("invert", exc))
                continue
            if outcome is None or outcome.inverted_px == 0:
                continue
            images[index], holes[index] = outcome.image, outcome.inpaint_hole
            inverted_px[index], inpainted_px[index] = outcome.inverted_px, outcome.inpainted_px
            residuals[index] = outcome.residual
            done.add(index)
        return done

    def _delays(self, batch: Batch) -> bool:
        first = self.fault_injection.get("delay_from_shard")
        return first is None or "shard" not in batch or bool((np.asarray(batch["shard"]) >= int(first)).any())

    def __call__(self, batch: Batch) -> Batch:
        if self.fault_injection.get("exit_once_marker"):
            _exit_once(str(self.fault_injection["exit_once_marker"]))
        if self.fault_injection.get("delay_s") and self._delays(batch):
            time.sleep(float(self.fault_injection["delay_s"]))
        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        restored = _column(batch, "restored", NO_IMAGE)
        engines, shas = _column(batch, "engine", ""), _column(batch, "checkpoint_sha256", "")
        seeds = (np.asarray(batch["seed"], np.int64).copy() if "seed" in batch else
                 np.array([row_seed(self.base_seed, text(i)) for i in batch["id"]], np.int64))
        times = _float_column(batch, "time_inpaint_s")
        inverted_px, inpainted_px = _float_column(batch, "hole_inverted_px"), _float_column(batch, "hole_inpainted_px")
        residuals = _float_column(batch, "invert_residual")
        pending = [i for i in _pending(batch) if "hole" in batch and np.asarray(batch["hole"][i]).any()]
        with _timer(times, pending):
            images = {i: batch["image"][i] for i in pending}
            holes = {i: np.asarray(batch["hole"][i], bool) for i in pending}
            inverted = self._invert(batch, pending, images, holes, inverted_px, inpainted_px, residuals)
            to_engine = [i for i in pending if i not in inverted and holes[i].any()]
            outputs = dict(zip(to_engine, self._inpaint([images[i] for i in to_engine], [holes[i] for i in to_engine],
                                                        [int(seeds[i]) for i in to_engine]))) if to_engine else {}
        for index in pending:
            output = outputs.get(index, images[index])
            if isinstance(output, BaseException):
                _fail(batch, index, stage_error("inpaint", output))
                continue
            restored[index] = np.ascontiguousarray(output, dtype=np.uint8)
            engines[index], shas[index] = self.engine_name, self.checkpoint_sha256
            if index in inverted:
                engines[index] = f"invert+{self.engine_name}" if holes[index].any() else "invert"
                shas[index] = self.checkpoint_sha256 if holes[index].any() else ""
            else:
                inverted_px[index], inpainted_px[index] = 0, int(holes[index].sum())
            batch["status"][index] = OK
        batch.update(restored=restored, engine=engines, checkpoint_sha256=shas, seed=seeds, time_inpaint_s=times,
                     hole_inverted_px=inverted_px, hole_inpainted_px=inpainted_px, invert_residual=residuals)
        assert row_count(batch) == rows
        return batch


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
        self.rerun_postprocess = _postprocess_config(rerun_method, rerun_postprocess) if rerun_method else None

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.masks import postprocess
        from pipeline.metrics import residual_detection, restoration_metrics

        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        columns = {name: _float_column(batch, name) for name in (
            "seam_score", "color_delta_e", "texture_ratio", "residual_hole_ratio", "rerun_hole_ratio", "psnr", "ssim")}
        times = _float_column(batch, "time_metrics_s")
        done = [i for i in range(rows) if text(batch["status"][i]) == OK and "restored" in batch
                and np.asarray(batch["restored"][i]).size]
        for index in done:
            with _timer(times, [index]):
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
        from pipeline.writer import image_file_name

        batch = ensure_row_columns(batch)
        rows = row_count(batch)
        outputs, paths, masks = [None] * rows, [""] * rows, [None] * rows
        times = _float_column(batch, "time_encode_s")
        for index in range(rows):
            status = text(batch["status"][index])
            if status == FAILED:
                continue
            with _timer(times, [index]):
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
                    _fail(batch, index, stage_error("encode", exc))
                    outputs[index] = None
                    continue
                if outputs[index] is not None:
                    paths[index] = image_file_name(text(batch["id"][index]), image_format)
        for column in self.ARRAY_COLUMNS:
            batch.pop(column, None)
        batch.update(image_bytes=objects(outputs), image_path=objects(paths), mask=objects(masks),
                     time_encode_s=times)
        return batch


# --------------------------------------------------------------------------------------------------
# Driver-side use without Ray (tests, notebooks, model-only benchmarks)


def run_stages(batch: Batch, stages: Sequence[Callable[[Batch], Batch]]) -> Batch:
    """Apply stages in order to one batch in this process."""
    for stage in stages:
        batch = stage(batch)
    return batch
