"""Splice a restored image into its source JPEG: re-code only the DCT blocks the restoration changed.

For each colour component, a block is re-coded when any of its samples covers a changed pixel. Its new
coefficients are the DCT of the source's own samples (the exact inverse DCT of its coefficients) with the
changed samples replaced by the restored image's (colour-converted, and box-averaged for subsampled
chroma), quantised with the source's table for that component. Every other block is copied unchanged.

What stays bit-identical: a pixel is decoded from its own luma block and, through the decoder's
upsampling, from the chroma samples at and next to it. libjpeg-turbo's "fancy" upsampling of 2×
subsampled chroma reads one chroma sample beyond the pixel's own, so a re-coded chroma block can move
the pixels up to one pixel outside its footprint. `SplicedJpeg.affected_pixels` is that bound (the re-coded
blocks' footprints, grown by factor − 1 pixels along each subsampled axis), and `touched_pixels` the
whole MCUs that contain it: every pixel outside the touched MCUs decodes bit-identical to the source.

EXIF-rotated sources are spliced in their stored orientation (the restored image and its mask are turned
back exactly, see pipeline.jpeg.orientation) and keep their orientation tag.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.jpeg.blocks import BLOCK, box_any, forward_dct, inverse_dct, quantise
from pipeline.jpeg.coefficients import (CoefficientError, JpegCoefficients, read_coefficients,
                                        write_coefficients)
from pipeline.jpeg.orientation import ORIENTATION_TAG, normal_orientation, to_stored, to_upright
from pipeline.jpeg.segments import APP1, APP2, JpegHeaderError

SPLICEABLE_COLOUR_SPACES = ("YCbCr", "GRAYSCALE", "CMYK")
ICC_SIGNATURE = b"ICC_PROFILE\x00"
EXIF_SIGNATURE = b"Exif\x00\x00"


class SpliceUnsupported(ValueError):
    """This source cannot be spliced (the message says why); the caller re-encodes instead."""


@dataclass(frozen=True)
class RecodedBlocks:
    """Which blocks of one component were re-coded: a bool grid (block rows × columns, stored
    orientation) and the size of a block's footprint in pixels (8 × the subsampling factor)."""

    grid: np.ndarray
    factor_y: int
    factor_x: int


@dataclass(frozen=True)
class SplicedJpeg:
    """A spliced JPEG and where it may differ from its source.

    Attributes:
        data: the JPEG file.
        recoded_blocks / total_blocks: 8×8 blocks re-coded / stored, all components together.
        recoded_mcus / total_mcus: MCUs holding a re-coded block / all MCUs.
        mcu_size: (height, width) of an MCU in pixels.
        stored_size: (height, width) of the image as stored.
        orientation: the source's EXIF orientation (1 = stored upright).
        recoded: per component, the re-coded blocks.
    """

    data: bytes
    recoded_blocks: int
    total_blocks: int
    recoded_mcus: int
    total_mcus: int
    mcu_size: tuple[int, int]
    stored_size: tuple[int, int]
    orientation: int
    recoded: tuple[RecodedBlocks, ...]

    def _affected_stored(self) -> np.ndarray:
        height, width = self.stored_size
        affected = np.zeros((height, width), bool)
        for blocks in self.recoded:
            footprint = np.repeat(np.repeat(blocks.grid, BLOCK * blocks.factor_y, 0), BLOCK * blocks.factor_x, 1)
            affected |= _grow(footprint[:height, :width], blocks.factor_y - 1, blocks.factor_x - 1)
        return affected

    def touched_mcus(self) -> np.ndarray:
        """bool grid (MCU rows × columns, stored orientation): the MCUs holding a pixel that may decode
        differently from the source (the re-coded MCUs and the ring chroma upsampling reaches)."""
        return box_any(self._affected_stored(), *self.mcu_size)

    def touched_pixels(self) -> np.ndarray:
        """bool H×W (as displayed): the pixels of the touched MCUs; all others decode as the source's."""
        height, width = self.stored_size
        grid = np.repeat(np.repeat(self.touched_mcus(), self.mcu_size[0], 0), self.mcu_size[1], 1)
        return to_upright(grid[:height, :width], self.orientation)

    def affected_pixels(self) -> np.ndarray:
        """bool H×W (as displayed): the re-coded blocks' footprints grown by the upsampler's reach, the
        tighter per-pixel bound inside the touched MCUs."""
        return to_upright(self._affected_stored(), self.orientation)

    def describe(self) -> str:
        return (f"spliced: {self.recoded_blocks} of {self.total_blocks} blocks re-coded, in {self.recoded_mcus} "
                f"of {self.total_mcus} MCUs")


