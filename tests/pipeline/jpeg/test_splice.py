"""Splicing restored pixels into a source JPEG: every pixel outside the touched MCUs decodes exactly as the
source's, on every kind of JPEG we splice, and the hole gets the restored pixels."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin

from pipeline.imageio import decode_image
from pipeline.jpeg import SpliceUnsupported, splice_jpeg

PHOTO = Path(__file__).resolve().parents[2] / "fixtures" / "cbsd68" / "14037.jpg"
HEIGHT, WIDTH = 157, 203  # neither a multiple of 8 nor of 16: partial MCUs on the right and at the bottom
FILL = np.array([230, 40, 160], np.uint8)


def photo(height: int = HEIGHT, width: int = WIDTH) -> Image.Image:
    return Image.open(PHOTO).convert("RGB").crop((37, 29, 37 + width, 29 + height))


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def watermark_hole(height: int, width: int) -> np.ndarray:
    """A corner logo touching two borders, a thin text line, and a box over the partial bottom-right MCU."""
    hole = np.zeros((height, width), bool)
    hole[:23, :41] = True
    hole[height // 2:height // 2 + 5, 19:width - 60] = True
    hole[height - 13:, width - 29:] = True
    return hole


def pixels(data: bytes) -> np.ndarray:
    """The decode a user sees: Pillow's, in the stored mode (L, RGB or CMYK), EXIF orientation applied."""
    from PIL import ImageOps

    image = Image.open(io.BytesIO(data))
    return np.asarray(ImageOps.exif_transpose(image))


def restore(data: bytes, hole: np.ndarray) -> np.ndarray:
    """What the engines would hand back: the source's decode with the hole painted over."""
    restored = decode_image(data).rgb.copy()
    restored[hole] = FILL
    return restored


def assert_identical_outside_touched(source: bytes, spliced, hole: np.ndarray) -> None:
    before, after = pixels(source), pixels(spliced.data)
    assert before.shape == after.shape
    differs = before != after if before.ndim == 2 else (before != after).any(axis=-1)
    touched, affected = spliced.touched_pixels(), spliced.affected_pixels()
    assert not (differs & ~touched).any(), "a pixel outside the touched MCUs changed"
    assert not (differs & ~affected).any(), "a pixel outside the per-pixel bound changed"
    assert (hole <= affected).all() and (affected <= touched).all()
    assert differs[hole].mean() > 0.9  # the hole really was re-coded
    assert touched.mean() < 0.6        # ... and most of the image was not


