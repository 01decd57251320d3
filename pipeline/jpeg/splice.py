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
from PIL import ExifTags, Image

from pipeline.jpeg.blocks import BLOCK, box_any, box_downsample, fit, forward_dct, inverse_dct, quantise, to_blocks
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
class SplicedJpeg:
    """A spliced JPEG and where it may differ from its source.

    Attributes:
        data: the JPEG file.
        recoded_blocks / total_blocks: 8×8 blocks re-coded / stored, all components together.
        touched_mcus: bool grid (MCU rows × MCU columns, stored orientation) of the MCUs holding a pixel
            that may decode differently from the source.
        mcu_size: (height, width) of an MCU in pixels.
        orientation: the source's EXIF orientation (1 = stored upright).
    """

    data: bytes
    recoded_blocks: int
    total_blocks: int
    touched_mcus: np.ndarray
    mcu_size: tuple[int, int]
    orientation: int
    _affected: np.ndarray  # bool H×W, stored orientation

    def touched_pixels(self) -> np.ndarray:
        """bool H×W (as displayed): the pixels of the touched MCUs; all others decode as the source's."""
        height, width = self._affected.shape
        grid = np.repeat(np.repeat(self.touched_mcus, self.mcu_size[0], 0), self.mcu_size[1], 1)
        return to_upright(grid[:height, :width], self.orientation)

    def affected_pixels(self) -> np.ndarray:
        """bool H×W (as displayed): the tighter per-pixel bound inside the touched MCUs."""
        return to_upright(self._affected, self.orientation)

    def describe(self) -> str:
        return (f"spliced: {self.recoded_blocks} of {self.total_blocks} blocks re-coded, "
                f"{int(self.touched_mcus.sum())} of {self.touched_mcus.size} MCUs touched")


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
    image = Image.open(io.BytesIO(source))
    orientation = normal_orientation(image.getexif().get(ORIENTATION_TAG))
    stored_rgb, stored_changed = to_stored(restored, orientation), to_stored(np.asarray(changed, bool), orientation)
    if stored_rgb.shape[:2] != (coefficients.height, coefficients.width):
        raise SpliceUnsupported(f"restored image is {restored.shape[1]}×{restored.shape[0]}, the source stores "
                                f"{coefficients.width}×{coefficients.height} (orientation {orientation})")
    recoded, affected = _recode_changed_blocks(coefficients, stored_rgb, stored_changed)
    try:
        data = write_coefficients(coefficients, _output_markers(image, coefficients))
    except CoefficientError as exc:
        raise SpliceUnsupported(str(exc)) from exc
    h_max, v_max = coefficients.max_sampling
    mcu_size = (BLOCK * v_max, BLOCK * h_max)
    touched = box_any(affected, *mcu_size)
    return SplicedJpeg(data=data, recoded_blocks=recoded, total_blocks=sum(c.blocks.shape[0] * c.blocks.shape[1]
                                                                        for c in coefficients.components),
                       touched_mcus=touched, mcu_size=mcu_size, orientation=orientation, _affected=affected)


def _recode_changed_blocks(coefficients: JpegCoefficients, rgb: np.ndarray, changed: np.ndarray) -> tuple[int, np.ndarray]:
    """Re-code, in place, every block covering a changed pixel; (blocks re-coded, bool H×W affected bound)."""
    height, width = changed.shape
    affected = np.zeros((height, width), bool)
    if not changed.any():
        return 0, affected
    h_max, v_max = coefficients.max_sampling
    mcu_h, mcu_w = BLOCK * v_max, BLOCK * h_max
    rows_any, cols_any = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    # Work on the MCU-aligned window around the change only: big photos with a small logo stay cheap.
    y0, x0 = rows_any[0] // mcu_h * mcu_h, cols_any[0] // mcu_w * mcu_w
    y1, x1 = min(-(-(rows_any[-1] + 1) // mcu_h) * mcu_h, height), min(-(-(cols_any[-1] + 1) // mcu_w) * mcu_w, width)
    planes = _colour_planes(rgb[y0:y1, x0:x1], coefficients.colour_space)
    window_changed = changed[y0:y1, x0:x1]
    recoded = 0
    for component, plane in zip(coefficients.components, planes):
        if h_max % component.h_sampling or v_max % component.v_sampling:
            raise SpliceUnsupported("sampling factors that do not divide the largest one")
        factor_y, factor_x = v_max // component.v_sampling, h_max // component.h_sampling
        block_h, block_w = BLOCK * factor_y, BLOCK * factor_x  # a block's footprint in pixels
        rows, cols = component.blocks.shape[:2]
        by0, bx0 = y0 // block_h, x0 // block_w
        by1, bx1 = min(-(-y1 // block_h), rows), min(-(-x1 // block_w), cols)
        size = ((by1 - by0) * BLOCK, (bx1 - bx0) * BLOCK)
        hole = to_blocks(fit(box_any(window_changed, factor_y, factor_x), *size, replicate=False))
        which = np.nonzero(hole.any(axis=(2, 3)))
        if not which[0].size:
            continue
        new_samples = to_blocks(fit(box_downsample(plane, factor_y, factor_x), *size, replicate=True))
        blocks = component.blocks[by0:by1, bx0:bx1]
        table = component.quantisation
        samples = np.where(hole[which], new_samples[which], inverse_dct(blocks[which] * table))
        blocks[which] = quantise(forward_dct(samples), table)
        recoded += which[0].size
        grid = np.zeros((rows, cols), bool)
        grid[which[0] + by0, which[1] + bx0] = True
        footprint = np.repeat(np.repeat(grid, block_h, 0), block_w, 1)[:height, :width]
        affected |= _grow(footprint, factor_y - 1, factor_x - 1)
    return recoded, affected


def _colour_planes(rgb: np.ndarray, colour_space: str) -> list[np.ndarray]:
    """float H×W planes of the stored components for uint8 RGB pixels (JFIF's YCbCr; Pillow's CMYK, stored
    inverted as Adobe writes it and Pillow reads it)."""
    if colour_space == "CMYK":
        cmyk = np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("CMYK"), np.float64)
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
