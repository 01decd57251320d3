"""Image files in and out: decode any supported file to upright 8-bit RGB (+ alpha) for the engines, and
encode a restored image back into the input's own format, mode and metadata.

Decoding applies the EXIF orientation, refuses images over a pixel limit (decompression bombs) and
reports unreadable, truncated and empty files as `ImageDecodeError`. What each input mode becomes:

    input mode                      engines see            written back as
    RGB                             RGB                    RGB
    RGBA, or any mode with a        RGB + alpha            RGBA (alpha re-attached unchanged)
      transparency key (P, L, RGB)
    L / LA                          grey in R=G=B (+ α)    L / LA; filled pixels as ITU-R 601 luma
    1 (bitonal)                     0 / 255 grey           1; filled pixels thresholded at 128
    P without transparency          palette colours        P with the original palette; filled pixels
                                                           take the nearest palette colour
    CMYK                            Pillow's CMYK → RGB    CMYK
    I;16 (16-bit grey), I           top 8 bits, grey       the same 16-bit mode; filled pixels = 8-bit × 257
    F (float)                       refused
    others (YCbCr, LAB, HSV, ...)   converted to RGB       RGB
(48-bit RGB PNGs reach us as 8-bit RGB: Pillow reduces them on read, so they are written back 8-bit.)
Given the changed-pixel mask, `encode_image` writes every unchanged pixel of a non-RGB output from the
source's own values (grey levels, palette indices, CMYK inks, 16-bit samples), so lossless formats stay
bit-identical outside the hole. JPEG is re-encoded here (the job and `matpipe inpaint` splice restored JPEGs
into their source instead, pipeline.jpeg, and come here only for `--jpeg reencode` or a source that cannot be
spliced) at high quality: quality 95, or the source's own
quantisation table entries where they are finer, so the output is never coarser than either (`jpeg_tables=
"source"` keeps the source's tables as they are: same file size, no new loss outside the hole); the source's
chroma subsampling is kept;
lossless WebP stays lossless; ICC profile, EXIF (minus the applied orientation, and minus its embedded
thumbnail, a small copy of the picture *before* cleaning) and DPI are kept (TIFF: ICC and DPI; its other
tags are not carried over).
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

# Pillow's own default; larger images are refused as likely decompression bombs.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
WRITABLE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
JPEG_QUALITY = 95
JpegTables = Literal["high", "source"]
JPEG_TABLE_CHOICES: tuple[str, ...] = ("high", "source")
WEBP_LOSSY_QUALITY = 95
# TIFF compressions written as found; anything else (JPEG-in-TIFF, ZSTD, ...) is written LZW (lossless).
TIFF_COMPRESSIONS = ("raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits")
BITONAL_TIFF_COMPRESSIONS = ("group3", "group4", "tiff_ccitt")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use: empty, unreadable, truncated, animated or of an unsupported mode."""


class ImageTooLargeError(ImageDecodeError):
    """The image has more pixels than allowed (the decompression-bomb guard)."""


@dataclass(frozen=True)
class SaveInfo:
    """How to write an image back like its source.

    Attributes:
        mode: the Pillow mode written when no alpha is attached or removed (see the module table).
        native: the source's pixels in `mode` when that is not RGB(A) (grey H×W, palette indices H×W, CMYK
            H×W×4, 16-bit H×W), so unchanged pixels can be written back exactly; None otherwise.
        palette: the RGB palette of a "P" source.
        icc_profile, exif, dpi: metadata kept on output (EXIF without the orientation already applied).
        jpeg_subsampling: Pillow's subsampling code of a JPEG source (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0).
        jpeg_qtables: the JPEG source's quantisation tables (64 values each, in table order).
        progressive: the JPEG source was progressive.
        webp_lossless: the WebP source was lossless (VP8L).
        tiff_compression: the TIFF source's compression as Pillow names it.
    """

    mode: str = "RGB"
    native: np.ndarray | None = None
    palette: bytes | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    jpeg_subsampling: int | None = None
    jpeg_qtables: tuple[tuple[int, ...], ...] | None = None
    progressive: bool = False
    webp_lossless: bool = False
    tiff_compression: str | None = None


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the engines, with what is needed to write it back.

    Attributes:
        rgb: uint8 H×W×3, EXIF orientation applied.
        alpha: uint8 H×W, or None when the source has no transparency.
        format: Pillow's format name of the source ("JPEG", "PNG", "WEBP", "BMP", "TIFF", ...).
        mode: Pillow's mode of the source ("RGB", "L", "P", "CMYK", "I;16", ...).
        save: how `encode_image` writes it back.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str
    mode: str
    save: SaveInfo

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ decode