def splice_jpeg(source: bytes, restored: np.ndarray, changed: np.ndarray) -> SplicedJpeg:
    """Write `restored` (uint8 H×W×3 RGB, as displayed) into `source` (JPEG bytes) where `changed` (bool
    H×W, as displayed) is True. Raises SpliceUnsupported when the source cannot be spliced."""
    if restored.dtype != np.uint8 or restored.ndim != 3 or restored.shape[2] != 3:
        raise ValueError(f"restored must be uint8 H×W×3, got {restored.dtype} {restored.shape}")
    if changed.shape != restored.shape[:2]:
        raise ValueError(f"changed mask {changed.shape} does not match the image {restored.shape[:2]}")
    try:
        coefficients = read_coefficients(source)
    except (CoefficientError, JpegHeaderError) as exc:
        raise SpliceUnsupported(str(exc)) from exc
    if coefficients.colour_space not in SPLICEABLE_COLOUR_SPACES:
        raise SpliceUnsupported(f"{coefficients.colour_space} JPEGs are not spliced")
    h_max, v_max = coefficients.max_sampling
    if any(h_max % c.h_sampling or v_max % c.v_sampling for c in coefficients.components):
        raise SpliceUnsupported("sampling factors that do not divide the largest one")
    image = Image.open(io.BytesIO(source))
    orientation = normal_orientation(image.getexif().get(ORIENTATION_TAG))
    stored_rgb, stored_changed = to_stored(restored, orientation), to_stored(np.asarray(changed, bool), orientation)
    if stored_rgb.shape[:2] != (coefficients.height, coefficients.width):
        raise SpliceUnsupported(f"restored image is {restored.shape[1]}×{restored.shape[0]}, the source stores "
                                f"{coefficients.width}×{coefficients.height} (orientation {orientation})")
    mcu_size = (BLOCK * v_max, BLOCK * h_max)
    recoded_mcus = box_any(stored_changed, *mcu_size)
    recoded = _recode_mcus(coefficients, stored_rgb, stored_changed, recoded_mcus)
    try:
        data = write_coefficients(coefficients, _output_markers(image, coefficients))
    except CoefficientError as exc:
        raise SpliceUnsupported(str(exc)) from exc
    return SplicedJpeg(data=data, recoded_blocks=sum(int(r.grid.sum()) for r in recoded),
                       total_blocks=sum(c.blocks.shape[0] * c.blocks.shape[1] for c in coefficients.components),
                       recoded_mcus=int(recoded_mcus.sum()), total_mcus=recoded_mcus.size, mcu_size=mcu_size,
                       stored_size=stored_changed.shape, orientation=orientation, recoded=tuple(recoded))


