"""`matpipe inpaint` end to end on cbsd68 photos: engines, formats, resume, bad files, safety."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from pipeline.cli import main

PHOTOS = Path(__file__).resolve().parents[1] / "fixtures" / "cbsd68"
MAGENTA = np.array([255, 0, 255], np.uint8)
WATERMARK = (slice(280, 305), slice(330, 460))  # rows, columns of a corner watermark in a 321×481 photo


@dataclass
class Dataset:
    images: Path
    masks: Path
    output: Path
    png: Path      # a lossless input with the watermark painted in magenta, in a sub-folder
    jpeg: Path     # an untouched camera-style JPEG at the root
    hole: np.ndarray


def write_mask(path: Path, hole: np.ndarray) -> None:
    """White = hole, like IOPaint's masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(path)


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dataset:
    monkeypatch.setenv("MATPIPE_CACHE_DIR", str(tmp_path / "no-weights-here"))  # no registry checkpoint
    images, masks = tmp_path / "images", tmp_path / "masks"
    hole = np.zeros((321, 481), bool)
    hole[WATERMARK] = True
    png = images / "trips" / "3096.png"
    png.parent.mkdir(parents=True)
    photo = np.asarray(Image.open(PHOTOS / "3096.jpg").convert("RGB")).copy()
    photo[hole] = MAGENTA
    Image.fromarray(photo).save(png)
    jpeg = images / "14037.jpg"
    shutil.copyfile(PHOTOS / "14037.jpg", jpeg)
    write_mask(masks / "trips" / "3096.png", hole)
    write_mask(masks / "14037.png", hole)
    return Dataset(images, masks, tmp_path / "out", png, jpeg, hole)


def run_cli(dataset: Dataset, *extra: str) -> int:
    return main(["inpaint", "--image", str(dataset.images), "--mask", str(dataset.masks),
                 "--output", str(dataset.output), *extra])


def assert_png_restored(dataset: Dataset) -> None:
    source = np.asarray(Image.open(dataset.png))
    output = Image.open(dataset.output / "trips" / "3096.png")
    restored = np.asarray(output)
    assert output.format == "PNG" and restored.shape == source.shape
    assert np.array_equal(restored[~dataset.hole], source[~dataset.hole])
    assert not (restored[dataset.hole] == MAGENTA).all(axis=-1).any()


def test_opencv_engine_restores_a_folder_keeping_formats(dataset, capsys):
    assert run_cli(dataset, "--engine", "opencv") == 0
    out = capsys.readouterr().out
    assert "inpaint: 2 done, 0 skipped, 0 failed" in out and "images/s" in out and "opencv (telea" in out
    assert_png_restored(dataset)
    source, output = Image.open(dataset.jpeg), Image.open(dataset.output / "14037.jpg")
    assert output.format == "JPEG" and output.size == source.size
    assert JpegImagePlugin.get_sampling(output) == JpegImagePlugin.get_sampling(source)


def test_jpeg_tables_source_keeps_the_source_quantisation_and_size(dataset, capsys):
    assert run_cli(dataset, "--engine", "opencv", "--jpeg-tables", "source") == 0
    source, output = Image.open(dataset.jpeg), Image.open(dataset.output / "14037.jpg")
    assert output.quantization == source.quantization
    assert 0.85 < (dataset.output / "14037.jpg").stat().st_size / dataset.jpeg.stat().st_size < 1.15


def test_rerun_skips_finished_outputs_unless_overwrite(dataset, capsys):
    assert run_cli(dataset, "--engine", "opencv") == 0
    written = dataset.output / "14037.jpg"
    first_mtime = written.stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli(dataset, "--engine", "opencv") == 0
    assert "0 done, 2 skipped, 0 failed" in capsys.readouterr().out
    assert written.stat().st_mtime_ns == first_mtime
    assert run_cli(dataset, "--engine", "opencv", "--overwrite") == 0
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's notice, then our refusal
def test_bad_files_are_reported_one_by_one_and_do_not_stop_the_run(dataset, capsys):
    small = dataset.images / "small_mask.png"
    Image.open(dataset.png).save(small)
    write_mask(dataset.masks / "small_mask.png", dataset.hole[::2, ::2])  # half size: resized, with a warning
    (dataset.images / "empty.jpg").write_bytes(b"")
    (dataset.images / "cut.png").write_bytes(dataset.png.read_bytes()[:2000])
    shutil.copyfile(dataset.png, dataset.images / "nomask.png")
    bomb = Image.new("L", (1, 1))
    bomb.save(dataset.images / "bomb.png")
    _claim_size(dataset.images / "bomb.png", 12_000, 12_000)
    for name in ("empty", "cut", "bomb"):
        write_mask(dataset.masks / f"{name}.png", np.ones((4, 4), bool))

    assert run_cli(dataset, "--engine", "opencv") == 1
    captured = capsys.readouterr()
    assert "3 done, 0 skipped, 4 failed" in captured.out
    for name, reason in (("empty.jpg", "empty file"), ("cut.png", "ImageDecodeError"),
                         ("nomask.png", "no given mask"), ("bomb.png", "ImageTooLargeError")):
        assert any(line.startswith(f"failed {name}: ") and reason in line for line in captured.err.splitlines()), name
    assert "warning small_mask.png: mask is 241×161 but the image is 481×321: resized" in captured.err
    resized_hole = np.asarray(Image.fromarray(dataset.hole[::2, ::2]).resize((481, 321), Image.Resampling.NEAREST))
    source, restored = np.asarray(Image.open(small)), np.asarray(Image.open(dataset.output / "small_mask.png"))
    assert np.array_equal(restored[~resized_hole], source[~resized_hole])
    assert not (restored[resized_hole] == MAGENTA).all(axis=-1).any()


