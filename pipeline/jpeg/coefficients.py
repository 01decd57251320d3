"""A JPEG file's quantised DCT coefficients in and out, through `jpeglib` (libjpeg builds, MPL-2.0).

Reading gives each component's coefficient blocks, sampling factors and quantisation table. Writing starts
from the source file (libjpeg's `jpeg_copy_critical_parameters`: same frame, components, sampling factors
and quantisation tables) and entropy-codes the given coefficients, so every block that was not changed
comes out exactly as it went in. The entropy coding follows the source: a sequential source is written
sequential with libjpeg-turbo, with optimised Huffman tables where the source had them; a progressive
source is written progressive with mozjpeg (whose defaults are a progressive, optimised scan script).

jpeglib copies only the first three components from the arrays it is given (a fourth, CMYK's K, keeps the
source's coefficients), so four-component files are written in two passes over copies whose frame headers
list the components in another order (see `write_coefficients`). jpeglib works on files and on one
process-wide choice of libjpeg build: calls go through temporary files and hold a lock.
"""
from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.jpeg.segments import (HUFFMAN_PROGRESSIVE, HUFFMAN_SEQUENTIAL, FrameHeader, Segment, frame_header,
                                    has_optimised_huffman, header_segments, with_components_reordered)

SEQUENTIAL_WRITER = "turbo210"
PROGRESSIVE_WRITER = "mozjpeg403"
READER = "turbo210"
# libjpeg-turbo (and mozjpeg) refuse a scan that lists components in another order than the frame header
# (their duplicate check), which the reordered copies of four-component files do; libjpeg 6b looks them up
# by id. Its writer is sequential only: four-component progressive sources come out sequential (optimised).
REORDERED_BUILD = "6b"
COLOUR_SPACES = {1: "GRAYSCALE", 2: "RGB", 3: "YCbCr", 4: "CMYK", 5: "YCCK"}
_LIBJPEG_LOCK = threading.Lock()
# jpeglib reads and writes files: keep ours in memory where the system has a tmpfs.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _use(build: str) -> None:
    """Switch jpeglib to `build` (a directory listing and a library load each time: only when it differs)."""
    import jpeglib

    if jpeglib.version.get() != build:
        jpeglib.version.set(build)


class CoefficientError(ValueError):
    """The coefficients cannot be read from, or written as, this file."""


@dataclass
class Component:
    """One colour component: int16 blocks rows×cols×8×8 (natural order), sampling factors, 8×8 table."""

    blocks: np.ndarray
    h_sampling: int
    v_sampling: int
    quantisation: np.ndarray


@dataclass
class JpegCoefficients:
    """A JPEG file's coefficients and what it takes to write them back like the file.

    Attributes:
        source: the file's bytes (the writer copies its critical parameters).
        width, height: image size in pixels.
        colour_space: libjpeg's name of the stored colour space ("YCbCr", "GRAYSCALE", "RGB", "CMYK", "YCCK").
        components: in frame-header order.
        progressive: the file is progressive (else sequential).
        optimised_huffman: the file's Huffman tables are not the standard ones.
        segments: the file's header segments (APPn included).
    """

    source: bytes
    width: int
    height: int
    colour_space: str
    components: list[Component]
    progressive: bool
    optimised_huffman: bool
    segments: list[Segment] = field(repr=False)
    _reader: object = field(default=None, repr=False)  # the jpeglib object whose arrays `components` share

    @property
    def max_sampling(self) -> tuple[int, int]:
        """(max h, max v) sampling factor: an MCU is 8·max_v × 8·max_h pixels."""
        return (max(c.h_sampling for c in self.components), max(c.v_sampling for c in self.components))


def supported_frame(frame: FrameHeader) -> str | None:
    """None when jpeglib can read and write this frame, else why not."""
    if frame.marker not in (*HUFFMAN_SEQUENTIAL, HUFFMAN_PROGRESSIVE):
        kind = "lossless" if frame.marker in (0xC3, 0xC7, 0xCB, 0xCF) else "arithmetic-coded or hierarchical"
        return f"{kind} JPEG (SOF 0xFF{frame.marker:02X})"
    if frame.precision != 8:
        return f"{frame.precision}-bit JPEG"
    if len(frame.components) not in (1, 3, 4):
        return f"{len(frame.components)}-component JPEG"
    return None