def _quantization_tables(image: Image.Image) -> tuple[tuple[int, ...], ...] | None:
    """A JPEG's quantisation tables in table order, or None when there are none a baseline encoder takes."""
    tables = getattr(image, "quantization", None) or {}
    if not 1 <= len(tables) <= 4 or sorted(tables) != list(range(len(tables))):
        return None
    values = tuple(tuple(int(v) for v in tables[index]) for index in range(len(tables)))
    return values if all(len(t) == 64 and all(1 <= v <= 255 for v in t) for t in values) else None


def exif_without_thumbnail(image: Image.Image) -> bytes | None:
    """The image's EXIF block minus IFD1, the embedded JPEG thumbnail that viewers and file browsers show.

    The thumbnail is a copy of the picture as it was, watermark included: carried over unchanged it would
    undo the cleaning wherever a thumbnail is displayed. Pillow's serialiser writes IFD0 and its sub-IFDs
    (Exif, GPS, Interop) but no IFD1; blocks without a thumbnail are kept byte for byte. `getexif()` is
    the parse `exif_transpose` already made (Pillow caches it), not a second one.
    """
    raw = image.info.get("exif") or None
    if raw is None:
        return None
    parsed = image.getexif()
    return parsed.tobytes() if parsed.get_ifd(ExifTags.IFD.IFD1) else raw


def check_jpeg_tables(choice: str) -> None:
    """Raise ValueError unless `choice` is one of JPEG_TABLE_CHOICES."""
    if choice not in JPEG_TABLE_CHOICES:
        raise ValueError(f"jpeg_tables must be one of {', '.join(JPEG_TABLE_CHOICES)}, got {choice!r}")


