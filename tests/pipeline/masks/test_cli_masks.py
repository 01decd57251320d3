"""`matpipe masks`: one PNG per image mirroring the input tree, a sidecar row per image, per-file
failures recorded without stopping the run, exit status 1 when anything failed."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageFilter

from pipeline.cli import main
from pipeline.masks import build_sam

from .conftest import logo_alpha, paint_logo, paint_text, scenes
from .test_sam import TINY


def save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def read_hole(path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 127


def sidecar(folder) -> dict[str, dict]:
    rows = [json.loads(line) for line in (folder / "masks.jsonl").read_text().splitlines()]
    return {row["path"]: row for row in rows}


@pytest.fixture
def given_tree(tmp_path):
    """photos/ with two images in sub-folders and a corrupt file; painted/ with their masks."""
    photos, painted = tmp_path / "photos", tmp_path / "painted"
    hole = np.zeros((20, 30), bool)
    hole[5:10, 8:20] = True
    for relative in ("a/one.jpg", "b/two.png"):
        save(photos / relative, np.full((20, 30, 3), 120, np.uint8))
        save((painted / relative).with_suffix(".png"), np.where(hole, 255, 0).astype(np.uint8))
    (photos / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    return photos, painted, hole


def test_given_masks_are_written_and_a_broken_image_fails_only_its_row(given_tree, tmp_path, capsys):
    photos, painted, hole = given_tree
    out = tmp_path / "out"
    status = main(["masks", "--input", str(photos), "--output", str(out), "--method", "given",
                   "--mask-dir", str(painted), "--dilate", "1"])
    assert status == 1
    np.testing.assert_array_equal(read_hole(out / "a" / "one.png"), _dilated(hole))
    assert (out / "b" / "two.png").is_file() and not (out / "b" / "broken.png").exists()
    rows = sidecar(out)
    assert rows["a/one.jpg"]["status"] == "ok" and rows["a/one.jpg"]["mask"] == "a/one.png"
    assert rows["a/one.jpg"]["method"] == "given" and rows["a/one.jpg"]["hole_ratio"] > 0
    assert rows["b/broken.jpg"]["status"] == "failed" and "cannot read image" in rows["b/broken.jpg"]["error"]
    assert "1 failed" in capsys.readouterr().out


def _dilated(hole: np.ndarray) -> np.ndarray:
    from pipeline.masks import dilate_hole

    return dilate_hole(hole, 1)


def test_too_large_holes_are_flagged_not_failed(tmp_path):
    photos, painted, out = tmp_path / "photos", tmp_path / "painted", tmp_path / "out"
    save(photos / "x.jpg", np.full((10, 10, 3), 90, np.uint8))
    save(painted / "x.png", np.full((10, 10), 255, np.uint8))
    status = main(["masks", "--input", str(photos), "--output", str(out), "--method", "given",
                   "--mask-dir", str(painted), "--max-hole-ratio", "0.5", "--sidecar", "parquet"])
    assert status == 0
    row = pq.read_table(out / "masks.parquet").to_pylist()[0]
    assert row["status"] == "flagged" and "100.0%" in row["flag"]


def test_bad_configuration_ends_the_run_with_a_message(tmp_path, capsys):
    photos = tmp_path / "photos"
    save(photos / "x.jpg", np.zeros((8, 8, 3), np.uint8))
    status = main(["masks", "--input", str(photos), "--output", str(tmp_path / "out"), "--method", "given"])
    assert status == 2  # could not start (a failed row would be 1)
    assert "exactly one of mask_dir or parquet" in capsys.readouterr().err


def test_text_method_writes_the_text_mask(photo, tmp_path):
    image, _ = paint_text(photo, "WATERMARK 2024", (250, 270), size=28)
    save(tmp_path / "in" / "wm.png", image)
    out = tmp_path / "out"
    assert main(["masks", "--input", str(tmp_path / "in"), "--output", str(out), "--method", "text",
                 "--position", "corners", "--no-keep-scene-text"]) == 0
    hole = read_hole(out / "wm.png")
    assert hole[270:300, 250:470].mean() > 0.5 and not hole[:200].any()
    row = sidecar(out)["wm.png"]
    assert row["status"] == "ok" and len(row["boxes"]) == 1 and row["scores"][0] > 0.5


def test_text_method_keeps_scene_text_by_default_and_says_why(photo, tmp_path):
    """Opaque white lettering with the soft rims of a photographed sign (a 1.2 px blur) on a calm background
    is kept by default, with the reason."""
    image, _ = paint_text(photo, "WATERMARK 2024", (250, 270), size=28)
    image[255:321, 235:481] = np.asarray(Image.fromarray(image[255:321, 235:481]).filter(ImageFilter.GaussianBlur(1.2)))
    save(tmp_path / "in" / "wm.png", image)
    out = tmp_path / "out"
    assert main(["masks", "--input", str(tmp_path / "in"), "--output", str(out), "--method", "text"]) == 0
    row = sidecar(out)["wm.png"]
    assert not read_hole(out / "wm.png").any()
    (region,) = row["details"]["regions"]
    assert region["text"] == "WATERMARK2024" or "WATERMARK" in region["text"]
    assert not region["kept"] and region["reason"].startswith("scene") and "translucency" in region["cues"]


def test_consistent_method_fits_on_the_folder_and_saves_its_template(photo, tmp_path):
    alpha = logo_alpha()
    rng = np.random.default_rng(3)
    folder = tmp_path / "in"
    for index, scene in enumerate(scenes(photo, 14, (160, 220), seed=3)):
        y, x = 110 + int(rng.integers(-4, 5)), 114 + int(rng.integers(-4, 5))
        save(folder / f"{index:02d}.png", paint_logo(scene, alpha, (y, x), opacity=0.6)[0])
    out, template = tmp_path / "out", tmp_path / "logo.npz"
    assert main(["masks", "--input", str(folder), "--output", str(out), "--method", "consistent",
                 "--save-template", str(template)]) == 0
    rows = sidecar(out)
    assert len(rows) == 14 and all(row["details"]["matched"] for row in rows.values())
    assert template.is_file()
    again = tmp_path / "again"
    assert main(["masks", "--input", str(folder), "--output", str(again), "--method", "consistent",
                 "--template", str(template)]) == 0
    np.testing.assert_array_equal(read_hole(again / "05.png"), read_hole(out / "05.png"))


def test_sam_method_with_a_checkpoint_file_and_a_prompt_table(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pth"
    torch.save(build_sam(TINY).state_dict(), checkpoint)
    save(tmp_path / "in" / "p.jpg", np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"path": "p.jpg", "boxes": [[5, 5, 30, 25]]}) + "\n")
    out = tmp_path / "out"
    assert main(["masks", "--input", str(tmp_path / "in"), "--output", str(out), "--method", "sam",
                 "--sam-checkpoint", str(checkpoint), "--prompts", str(prompts), "--device", "cpu"]) == 0
    assert read_hole(out / "p.png").shape == (40, 60)
    assert sidecar(out)["p.jpg"]["boxes"] == [[5.0, 5.0, 30.0, 25.0]]


def test_sam_without_a_checkpoint_explains_where_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MATPIPE_CACHE_DIR", str(tmp_path / "cache"))
    save(tmp_path / "in" / "p.jpg", np.zeros((8, 8, 3), np.uint8))
    assert main(["masks", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--method", "sam",
                 "--sam-model-type", "vit_b"]) == 2
    error = capsys.readouterr().err
    assert "sam_vit_b_01ec64.pth" in error and str(tmp_path / "cache") in error