KINDS = {
    "baseline q75 4:2:0": dict(quality=75),
    "baseline q95 4:2:0": dict(quality=95, subsampling=2),
    "baseline q95 4:4:4": dict(quality=95, subsampling=0),
    "baseline q75 4:2:2": dict(quality=75, subsampling=1),
    "optimised Huffman q90": dict(quality=90, optimize=True),
    "progressive q75 4:2:0": dict(quality=75, progressive=True),
    "progressive q95 4:4:4": dict(quality=95, subsampling=0, progressive=True),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_colour_jpegs_decode_bit_identical_outside_the_touched_mcus(kind):
    options = KINDS[kind]
    source = jpeg_bytes(photo(), **options)
    hole = watermark_hole(HEIGHT, WIDTH)

    spliced = splice_jpeg(source, restore(source, hole), hole)

    assert_identical_outside_touched(source, spliced, hole)
    before, after = Image.open(io.BytesIO(source)), Image.open(io.BytesIO(spliced.data))
    assert after.quantization == before.quantization
    assert JpegImagePlugin.get_sampling(after) == JpegImagePlugin.get_sampling(before)
    assert bool(after.info.get("progressive")) == bool(options.get("progressive"))
    # The fill is there, as well as the source's quantisation allows (colour edges blur with subsampling).
    filled = decode_image(spliced.data).rgb[hole].astype(int)
    assert np.abs(filled - FILL).mean() < (12 if options.get("subsampling", 2) else 4)
    # A flat magenta box with hard edges costs more bits than the photo it covers: the bench measures sizes
    # with watermark-like holes filled the way an engine fills them.
    assert 0.9 < len(spliced.data) / len(source) < 1.1


def test_mcu_geometry_follows_the_subsampling():
    hole = np.zeros((HEIGHT, WIDTH), bool)
    hole[20, 20] = True  # one pixel inside MCU (1, 1) of 4:2:0, block (2, 2) of 4:4:4
    for options, mcu, recoded in [(dict(quality=90), (16, 16), 3), (dict(quality=90, subsampling=0), (8, 8), 3)]:
        source = jpeg_bytes(photo(), **options)
        spliced = splice_jpeg(source, restore(source, hole), hole)
        assert spliced.mcu_size == mcu and spliced.recoded_blocks == recoded  # one block per component
        # 4:2:0's chroma upsampling reaches one pixel past the re-coded MCU: its 8 neighbours are touched.
        assert int(spliced.touched_mcus().sum()) == (9 if mcu == (16, 16) else 1)
        before, after = pixels(source), pixels(spliced.data)
        assert not ((before != after).any(-1) & ~spliced.affected_pixels()).any()


@pytest.mark.parametrize("progressive", [False, True])
def test_grayscale_jpegs_stay_grayscale_and_identical_outside_the_touched_blocks(progressive):
    source = jpeg_bytes(photo().convert("L"), quality=85, progressive=progressive)
    hole = watermark_hole(HEIGHT, WIDTH)

    spliced = splice_jpeg(source, restore(source, hole), hole)

    assert Image.open(io.BytesIO(spliced.data)).mode == "L"
    assert_identical_outside_touched(source, spliced, hole)
    assert np.array_equal(spliced.touched_pixels(), spliced.affected_pixels())  # no upsampling, no ring


def test_cmyk_jpegs_stay_cmyk_and_identical_outside_the_touched_blocks():
    source = jpeg_bytes(photo().convert("CMYK"), quality=90)
    hole = watermark_hole(HEIGHT, WIDTH)

    spliced = splice_jpeg(source, restore(source, hole), hole)

    output = Image.open(io.BytesIO(spliced.data))
    assert output.mode == "CMYK" and output.quantization == Image.open(io.BytesIO(source)).quantization
    assert_identical_outside_touched(source, spliced, hole)
    filled = decode_image(spliced.data).rgb[hole].astype(int)
    assert np.abs(filled - FILL).mean() < 4


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_rotated_sources_are_spliced_in_their_stored_orientation(orientation):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    source = jpeg_bytes(photo(), quality=85, exif=exif.tobytes())
    upright = decode_image(source).rgb
    assert upright.shape[:2] == ((WIDTH, HEIGHT) if orientation >= 5 else (HEIGHT, WIDTH))
    hole = watermark_hole(*upright.shape[:2])  # drawn on the picture as displayed

    spliced = splice_jpeg(source, restore(source, hole), hole)

    output = Image.open(io.BytesIO(spliced.data))
    assert output.size == (WIDTH, HEIGHT)  # still stored as it was, no re-rotation of blocks
    assert output.getexif().get(ExifTags.Base.Orientation) == orientation
    assert_identical_outside_touched(source, spliced, hole)


def test_metadata_is_kept_and_the_exif_thumbnail_dropped():
    from tests.pipeline.test_imageio import exif_with_thumbnail

    thumbnail = jpeg_bytes(Image.new("RGB", (16, 12), (255, 0, 0)))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = jpeg_bytes(photo(), quality=85, exif=exif_with_thumbnail(thumbnail), icc_profile=icc, dpi=(300, 300))
    hole = watermark_hole(HEIGHT, WIDTH)

    spliced = splice_jpeg(source, restore(source, hole), hole)

    assert thumbnail in source and thumbnail not in spliced.data
    output = Image.open(io.BytesIO(spliced.data))
    assert output.info["icc_profile"] == icc and output.info["dpi"] == pytest.approx((300, 300))
    exif = output.getexif()
    assert exif.get(ExifTags.Base.Make) == Image.open(io.BytesIO(source)).getexif().get(ExifTags.Base.Make)
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {}
    assert spliced.data.count(b"JFIF\x00") == 1  # libjpeg's own JFIF segment, not a second copy


def test_an_unchanged_image_comes_back_with_every_block_as_it_was():
    source = jpeg_bytes(photo(), quality=80)
    nothing = np.zeros((HEIGHT, WIDTH), bool)

    spliced = splice_jpeg(source, decode_image(source).rgb, nothing)

    assert spliced.recoded_blocks == 0 and not spliced.touched_mcus().any()
    assert np.array_equal(pixels(spliced.data), pixels(source))
    assert abs(len(spliced.data) - len(source)) < 0.01 * len(source)


def test_the_untouched_part_of_a_recoded_block_keeps_the_source_samples_it_can():
    # A hole of one pixel: re-coding its blocks from the source's own samples moves the rest of them little.
    source = jpeg_bytes(photo(), quality=75)
    hole = np.zeros((HEIGHT, WIDTH), bool)
    hole[70, 90] = True
    restored = decode_image(source).rgb

    spliced = splice_jpeg(source, restored, hole)

    error = np.abs(decode_image(spliced.data).rgb.astype(int) - restored)
    assert error[spliced.touched_pixels()].max() <= 2


def arithmetic_jpeg(folder: Path) -> bytes:
    """An arithmetic-coded JPEG (which Pillow decodes and libjpeg-turbo's writer makes; 6b's refuses)."""
    import jpeglib

    (folder / "plain.jpg").write_bytes(jpeg_bytes(photo(), quality=80))
    jpeglib.version.set("turbo210")
    jpeg = jpeglib.read_dct(str(folder / "plain.jpg"))
    jpeg.load()
    jpeg.write_dct(str(folder / "arithmetic.jpg"), flags=["+ARITH_CODE"])
    return (folder / "arithmetic.jpg").read_bytes()


def test_arithmetic_coded_and_non_jpeg_sources_are_refused(tmp_path):
    arithmetic = arithmetic_jpeg(tmp_path)
    hole = watermark_hole(HEIGHT, WIDTH)
    with pytest.raises(SpliceUnsupported, match="arithmetic-coded"):
        splice_jpeg(arithmetic, restore(arithmetic, hole), hole)
    png = io.BytesIO()
    photo().save(png, "PNG")
    with pytest.raises(SpliceUnsupported, match="not a JPEG"):
        splice_jpeg(png.getvalue(), restore(png.getvalue(), hole), hole)


def test_a_restored_image_of_another_size_is_refused():
    source = jpeg_bytes(photo(), quality=80)
    with pytest.raises(SpliceUnsupported, match="restored image is"):
        splice_jpeg(source, np.zeros((HEIGHT - 1, WIDTH, 3), np.uint8), np.ones((HEIGHT - 1, WIDTH), bool))
