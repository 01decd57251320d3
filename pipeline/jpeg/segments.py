"""The marker segments of a JPEG file's header (everything before the first scan), read without decoding.

Splicing needs a few facts the decoders do not expose — the frame type (baseline, progressive,
arithmetic, lossless), the sample precision, whether the Huffman tables are the standard ones, which APPn
segments carry ICC and EXIF — and, for four-component files, a copy of the file whose frame header lists
the components in another order (see pipeline.jpeg.coefficients).
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

SOI, SOS, EOI = 0xD8, 0xDA, 0xD9
# Start-of-frame markers: C0 baseline, C1 extended sequential, C2 progressive (all Huffman); the others are
# lossless (C3, C7, CB, CF), hierarchical (C5-C7, CD-CF) or arithmetic (C9-CB, CD-CF).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
HUFFMAN_SEQUENTIAL = (0xC0, 0xC1)
HUFFMAN_PROGRESSIVE = 0xC2
DHT, APP0, APP1, APP2 = 0xC4, 0xE0, 0xE1, 0xE2
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length


class JpegHeaderError(ValueError):
    """The bytes are not a JPEG file whose header we can walk."""


@dataclass(frozen=True)
class Segment:
    """One marker segment: `marker` (the byte after 0xFF), its payload, and where the segment starts."""

    marker: int
    payload: bytes
    offset: int


@dataclass(frozen=True)
class FrameHeader:
    """The start-of-frame segment: marker, sample precision, size and (id, h, v, table) per component."""

    marker: int
    precision: int
    height: int
    width: int
    components: tuple[tuple[int, int, int, int], ...]


def header_segments(data: bytes) -> list[Segment]:
    """The marker segments from SOI up to and including the first SOS. Raises JpegHeaderError."""
    if data[:2] != b"\xff\xd8":
        raise JpegHeaderError("not a JPEG file (no start-of-image marker)")
    segments, offset = [], 2
    while True:
        while offset < len(data) and data[offset] == 0xFF and offset + 1 < len(data) and data[offset + 1] == 0xFF:
            offset += 1  # fill bytes
        if offset + 2 > len(data) or data[offset] != 0xFF:
            raise JpegHeaderError(f"header is malformed at byte {offset}")
        marker = data[offset + 1]
        if marker in _STANDALONE:
            offset += 2
            continue
        if offset + 4 > len(data):
            raise JpegHeaderError("header is truncated")
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if length < 2 or offset + 2 + length > len(data):
            raise JpegHeaderError(f"segment 0xFF{marker:02X} at byte {offset} runs past the end of the file")
        segments.append(Segment(marker, data[offset + 4:offset + 2 + length], offset))
        if marker == SOS:
            return segments
        if marker == EOI:
            raise JpegHeaderError("file ends before its first scan")
        offset += 2 + length


def frame_header(segments: list[Segment]) -> FrameHeader:
    """The file's start-of-frame header. Raises JpegHeaderError when there is none or it is malformed."""
    for segment in segments:
        if segment.marker in SOF_MARKERS:
            payload = segment.payload
            if len(payload) < 6 or len(payload) < 6 + 3 * payload[5]:
                raise JpegHeaderError("start-of-frame segment is truncated")
            entries = (payload[6 + 3 * i:9 + 3 * i] for i in range(payload[5]))
            components = tuple((ident, sampling >> 4, sampling & 15, table) for ident, sampling, table in entries)
            return FrameHeader(segment.marker, payload[0], int.from_bytes(payload[1:3], "big"),
                               int.from_bytes(payload[3:5], "big"), components)
    raise JpegHeaderError("no start-of-frame segment before the first scan")


def huffman_tables(segments: list[Segment]) -> set[tuple[int, bytes]]:
    """Every Huffman table the header defines, as (class << 4 | id, counts + symbols)."""
    tables = set()
    for segment in segments:
        if segment.marker != DHT:
            continue
        payload, position = segment.payload, 0
        while position + 17 <= len(payload):
            count = sum(payload[position + 1:position + 17])
            tables.add((payload[position], payload[position + 1:position + 17 + count]))
            position += 17 + count
    return tables


@functools.lru_cache(maxsize=1)
def standard_huffman_tables() -> frozenset[tuple[int, bytes]]:
    """The JPEG standard's example tables (Annex K.3), as libjpeg writes them when not optimising."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 140, 200)).save(buffer, "JPEG", quality=90, optimize=False)
    return frozenset(huffman_tables(header_segments(buffer.getvalue())))


def has_optimised_huffman(segments: list[Segment]) -> bool:
    """True when some Huffman table of the header is not one of the standard ones (an optimising encoder)."""
    return not huffman_tables(segments) <= standard_huffman_tables()


def with_components_reordered(data: bytes, order: tuple[int, ...]) -> bytes:
    """`data` with its frame header listing the components in `order` (indices into the current order).

    The coded data refers to components by id, so the file still holds the same image; libjpeg then
    numbers the components in the new order.
    """
    segments = header_segments(data)
    frame = next((segment for segment in segments if segment.marker in SOF_MARKERS), None)
    if frame is None:
        raise JpegHeaderError("no start-of-frame segment before the first scan")
    payload = frame.payload
    entries = [payload[6 + 3 * i:9 + 3 * i] for i in range(payload[5])]
    if sorted(order) != list(range(len(entries))):
        raise ValueError(f"{order} is not an order of {len(entries)} components")
    start = frame.offset + 4 + 6
    return data[:start] + b"".join(entries[i] for i in order) + data[start + 3 * len(entries):]
