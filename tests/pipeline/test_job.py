"""run_job / `matpipe run` end to end on small datasets: outputs, resume, engines, inputs, reports."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import JobConfig
from pipeline.job import JobError, run_job
from pipeline.output.shards import ResumeConflictError, committed_tables
from pipeline.stages import FAULT_INJECTION_ENV

from .conftest import REPO_ROOT, encode, hole_box, make_image_folder, textured_image, write_mask

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(300)]


def job_config(uris, output_uri, masks: dict | None = None, **sections) -> JobConfig:
    data = {
        "inputs": {"uris": [str(uri) for uri in uris]},
        "output": {"uri": str(output_uri)},
        "masks": masks or {"method": "text"},
        "engine": {"name": "opencv"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return JobConfig.from_mapping(data)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_readme_command_finds_and_removes_the_sample_watermarks(tmp_path, capsys):
    """README's first command, as written (plus the engine this machine has): the masks are found
    automatically, cover the stamped watermark, and the restored photos lose it."""
    import importlib.util

    from pipeline.cli import main

    samples = REPO_ROOT / "samples"
    out = tmp_path / "samples"
    spec = importlib.util.spec_from_file_location("stamp_watermarks", samples / "stamp_watermarks.py")
    stamp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stamp)

    status = main(["run", "--input", str(samples / "watermarked"), "--masks", "consistent",
                   "--output", str(out), "--write-images", "--engine", "opencv"])

    assert status == 0
    printed = capsys.readouterr().out
    assert "rows: 6 (ok 6, failed 0, skipped 0)" in printed
    table = committed_tables(str(out))
    assert sorted(table.column("id").to_pylist()) == sorted(p.name for p in (samples / "watermarked").iterdir())
    for row in table.to_pylist():
        stamped = np.asarray(Image.open(samples / "watermarked" / row["id"]).convert("RGB"))
        clean = np.asarray(Image.open(samples / "images" / row["id"]).convert("RGB"))
        hole = np.asarray(Image.open(io.BytesIO(row["mask"]))) == 255
        restored = decode(row["image"]["bytes"])
        assert restored.shape == stamped.shape and row["image"]["path"] == row["id"]
        white, dark = stamp.overlay_alpha(stamped.shape[1], stamped.shape[0])
        watermark = (white > 0.1) | (dark > 0.1)
        assert hole[watermark].mean() > 0.97, f"{row['id']}: the mask misses the watermark"
        assert hole.mean() < 0.12, f"{row['id']}: the mask takes scene content too"
        # Inside the watermark the restored photo is closer to the clean original than the stamped one was
        # (OpenCV's fill on a textured scene still leaves ~2/3 of the error; flat skies drop to ~1/7).
        before = np.abs(stamped[watermark].astype(int) - clean[watermark]).mean()
        after = np.abs(restored[watermark].astype(int) - clean[watermark]).mean()
        assert after < 0.75 * before, f"{row['id']}: watermark error {before:.1f} → {after:.1f}"
        # JPEG in, JPEG out: outside the hole only re-encoding noise remains.
        assert np.abs(restored[~hole].astype(int) - stamped[~hole]).mean() < 2.5
        assert row["hole_ratio"] == pytest.approx(hole.mean(), abs=1e-6) and row["seam_score"] is not None
        assert (out / "images" / row["id"]).read_bytes() == row["image"]["bytes"]


def test_the_terminal_shows_shard_progress_and_ray_data_operator_logs_only_with_verbose(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    make_image_folder(images, ["a.png", "b.png"], masks=masks)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for name in ("RAY_ADDRESS", "RAY_DATA_DISABLE_PROGRESS_BARS"):  # a user's plain shell: own Ray, defaults
        env.pop(name, None)

    def terminal(*flags: str, out: str) -> str:
        command = [sys.executable, "-m", "pipeline.cli", *flags, "run", "--input", str(images),
                   "--masks", f"given:{masks}", "--output", str(tmp_path / out), "--engine", "auto"]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    env["MATPIPE_CACHE_DIR"] = str(tmp_path / "no-checkpoints")  # `auto` falls back to OpenCV, loudly
    quiet = terminal(out="quiet")
    assert "committed shard-00000: 2 rows" in quiet and "rows: 2 (ok 2" in quiet
    assert "rows 2/2 (100%)" in quiet  # the progress line (plain: stderr is not a terminal here)
    assert "Running Dataset" not in quiet  # Ray Data's per-operator progress, several lines a second
    assert quiet.count("!" * 100) == 2, quiet  # one NO MAT CHECKPOINT banner (its two rules)
    for noise in ("Token authentication", "Started a local Ray instance", "HTTP Request:"):
        assert noise not in quiet, noise
    verbose = terminal("--verbose", out="verbose")
    assert "Running Dataset" in verbose and "Started a local Ray instance" in verbose


def test_output_is_complete_typed_and_loadable_as_a_hugging_face_image_dataset(image_folder, tmp_path):
    images, masks, pixels = image_folder
    out = tmp_path / "out"

    report = run_job(job_config([images], out, {"method": "given", "options": {"mask_dir": str(masks)}},
                                execution={"shard_size": 4}))

    assert report.counts == {"ok": 6, "failed": 0, "skipped": 0} and report.shards_total == 2
    assert report.complete and report.engine == "opencv"
    data_files = sorted(os.listdir(out / "data"))
    assert data_files == ["shard-00000.parquet", "shard-00001.parquet"]
    table = pq.read_table(out / "data")  # pyarrow's own discovery sees only complete shards
    meta = json.loads(table.schema.metadata[b"huggingface"])
    assert meta["info"]["features"]["image"] == {"_type": "Image"}
    rows = {row["id"]: row for row in table.to_pylist()}
    assert set(rows) == set(pixels)
    for name, source in pixels.items():
        row = rows[name]
        hole = hole_box(*source.shape[:2])
        restored = decode(row["image"]["bytes"])
        assert Image.open(io.BytesIO(row["image"]["bytes"])).format == {
            "png": "PNG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP"}[name.rsplit(".", 1)[1]]
        if name.endswith((".png", ".bmp")):  # lossless: untouched pixels are bit-identical
            assert np.array_equal(restored[~hole], source[~hole])
        assert (row["width"], row["height"], row["status"], row["engine"]) == (64, 48, "ok", "opencv")
        assert row["error"] is None and row["checkpoint_sha256"] is None and row["precision"] == "uint8"
        assert row["time_inpaint_s"] > 0 and row["texture_ratio"] is not None
    config = json.loads((out / "_job" / "config.json").read_text())
    assert config["config_hash"] == report.config_hash and config["resolved"]["engine"] == "opencv"
    manifest = json.loads((out / "_job" / "manifest.json").read_text())
    assert [shard["state"] for shard in manifest["shards"]] == ["committed", "committed"]
    assert json.loads((out / "_job" / "report.json").read_text())["counts"]["ok"] == 6


def test_rerun_skips_committed_shards_and_does_no_model_work(image_folder, tmp_path, monkeypatch):
    images, masks, _ = image_folder
    out = tmp_path / "out"
    config = job_config([images], out, {"method": "given", "options": {"mask_dir": str(masks)}},
                        execution={"shard_size": 3})
    run_job(config)
    before = {name: (out / "data" / name).read_bytes() for name in os.listdir(out / "data")}
    # Any call of an inpainting actor would create this marker (and kill the actor).
    marker = tmp_path / "inpaint-was-called"
    monkeypatch.setenv(FAULT_INJECTION_ENV, json.dumps({"exit_once_marker": str(marker)}))

    again = run_job(config.replace(execution={"batch_size": {"inpaint": 1}}))  # execution-only change: resumes

    assert (again.shards_already_committed, again.shards_committed_now, again.rows_processed_now) == (2, 0, 0)
    assert again.counts["ok"] == 6 and not marker.exists()
    assert {name: (out / "data" / name).read_bytes() for name in os.listdir(out / "data")} == before
    with pytest.raises(ResumeConflictError, match="different configuration"):
        run_job(config.replace(engine={"seed": 7}))


def test_parquet_input_with_references_ids_and_parquet_masks(tmp_path):
    names = [f"img{i}" for i in range(3)]
    clean = [textured_image(40, 48, i) for i in range(3)]
    dirty = [image.copy() for image in clean]
    hole = hole_box(40, 48)
    for image in dirty:
        image[hole] = 255  # a white blot to remove
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({
        "name": names,
        "image": pa.array([{"bytes": encode(image), "path": None} for image in dirty], struct),
        "clean": pa.array([{"bytes": encode(image), "path": None} for image in clean], struct),
    }), tmp_path / "dataset.parquet")
    pq.write_table(pa.table({"name": names, "mask": [encode(np.where(hole, 255, 0).astype(np.uint8))] * 3}),
                   tmp_path / "masks.parquet")

    report = run_job(job_config(
        [tmp_path / "dataset.parquet"], tmp_path / "out",
        {"method": "given", "options": {"parquet": str(tmp_path / "masks.parquet"), "key_column": "name"}},
        inputs={"id_column": "name", "reference_column": "clean"}))

    assert report.counts["ok"] == 3
    rows = committed_tables(str(tmp_path / "out")).to_pylist()
    assert [row["id"] for row in rows] == names
    assert all(row["source"].endswith(f"dataset.parquet#{i}") for i, row in enumerate(rows))
    for row, original in zip(rows, dirty):
        assert row["psnr"] is not None and 10 < row["psnr"] < 100 and 0 < row["ssim"] < 1
        # The blot is gone: the restored hole is far from white.
        assert decode(row["image"]["bytes"])[hole].mean() < 240


def test_memory_filesystem_input_is_read_on_the_driver(tmp_path):
    bucket = f"memory://job-{uuid.uuid4().hex[:8]}/photos"
    filesystem = fsspec.filesystem("memory")
    masks = tmp_path / "masks"
    for i, name in enumerate(["a.png", "sub/b.png"]):
        with filesystem.open(f"{bucket}/{name}", "wb") as handle:
            handle.write(encode(textured_image(24, 32, i)))
        write_mask(masks / name, hole_box(24, 32))

    report = run_job(job_config([bucket], tmp_path / "out", {"method": "given", "options": {"mask_dir": str(masks)}}))

    assert report.counts["ok"] == 2
    assert sorted(committed_tables(str(tmp_path / "out")).column("id").to_pylist()) == ["a.png", "sub/b.png"]


def test_auto_engine_without_checkpoint_falls_back_to_opencv_loudly(image_folder, tmp_path, caplog):
    images, masks, _ = image_folder
    missing = str(tmp_path / "no-such-weights.safetensors")
    masks_config = {"method": "given", "options": {"mask_dir": str(masks)}}

    with pytest.raises(JobError, match="engine 'mat'"):
        run_job(job_config([images], tmp_path / "mat", masks_config, engine={"name": "mat", "checkpoint": missing}))

    report = run_job(job_config([images], tmp_path / "auto", masks_config,
                                engine={"name": "auto", "checkpoint": missing}))
    assert report.engine == "opencv" and "NO MAT CHECKPOINT" in report.engine_warning
    assert "NO MAT CHECKPOINT" in report.summary()
    assert any("NO MAT CHECKPOINT" in record.getMessage() and record.levelname == "WARNING"
               for record in caplog.records)
    saved = json.loads((tmp_path / "auto" / "_job" / "report.json").read_text())
    assert "NO MAT CHECKPOINT" in saved["engine_warning"]


def test_mat_engine_with_random_weights_through_the_real_loader(tmp_path):
    import torch
    from safetensors.torch import save_file

    from matcore import Generator
    from matcore.checkpoints import file_sha256
    from matcore.precision import resolve_precision

    torch.manual_seed(0)
    checkpoint = tmp_path / "random-mat-256.safetensors"
    save_file({k: v.contiguous() for k, v in Generator(256).state_dict().items()}, str(checkpoint))
    images, masks = tmp_path / "images", tmp_path / "masks"
    pixels = make_image_folder(images, ["one.png", "two.png"], size=(40, 56), masks=masks)

    report = run_job(job_config([images], tmp_path / "out", {"method": "given", "options": {"mask_dir": str(masks)}},
                                engine={"name": "mat", "checkpoint": str(checkpoint)}))

    assert report.engine == "mat" and report.counts["ok"] == 2
    assert report.checkpoint_sha256 == file_sha256(checkpoint)
    for row in committed_tables(str(tmp_path / "out")).to_pylist():
        restored, source = decode(row["image"]["bytes"]), pixels[row["id"]]
        hole = hole_box(40, 56)
        assert row["engine"] == "mat" and row["checkpoint_sha256"] == report.checkpoint_sha256
        assert row["precision"] == resolve_precision("auto", "cpu")  # float32 on a CPU without native bf16
        assert np.array_equal(restored[~hole], source[~hole]) and not np.array_equal(restored[hole], source[hole])


def test_image_files_mirror_the_input_tree_in_the_input_format(image_folder, tmp_path):
    images, masks, pixels = image_folder
    out = tmp_path / "out"
    run_job(job_config([images], out, {"method": "given", "options": {"mask_dir": str(masks)}},
                       output={"write_images": True}))
    written = sorted(str(path.relative_to(out / "images")) for path in (out / "images").rglob("*") if path.is_file())
    assert written == sorted(pixels)
    for name in pixels:
        expected = Image.open(images / name).format
        assert Image.open(out / "images" / name).format == expected


def test_cli_flags_override_the_config_file(image_folder, tmp_path, capsys):
    from pipeline.cli import main

    images, masks, _ = image_folder
    config_file = tmp_path / "job.yaml"
    config_file.write_text(f"inputs: {{uris: [{tmp_path / 'elsewhere'}]}}\noutput: {{uri: {tmp_path / 'ignored'}}}\n"
                           "engine: {name: opencv}\nexecution: {shard_size: 2}\n")
    out = tmp_path / "out"

    assert main(["run", "--config", str(config_file), "--input", str(images), "--output", str(out),
                 "--masks", f"given:{masks}", "--shard-size", "5"]) == 0
    assert "shards: 2 (0 already committed, 2 committed now)" in capsys.readouterr().out

    assert main(["run", "--input", str(images), "--output", str(tmp_path / "x"), "--masks", "given"]) == 2
    assert "--masks given needs a location" in capsys.readouterr().err
    assert main(["run", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "y"),
                 "--masks", f"given:{masks}", "--engine", "opencv"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_output_inside_the_input_is_refused(image_folder):
    images, masks, _ = image_folder
    with pytest.raises(JobError, match="inside the input"):
        run_job(job_config([images], images / "out", {"method": "given", "options": {"mask_dir": str(masks)}}))
    assert not (images / "out").exists()


def stamp_watermark(image: np.ndarray) -> np.ndarray:
    """The same semi-transparent text-and-frame logo in the bottom-right corner of every image."""
    from PIL import ImageDraw, ImageFont

    base = Image.fromarray(image).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.text((base.width - 70, base.height - 28), "WM©", fill=(255, 255, 255, 170),
              font=ImageFont.load_default(size=18))
    draw.rectangle((base.width - 74, base.height - 30, base.width - 8, base.height - 6),
                   outline=(255, 255, 255, 200), width=2)
    return np.asarray(Image.alpha_composite(base, overlay).convert("RGB"))


def test_consistent_masks_are_fitted_once_per_job_and_reused_on_resume(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(10):
        (images / f"wm{i}.png").write_bytes(encode(stamp_watermark(textured_image(96, 128, i))))
    # Listed first: the fit must not depend on the order of its images (it once took clean images listed
    # first as its references and matched one of them as carrying the logo).
    for i in range(2):
        (images / f"clean{i}.png").write_bytes(encode(textured_image(96, 128, 50 + i)))
    out = tmp_path / "out"
    config = job_config([images], out, {"method": "consistent", "fit_sample_size": 12}, execution={"shard_size": 6})

    report = run_job(config)

    template = out / "_job" / "consistent_template.npz"
    assert template.is_file() and report.counts == {"ok": 12, "failed": 0, "skipped": 0}
    rows = {row["id"]: row for row in committed_tables(str(out)).to_pylist()}
    for i in range(10):
        row = rows[f"wm{i}.png"]
        assert row["mask_method"] == "consistent" and row["hole_ratio"] > 0.05
        # Inverted from the fitted matte where it is trusted (engine.invert: auto), OpenCV fills the rest.
        assert row["engine"] in ("invert", "invert+opencv", "opencv")
        # The detector was run again on the restored image: its figures are there.
        assert row["residual_hole_ratio"] is not None and row["rerun_hole_ratio"] is not None
    assert any(rows[f"wm{i}.png"]["hole_inverted_px"] > 0 for i in range(10))
    for i in range(2):
        row = rows[f"clean{i}.png"]
        # Nothing found: the row is clean already and keeps its input bytes untouched.
        assert row["hole_ratio"] == 0 and row["engine"] is None
        assert row["image"]["bytes"] == (images / f"clean{i}.png").read_bytes()

    # Lose a shard; the rerun masks it with the saved template, not a new fit.
    fitted = template.read_bytes()
    os.unlink(out / "_shards" / "shard-00001_stats.json")
    again = run_job(config)
    assert again.shards_committed_now == 1 and template.read_bytes() == fitted
    assert {r["id"]: r["image"] for r in committed_tables(str(out)).to_pylist()} == {
        k: r["image"] for k, r in rows.items()}


def test_sam_refining_consistent_boxes_is_fitted_once_per_job(tmp_path):
    """`sam` with refine=consistent: the job fits the consistent box source first, as for `consistent`."""
    import torch

    from pipeline.masks import build_sam

    from .masks.test_sam import TINY

    images = tmp_path / "images"
    images.mkdir()
    for i in range(10):
        (images / f"wm{i}.png").write_bytes(encode(stamp_watermark(textured_image(96, 128, i))))
    (images / "clean.png").write_bytes(encode(textured_image(96, 128, 60)))
    checkpoint = tmp_path / "tiny_sam.pth"
    torch.manual_seed(0)
    torch.save(build_sam(TINY).state_dict(), checkpoint)
    out = tmp_path / "out"
    masks = {"method": "sam", "fit_sample_size": 11,
             "options": {"checkpoint": str(checkpoint), "device": "cpu", "refine": "consistent"},
             # Random SAM weights segment anything at all: keep the hole-ratio guard out of the way.
             "postprocess": {"max_hole_ratio": 1.0}}

    report = run_job(job_config([images], out, masks, execution={"shard_size": 6}))

    assert (out / "_job" / "consistent_template.npz").is_file()
    assert report.counts["failed"] == 0, report.errors
    rows = {row["id"]: row for row in committed_tables(str(out)).to_pylist()}
    for i in range(10):
        details = json.loads(rows[f"wm{i}.png"]["mask_details"])
        # SAM was prompted with the box the fitted template found in the corner.
        assert details["details"]["refined"] == "consistent" and len(details["boxes"]) == 1
        x0, y0, x1, y1 = details["boxes"][0]
        assert (x0 + x1) / 2 > 128 / 2 and (y0 + y1) / 2 > 96 / 2  # the stamp is in the bottom-right corner
    clean = json.loads(rows["clean.png"]["mask_details"])
    assert clean["details"]["prompts"] == 0 and rows["clean.png"]["hole_ratio"] == 0


def test_hugging_face_datasets_loads_the_output_with_an_image_feature(image_folder, tmp_path):
    import datasets  # the dev extra installs it
    images, masks, pixels = image_folder
    run_job(job_config([images], tmp_path / "out", {"method": "given", "options": {"mask_dir": str(masks)}}))

    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf-cache"))

    assert isinstance(loaded.features["image"], datasets.Image)
    row = loaded[0]
    assert row["image"].size == (64, 48) and row["status"] == "ok" and row["id"] in pixels


def test_run_flags_name_the_parquet_id_and_image_columns_and_the_allowed_failures(tmp_path):
    from pipeline.cli import build_parser
    from pipeline.commands.run import build_config

    args = build_parser().parse_args(["run", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                      "--id-column", "uid", "--image-column", "picture", "--allow-failures", "0.1"])
    config = build_config(args)
    assert (config.inputs.id_column, config.inputs.image_column) == ("uid", "picture")
    assert args.allow_failures == 0.1
    assert build_parser().parse_args(["run", "--allow-failures"]).allow_failures == 1.0


@pytest.mark.slow
def test_a_watermark_tiled_over_the_pictures_is_inverted_by_the_job(tmp_path):
    from .watermark.conftest import footprint_psnr, tiled_blend

    clean, marked, alphas = tiled_blend(14)
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(marked):
        (images / f"tiled{i:02d}.png").write_bytes(encode(image))
    out = tmp_path / "out"
    config = job_config([images], out, {"method": "consistent", "fit_sample_size": 14}, execution={"shard_size": 7})

    report = run_job(config)

    assert report.counts == {"ok": 14, "failed": 0, "skipped": 0}
    # The tile's matte was estimated with the template: no "inversion is off" warning, rows inverted.
    assert not any("inversion is off" in warning for warning in report.warnings)
    rows = committed_tables(str(out)).to_pylist()
    inverted = [row for row in rows if row["hole_inverted_px"] and row["engine"] in ("invert", "invert+opencv")]
    assert len(inverted) >= 12
    for row in inverted:
        details = json.loads(row["mask_details"])["details"]
        assert details["tiled"] and len(details["tiles"]) >= 9
        index = int(row["id"][len("tiled"):-len(".png")])
        # The written image has the scene back under the tiles, far closer than the watermarked input.
        assert footprint_psnr(decode(row["image"]["bytes"]), clean[index], alphas[index]) > \
            footprint_psnr(marked[index], clean[index], alphas[index]) + 8
