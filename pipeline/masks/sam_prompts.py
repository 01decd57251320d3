"""Per-image SAM prompts: boxes and points from a table (Parquet / JSON lines) or COCO annotations."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .keys import KeyIndex


@dataclass
class SamPrompts:
    """Prompts for one image, in its pixel coordinates.

    boxes: float32 K×4 (x0, y0, x1, y1), one object each. points: float32 P×2 (x, y) and point_labels:
    int32 P (1 = on the object, 0 = not on it) together describe one more object.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.points = np.asarray(self.points, np.float32).reshape(-1, 2)
        if self.point_labels is None or len(self.point_labels) == 0:
            self.point_labels = np.ones(len(self.points), np.int32)  # unlabelled points are foreground
        self.point_labels = np.asarray(self.point_labels, np.int32).reshape(-1)
        if len(self.point_labels) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.point_labels)} point labels")
        if (self.boxes[:, 2] < self.boxes[:, 0]).any() or (self.boxes[:, 3] < self.boxes[:, 1]).any():
            raise ValueError("boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0")

    @property
    def empty(self) -> bool:
        return len(self.boxes) == 0 and len(self.points) == 0


def _rows_of(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    raise ValueError(f"prompt table {path} must be .parquet or .jsonl")


def read_prompt_table(
    path: str | Path,
    *,
    key_column: str = "path",
    boxes_column: str = "boxes",
    points_column: str = "points",
    point_labels_column: str = "point_labels",
) -> KeyIndex[SamPrompts]:
    """Prompts per image from a Parquet or JSON-lines table.

    Each row: `key_column` = the image's relative path (or file name); `boxes_column` = a list of
    [x0, y0, x1, y1] (or one such box); `points_column` = a list of [x, y]; `point_labels_column` = a list
    of 0/1 (optional, default all 1). Missing columns mean no prompts of that kind.
    """
    path = Path(path)
    rows = _rows_of(path)
    if rows and key_column not in rows[0]:
        raise ValueError(f"prompt table {path} has no key column {key_column!r} (columns: {', '.join(rows[0])})")
    entries = []
    for number, row in enumerate(rows):
        try:
            prompts = SamPrompts(
                boxes=np.asarray(row.get(boxes_column) or [], np.float32).reshape(-1, 4),
                points=np.asarray(row.get(points_column) or [], np.float32).reshape(-1, 2),
                point_labels=np.asarray(row.get(point_labels_column) or [], np.int32),
            )
        except ValueError as exc:
            raise ValueError(f"{path}, row {number} ({row.get(key_column)!r}): {exc}") from None
        entries.append((str(row[key_column]), prompts))
    return KeyIndex(entries)


def read_coco_prompts(path: str | Path, categories: Sequence[str] = ()) -> KeyIndex[SamPrompts]:
    """Box prompts from a COCO annotations file, keyed by each image's `file_name`.

    categories: category names or numeric ids to keep; empty keeps all. Unknown names are an error (a
    typo would otherwise silently produce empty masks).
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        coco = json.load(handle)
    names = {int(c["id"]): str(c["name"]) for c in coco.get("categories", [])}
    wanted: set[int] | None = None
    if categories:
        by_name = {name: cid for cid, name in names.items()}
        wanted = set()
        for category in categories:
            if category in by_name:
                wanted.add(by_name[category])
            elif category.isdigit() and int(category) in names:
                wanted.add(int(category))
            else:
                raise ValueError(f"category {category!r} is not in {path} (categories: {', '.join(sorted(by_name))})")
    boxes_by_image: dict[int, list[list[float]]] = {}
    for annotation in coco.get("annotations", []):
        if wanted is not None and int(annotation["category_id"]) not in wanted:
            continue
        x, y, width, height = (float(v) for v in annotation["bbox"])
        boxes_by_image.setdefault(int(annotation["image_id"]), []).append([x, y, x + width, y + height])
    return KeyIndex(
        (str(image["file_name"]), SamPrompts(boxes=np.asarray(boxes_by_image.get(int(image["id"]), []), np.float32)))
        for image in coco.get("images", [])
    )
