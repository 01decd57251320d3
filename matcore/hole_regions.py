"""Where a keep mask has holes: a few tight boxes per image, and the grouping of a batch's boxes into
crop stacks of one common size (so that every group runs as one batched call per layer).

Pure box arithmetic on the CPU; the only tensor work is reading the mask once. Boxes are half-open
integer intervals in pixels of the resolution they are stated at.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

TILE = 16  # components are found on a grid of TILE×TILE tiles; holes closer than a tile share a box
MAX_BOXES_PER_IMAGE = 8  # beyond this, the closest boxes are merged (each box costs a gather per layer)


@dataclass(frozen=True)
class Box:
    """Rows [y0, y1) and columns [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.height * self.width

    def union(self, other: "Box") -> "Box":
        return Box(min(self.y0, other.y0), max(self.y1, other.y1), min(self.x0, other.x0), max(self.x1, other.x1))

    def expand(self, margin: int) -> "Box":
        return Box(self.y0 - margin, self.y1 + margin, self.x0 - margin, self.x1 + margin)

    def clip(self, size: int) -> "Box":
        return Box(max(self.y0, 0), min(self.y1, size), max(self.x0, 0), min(self.x1, size))

    def contains(self, other: "Box") -> bool:
        return self.y0 <= other.y0 and other.y1 <= self.y1 and self.x0 <= other.x0 and other.x1 <= self.x1

    def scaled(self, factor: int) -> "Box":
        return Box(self.y0 * factor, self.y1 * factor, self.x0 * factor, self.x1 * factor)


def fit_inside(box: Box, height: int, width: int, size: int) -> Box:
    """A `height`×`width` box inside [0, size)² that contains `box` (assumed to fit), centred on it
    where possible and shifted inwards at the image border."""
    height, width = min(height, size), min(width, size)

    def axis(lo: int, hi: int, length: int) -> tuple[int, int]:
        start = lo - (length - (hi - lo)) // 2
        start = min(max(start, 0), size - length)
        return start, start + length

    y0, y1 = axis(box.y0, box.y1, height)
    x0, x1 = axis(box.x0, box.x1, width)
    return Box(y0, y1, x0, x1)


def _components(occupied: list[list[bool]]) -> list[list[tuple[int, int]]]:
    """8-connected components of a small boolean grid (breadth-first; the grid has ≤ 32×32 cells)."""
    rows, cols = len(occupied), len(occupied[0])
    seen = [[False] * cols for _ in range(rows)]
    found = []
    for r in range(rows):
        for c in range(cols):
            if not occupied[r][c] or seen[r][c]:
                continue
            seen[r][c] = True
            queue, cells = [(r, c)], []
            while queue:
                cr, cc = queue.pop()
                cells.append((cr, cc))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        nr, nc = cr + dr, cc + dc
                        if 0 <= nr < rows and 0 <= nc < cols and occupied[nr][nc] and not seen[nr][nc]:
                            seen[nr][nc] = True
                            queue.append((nr, nc))
            found.append(cells)
    return found


def merge_boxes(boxes: Sequence[Box], margin: int, limit: int = MAX_BOXES_PER_IMAGE) -> list[Box]:
    """Merge boxes whose union costs no more than computing both apart (areas counted with `margin`,
    the halo every box is computed with), then the cheapest pairs until at most `limit` remain."""
    boxes = list(boxes)

    def saving(a: Box, b: Box) -> int:
        return a.expand(margin).area + b.expand(margin).area - a.union(b).expand(margin).area

    while len(boxes) > 1:
        best, pair = None, None
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                s = saving(boxes[i], boxes[j])
                if best is None or s > best:
                    best, pair = s, (i, j)
        if best < 0 and len(boxes) <= limit:
            break
        i, j = pair
        merged = boxes[i].union(boxes[j])
        boxes = [b for k, b in enumerate(boxes) if k not in (i, j)] + [merged]
    return boxes


def hole_boxes(keep_masks: torch.Tensor, margin: int) -> list[list[Box]]:
    """Per image of `keep_masks` (N×1×R×R, 1 = keep), the boxes that cover every hole pixel (any value
    other than exactly 1, so soft masks count as holes too); an image without holes gets no box.

    Components are found on a TILE grid (8-connected), each gets the exact bounding box of its hole pixels,
    and boxes are merged where one box is cheaper than two (`merge_boxes`).
    """
    n, _, size, _ = keep_masks.shape
    hole = (keep_masks[:, 0] != 1).cpu()
    grid = -(-size // TILE)
    padded = torch.zeros(n, grid * TILE, grid * TILE, dtype=torch.bool)
    padded[:, :size, :size] = hole
    tiles = padded.view(n, grid, TILE, grid, TILE)
    row_any = tiles.any(dim=4).permute(0, 1, 3, 2)  # (n, gy, gx, TILE): which rows of each tile hold a hole
    col_any = tiles.any(dim=2)  # (n, gy, gx, TILE)
    occupied = row_any.any(dim=3)
    offsets = torch.arange(TILE)
    big = TILE + 1
    first_row = torch.where(row_any, offsets, big).amin(dim=3).tolist()
    last_row = torch.where(row_any, offsets, -1).amax(dim=3).tolist()
    first_col = torch.where(col_any, offsets, big).amin(dim=3).tolist()
    last_col = torch.where(col_any, offsets, -1).amax(dim=3).tolist()
    occupied_list = occupied.tolist()

    result = []
    for i in range(n):
        boxes = []
        for cells in _components(occupied_list[i]):
            y0 = min(r * TILE + first_row[i][r][c] for r, c in cells)
            y1 = max(r * TILE + last_row[i][r][c] for r, c in cells) + 1
            x0 = min(c * TILE + first_col[i][r][c] for r, c in cells)
            x1 = max(c * TILE + last_col[i][r][c] for r, c in cells) + 1
            boxes.append(Box(y0, y1, x0, x1))
        result.append(merge_boxes(boxes, margin))
    return result


@dataclass(frozen=True)
class CropGroup:
    """Crops of one common size, run as one batch: crop k is `boxes[k]` of image `samples[k]`."""

    samples: tuple[int, ...]
    boxes: tuple[Box, ...]


def group_crops(boxes_per_image: Sequence[Sequence[Box]], margin: int, call_overhead_px: int) -> list[CropGroup]:
    """Group every image's boxes into stacks of one common size (the largest height and width in the
    group; smaller boxes grow to it). Groups are merged while one padded call costs less than two: the
    cost of a group is its crop count × the padded area (with the halo `margin`) plus `call_overhead_px`,
    the fixed cost of one more batched call per layer in pixel-equivalents (large on a GPU, where a
    layer call on a small crop is launch-bound; small on a CPU)."""
    groups: list[list[tuple[int, Box]]] = [[(i, b)] for i, boxes in enumerate(boxes_per_image) for b in boxes]

    def cost(group: list[tuple[int, Box]]) -> int:
        height = max(b.height for _, b in group) + 2 * margin
        width = max(b.width for _, b in group) + 2 * margin
        return len(group) * height * width + call_overhead_px

    while len(groups) > 1:
        best, pair = 0, None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                s = cost(groups[i]) + cost(groups[j]) - cost(groups[i] + groups[j])
                if s > best:
                    best, pair = s, (i, j)
        if pair is None:
            break
        i, j = pair
        groups = [g for k, g in enumerate(groups) if k not in (i, j)] + [groups[i] + groups[j]]
    return [CropGroup(tuple(s for s, _ in g), tuple(b for _, b in g)) for g in groups]