def _recode_mcus(coefficients: JpegCoefficients, rgb: np.ndarray, changed: np.ndarray,
                 mcus: np.ndarray) -> list[RecodedBlocks]:
    """Re-code, in place, every block of the `mcus` (bool MCU grid) that covers a changed pixel.

    Works on the selected MCUs' pixels only (n × MCU tiles), so a big photo with a small logo stays cheap.
    Tiles past the image's right or bottom edge repeat its last column / row, as libjpeg's encoder pads.
    """
    height, width = changed.shape
    h_max, v_max = coefficients.max_sampling
    mcu_h, mcu_w = BLOCK * v_max, BLOCK * h_max
    mcu_y, mcu_x = np.nonzero(mcus)
    rows = mcu_y[:, None] * mcu_h + np.arange(mcu_h)  # n × mcu_h pixel rows
    cols = mcu_x[:, None] * mcu_w + np.arange(mcu_w)
    clipped_rows, clipped_cols = np.minimum(rows, height - 1)[:, :, None], np.minimum(cols, width - 1)[:, None, :]
    inside = (rows < height)[:, :, None] & (cols < width)[:, None, :]
    hole_tiles = changed[clipped_rows, clipped_cols] & inside
    planes = _colour_planes(rgb[clipped_rows, clipped_cols], coefficients.colour_space)
    recoded = []
    for component, plane in zip(coefficients.components, planes):
        factor_y, factor_x = v_max // component.v_sampling, h_max // component.h_sampling
        v, h, count = component.v_sampling, component.h_sampling, mcu_y.size
        boxes = (count, BLOCK * v, factor_y, BLOCK * h, factor_x)
        # n × v × h × 8 × 8: the component's blocks of each selected MCU, in samples.
        samples = plane.reshape(boxes).mean(axis=(2, 4)).reshape(count, v, BLOCK, h, BLOCK).swapaxes(2, 3)
        hole = hole_tiles.reshape(boxes).any(axis=(2, 4)).reshape(count, v, BLOCK, h, BLOCK).swapaxes(2, 3)
        block_rows = (mcu_y[:, None, None] * v + np.arange(v)[None, :, None]).repeat(h, axis=2)
        block_cols = (mcu_x[:, None, None] * h + np.arange(h)[None, None, :]).repeat(v, axis=1)
        stored_rows, stored_cols = component.blocks.shape[:2]  # blocks wholly past the image are not stored
        which = np.nonzero(hole.any(axis=(3, 4)) & (block_rows < stored_rows) & (block_cols < stored_cols))
        grid = np.zeros((stored_rows, stored_cols), bool)
        if which[0].size:
            at = (block_rows[which], block_cols[which])
            table = component.quantisation
            target = np.where(hole[which], samples[which], inverse_dct(component.blocks[at] * table))
            component.blocks[at] = quantise(forward_dct(target), table)
            grid[at] = True
        recoded.append(RecodedBlocks(grid, factor_y, factor_x))
    return recoded


def _colour_planes(rgb: np.ndarray, colour_space: str) -> list[np.ndarray]:
    """float …×H×W planes of the stored components for uint8 …×H×W×3 RGB pixels (JFIF's YCbCr; Pillow's
    CMYK, stored inverted as Adobe writes it and Pillow reads it)."""
    if colour_space == "CMYK":
        flat = np.ascontiguousarray(rgb.reshape(-1, rgb.shape[-2], 3))
        cmyk = np.asarray(Image.fromarray(flat, "RGB").convert("CMYK"), np.float64).reshape(*rgb.shape[:-1], 4)
        return [255.0 - cmyk[..., i] for i in range(4)]
    red, green, blue = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    if colour_space == "GRAYSCALE":
        return [luma]
    return [luma, -0.168736 * red - 0.331264 * green + 0.5 * blue + 128.0,
            0.5 * red - 0.418688 * green - 0.081312 * blue + 128.0]


def _grow(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """`mask` dilated by `rows` pixels up and down and `cols` pixels left and right (a rectangle)."""
    grown = mask.copy()
    for shift in range(1, rows + 1):
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    widened = grown.copy()
    for shift in range(1, cols + 1):
        widened[:, shift:] |= grown[:, :-shift]
        widened[:, :-shift] |= grown[:, shift:]
    return widened


def _output_markers(image: Image.Image, coefficients: JpegCoefficients) -> list[tuple[int, bytes]]:
    """The metadata the output carries, as the re-encoding writer keeps it (pipeline.imageio): EXIF without
    its thumbnail (the orientation stays: the pixels stay as stored), and the ICC profile's APP2 chunks.
    JFIF (density included) and Adobe segments are libjpeg's own, copied from the source's parameters."""
    from pipeline.imageio import exif_without_thumbnail

    markers: list[tuple[int, bytes]] = []
    exif = exif_without_thumbnail(image)
    if exif:
        markers.append((APP1, exif if exif.startswith(EXIF_SIGNATURE) else EXIF_SIGNATURE + exif))
    markers += [(APP2, segment.payload) for segment in coefficients.segments
                if segment.marker == APP2 and segment.payload.startswith(ICC_SIGNATURE)]
    return markers
