"""Segment Anything masks: objects from box/point prompts, or a refinement of another generator's boxes.

Prompts come per row from a table or a COCO annotations file (looked up by the image's key), or from
the boxes a `text` / `consistent` generator found in the same image (`refine`). The image embedding is
computed once per image and all of its box prompts are decoded in one batch.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .base import BatchMixin, MaskGenerationError, MaskResult, check_image
from .keys import KeyIndex
from .sam_loading import SAM_CHECKPOINTS, load_sam
from .sam_prompts import SamPrompts, read_coco_prompts, read_prompt_table


@dataclass(frozen=True)
class SamMaskConfig:
    """Which SAM to load and where each image's prompts come from.

    Attributes:
        checkpoint: SAM state-dict file; None = the published `model_type` file in `cache_dir`.
        model_type: vit_b / vit_l / vit_h; checked against the file when given.
        cache_dir: folder of published checkpoints (default `$MATPIPE_CACHE_DIR` or the XDG cache).
        device: "cpu", "cuda", "cuda:N", or "auto" (CUDA when available).
        verify_checksum: check published files against their md5 before loading.
        prompts: a Parquet / JSON-lines table of per-image boxes and points (see `read_prompt_table`).
        coco: a COCO annotations file; its boxes of `categories` become box prompts.
        categories: COCO category names or ids to keep; empty = all.
        refine: "text" or "consistent": prompt SAM with the boxes that generator finds in each image.
        refine_options: options of that generator (as for `build_mask_generator`).
        key_column, boxes_column, points_column, point_labels_column: column names of `prompts`.
        multimask: let SAM propose three masks per prompt and keep the one with the best predicted IoU
            (better for single points; for boxes one mask is usually best).
        clip_to_box: keep each box prompt's mask inside its box grown by `box_margin` (a fraction of
            the box size), so a text box never turns into the whole building behind it.
        box_margin: see `clip_to_box`.
        missing_prompts: "empty" = an image without prompts gets an empty mask; "error" fails the row.
    """

    checkpoint: Path | None = None
    model_type: str | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    verify_checksum: bool = True
    prompts: Path | None = None
    coco: Path | None = None
    categories: tuple[str, ...] = ()
    refine: Literal["text", "consistent"] | None = None
    refine_options: Mapping[str, Any] | None = None
    key_column: str = "path"
    boxes_column: str = "boxes"
    points_column: str = "points"
    point_labels_column: str = "point_labels"
    multimask: bool = False
    clip_to_box: bool = True
    box_margin: float = 0.1
    missing_prompts: Literal["empty", "error"] = "empty"

    def __post_init__(self) -> None:
        sources = [name for name in ("prompts", "coco", "refine") if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"choose one prompt source, got {', '.join(sources)}")
        if self.model_type is not None and self.model_type not in SAM_CHECKPOINTS:
            raise ValueError(f"model_type must be one of {', '.join(SAM_CHECKPOINTS)}, got {self.model_type!r}")
        if self.refine not in (None, "text", "consistent"):
            raise ValueError(f"refine must be 'text' or 'consistent', got {self.refine!r}")
        if self.missing_prompts not in ("empty", "error"):
            raise ValueError(f"missing_prompts must be 'empty' or 'error', got {self.missing_prompts!r}")
        if self.box_margin < 0:
            raise ValueError(f"box_margin must be >= 0, got {self.box_margin}")
        if self.categories and self.coco is None:
            raise ValueError("categories filter COCO annotations; set coco too")
        for name in ("prompts", "coco"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name} file {value} does not exist")


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SamMaskGenerator(BatchMixin):
    """Hole = union of SAM's masks for the image's prompts (see `SamMaskConfig`).

    `model` may be passed to share one loaded network between generators; otherwise it is loaded from
    the configured checkpoint. `box_source` is any generator whose boxes become the prompts (built from
    `config.refine` when not given). `segment` takes prompts directly, for use from Python.
    """

    method = "sam"

    def __init__(self, config: SamMaskConfig | None = None, *, model: Any = None,
                 box_source: Any = None) -> None:
        from segment_anything import SamPredictor

        self.config = config or SamMaskConfig()
        self.device = _resolve_device(self.config.device)
        if model is None:
            model = load_sam(self.config.checkpoint, self.config.model_type, self.config.cache_dir,
                             device=self.device, verify_checksum=self.config.verify_checksum)
        self.model = model.to(self.device).eval()
        self.predictor = SamPredictor(self.model)
        self._prompt_index: KeyIndex[SamPrompts] | None = None
        if self.config.prompts is not None:
            self._prompt_index = read_prompt_table(
                self.config.prompts, key_column=self.config.key_column, boxes_column=self.config.boxes_column,
                points_column=self.config.points_column, point_labels_column=self.config.point_labels_column,
            )
        elif self.config.coco is not None:
            self._prompt_index = read_coco_prompts(self.config.coco, self.config.categories)
        self.box_source = box_source
        if self.box_source is None and self.config.refine is not None:
            from .registry import build_mask_generator

            self.box_source = build_mask_generator(self.config.refine, self.config.refine_options)

    # A refined generator is as "fitted" as the generator that finds its boxes.
    @property
    def fitted(self) -> bool:
        return getattr(self.box_source, "fitted", True)

    def fit(self, images: Iterable[np.ndarray]) -> Any:
        """Fit the box source (only needed with refine="consistent")."""
        if self.box_source is None or not hasattr(self.box_source, "fit"):
            return None
        return self.box_source.fit(images)

    def _prompts_for(self, image: np.ndarray, key: str | None) -> tuple[SamPrompts | None, dict[str, Any]]:
        if self.box_source is not None:
            found = self.box_source(image, key=key)
            return SamPrompts(boxes=found.boxes), {"refined": found.method, "source_scores": found.scores.tolist()}
        if self._prompt_index is None:
            raise MaskGenerationError("no prompt source configured (prompts, coco or refine); use segment() "
                                      "to pass prompts directly")
        if key is None:
            raise MaskGenerationError("SAM prompts are looked up by key (the image's relative path); none passed")
        return self._prompt_index.get(key), {}

    def __call__(self, image: np.ndarray, *, key: str | None = None) -> MaskResult:
        """image: uint8 H×W×3 → MaskResult whose H×W hole is the union of SAM's masks for its prompts."""
        check_image(image)
        prompts, details = self._prompts_for(image, key)
        if prompts is None or prompts.empty:
            if self.config.missing_prompts == "error":
                raise MaskGenerationError(f"no SAM prompts for {key!r}")
            return MaskResult(hole=np.zeros(image.shape[:2], bool), method=self.method,
                              details={**details, "prompts": 0})
        result = self.segment(image, prompts)
        result.details.update(details)
        return result

    def segment(self, image: np.ndarray, prompts: SamPrompts) -> MaskResult:
        """SAM masks for explicit prompts. image: uint8 H×W×3; returns the union as an H×W hole.

        boxes and scores of the result are the prompt boxes (then the points' bounding box) and SAM's
        predicted IoU for each.
        """
        import torch

        check_image(image)
        height, width = image.shape[:2]
        hole = np.zeros((height, width), bool)
        boxes: list[np.ndarray] = []
        scores: list[float] = []
        with torch.inference_mode():
            self.predictor.set_image(image, image_format="RGB")
            if len(prompts.boxes):
                box_tensor = torch.as_tensor(prompts.boxes, dtype=torch.float32, device=self.device)
                transformed = self.predictor.transform.apply_boxes_torch(box_tensor, (height, width))
                masks, predicted_iou, _ = self.predictor.predict_torch(
                    point_coords=None, point_labels=None, boxes=transformed, multimask_output=self.config.multimask
                )
                best = predicted_iou.argmax(dim=1)
                rows = torch.arange(len(best), device=best.device)
                chosen = masks[rows, best].cpu().numpy()
                chosen_iou = predicted_iou[rows, best].cpu().numpy()
                for box, mask, iou in zip(prompts.boxes, chosen, chosen_iou):
                    if self.config.clip_to_box:
                        mask = mask & _box_zone(box, self.config.box_margin, (height, width))
                    hole |= mask
                    boxes.append(box)
                    scores.append(float(iou))
            if len(prompts.points):
                masks, predicted_iou, _ = self.predictor.predict(
                    point_coords=prompts.points, point_labels=prompts.point_labels,
                    multimask_output=self.config.multimask,
                )
                best = int(np.argmax(predicted_iou))
                hole |= masks[best].astype(bool)
                boxes.append(np.concatenate([prompts.points.min(axis=0), prompts.points.max(axis=0)]))
                scores.append(float(predicted_iou[best]))
            self.predictor.reset_image()
        return MaskResult(hole=hole, method=self.method, boxes=np.array(boxes, np.float32).reshape(-1, 4),
                          scores=np.array(scores, np.float32),
                          details={"prompts": len(prompts.boxes) + int(len(prompts.points) > 0)})


def _box_zone(box: np.ndarray, margin: float, shape: tuple[int, int]) -> np.ndarray:
    """bool H×W: `box` (x0, y0, x1, y1) grown by `margin` × its size on each side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    grow_x, grow_y = margin * (x1 - x0), margin * (y1 - y0)
    zone = np.zeros(shape, bool)
    zone[max(int(y0 - grow_y), 0) : int(np.ceil(y1 + grow_y)) + 1,
         max(int(x0 - grow_x), 0) : int(np.ceil(x1 + grow_x)) + 1] = True
    return zone
