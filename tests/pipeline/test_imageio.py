"""Decoding any input to upright 8-bit RGB and writing it back in its own format, mode and metadata."""
from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin

from pipeline.imageio import (
    DecodedImage,
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
    encode_image,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 36, 3), dtype=np.uint8)
HOLE = np.zeros((24, 36), bool)
HOLE[5:12, 8:20] = True
FILL = np.array([200, 10, 30], np.uint8)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def restore_round_trip(data: bytes) -> tuple[DecodedImage, Image.Image]:
    """Decode, paint the hole as an engine would, encode like the source; returns the re-read output."""
    decoded = decode_image(data)
    restored = decoded.rgb.copy()
    restored[HOLE] = FILL
    output = Image.open(io.BytesIO(encode_image(restored, decoded.alpha, decoded, changed=HOLE)))
    output.load()
    return decoded, output


def sixteen_bit() -> Image.Image:
    return Image.fromarray(RNG.integers(0, 65536, (24, 36), dtype=np.uint16))


LOSSLESS_CASES = {
    # name: (source image, format, save options, mode written back)
    "RGB PNG": (Image.fromarray(RGB), "PNG", {}, "RGB"),
    "RGBA PNG": (Image.fromarray(np.dstack([RGB, RGB[..., 0]])), "PNG", {}, "RGBA"),
    "L PNG": (Image.fromarray(RGB).convert("L"), "PNG", {}, "L"),
    "LA PNG": (Image.fromarray(RGB).convert("LA"), "PNG", {}, "LA"),
    "1 PNG": (Image.fromarray(RGB).convert("1"), "PNG", {}, "1"),
    "P PNG": (Image.fromarray(RGB).quantize(40), "PNG", {}, "P"),
    "I;16 PNG": (sixteen_bit(), "PNG", {}, "I;16"),
    "I;16 TIFF": (sixteen_bit(), "TIFF", {}, "I;16"),
    "CMYK TIFF": (Image.fromarray(RGB).convert("CMYK"), "TIFF", {"compression": "tiff_lzw"}, "CMYK"),
    "RGB BMP": (Image.fromarray(RGB), "BMP", {}, "RGB"),
    "P BMP": (Image.fromarray(RGB).quantize(40), "BMP", {}, "P"),
    "RGB WebP lossless": (Image.fromarray(RGB), "WEBP", {"lossless": True}, "RGB"),
    "RGBA WebP lossless": (Image.fromarray(np.dstack([RGB, RGB[..., 1]])), "WEBP", {"lossless": True, "exact": True},
                           "RGBA"),
}


@pytest.mark.parametrize("case", list(LOSSLESS_CASES))
def test_lossless_outputs_keep_format_mode_and_every_unchanged_pixel(case):
    source, image_format, options, mode = LOSSLESS_CASES[case]
    decoded, output = restore_round_trip(encoded(source, image_format, **options))
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (24, 36, 3)
    assert (output.format, output.mode) == (image_format, mode)
    before, after = np.asarray(source), np.asarray(output)
    assert np.array_equal(after[~HOLE], before[~HOLE])
    assert not np.array_equal(after[HOLE], before[HOLE])


def test_grey_and_sixteen_bit_fills_are_converted_deliberately():
    _, grey = restore_round_trip(encoded(Image.fromarray(RGB).convert("L"), "PNG"))
    luma = round(0.299 * FILL[0] + 0.587 * FILL[1] + 0.114 * FILL[2])
    assert abs(int(np.asarray(grey)[HOLE][0]) - luma) <= 1
    _, deep = restore_round_trip(encoded(sixteen_bit(), "PNG"))
    assert int(np.asarray(deep)[HOLE][0]) == int(np.asarray(grey)[HOLE][0]) * 257


def test_sixteen_bit_is_seen_as_its_top_eight_bits():
    source = sixteen_bit()
    decoded = decode_image(encoded(source, "PNG"))
    assert np.array_equal(decoded.rgb[..., 0], (np.asarray(source) >> 8).astype(np.uint8))
    assert decoded.mode == "I;16"


def test_palette_with_transparency_becomes_rgba_with_its_alpha():
    palette_image = Image.fromarray(RGB).quantize(40)
    palette_image.info["transparency"] = 3
    decoded, output = restore_round_trip(encoded(palette_image, "PNG"))
    transparent = np.asarray(palette_image) == 3
    assert transparent.any() and decoded.alpha is not None
    assert np.array_equal(decoded.alpha == 0, transparent)
    assert output.mode == "RGBA"
    assert np.array_equal(np.asarray(output)[..., 3], decoded.alpha)