def _claim_size(path: Path, width: int, height: int) -> None:
    """Rewrite a PNG header so it claims a huge size (a decompression bomb's calling card)."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    body = bytearray(data[16:29])
    body[0:8] = struct.pack(">II", width, height)
    data[16:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(body)))
    path.write_bytes(bytes(data))


def test_mat_engine_with_a_checkpoint_file(dataset, tmp_path, capsys):
    from safetensors.torch import save_file

    from matcore import Generator

    torch.manual_seed(0)
    checkpoint = tmp_path / "mat256.safetensors"
    save_file({k: v.contiguous().clone() for k, v in Generator(256).state_dict().items()}, str(checkpoint))

    assert run_cli(dataset, "--engine", "mat", "--checkpoint", str(checkpoint), "--device", "cpu",
                   "--batch-size", "2") == 0
    out = capsys.readouterr().out
    assert "2 done, 0 skipped, 0 failed" in out and "engine mat (MAT-256, cpu, float32), 2 windows" in out
    assert_png_restored(dataset)
    assert Image.open(dataset.output / "14037.jpg").format == "JPEG"


def test_auto_engine_without_weights_falls_back_to_opencv_loudly(dataset, capsys):
    assert run_cli(dataset) == 0
    captured = capsys.readouterr()
    assert "FALLING BACK TO THE OPENCV ENGINE" in captured.err
    assert "2 done" in captured.out and "[OPENCV FALLBACK: no MAT checkpoint]" in captured.out
    assert_png_restored(dataset)


def test_mat_engine_without_weights_refuses_to_start(dataset, capsys):
    assert run_cli(dataset, "--engine", "mat") == 2
    assert "no MAT checkpoint" in capsys.readouterr().err
    assert not any(dataset.output.rglob("*.png"))


def test_a_named_checkpoint_that_is_missing_never_falls_back(dataset, tmp_path, capsys):
    assert run_cli(dataset, "--checkpoint", str(tmp_path / "typo.safetensors")) == 2
    assert "no MAT checkpoint" in capsys.readouterr().err


def test_one_mask_file_for_every_image_in_keep_convention(dataset, tmp_path, capsys):
    keep_mask = tmp_path / "keep.png"
    Image.fromarray(np.where(dataset.hole, 0, 255).astype(np.uint8)).save(keep_mask)  # MAT's own: black = hole
    assert main(["inpaint", "--image", str(dataset.images), "--mask", str(keep_mask), "--output",
                 str(dataset.output), "--engine", "opencv", "--mask-convention", "keep"]) == 0
    assert "2 done" in capsys.readouterr().out
    assert_png_restored(dataset)


def test_empty_mask_copies_the_original_file(dataset, capsys):
    for mask in dataset.masks.rglob("*.png"):
        write_mask(mask, np.zeros((321, 481), bool))
    assert run_cli(dataset, "--engine", "opencv") == 0
    assert "2 done" in capsys.readouterr().out
    assert (dataset.output / "14037.jpg").read_bytes() == dataset.jpeg.read_bytes()
    assert (dataset.output / "trips" / "3096.png").read_bytes() == dataset.png.read_bytes()


def test_never_writes_outside_the_output_folder(dataset, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dataset.output.mkdir()
    os.symlink(elsewhere, dataset.output / "trips")  # a planted link inside the output folder
    assert run_cli(dataset, "--engine", "opencv") == 1
    captured = capsys.readouterr()
    assert "1 done, 0 skipped, 1 failed" in captured.out
    assert "failed trips/3096.png: " in captured.err and "outside the output root" in captured.err
    assert list(elsewhere.iterdir()) == []


def test_output_folder_inside_the_input_is_not_read_back_as_input(dataset, capsys):
    dataset.output = dataset.images / "restored"
    assert run_cli(dataset, "--engine", "opencv") == 0
    assert run_cli(dataset, "--engine", "opencv") == 0
    assert "0 done, 2 skipped, 0 failed" in capsys.readouterr().out.splitlines()[-1]


def test_missing_input_is_a_setup_error(dataset, capsys):
    dataset.images = dataset.images / "nope"
    assert run_cli(dataset, "--engine", "opencv") == 2
    assert "does not exist" in capsys.readouterr().err
