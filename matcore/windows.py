"""Where the model looks: square windows of context around the holes of an image of any size.

MAT only takes R×R inputs (R = 256 or 512). `plan_windows` turns a hole mask of any size into a few
square windows, each mapped to R×R (downscaled when it is larger than R, padded where it overhangs the
image), and says which window fills each hole pixel. Pure numpy: no model, no torch.

Algorithm (strategy "crop"):
1. Connected groups of holes: 8-connected components of the hole mask.
2. A group whose larger box side L needs more than R pixels of window (the window side must be at least
   `context`·L and leave `margin` model pixels of known ring) gets its own window of that side, centred
   on it, shifted inward at the image borders; the model sees it downscaled.
3. The other groups are packed greedily, top-left first, into R-pixel windows at full resolution:
   a window takes every group that fits with the first one inside one window's core.
4. A window also fills every not-yet-assigned group that lies inside its core, so nearby specks ride
   along instead of costing another forward.
Strategy "resize" is one window holding the whole image; "auto" takes it instead of several crop
windows when it is not much coarser than they are.
Every hole pixel inside any window is shown to the model as a hole (so no watermark pixel ever serves as
context), but each hole pixel is pasted back from exactly one window: its owner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Strategy = Literal["auto", "crop", "resize"]
STRATEGIES: tuple[str, ...] = ("auto", "crop", "resize")


@dataclass(frozen=True)
class WindowConfig:
    """How windows are chosen around holes.

    Attributes:
        strategy: "crop" windows around hole groups (full resolution where they fit); "resize" one window
            holding the whole image (downscaled to fit, padded to a square); "auto" is "crop", except that
            one whole-image window replaces several crop windows when it is at most `auto_downscale`
            times coarser than the coarsest of them (one forward instead of several, for little detail).
        context: a window's side is at least `context` × the larger side of the hole group it serves, so
            big holes get proportionally more surroundings (at the price of a downscale).
        margin: known ring, in model pixels, kept between a hole group and its window's edges (except
            where the hole touches the image border). None = resolution // 8.
    """

    strategy: Strategy = "auto"
    context: float = 1.5
    margin: int | None = None
    auto_downscale: float = 1.5

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not (math.isfinite(self.context) and self.context >= 1.0):
            raise ValueError(f"context must be a finite number >= 1, got {self.context}")
        if self.margin is not None and self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not (math.isfinite(self.auto_downscale) and self.auto_downscale >= 1.0):
            raise ValueError(f"auto_downscale must be a finite number >= 1, got {self.auto_downscale}")

    def margin_for(self, resolution: int) -> int:
        margin = resolution // 8 if self.margin is None else self.margin
        if 2 * margin >= resolution:
            raise ValueError(f"margin {margin} leaves no room for a hole in a {resolution}² window")
        return margin


@dataclass(frozen=True)
class Window:
    """A square of `side` image pixels at (`top`, `left`) that the model sees as `resolution`².

    The square may overhang the image (negative `top`/`left` or past the far edge) only along an axis
    where the image is shorter than `side`; the overhang is filled by mirroring the image.
    """

    top: int
    left: int
    side: int
    resolution: int

    @property
    def scale(self) -> float:
        """Model pixels per image pixel (1.0 = full resolution, < 1 = downscaled)."""
        return self.resolution / self.side

    def image_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the part of the window inside a height×width image."""
        return (max(self.top, 0), min(self.top + self.side, height),
                max(self.left, 0), min(self.left + self.side, width))


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one image and which of them fills each hole pixel.

    Attributes:
        windows: the windows, in a deterministic order (their index is part of each window's seed).
        owner: int32 H×W; for a hole pixel the index of the window whose output is pasted there, -1 for
            pixels outside the hole.
    """

    windows: tuple[Window, ...]
    owner: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.owner.shape  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ components


@dataclass(frozen=True)
class _Runs:
    """Horizontal runs of hole pixels: row, start column, end column (exclusive), in row-major order."""

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def _hole_runs(hole_mask: np.ndarray) -> _Runs:
    height, width = hole_mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = hole_mask
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    _, ends = np.nonzero(steps == -1)  # row-major order pairs each start with its end
    return _Runs(rows.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64))


def _run_components(runs: _Runs, width: int) -> np.ndarray:
    """Component index (0..n-1, ordered by first run) of every run, 8-connectivity.

    Runs on consecutive rows touch when their column ranges overlap or meet diagonally. The overlapping
    runs of the row above form a contiguous range, found with two binary searches; components come
    from min-label hooking with pointer jumping, all vectorised, so a noisy 12-megapixel mask is fine.
    """
    count = len(runs.rows)
    if count == 0:
        return np.zeros(0, np.int64)
    stride = width + 2
    start_keys = runs.rows * stride + runs.starts
    end_keys = runs.rows * stride + runs.ends
    above = runs.rows - 1
    first = np.searchsorted(end_keys, above * stride + runs.starts, side="left")
    stop = np.searchsorted(start_keys, above * stride + runs.ends, side="right")
    counts = np.maximum(stop - first, 0)
    counts[runs.rows == 0] = 0
    total = int(counts.sum())
    lower = np.repeat(np.arange(count), counts)
    upper = np.repeat(first, counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))

    parent = np.arange(count)
    while True:
        root_a, root_b = parent[lower], parent[upper]
        differ = root_a != root_b
        if not differ.any():
            break
        small = np.minimum(root_a[differ], root_b[differ])
        large = np.maximum(root_a[differ], root_b[differ])
        np.minimum.at(parent, large, small)  # hook roots to smaller roots: never a cycle
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    _, component = np.unique(parent, return_inverse=True)
    return component.reshape(-1)


def _component_boxes(runs: _Runs, component: np.ndarray, count: int) -> np.ndarray:
    """int64 count×4 boxes (y0, x0, y1, x1), ends exclusive."""
    boxes = np.empty((count, 4), np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    boxes[:, 2:] = np.iinfo(np.int64).min
    np.minimum.at(boxes[:, 0], component, runs.rows)
    np.minimum.at(boxes[:, 1], component, runs.starts)
    np.maximum.at(boxes[:, 2], component, runs.rows + 1)
    np.maximum.at(boxes[:, 3], component, runs.ends)
    return boxes


def _paint_runs(runs: _Runs, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """int32 image holding `values[i]` on run i and 0 elsewhere (difference array + cumulative sum)."""
    height, width = shape
    marks = np.zeros((height, width + 1), np.int32)
    np.add.at(marks, (runs.rows, runs.starts), values)
    np.add.at(marks, (runs.rows, runs.ends), -values)
    return np.cumsum(marks, axis=1, dtype=np.int32)[:, :width]


# --------------------------------------------------------------------------------------------- geometry


def _window_sides(box_sides: np.ndarray, resolution: int, context: float, margin: int,
                  longest_image_side: int) -> np.ndarray:
    """Side in image pixels of the window each hole group needs, from the larger side of its box."""
    box_sides = np.asarray(box_sides, np.float64)
    needed = np.maximum(
        np.ceil(box_sides * context),
        np.ceil(box_sides * resolution / (resolution - 2 * margin)),  # margin is in model pixels
    ).astype(np.int64)
    # Never more than the whole image (no context exists beyond it), never less than R (no upscaling).
    return np.maximum(resolution, np.minimum(needed, longest_image_side))


def _place(low: int, high: int, side: int, extent: int) -> int:
    """Start of a `side` span centred on [low, high), shifted inside [0, extent); centred padding when
    the image is shorter than the span."""
    if side >= extent:
        return -((side - extent) // 2)
    start = (low + high - side) // 2
    return min(max(start, 0), extent - side)


def _core(window: Window, margin: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): where a hole keeps `margin` model pixels from every window edge that lies
    inside the image (edges on or beyond the image border need no ring)."""
    ring = math.ceil(margin * window.side / window.resolution)
    y0, y1, x0, x1 = window.image_box(height, width)
    return (y0 + ring if y0 > 0 else 0, y1 - ring if y1 < height else height,
            x0 + ring if x0 > 0 else 0, x1 - ring if x1 < width else width)


def _whole_image_window(height: int, width: int, resolution: int) -> Window:
    side = max(height, width, resolution)
    return Window(top=_place(0, height, side, height), left=_place(0, width, side, width), side=side,
                  resolution=resolution)


# ----------------------------------------------------------------------------------------------- plans


def plan_windows(hole_mask: np.ndarray, resolution: int, config: WindowConfig | None = None) -> WindowPlan:
    """Windows covering every hole pixel of `hole_mask` (bool H×W, True = hole) for an R×R model.

    Returns a plan with no window when the mask is empty. See the module docstring for the algorithm.
    """
    config = config or WindowConfig()
    if hole_mask.dtype != np.bool_ or hole_mask.ndim != 2 or min(hole_mask.shape) < 1:
        raise ValueError(f"hole_mask must be a non-empty bool H×W array, got {hole_mask.dtype} {hole_mask.shape}")
    height, width = hole_mask.shape
    margin = config.margin_for(resolution)
    runs = _hole_runs(hole_mask)
    if len(runs.rows) == 0:
        return WindowPlan(windows=(), owner=np.full((height, width), -1, np.int32))

    if config.strategy == "resize":
        return _single_window_plan(runs, height, width, resolution)
    component = _run_components(runs, width)
    count = int(component.max()) + 1
    boxes = _component_boxes(runs, component, count)
    windows, component_window = _crop_windows(boxes, height, width, resolution, config.context, margin)
    coarsest_side = max(window.side for window in windows)
    if config.strategy == "auto" and len(windows) > 1 and max(height, width) <= config.auto_downscale * coarsest_side:
        return _single_window_plan(runs, height, width, resolution)
    owner = _paint_runs(runs, (component_window[component] + 1).astype(np.int32), (height, width)) - 1
    return WindowPlan(windows=tuple(windows), owner=owner)


def _single_window_plan(runs: _Runs, height: int, width: int, resolution: int) -> WindowPlan:
    owner = _paint_runs(runs, np.ones(len(runs.rows), np.int32), (height, width)) - 1
    return WindowPlan(windows=(_whole_image_window(height, width, resolution),), owner=owner)


def _crop_windows(boxes: np.ndarray, height: int, width: int, resolution: int, context: float,
                  margin: int) -> tuple[list[Window], np.ndarray]:
    """Windows for the component boxes (y0, x0, y1, x1) and the window index of every component."""
    longest = max(height, width)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    needed = _window_sides(sides, resolution, context, margin, longest)
    # Top-left first, so the plan (and every window's seed) depends on the mask alone.
    order = np.lexsort((boxes[:, 1], boxes[:, 0]))
    assigned = np.full(len(boxes), -1, np.int64)
    windows: list[Window] = []

    def open_window(members: np.ndarray) -> None:
        y0, x0 = boxes[members, 0].min(), boxes[members, 1].min()
        y1, x1 = boxes[members, 2].max(), boxes[members, 3].max()
        side = int(_window_sides(max(y1 - y0, x1 - x0), resolution, context, margin, longest))
        window = Window(top=_place(int(y0), int(y1), side, height), left=_place(int(x0), int(x1), side, width),
                        side=side, resolution=resolution)
        assigned[members] = len(windows)
        cy0, cy1, cx0, cx1 = _core(window, margin, height, width)
        # A group rides along when it lies in the core and would not get a larger window of its own.
        riders = ((assigned < 0) & (needed <= side) & (boxes[:, 0] >= cy0) & (boxes[:, 2] <= cy1)
                  & (boxes[:, 1] >= cx0) & (boxes[:, 3] <= cx1))
        assigned[riders] = len(windows)
        windows.append(window)

    # Groups too big for a full-resolution window first: they take the nearby specks along.
    for index in order:
        if needed[index] > resolution and assigned[index] < 0:
            open_window(np.array([index]))

    # Full-resolution packing: the largest box side that still fits an R window with its context.
    if longest <= resolution:  # the whole image fits one window: every group shares it
        core_side = longest
    else:
        core_side = min(math.floor(resolution / context), resolution - 2 * margin)
    for index in order:
        if assigned[index] >= 0:
            continue
        y0, x0, y1, x1 = (int(v) for v in boxes[index])
        left = x0 - (core_side - (x1 - x0)) // 2  # a core square of core_side centred on the seed's columns
        members = np.flatnonzero(
            (assigned < 0) & (boxes[:, 0] >= y0) & (boxes[:, 2] <= y0 + core_side)
            & (boxes[:, 1] >= left) & (boxes[:, 3] <= left + core_side)
        )
        open_window(members)
    return windows, assigned