def decode_image(source: bytes | str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode encoded bytes or a file to a `DecodedImage`.

    Raises `ImageTooLargeError` above `max_pixels` (checked from the header, before any pixel is
    decoded) and `ImageDecodeError` for empty, unreadable, truncated, animated or float images.
    Limits above 2 × `PIL.Image.MAX_IMAGE_PIXELS` also need that global raised (Pillow refuses first).
    """
    data = source if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    data = bytes(data)
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise ImageTooLargeError(f"{image.width}×{image.height} = {image.width * image.height:,} pixels is over "
                                     f"the limit of {max_pixels:,} (possible decompression bomb)")
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise ImageDecodeError(f"{frames} frames: animated and multi-page images are not supported")
        image_format = image.format or ""
        subsampling = JpegImagePlugin.get_sampling(image) if image_format == "JPEG" else -1
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except UnidentifiedImageError:
        # Pillow's own text names the in-memory buffer (`<_io.BytesIO object at 0x…>`): say what the bytes are.
        raise ImageDecodeError(f"cannot decode image: not a format Pillow reads ({len(data):,} bytes starting "
                               f"{data[:8].hex(' ')})") from None
    except Exception as exc:  # Pillow's plugins raise many types for malformed files; all mean "unreadable"
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc

    rgb, alpha, save_mode, native, palette = _split_channels(image)
    info = image.info
    dpi = info.get("dpi")
    save = SaveInfo(
        mode=save_mode,
        native=native,
        palette=palette,
        icc_profile=info.get("icc_profile") or None,
        exif=exif_without_thumbnail(image),
        dpi=(float(dpi[0]), float(dpi[1])) if dpi else None,
        jpeg_subsampling=subsampling if subsampling in (0, 1, 2) else None,
        jpeg_qtables=_quantization_tables(image) if image_format == "JPEG" else None,
        progressive=bool(info.get("progressive") or info.get("progression")),
        webp_lossless=image_format == "WEBP" and _webp_is_lossless(data),
        tiff_compression=info.get("compression") if image_format == "TIFF" else None,
    )
    return DecodedImage(rgb=rgb, alpha=alpha, format=image_format, mode=image.mode, save=save)


def _split_channels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str, np.ndarray | None, bytes | None]:
    """(rgb, alpha, mode to write back, native pixels, palette) of a loaded image; see the module table."""
    mode = image.mode
    if mode == "F":
        raise ImageDecodeError("32-bit floating-point images are not supported")
    if mode in ("RGBA", "PA", "RGBa") or ("transparency" in image.info and mode in ("P", "L", "RGB", "1")):
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), "RGBA", None, None
    if mode == "RGB":
        return np.asarray(image).copy(), None, "RGB", None, None
    if mode in ("L", "LA", "La"):
        grey_alpha = np.asarray(image.convert("LA"))
        grey = np.ascontiguousarray(grey_alpha[..., 0])
        alpha = np.ascontiguousarray(grey_alpha[..., 1]) if mode != "L" else None
        return np.repeat(grey[..., None], 3, axis=2), alpha, "LA" if alpha is not None else "L", grey, None
    if mode == "1":
        grey = np.asarray(image.convert("L"))
        return np.repeat(grey[..., None], 3, axis=2), None, "1", grey, None
    if mode == "P":
        palette = bytes(image.getpalette("RGB") or [])
        return np.asarray(image.convert("RGB")), None, "P", np.asarray(image).copy(), palette
    if mode == "CMYK":
        return np.asarray(image.convert("RGB")), None, "CMYK", np.asarray(image).copy(), None
    if mode in SIXTEEN_BIT_MODES:
        samples = np.asarray(image)
        grey = (np.clip(samples.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        native = samples.astype(np.int32) if mode == "I" else samples.astype(np.uint16)
        return np.repeat(grey[..., None], 3, axis=2), None, "I" if mode == "I" else "I;16", native, None
    return np.asarray(image.convert("RGB")), None, "RGB", None, None


def _webp_is_lossless(data: bytes) -> bool:
    """True when a WebP file's image is VP8L (lossless); walks the RIFF chunks, never past the data."""
    offset = 12
    while offset + 8 <= len(data):
        chunk = data[offset:offset + 4]
        if chunk == b"VP8L":
            return True
        if chunk == b"VP8 ":
            return False
        size = int.from_bytes(data[offset + 4:offset + 8], "little")
        offset += 8 + size + (size & 1)
    return False


# ------------------------------------------------------------------------------------------------ encode


def encode_image(rgb: np.ndarray, alpha: np.ndarray | None = None, like: DecodedImage | str = "PNG", *,
                 changed: np.ndarray | None = None, jpeg_tables: JpegTables = "high") -> bytes:
    """Encode uint8 H×W×3 `rgb` (+ uint8 H×W `alpha`) like `like`: a decoded source or a format name.

    With a decoded source, the output has its format, mode (module table) and metadata; `changed` (bool
    H×W, True where the caller altered pixels, i.e. the hole) lets unchanged pixels of grey, palette,
    CMYK and 16-bit outputs keep the source's exact values. `jpeg_tables` picks the JPEG quantisation:
    "high" (quality 95, finer where the source was) or "source" (the source's own tables). Raises
    ValueError for an alpha channel in a format that cannot store one (JPEG) or an unknown format.
    """
    check_jpeg_tables(jpeg_tables)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    if isinstance(like, str):
        image_format, save = FORMAT_ALIASES.get(like.upper(), like.upper()), SaveInfo()
    else:
        image_format, save = like.format, like.save
    if image_format not in WRITABLE_FORMATS:
        raise ValueError(f"cannot write {image_format or 'unknown'} images (writable: {', '.join(WRITABLE_FORMATS)})")
    if alpha is not None and image_format == "JPEG":
        raise ValueError("JPEG cannot store an alpha channel")
    if changed is not None and changed.shape != rgb.shape[:2]:
        raise ValueError(f"changed mask {changed.shape} does not match the image {rgb.shape[:2]}")

    image = _build_image(rgb, alpha, save, changed)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **_save_options(image_format, image.mode, save, jpeg_tables))
    return buffer.getvalue()