def test_cmyk_jpeg_stays_cmyk_jpeg():
    decoded, output = restore_round_trip(encoded(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=95))
    assert decoded.mode == "CMYK" and (output.format, output.mode) == ("JPEG", "CMYK")


def photo_like(height: int = 24, width: int = 36) -> np.ndarray:
    """Smooth gradients plus mild texture: compresses like a photo, not like noise."""
    ys, xs = np.mgrid[0:height, 0:width]
    texture = np.random.default_rng(5).integers(0, 24, (height, width, 3))
    return np.clip(np.stack([ys * 200 // height, xs * 200 // width, (ys + xs) * 100 // height], -1) + texture,
                   0, 255).astype(np.uint8)


def jpeg_tables_at(quality: int) -> dict:
    return Image.open(io.BytesIO(encoded(Image.fromarray(photo_like()), "JPEG", quality=quality))).quantization


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("quality", [60, 95, 100])
def test_jpeg_is_rewritten_at_high_quality_never_coarser_than_its_source(subsampling, quality):
    data = encoded(Image.fromarray(photo_like()), "JPEG", quality=quality, subsampling=subsampling)
    source = Image.open(io.BytesIO(data)).quantization
    _, output = restore_round_trip(data)
    assert output.format == "JPEG" and JpegImagePlugin.get_sampling(output) == subsampling
    high = jpeg_tables_at(95)
    # Entry by entry the finer of quality 95 and the source: a q60 source gets q95, a q100 one stays q100.
    assert output.quantization == {k: [min(a, b) for a, b in zip(source[k], high[k])] for k in source}
    assert output.quantization == (source if quality == 100 else high)


@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_tables_source_keeps_the_source_quantisation(subsampling):
    data = encoded(Image.fromarray(photo_like()), "JPEG", quality=60, subsampling=subsampling)
    decoded = decode_image(data)
    output = Image.open(io.BytesIO(encode_image(decoded.rgb, None, decoded, jpeg_tables="source")))
    assert output.quantization == Image.open(io.BytesIO(data)).quantization
    assert JpegImagePlugin.get_sampling(output) == subsampling


def test_jpeg_tables_source_keeps_the_file_size_and_barely_touches_its_pixels():
    """A q60 dataset stays a q60 dataset: no 2x growth from re-encoding at a fixed high quality."""
    data = encoded(Image.fromarray(photo_like(240, 320)), "JPEG", quality=60)
    decoded = decode_image(data)
    kept = encode_image(decoded.rgb, None, decoded, jpeg_tables="source")
    assert 0.9 < len(kept) / len(data) < 1.1
    again = np.asarray(Image.open(io.BytesIO(kept))).astype(int)
    # Same tables and subsampling: re-encoding decoded pixels is (nearly) idempotent.
    assert np.abs(again - decoded.rgb).max() <= 2
    assert len(encode_image(decoded.rgb, None, decoded)) > 1.3 * len(data)  # "high" pays in size


def test_jpeg_without_readable_tables_falls_back_to_quality_95():
    decoded = decode_image(encoded(Image.fromarray(photo_like()), "JPEG", quality=60))
    blind = dataclasses.replace(decoded, save=dataclasses.replace(decoded.save, jpeg_qtables=None))
    for choice in ("high", "source"):
        output = Image.open(io.BytesIO(encode_image(decoded.rgb, None, blind, jpeg_tables=choice)))
        assert output.quantization == jpeg_tables_at(95)
    with pytest.raises(ValueError, match="jpeg_tables must be one of high, source"):
        encode_image(decoded.rgb, None, decoded, jpeg_tables="medium")


def test_lossy_webp_stays_lossy_and_lossless_stays_lossless():
    assert not decode_image(encoded(Image.fromarray(RGB), "WEBP", quality=80)).save.webp_lossless
    assert decode_image(encoded(Image.fromarray(RGB), "WEBP", lossless=True)).save.webp_lossless


def exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """A camera-style EXIF block: IFD0 (Make, Exif IFD pointer) → IFD1 holding a JPEG thumbnail."""
    make = b"TestCam\x00"
    ifd0_size, exif_ifd_size, ifd1_size = 2 + 2 * 12 + 4, 2 + 12 + 4, 2 + 2 * 12 + 4
    make_at = 8 + ifd0_size
    exif_ifd_at = make_at + len(make)
    ifd1_at = exif_ifd_at + exif_ifd_size
    thumbnail_at = ifd1_at + ifd1_size
    tiff = b"II*\x00" + struct.pack("<I", 8)
    tiff += struct.pack("<H", 2) + struct.pack("<HHII", 0x010F, 2, len(make), make_at)
    tiff += struct.pack("<HHII", 0x8769, 4, 1, exif_ifd_at) + struct.pack("<I", ifd1_at) + make
    tiff += struct.pack("<H", 1) + struct.pack("<HHI", 0x9000, 7, 4) + b"0231" + struct.pack("<I", 0)
    tiff += struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, thumbnail_at)
    tiff += struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail)) + struct.pack("<I", 0)
    return b"Exif\x00\x00" + tiff + thumbnail


