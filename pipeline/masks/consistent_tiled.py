"""A watermark repeated on a lattice over the whole picture (stock previews), found across a dataset.

Stock sites tile one logo or word in a grid or a diagonal (staggered) lattice, the same lattice in
every image of a collection: anchored to a corner or the centre, spaced in proportion to the image.
Aligned on that anchor (a `frames.Frame`), the per-pixel median of the images' gradients keeps the
lattice of logos while the scenes cancel (Dekel et al., CVPR 2017, as for one logo), and its
autocorrelation has strong peaks at the lattice vectors. Each image is then folded onto one lattice
cell (the mean of its gradients over all the cell's translates), and the median of those folded cells
over the images is the tile: many instances per image and many images per pixel, so even a faint
tile stands out. Its support is Poisson-reconstructed as for one logo (`watermark_support`), and an
image's mask is that cell support repeated over the lattice, partial tiles at the border included.

Positions are frame pixels (y, x) relative to the frame's anchor; a lattice point is
`origin + i·vectors[0] + j·vectors[1]` for integers i, j.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.watermark.estimate import parabola_vertex

from .fields import color_gradients, orientation_field
from .frames import Frame
from .watermark_support import null_magnitude, support_from_gradients

# A lattice vector is a peak of the median field's normalised autocorrelation at least this high...
MIN_LATTICE_CORRELATION = 0.3
# ... and at least this many frame pixels long (shorter ones are strokes and letters repeating).
_MIN_PERIOD_SHARE = 0.04
# Peaks within this share of the strongest count as lattice vectors (the shortest two are taken).
_PEAK_SHARE = 0.6
# Two vectors are one direction (not a 2-D lattice) when |sin| of their angle is below this.
_MIN_SINE = 0.35
# The aligned images must overlap on at least this many frame pixels per side, and the overlap must
# hold this many lattice cells, to tell a lattice from a single logo's self-similarity.
_MIN_OVERLAP_PX = 48
_MIN_CELLS = 4.0
# Matching counts the pixels where the drawn lattice's edges exceed this share of their strong ones.
_ZONE_SHARE = 0.1


@dataclass
class Lattice:
    """A tile repeated on a lattice, in the frame of a `WatermarkTemplate`.

    vectors: float64 2×2, rows the two lattice vectors (dy, dx) in frame pixels.
    origin: float64 (y, x) frame position of a cell corner; the tile's centroid is at the cell's centre,
        so an instance lies in one cell (see `cell_indices`).
    cell_gradients: float32 a×b×6 median colour gradients over one cell, sampled at lattice coordinates
        (row k, column l ↔ origin + (k/a)·v1 + (l/b)·v2).
    cell_support: bool a×b, the tile's support on the same grid.
    """

    vectors: np.ndarray
    origin: np.ndarray
    cell_gradients: np.ndarray
    cell_support: np.ndarray

    @property
    def cell_shape(self) -> tuple[int, int]:
        return tuple(self.cell_support.shape)  # type: ignore[return-value]

    def lattice_coordinates(self, frame_y: np.ndarray, frame_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) with frame position = origin + a·v1 + b·v2 (float arrays shaped like the inputs)."""
        inverse = np.linalg.inv(self.vectors.T)
        dy, dx = frame_y - self.origin[0], frame_x - self.origin[1]
        return inverse[0, 0] * dy + inverse[0, 1] * dx, inverse[1, 0] * dy + inverse[1, 1] * dx

    def cell_maps(self, frame_y: np.ndarray, frame_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 remap maps (x = column, y = row) into the cell arrays, wrapped into one cell."""
        a, b = self.lattice_coordinates(frame_y, frame_x)
        rows, cols = self.cell_shape
        return ((b - np.floor(b)) * cols - 0.5).astype(np.float32), ((a - np.floor(a)) * rows - 0.5).astype(np.float32)

    def render(self, cell: np.ndarray, frame_y: np.ndarray, frame_x: np.ndarray) -> np.ndarray:
        """A cell array (a×b or a×b×C) resampled at frame positions (2-D arrays): the periodic field."""
        map_x, map_y = self.cell_maps(frame_y, frame_x)
        rendered = cv2.remap(np.ascontiguousarray(cell, np.float32), map_x, map_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_WRAP)
        return rendered.reshape(*frame_y.shape, *cell.shape[2:])

    def cell_indices(self, frame_y: np.ndarray, frame_x: np.ndarray) -> np.ndarray:
        """int64 N×2 (i, j) lattice cells of the given frame positions (one per instance)."""
        a, b = self.lattice_coordinates(frame_y, frame_x)
        return np.stack([np.floor(a), np.floor(b)], axis=-1).astype(np.int64).reshape(-1, 2)

    def placed(self, dy: float, dx: float, scale: float = 1.0) -> Lattice:
        """The lattice scaled by `scale` about the anchor (tile and spacing alike), then moved by (dy, dx)."""
        return Lattice(self.vectors * scale, self.origin * scale + np.array([dy, dx]), self.cell_gradients,
                       self.cell_support)

    def half_cell(self) -> np.ndarray:
        """(dy, dx) from a lattice point to the middle of its cell: where a tile is not (for chance)."""
        return 0.5 * (self.vectors[0] + self.vectors[1])

    def as_dict(self, frame: Frame) -> dict[str, object]:
        return {"vectors": np.round(self.vectors, 2).tolist(), "origin": np.round(self.origin, 2).tolist(),
                "frame": f"{frame.anchor}/{frame.normaliser}@{frame.resolution:g}"}

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for a template `.npz` (see `from_arrays`)."""
        return {"lattice_vectors": self.vectors, "lattice_origin": self.origin,
                "lattice_cell_gradients": self.cell_gradients, "lattice_cell_support": self.cell_support}

    @classmethod
    def from_arrays(cls, data) -> Lattice | None:  # noqa: ANN001 - an NpzFile or a mapping of arrays
        if "lattice_vectors" not in data:
            return None
        return cls(np.asarray(data["lattice_vectors"], np.float64), np.asarray(data["lattice_origin"], np.float64),
                   np.asarray(data["lattice_cell_gradients"], np.float32),
                   np.asarray(data["lattice_cell_support"], bool))


# ------------------------------------------------------------------------------------------- detect


@dataclass(frozen=True)
class LatticeGuess:
    """Lattice vectors (2×2, frame px) found in one frame's median field, and how periodic it is."""

    frame: Frame
    vectors: np.ndarray
    strength: float


def _overlap(framed_shapes: list[tuple[int, int]], origins: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    """Frame box (y0, x0, y1, x1) that every image covers when aligned on its anchor."""
    y0 = max(-o[0] for o in origins)
    x0 = max(-o[1] for o in origins)
    y1 = min(s[0] - o[0] for s, o in zip(framed_shapes, origins))
    x1 = min(s[1] - o[1] for s, o in zip(framed_shapes, origins))
    return y0, x0, y1, x1


def aligned_median(images: list[np.ndarray], frame: Frame) -> tuple[np.ndarray, tuple[int, int]] | None:
    """float32 h×w×6 per-pixel median of the images' colour gradients over the box all of them cover when
    resized to `frame` and aligned on its anchor, and that box's frame top-left; None if it is too small."""
    resized = [frame.resize(image) for image in images]
    origins = [frame.origin(image.shape[:2]) for image in images]
    y0, x0, y1, x1 = _overlap([r.shape[:2] for r in resized], origins)
    if y1 - y0 < _MIN_OVERLAP_PX or x1 - x0 < _MIN_OVERLAP_PX:
        return None
    stack = np.stack([color_gradients(r[o[0] + y0 : o[0] + y1, o[1] + x0 : o[1] + x1])
                      for r, o in zip(resized, origins)])
    return np.median(stack, axis=0), (y0, x0)


def autocorrelation(field: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation (2h−1)×(2w−1) of an h×w×C field, zero shift at the centre: the mean
    product over the overlap of the field and its shifted copy, over the field's mean energy."""
    height, width = field.shape[:2]
    size = (2 * height, 2 * width)
    total = np.zeros(size)
    for channel in range(field.shape[2]):
        spectrum = np.fft.rfft2(field[..., channel], s=size)
        total += np.fft.irfft2(spectrum * np.conj(spectrum), s=size)
    ones = np.fft.rfft2(np.ones((height, width)), s=size)
    overlap = np.fft.irfft2(ones * np.conj(ones), s=size)
    centred = np.fft.fftshift(total / np.maximum(overlap, 1.0))[1:, 1:]
    energy = centred[height - 1, width - 1]
    return centred / energy if energy > 0 else np.zeros_like(centred)


def _peaks(correlation: np.ndarray, min_period: float, max_shift: tuple[int, int]) -> list[tuple[float, int, int]]:
    """(value, dy, dx) local maxima of a centred autocorrelation in the half plane dy > 0 or (dy = 0,
    dx > 0), at least `min_period` from zero and within ± `max_shift`, best first."""
    cy, cx = (correlation.shape[0] - 1) // 2, (correlation.shape[1] - 1) // 2
    local_max = correlation >= cv2.dilate(correlation.astype(np.float32), np.ones((5, 5), np.uint8)) - 1e-7
    ys, xs = np.nonzero(local_max & (correlation > 0))
    found = []
    for y, x in zip(ys, xs):
        dy, dx = int(y - cy), int(x - cx)
        if (dy < 0 or (dy == 0 and dx <= 0)) or np.hypot(dy, dx) < min_period:
            continue
        if abs(dy) > max_shift[0] or abs(dx) > max_shift[1]:
            continue
        found.append((float(correlation[y, x]), dy, dx))
    found.sort(reverse=True)
    return found


def lattice_vectors(correlation: np.ndarray, min_period: float, max_shift: tuple[int, int]
                    ) -> tuple[np.ndarray, float] | None:
    """The two shortest strong non-collinear peaks of a centred autocorrelation (the lattice's basis)
    and the weaker of their values; None when the field does not repeat in two directions."""
    peaks = _peaks(correlation, min_period, max_shift)
    if not peaks or peaks[0][0] < MIN_LATTICE_CORRELATION:
        return None
    strong = [p for p in peaks if p[0] >= max(MIN_LATTICE_CORRELATION, _PEAK_SHARE * peaks[0][0])]
    strong.sort(key=lambda p: np.hypot(p[1], p[2]))
    first = np.array(strong[0][1:], np.float64)
    for value, dy, dx in strong[1:]:
        second = np.array([dy, dx], np.float64)
        sine = abs(first[0] * second[1] - first[1] * second[0]) / (np.hypot(*first) * np.hypot(*second))
        if sine >= _MIN_SINE:
            return np.stack([first, second]), min(strong[0][0], value)
    return None


def _refine(correlation: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """A lattice vector to sub-pixel precision, from the peaks at its multiples that the correlation holds."""
    cy, cx = (correlation.shape[0] - 1) // 2, (correlation.shape[1] - 1) // 2
    estimates, weights = [], []
    for multiple in (1, 2, 3):
        y, x = round(cy + multiple * vector[0]), round(cx + multiple * vector[1])
        radius = 1 + multiple
        if not (radius <= y < correlation.shape[0] - radius - 1 and radius <= x < correlation.shape[1] - radius - 1):
            break
        window = correlation[y - radius : y + radius + 1, x - radius : x + radius + 1]
        py, px = np.unravel_index(int(np.argmax(window)), window.shape)
        py, px = int(py) + y - radius, int(px) + x - radius
        if not (1 <= py < correlation.shape[0] - 1 and 1 <= px < correlation.shape[1] - 1):
            break
        sub_y = py + parabola_vertex(correlation[py - 1, px], correlation[py, px], correlation[py + 1, px])
        sub_x = px + parabola_vertex(correlation[py, px - 1], correlation[py, px], correlation[py, px + 1])
        estimates.append(np.array([sub_y - cy, sub_x - cx]))
        weights.append(multiple)
    if not estimates:
        return vector
    return sum(estimates) / float(sum(weights))


def find_lattices(images: list[np.ndarray], frames: list[Frame]) -> list[LatticeGuess]:
    """Per size normaliser, the frame in which the images' aligned median repeats most strongly on a 2-D
    lattice, with its vectors; strongest first, empty when none repeats. Frames at a coarse resolution:
    this only has to see the lattice."""
    best: dict[str, LatticeGuess] = {}
    for frame in frames:
        found = aligned_median(images, frame)
        if found is None:
            continue
        median = found[0]
        height, width = median.shape[:2]
        correlation = autocorrelation(median)
        basis = lattice_vectors(correlation, _MIN_PERIOD_SHARE * frame.resolution, (height // 2, width // 2))
        if basis is None:
            continue
        vectors, strength = basis
        if height * width < _MIN_CELLS * abs(np.linalg.det(vectors)):
            continue
        if frame.normaliser not in best or strength > best[frame.normaliser].strength:
            best[frame.normaliser] = LatticeGuess(frame, vectors, strength)
    return sorted(best.values(), key=lambda guess: -guess.strength)


def refine_vectors(images: list[np.ndarray], frame: Frame, vectors: np.ndarray) -> np.ndarray:
    """Lattice vectors (found at another resolution, rescaled to `frame`'s) refined at `frame`'s resolution."""
    found = aligned_median(images, frame)
    if found is None:
        return vectors
    correlation = autocorrelation(found[0])
    return np.stack([_refine(correlation, vector) for vector in vectors])


# ---------------------------------------------------------------------------------------------- fit


def cell_grid(vectors: np.ndarray) -> tuple[int, int]:
    """Cell array shape: about one sample per frame pixel along each lattice vector."""
    return max(4, int(np.ceil(np.hypot(*vectors[0])))), max(4, int(np.ceil(np.hypot(*vectors[1]))))


def fold(gradients: np.ndarray, origin: tuple[int, int], lattice: Lattice) -> np.ndarray:
    """float32 a×b×6: an image's frame-scale gradients (H×W×6, anchor at `origin`) averaged over every
    translate of the lattice cell (bins of lattice coordinates; empty bins 0)."""
    height, width = gradients.shape[:2]
    frame_y, frame_x = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b = lattice.lattice_coordinates(frame_y - origin[0], frame_x - origin[1])
    rows, cols = lattice.cell_shape
    index = (np.floor((a - np.floor(a)) * rows).astype(np.int64) % rows) * cols + \
        (np.floor((b - np.floor(b)) * cols).astype(np.int64) % cols)
    counts = np.bincount(index.ravel(), minlength=rows * cols)
    folded = np.stack([np.bincount(index.ravel(), weights=gradients[..., c].ravel(), minlength=rows * cols)
                       for c in range(gradients.shape[2])], axis=-1)
    return (folded / np.maximum(counts, 1)[:, None]).reshape(rows, cols, -1).astype(np.float32)


def _render_box(lattice: Lattice, cells: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Frame (y, x) grids of a box `cells` lattice cells on a side around the lattice origin."""
    extent = np.abs(lattice.vectors).sum(axis=0) * cells
    height, width = max(8, int(np.ceil(extent[0]))), max(8, int(np.ceil(extent[1])))
    frame_y, frame_x = np.mgrid[0:height, 0:width].astype(np.float64)
    return frame_y + lattice.origin[0] - height / 2, frame_x + lattice.origin[1] - width / 2


def fit_cell(folded: list[np.ndarray], vectors: np.ndarray, edge_threshold: float, support_threshold: float,
             seed: int) -> Lattice | None:
    """The tile from the images' folded cells (`fold`, lattice origin at the anchor): median gradients,
    support (Poisson, over a box of several cells rendered from the cell), origin moved so the tile's
    centroid is at the cell centre. None when the support cannot be reconstructed."""
    stack = np.stack(folded)
    median = np.median(stack, axis=0)
    null = null_magnitude(stack, np.random.default_rng(seed))
    lattice = Lattice(vectors, np.zeros(2), median, np.zeros(median.shape[:2], bool))
    frame_y, frame_x = _render_box(lattice)
    found = support_from_gradients(lattice.render(median, frame_y, frame_x), lattice.render(null, frame_y, frame_x),
                                   edge_threshold, support_threshold, largest_only=False)
    if found is None or not found[0].any():
        return None
    rendered_support = found[0]
    # Back onto the cell: the share of the rendered translates of each cell sample that are support.
    rows, cols = median.shape[:2]
    map_x, map_y = lattice.cell_maps(frame_y, frame_x)
    index = (np.floor(map_y + 0.5).astype(np.int64) % rows) * cols + (np.floor(map_x + 0.5).astype(np.int64) % cols)
    hits = np.bincount(index.ravel(), weights=rendered_support.ravel().astype(np.float64), minlength=rows * cols)
    counts = np.bincount(index.ravel(), minlength=rows * cols)
    support = (hits / np.maximum(counts, 1) > 0.5).reshape(rows, cols)
    if not support.any():
        return None
    # Centre the tile in its cell (circular means of its lattice coordinates).
    ks, ls = np.nonzero(support)
    shift_a = np.angle(np.exp(2j * np.pi * (ks + 0.5) / rows).mean()) / (2 * np.pi) - 0.5
    shift_b = np.angle(np.exp(2j * np.pi * (ls + 0.5) / cols).mean()) / (2 * np.pi) - 0.5
    roll = (-round(shift_a * rows), -round(shift_b * cols))
    origin = vectors[0] * (-roll[0] / rows) + vectors[1] * (-roll[1] / cols)
    return Lattice(vectors, origin, np.roll(median, roll, axis=(0, 1)), np.roll(support, roll, axis=(0, 1)))


def instance_tile(lattice: Lattice) -> tuple[np.ndarray, np.ndarray]:
    """(gradients h×w×6, support h×w) of one tile instance around the middle of the origin cell: a plain
    rectangular template for code that expects one (template shape, support size)."""
    centre = lattice.origin + lattice.half_cell()
    extent = np.abs(lattice.vectors).sum(axis=0)
    height, width = max(4, int(np.ceil(extent[0]))), max(4, int(np.ceil(extent[1])))
    frame_y, frame_x = np.mgrid[0:height, 0:width].astype(np.float64)
    frame_y += centre[0] - height / 2
    frame_x += centre[1] - width / 2
    inside = lattice.cell_indices(frame_y, frame_x)
    home = np.all(inside == lattice.cell_indices(np.array([centre[0]]), np.array([centre[1]]))[0], axis=1)
    drawn = lattice.render(lattice.cell_support.astype(np.float32), frame_y, frame_x) > 0.5
    support = drawn & home.reshape(height, width)
    return lattice.render(lattice.cell_gradients, frame_y, frame_x), support


def instance_corners(lattice: Lattice, tile_shape: tuple[int, int], scale: float,
                     frame_box: tuple[float, float, float, float]) -> np.ndarray:
    """float64 N×2 frame (y, x) top-left corners of the tile template (`instance_tile`'s, `tile_shape` at
    scale 1, drawn at `scale`) of every instance of `lattice` (already placed: `Lattice.placed`) whose
    template box overlaps `frame_box` (y0, x0, y1, x1 in frame pixels), row by row."""
    size = np.array(tile_shape, np.float64) * scale
    offset = lattice.half_cell() - size / 2
    y0, x0, y1, x1 = frame_box
    corner_y = np.array([y0 - size[0], y0 - size[0], y1 + size[0], y1 + size[0]])
    corner_x = np.array([x0 - size[1], x1 + size[1], x0 - size[1], x1 + size[1]])
    a, b = lattice.lattice_coordinates(corner_y, corner_x)
    rows = np.arange(int(np.floor(a.min())) - 1, int(np.ceil(a.max())) + 2)
    cols = np.arange(int(np.floor(b.min())) - 1, int(np.ceil(b.max())) + 2)
    i, j = np.meshgrid(rows, cols, indexing="ij")
    corners = (lattice.origin + offset)[None, :] + i.reshape(-1, 1) * lattice.vectors[0] + \
        j.reshape(-1, 1) * lattice.vectors[1]
    overlaps = (corners[:, 0] < y1) & (corners[:, 0] + size[0] > y0) & \
        (corners[:, 1] < x1) & (corners[:, 1] + size[1] > x0)
    return corners[overlaps]


# -------------------------------------------------------------------------------------------- match


def periodic_orientation(lattice: Lattice, shape: tuple[int, int], origin: tuple[int, int], blur: float
                         ) -> np.ndarray:
    """float32 H×W×2 orientation field of the tiled watermark drawn over a frame-scale image of `shape`
    whose anchor is at `origin` (see `Lattice.placed` for a moved or scaled lattice)."""
    frame_y, frame_x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return orientation_field(lattice.render(lattice.cell_gradients, frame_y - origin[0], frame_x - origin[1]),
                             blur=blur)


def match_phase(image_field: np.ndarray, model_field: np.ndarray, radius: int) -> tuple[float, int, int]:
    """Best (score, dy, dx) normalised correlation of the drawn watermark's orientation field (H×W×2) with
    the image's, over shifts of ± `radius` px (the model's border of `radius` px is left out).

    Only the zone the tiles' edges cover counts (a masked correlation): the scene elsewhere carries
    no evidence either way, and would dilute the score of a faint watermark over a busy picture.
    """
    height, width = model_field.shape[:2]
    if height <= 2 * radius + 4 or width <= 2 * radius + 4:
        return -1.0, 0, 0
    inner = np.ascontiguousarray(model_field[radius : height - radius, radius : width - radius])
    strength = np.sqrt((inner**2).sum(-1))
    zone = (strength > _ZONE_SHARE * float(np.percentile(strength, 99))).astype(np.uint8)
    zone = cv2.dilate(zone, np.ones((3, 3), np.uint8))
    if not zone.any():
        return -1.0, 0, 0
    scores = cv2.matchTemplate(np.ascontiguousarray(image_field), inner, cv2.TM_CCORR_NORMED,
                               mask=np.repeat(zone[..., None], 2, axis=2).astype(np.float32))
    scores = np.where(np.isfinite(scores), scores, -1.0)
    _, peak, _, (px, py) = cv2.minMaxLoc(scores)
    return float(peak), int(py) - radius, int(px) - radius