def read_coefficients(data: bytes) -> JpegCoefficients:
    """Parse `data`'s header and read its coefficients. Raises CoefficientError (or JpegHeaderError)."""
    import jpeglib

    segments = header_segments(data)
    frame = frame_header(segments)
    reason = supported_frame(frame)
    if reason:
        raise CoefficientError(reason)
    with _LIBJPEG_LOCK, tempfile.TemporaryDirectory(prefix="matpipe-jpeg-", dir=_SCRATCH) as folder:
        path = Path(folder) / "source.jpg"
        path.write_bytes(data)
        _use(READER)
        try:
            jpeg = jpeglib.read_dct(str(path))
            jpeg.load()
        except OSError as exc:
            raise CoefficientError(f"libjpeg cannot read the coefficients: {exc}") from exc
        planes = [jpeg.Y, jpeg.Cb, jpeg.Cr, jpeg.K][:3 if jpeg.has_chrominance else 1]
        if jpeg.has_black:
            planes.append(jpeg.K)
        colour_space = COLOUR_SPACES.get(int(jpeg.jpeg_color_space), str(jpeg.jpeg_color_space))
        components = [Component(blocks=blocks, v_sampling=int(jpeg.samp_factor[i][0]),
                                h_sampling=int(jpeg.samp_factor[i][1]),
                                quantisation=np.array(jpeg.qt[jpeg.quant_tbl_no[i]], np.float64))
                      for i, blocks in enumerate(planes)]
    if len(components) != len(frame.components):
        raise CoefficientError(f"libjpeg read {len(components)} of the frame's {len(frame.components)} components")
    return JpegCoefficients(source=data, width=frame.width, height=frame.height, colour_space=colour_space,
                            components=components, progressive=frame.marker == HUFFMAN_PROGRESSIVE,
                            optimised_huffman=has_optimised_huffman(segments), segments=segments, _reader=jpeg)


def write_coefficients(coefficients: JpegCoefficients, markers: list[tuple[int, bytes]]) -> bytes:
    """The JPEG file of `coefficients.components`' blocks, coded like the source, with `markers`
    ((APPn/COM marker byte, payload) in order) after the ones libjpeg writes itself (JFIF, Adobe)."""
    blocks = [component.blocks for component in coefficients.components]
    with _LIBJPEG_LOCK, tempfile.TemporaryDirectory(prefix="matpipe-jpeg-", dir=_SCRATCH) as folder:
        if len(blocks) < 4:
            return _write(Path(folder), coefficients._reader, blocks, coefficients, markers)
        # Pass 1: a copy listing K first writes K (and M, Y); C keeps the source's blocks in the fourth place.
        swap = (3, 1, 2, 0)
        template = _read_template(Path(folder), with_components_reordered(coefficients.source, swap))
        first = _write(Path(folder), template, [blocks[i] for i in swap[:3]], coefficients, [])
        # Pass 2: back in the source's order, write C, M, Y; K comes from pass 1.
        template = _read_template(Path(folder), with_components_reordered(first, swap))
        return _write(Path(folder), template, blocks[:3], coefficients, markers)


def _read_template(folder: Path, template: bytes) -> object:
    """A jpeglib object over a reordered copy of a four-component file (read with REORDERED_BUILD)."""
    import jpeglib

    path = folder / "template.jpg"
    path.write_bytes(template)
    _use(REORDERED_BUILD)
    try:
        jpeg = jpeglib.read_dct(str(path))
        jpeg.load()
    except OSError as exc:
        raise CoefficientError(f"libjpeg cannot read the coefficients: {exc}") from exc
    return jpeg


def _write(folder: Path, jpeg: object, blocks: list[np.ndarray], coefficients: JpegCoefficients,
           markers: list[tuple[int, bytes]]) -> bytes:
    """One jpeglib write of `jpeg` (a read file: its critical parameters, and the coefficients of any
    fourth component) with its first components' blocks set to `blocks`."""
    import jpeglib

    for name, plane in zip(("Y", "Cb", "Cr"), blocks):
        if getattr(jpeg, name).shape != plane.shape:
            raise CoefficientError(f"component {name} is {plane.shape}, the file's is {getattr(jpeg, name).shape}")
        setattr(jpeg, name, plane)
    jpeg.markers = [jpeglib.Marker(type=jpeglib.MarkerType(marker), length=len(payload), content=payload)
                    for marker, payload in markers]
    reordered = len(coefficients.components) == 4
    if coefficients.progressive and not reordered:
        _use(PROGRESSIVE_WRITER)
        flags: list[str] = []
    else:
        _use(REORDERED_BUILD if reordered else SEQUENTIAL_WRITER)
        optimise = coefficients.optimised_huffman or coefficients.progressive
        flags = ["+OPTIMIZE_CODING" if optimise else "-OPTIMIZE_CODING"]
    output = folder / "output.jpg"
    try:
        jpeg.write_dct(str(output), flags=flags)
    except OSError as exc:
        raise CoefficientError(f"libjpeg cannot write the coefficients: {exc}") from exc
    return output.read_bytes()