def test_the_exif_thumbnail_of_the_uncleaned_picture_is_not_written_back():
    thumbnail = encoded(Image.new("RGB", (16, 12), (255, 0, 0)), "JPEG")
    data = encoded(Image.fromarray(RGB), "JPEG", quality=95, exif=exif_with_thumbnail(thumbnail))
    assert thumbnail in data and Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.IFD1)

    output = encode_image(RGB, None, decode_image(data))

    assert thumbnail not in output
    exif = Image.open(io.BytesIO(output)).getexif()
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {}
    assert exif.get(0x010F) == "TestCam" and exif.get_ifd(ExifTags.IFD.Exif) == {0x9000: b"0231"}


def test_exif_without_a_thumbnail_is_kept_byte_for_byte():
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    raw = exif.tobytes()
    assert decode_image(encoded(Image.fromarray(RGB), "JPEG", exif=raw)).save.exif == raw


def test_exif_orientation_is_applied_on_read_and_not_applied_twice():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "TestCam"
    data = encoded(Image.fromarray(RGB), "JPEG", quality=95, exif=exif)
    decoded = decode_image(data)
    assert decoded.rgb.shape == (36, 24, 3)  # upright: width and height swapped
    expected = np.asarray(Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(decoded.rgb.astype(int) - expected.astype(int)).max() == 0
    output = Image.open(io.BytesIO(encode_image(decoded.rgb, None, decoded)))
    assert output.size == (24, 36)
    assert output.getexif().get(0x0112, 1) == 1 and output.getexif().get(0x010F) == "TestCam"


def test_icc_profile_and_dpi_are_kept():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encoded(Image.fromarray(RGB), "PNG", icc_profile=profile, dpi=(300, 300))
    _, output = restore_round_trip(data)
    assert output.info.get("icc_profile") == profile
    assert tuple(round(v) for v in output.info["dpi"]) == (300, 300)


def test_encode_by_format_name():
    output = Image.open(io.BytesIO(encode_image(RGB, None, "jpg")))
    assert output.format == "JPEG" and output.size == (36, 24)
    with pytest.raises(ValueError, match="alpha"):
        encode_image(RGB, RGB[..., 0], "JPEG")
    with pytest.raises(ValueError, match="cannot write"):
        encode_image(RGB, None, "GIF")


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is not an image at all", "cannot decode"),
    (encoded(Image.fromarray(RGB), "JPEG")[:300], "(?i)truncated"),
    (encoded(Image.fromarray(RGB), "PNG")[:120], "cannot decode"),
], ids=["zero-byte", "garbage", "truncated-jpeg", "truncated-png"])
def test_unreadable_inputs_raise_decode_errors(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`×`height` (a decompression bomb's calling card)."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8  # after the signature: length, b"IHDR", data, crc
    body = bytearray(data[ihdr + 8:ihdr + 8 + 13])
    body[0:8] = struct.pack(">II", width, height)
    data[ihdr + 8:ihdr + 8 + 13] = body
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(body)))
    return bytes(data)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own notice, then our refusal
def test_decompression_bombs_are_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        decode_image(png_claiming_size(10_000, 10_000))  # 100 MP: over the default limit
    with pytest.raises(ImageTooLargeError):
        decode_image(png_claiming_size(40_000, 40_000))  # so large that Pillow itself refuses it
    with pytest.raises(ImageTooLargeError):
        decode_image(encoded(Image.fromarray(RGB), "PNG"), max_pixels=100)


def test_animated_images_are_refused():
    frames = [Image.fromarray(RGB), Image.fromarray(RGB[::-1].copy())]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageDecodeError, match="frames"):
        decode_image(buffer.getvalue())


def test_float_images_are_refused():
    with pytest.raises(ImageDecodeError, match="floating-point"):
        decode_image(encoded(Image.fromarray(RGB[..., 0].astype(np.float32)), "TIFF"))


def test_decodes_from_a_path(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encoded(Image.fromarray(RGB), "PNG"))
    decoded = decode_image(path)
    assert decoded.format == "PNG" and np.array_equal(decoded.rgb, RGB) and decoded.alpha is None
