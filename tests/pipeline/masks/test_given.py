"""Given masks: files mirroring the image tree, or a Parquet column; conventions and size mismatches."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.masks import GivenMaskConfig, GivenMaskGenerator, MaskGenerationError

IMAGE = np.zeros((6, 8, 3), np.uint8)


def hole_pattern(shape=(6, 8)) -> np.ndarray:
    hole = np.zeros(shape, bool)
    hole[1:3, 2:6] = True
    return hole


def png_bytes(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue()


def write_mask(path, hole: np.ndarray, *, white_is_hole: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.where(hole == white_is_hole, 255, 0).astype(np.uint8)
    path.write_bytes(png_bytes(values))


def test_mask_file_mirrors_the_relative_path_with_a_suffix(tmp_path):
    write_mask(tmp_path / "sub" / "cat_mask.png", hole_pattern())
    generator = GivenMaskGenerator(GivenMaskConfig(mask_dir=tmp_path, suffix="_mask"))
    result = generator(IMAGE, key="sub/cat.jpg")
    np.testing.assert_array_equal(result.hole, hole_pattern())
    assert result.method == "given"
    np.testing.assert_array_equal(result.boxes, [[2, 1, 6, 3]])


def test_black_hole_convention(tmp_path):
    write_mask(tmp_path / "a.png", hole_pattern(), white_is_hole=False)
    generator = GivenMaskGenerator(GivenMaskConfig(mask_dir=tmp_path, hole_value="black"))
    np.testing.assert_array_equal(generator(IMAGE, key="a.jpg").hole, hole_pattern())


def test_size_mismatch_is_an_error_unless_resizing_is_asked_for(tmp_path):
    big = np.repeat(np.repeat(hole_pattern(), 2, axis=0), 2, axis=1)  # 12×16, same shape scaled ×2
    write_mask(tmp_path / "a.png", big)
    with pytest.raises(MaskGenerationError, match="16×12 but the image is 8×6"):
        GivenMaskGenerator(GivenMaskConfig(mask_dir=tmp_path))(IMAGE, key="a.jpg")
    resized = GivenMaskGenerator(GivenMaskConfig(mask_dir=tmp_path, size_mismatch="resize"))(IMAGE, key="a.jpg")
    np.testing.assert_array_equal(resized.hole, hole_pattern())
    assert resized.details["resized_from"] == [12, 16]


def test_missing_mask_is_an_error_or_empty(tmp_path):
    with pytest.raises(MaskGenerationError, match="no given mask for 'nope.jpg'"):
        GivenMaskGenerator(GivenMaskConfig(mask_dir=tmp_path))(IMAGE, key="nope.jpg")
    empty = GivenMaskGenerator(GivenMaskConfig(mask_dir=tmp_path, missing="empty"))(IMAGE, key="nope.jpg")
    assert not empty.hole.any() and empty.details["missing"]


def test_parquet_column_of_png_bytes_and_of_image_structs(tmp_path):
    encoded = png_bytes(np.where(hole_pattern(), 255, 0).astype(np.uint8))
    path = tmp_path / "masks.parquet"
    pq.write_table(pa.table({
        "path": ["photos/a.jpg", "b.jpg"],
        "mask": [encoded, encoded],
        "mask_struct": [{"bytes": encoded, "path": "a.png"}, {"bytes": None, "path": None}],
    }), path)
    by_bytes = GivenMaskGenerator(GivenMaskConfig(parquet=path))
    np.testing.assert_array_equal(by_bytes(IMAGE, key="photos/a.jpg").hole, hole_pattern())
    # A bare file name in the table matches an image key with folders, when the name is unique.
    np.testing.assert_array_equal(by_bytes(IMAGE, key="elsewhere/b.jpg").hole, hole_pattern())
    by_struct = GivenMaskGenerator(GivenMaskConfig(parquet=path, column="mask_struct"))
    np.testing.assert_array_equal(by_struct(IMAGE, key="photos/a.jpg").hole, hole_pattern())
    with pytest.raises(MaskGenerationError):
        by_struct(IMAGE, key="b.jpg")  # null mask in the struct


def test_parquet_without_the_column_says_which_columns_exist(tmp_path):
    path = tmp_path / "masks.parquet"
    pq.write_table(pa.table({"path": ["a.jpg"], "png": [b""]}), path)
    with pytest.raises(ValueError, match="no column 'mask' .*columns: path, png"):
        GivenMaskGenerator(GivenMaskConfig(parquet=path))
