"""Restored JPEGs in the job's rows and in `matpipe inpaint`: spliced by default, re-encoded when asked or
when splicing is impossible, and each row says which way and why."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.config import EngineConfig
from pipeline.jpeg.output import changed_pixels, write_restored_jpeg
from pipeline.stages import DecodeStage, EncodeStage, InpaintStage, MaskStage, run_stages
from pipeline.output.writer import batch_to_table
from tests.pipeline.conftest import encode, textured_image, write_mask
from tests.pipeline.jpeg.test_splice import arithmetic_jpeg, jpeg_bytes, photo, pixels, watermark_hole

HEIGHT, WIDTH = 157, 203


def batch_of(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    from pipeline.stages import objects

    return {"id": objects(list(files)), "bytes": objects(list(files.values()))}


def run_job_stages(tmp_path, files: dict[str, bytes], **encode_options) -> dict[str, np.ndarray]:
    masks = tmp_path / "masks"
    for name in files:
        write_mask(masks / f"{name.rsplit('.', 1)[0]}.png", watermark_hole(HEIGHT, WIDTH))
    stages = [DecodeStage(), MaskStage("given", {"mask_dir": str(masks)}), InpaintStage(EngineConfig(name="opencv")),
              EncodeStage(**encode_options)]
    return run_stages(batch_of(files), stages)


def test_job_rows_splice_jpegs_and_say_how_every_image_was_written(tmp_path):
    photo_jpeg = jpeg_bytes(photo(), quality=85)
    files = {"photo.jpg": photo_jpeg, "arith.jpg": arithmetic_jpeg(tmp_path),
             "logo.png": encode(textured_image(HEIGHT, WIDTH, 3)), "broken.jpg": photo_jpeg[:300] + b"\x00" * 40}

    out = run_job_stages(tmp_path, files)

    rows = {name: (status, written, note) for name, status, written, note in
            zip(out["id"], out["status"], out["image_write"], out["image_write_note"])}
    assert rows["photo.jpg"][:2] == ("ok", "spliced") and "blocks re-coded" in rows["photo.jpg"][2]
    assert rows["arith.jpg"][:2] == ("ok", "reencoded")
    assert rows["arith.jpg"][2].startswith("cannot splice: arithmetic-coded")
    assert rows["logo.png"] == ("ok", "encoded", "")
    assert rows["broken.jpg"][:2] == ("failed", "")  # a corrupt JPEG fails its own row, nothing else
    assert out["error"][list(files).index("broken.jpg")].startswith("decode: ")
    spliced = out["image_bytes"][0]
    hole = watermark_hole(HEIGHT, WIDTH)
    differs = (pixels(spliced) != pixels(photo_jpeg)).any(-1)
    assert differs[hole].any() and not differs[~hole].all()
    assert Image.open(io.BytesIO(spliced)).quantization == Image.open(io.BytesIO(photo_jpeg)).quantization

    table = batch_to_table(out).to_pydict()  # the Parquet rows carry both columns
    assert table["image_write"] == ["spliced", "reencoded", "encoded", None]
    assert table["image_write_note"][2] is None and table["image_write_note"][1].startswith("cannot splice")


def test_reencode_on_request_and_untouched_rows_keep_their_bytes(tmp_path):
    photo_jpeg = jpeg_bytes(photo(), quality=85)
    out = run_job_stages(tmp_path, {"photo.jpg": photo_jpeg}, jpeg="reencode")
    assert (out["image_write"][0], out["image_write_note"][0]) == ("reencoded", "output.jpeg is reencode")

    batch = {**batch_of({"clean.jpg": photo_jpeg}), "status": np.array(["ok"], object),
             "format": np.array(["JPEG"], object)}
    copied = EncodeStage()(batch)
    assert copied["image_bytes"][0] == photo_jpeg and copied["image_write"][0] == "copied"
    with pytest.raises(ValueError, match="jpeg output must be one of splice, reencode"):
        EncodeStage(jpeg="lossless")


def test_without_the_source_bytes_in_the_batch_the_jpeg_is_reencoded_and_the_row_says_why(tmp_path):
    photo_jpeg = jpeg_bytes(photo(), quality=85)
    write_mask(tmp_path / "masks" / "photo.png", watermark_hole(HEIGHT, WIDTH))
    stages = [DecodeStage(), MaskStage("given", {"mask_dir": str(tmp_path / "masks")}), InpaintStage(EngineConfig(name="opencv"))]
    batch = run_stages(batch_of({"photo.jpg": photo_jpeg}), stages)
    batch.pop("bytes")

    out = EncodeStage()(batch)

    assert out["status"][0] == "ok" and out["image_write"][0] == "reencoded"
    assert out["image_write_note"][0] == "cannot splice: the source's bytes are not in the batch"


def test_pixels_an_engine_changed_outside_the_hole_are_spliced_too():
    source = jpeg_bytes(photo(), quality=85)
    original = pixels(source)
    restored, hole = original.copy(), np.zeros((HEIGHT, WIDTH), bool)
    hole[10:20, 10:20] = True
    restored[9:21, 9:21] = 0  # the engine's own one-pixel dilation
    changed = changed_pixels(original, restored, hole)
    assert changed.sum() == 144

    data, written = write_restored_jpeg(source, restored, changed, lambda: b"unused")

    assert written.method == "spliced" and np.abs(pixels(data)[9:21, 9:21].astype(int)).mean() < 12


def test_inpaint_cli_splices_jpegs_by_default_and_reencodes_on_request(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MATPIPE_CACHE_DIR", str(tmp_path / "no-weights-here"))
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    source = jpeg_bytes(photo(), quality=75)
    (images / "photo.jpg").write_bytes(source)
    (images / "arith.jpg").write_bytes(arithmetic_jpeg(tmp_path))
    write_mask(masks / "photo.png", watermark_hole(HEIGHT, WIDTH))
    write_mask(masks / "arith.png", watermark_hole(HEIGHT, WIDTH))

    def run(*extra: str) -> tuple[int, str, str]:
        code = main(["inpaint", "--image", str(images), "--mask", str(masks), "--output", str(tmp_path / "out"),
                     "--engine", "opencv", "--overwrite", *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = run()
    assert code == 0 and "JPEG: 1 spliced, 1 re-encoded" in out
    assert "warning arith.jpg: JPEG re-encoded (cannot splice: arithmetic-coded" in err
    spliced = (tmp_path / "out" / "photo.jpg").read_bytes()
    assert Image.open(io.BytesIO(spliced)).quantization == Image.open(io.BytesIO(source)).quantization
    assert 0.97 < len(spliced) / len(source) < 1.03
    hole = watermark_hole(HEIGHT, WIDTH)
    unchanged = ~(pixels(spliced) != pixels(source)).any(-1)
    assert unchanged[~hole].mean() > 0.8 and not unchanged[hole].all()

    code, out, err = run("--jpeg", "reencode")
    assert code == 0 and "JPEG: 0 spliced, 2 re-encoded" in out and "warning" not in err
    assert Image.open(io.BytesIO((tmp_path / "out" / "photo.jpg").read_bytes())).quantization[0][0] == 2  # q95