def _build_image(rgb: np.ndarray, alpha: np.ndarray | None, save: SaveInfo, changed: np.ndarray | None) -> Image.Image:
    mode = save.mode
    if alpha is not None:
        mode = "LA" if mode in ("L", "LA") else "RGBA"
    elif mode in ("LA", "RGBA"):
        mode = mode[:-1]
    native = save.native if save.native is not None and save.native.shape[:2] == rgb.shape[:2] else None

    def keep_unchanged(new: np.ndarray) -> np.ndarray:
        if native is None or changed is None:
            return new
        where = changed if new.ndim == 2 else changed[..., None]
        return np.where(where, new, native).astype(native.dtype)

    colour = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if mode == "RGB":
        return colour
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode in ("L", "LA"):
        grey = keep_unchanged(np.asarray(colour.convert("L")))
        return Image.fromarray(np.dstack([grey, alpha]), "LA") if mode == "LA" else Image.fromarray(grey, "L")
    if mode == "1":
        grey = keep_unchanged(np.asarray(colour.convert("L")))
        return Image.fromarray(grey, "L").convert("1", dither=Image.Dither.NONE)
    if mode == "P":
        palette_image = Image.new("P", (1, 1))
        palette_image.putpalette(save.palette or b"")
        indices = np.asarray(colour.quantize(palette=palette_image, dither=Image.Dither.NONE))
        indexed = Image.fromarray(keep_unchanged(indices).astype(np.uint8), "P")
        indexed.putpalette(save.palette or b"")
        return indexed
    if mode == "CMYK":
        return Image.fromarray(keep_unchanged(np.asarray(colour.convert("CMYK"))), "CMYK")
    if mode in ("I", "I;16"):
        grey16 = np.asarray(colour.convert("L")).astype(np.int32) * 257
        sample_type = np.int32 if mode == "I" else np.uint16
        return Image.fromarray(keep_unchanged(grey16.astype(sample_type)).astype(sample_type))  # "I" / "I;16"
    raise ValueError(f"unsupported output mode {mode!r}")


@functools.lru_cache(maxsize=1)
def _quality_tables() -> tuple[tuple[int, ...], ...]:
    """libjpeg's luma and chroma tables at JPEG_QUALITY, as Pillow reads them back."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", quality=JPEG_QUALITY)
    tables = Image.open(buffer).quantization
    return tuple(tuple(int(v) for v in tables[index]) for index in sorted(tables))


def _jpeg_tables(source: tuple[tuple[int, ...], ...], choice: JpegTables) -> list[list[int]]:
    """The tables to write: the source's, or entry by entry the finer of the source's and quality 95's."""
    if choice == "source":
        return [list(table) for table in source]
    high = _quality_tables()
    # Table 0 is luma; every further table (chroma, or CMYK's extra ones) is compared with chroma's.
    return [[min(a, b) for a, b in zip(table, high[min(index, len(high) - 1)])] for index, table in enumerate(source)]


def _save_options(image_format: str, mode: str, save: SaveInfo, jpeg_tables: JpegTables = "high") -> dict:
    options: dict = {}
    if save.icc_profile and mode not in ("1", "I", "I;16"):
        options["icc_profile"] = save.icc_profile
    if save.exif and image_format in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["exif"] = save.exif
    if save.dpi and image_format in ("JPEG", "PNG", "TIFF", "BMP"):
        options["dpi"] = save.dpi
    if image_format == "JPEG":
        if save.jpeg_qtables:
            # Explicit tables and no `quality` (Pillow would scale the tables by it).
            options["qtables"] = _jpeg_tables(save.jpeg_qtables, jpeg_tables)
        else:
            options["quality"] = JPEG_QUALITY
        if save.jpeg_subsampling is not None and mode == "RGB":
            options["subsampling"] = save.jpeg_subsampling
        if save.progressive:
            options["progressive"] = True
    elif image_format == "WEBP":
        if save.webp_lossless:
            options.update(lossless=True, exact=True)  # exact: keep colours under transparent pixels
        else:
            options["quality"] = WEBP_LOSSY_QUALITY
    elif image_format == "TIFF":
        compression = save.tiff_compression
        if compression in BITONAL_TIFF_COMPRESSIONS and mode == "1":
            options["compression"] = compression
        elif compression in TIFF_COMPRESSIONS:
            options["compression"] = compression
        elif compression is not None:
            options["compression"] = "tiff_lzw"
    return options
