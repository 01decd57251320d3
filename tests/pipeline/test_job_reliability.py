"""The job under bad inputs, hostile names, dying actors, a killed driver, and on two Ray nodes."""
from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from pipeline.config import JobConfig
from pipeline.output.lock import OutputInUseError
from pipeline.job import run_job
from pipeline.output.shards import committed_tables
from pipeline.stages import FAULT_INJECTION_ENV

from .conftest import REPO_ROOT, encode, hole_box, make_image_folder, textured_image, write_mask

pytestmark = pytest.mark.timeout(300)


def given(masks: Path, **options) -> dict:
    return {"method": "given", "options": {"mask_dir": str(masks), **options}}


def config(uris, output_uri, masks: dict, **sections) -> JobConfig:
    data = {"inputs": {"uris": [str(u) for u in uris]}, "output": {"uri": str(output_uri)}, "masks": masks,
            "engine": {"name": "opencv"}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return JobConfig.from_mapping(data)


# --------------------------------------------------------------------------------------------------
# A folder of everything that goes wrong with real image collections


def png_bomb(side: int = 20000) -> bytes:
    """A 1-bit side×side PNG of zeros: ~50 kB on disk, `side`² pixels once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"\x00" * ((side // 8 + 1) * side), 9)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def messy_files() -> dict[str, bytes]:
    """name → bytes; the upright size of every decodable one is what its mask must match."""
    rgb = textured_image(24, 32, 0)
    good_png = encode(rgb, "PNG")
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, "JPEG")
    palette = io.BytesIO()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(palette, "PNG", transparency=0)
    exif_rotated = io.BytesIO()
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the upright image is 32×24 → 24 wide, 32 high
    rotated.save(exif_rotated, "JPEG", exif=exif.tobytes())
    return {
        "good.jpg": encode(rgb, "JPEG"),
        "good.png": good_png,
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "truncated.png": good_png[: len(good_png) // 2],
        "zero.jpg": b"",
        "notes.jpg": b"meeting notes, definitely not a JPEG\n",
        "bomb.png": png_bomb(),
        "sixteen.png": encode((textured_image(24, 32, 1)[..., 0].astype(np.uint16) * 257), "PNG"),
        "cmyk.jpg": cmyk.getvalue(),
        "palette.png": palette.getvalue(),
        "gray.png": encode(textured_image(24, 32, 2)[..., 1], "PNG"),
        "exif.jpg": exif_rotated.getvalue(),
        "tiny.png": encode(np.full((1, 1, 3), 200, np.uint8), "PNG"),
    }


EXPECTED_FAILURES = {
    "corrupt.jpg": "decode: ImageDecodeError",
    "truncated.png": "decode: ImageDecodeError",
    "zero.jpg": "decode: empty file (0 bytes)",
    "notes.jpg": "decode: ImageDecodeError: cannot decode image",
    "bomb.png": "decode: ImageTooLargeError",
}


@pytest.mark.usefixtures("ray_session")
def test_a_messy_folder_gives_one_row_per_file_with_reasons_for_failures(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    for name, data in messy_files().items():
        (images / name).write_bytes(data)
        shape = {"exif.jpg": (32, 24), "tiny.png": (1, 1)}.get(name, (24, 32))
        write_mask((masks / name).with_suffix(".png"), hole_box(*shape, (0, 0, 1, 1) if name == "tiny.png" else None))

    masks_config = {**given(masks), "postprocess": {"max_hole_ratio": 0.5}}
    report = run_job(config([images], tmp_path / "out", masks_config, execution={"shard_size": 5}))

    rows = {row["id"]: row for row in committed_tables(str(tmp_path / "out")).to_pylist()}
    assert sorted(rows) == sorted(os.listdir(images))  # exactly one row per input, nothing lost or doubled
    counts = report.counts
    assert counts["ok"] + counts["failed"] + counts["skipped"] == len(rows) == report.total_rows
    failed = {name: row["error"] for name, row in rows.items() if row["status"] == "failed"}
    assert set(failed) == set(EXPECTED_FAILURES)
    for name, reason in EXPECTED_FAILURES.items():
        assert failed[name].startswith(reason), (name, failed[name])
        assert rows[name]["image"] is None
    assert "decompression bomb" in failed["bomb.png"]

    def output(name: str) -> Image.Image:
        return Image.open(io.BytesIO(rows[name]["image"]["bytes"]))

    # The 1×1 image's hole is the whole image: the hole-ratio guard skips it (kept unchanged, with why).
    tiny = rows["tiny.png"]
    assert (tiny["status"], tiny["width"], tiny["height"]) == ("skipped", 1, 1)
    assert tiny["error"].startswith("mask: hole covers 100.0% of the image")
    assert tiny["image"]["bytes"] == (images / "tiny.png").read_bytes()
    # Every other usable file was restored and written back in its own format and mode.
    assert {name for name, row in rows.items() if row["status"] == "ok"} == (
        set(rows) - set(EXPECTED_FAILURES) - {"tiny.png"})
    assert (output("cmyk.jpg").format, output("cmyk.jpg").mode) == ("JPEG", "CMYK")
    assert output("sixteen.png").mode in ("I;16", "I")
    assert output("gray.png").mode == "L"
    assert output("palette.png").mode == "RGBA"
    # A spliced JPEG keeps its stored orientation and its EXIF orientation tag: it shows upright.
    assert (rows["exif.jpg"]["width"], rows["exif.jpg"]["height"]) == (24, 32)
    assert ImageOps.exif_transpose(output("exif.jpg")).size == (24, 32)


# --------------------------------------------------------------------------------------------------
# Hostile names in a Parquet dataset


HOSTILE_IDS = ["../../etc/passwd", "/etc/shadow", "..\\..\\boot.ini", "a/../../../escape.png", "fine/name.png"]


@pytest.mark.usefixtures("ray_session")
def test_hostile_ids_and_paths_from_parquet_never_leave_the_output_root(tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    image = encode(textured_image(16, 16, 3))
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"key": HOSTILE_IDS, "image": pa.array([{"bytes": image, "path": k} for k in HOSTILE_IDS],
                                                                  struct)}),
                   dataset / "hostile.parquet")
    # A path column pointing outside the dataset: refused, not read.
    (tmp_path / "outside.png").write_bytes(image)
    pq.write_table(pa.table({"file": ["../outside.png", str(tmp_path / "outside.png")]}), tmp_path / "paths.parquet")
    masks = pa.table({"key": HOSTILE_IDS, "mask": [encode(np.where(hole_box(16, 16), 255, 0).astype(np.uint8))] * 5})
    pq.write_table(masks, tmp_path / "masks.parquet")
    sandbox = tmp_path / "sandbox"
    out = sandbox / "out"

    report = run_job(config(
        [dataset / "hostile.parquet"], out,
        {"method": "given", "options": {"parquet": str(tmp_path / "masks.parquet"), "key_column": "key"}},
        inputs={"id_column": "key"}, output={"write_images": True}))
    paths_report = run_job(config([tmp_path / "paths.parquet"], sandbox / "paths-out", given(tmp_path, missing="empty"),
                                  inputs={"image_column": "file"}, output={"write_images": True}))

    assert report.counts["ok"] == 5
    rows = committed_tables(str(out)).to_pylist()
    assert [row["id"] for row in rows] == HOSTILE_IDS  # ids are data: kept verbatim
    written = [os.path.join(folder, name) for folder, _, names in os.walk(tmp_path) for name in names]
    created = [path for path in written if not path.startswith(str(tmp_path / "dataset"))
               and path not in {str(tmp_path / n) for n in ("outside.png", "paths.parquet", "masks.parquet")}]
    assert created and all(path.startswith(str(sandbox) + os.sep) for path in created)
    image_files = [path for path in created if os.sep + "images" + os.sep in path and path.startswith(str(out))]
    assert len(image_files) == 5
    assert (out / "images" / "fine" / "name.png").is_file()
    for row in rows:
        assert not row["image"]["path"].startswith("/") and ".." not in row["image"]["path"].split("/")

    assert paths_report.counts["failed"] == 2
    errors = [row["error"] for row in committed_tables(str(sandbox / "paths-out")).to_pylist()]
    assert "leaves the dataset folder" in errors[0] and "is absolute" in errors[1]


# --------------------------------------------------------------------------------------------------
# An inpainting actor dies mid-shard


@pytest.mark.usefixtures("ray_session")
def test_a_killed_inpainting_actor_is_restarted_and_every_row_completes(tmp_path, monkeypatch):
    images, masks = tmp_path / "images", tmp_path / "masks"
    names = [f"img{i:02d}.png" for i in range(10)]
    make_image_folder(images, names, masks=masks)
    marker = tmp_path / "actor-died"
    monkeypatch.setenv(FAULT_INJECTION_ENV, json.dumps({"exit_once_marker": str(marker)}))

    report = run_job(config([images], tmp_path / "out", given(masks), execution={"shard_size": 5}))

    assert marker.exists()  # the actor really died (its pid is in the marker)
    assert int(marker.read_text()) != os.getpid()
    assert report.counts == {"ok": 10, "failed": 0, "skipped": 0}
    assert sorted(committed_tables(str(tmp_path / "out")).column("id").to_pylist()) == names


# --------------------------------------------------------------------------------------------------
# The whole driver is killed mid-job


DRIVER_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from pipeline.config import JobConfig
from pipeline.job import run_job
run_job(JobConfig.from_file(sys.argv[1]))
"""


def _driver_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.mark.usefixtures("ray_session")
def test_killing_the_driver_mid_job_then_rerunning_gives_the_uninterrupted_output(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    names = [f"photo{i:02d}.{'jpg' if i % 2 else 'png'}" for i in range(12)]
    make_image_folder(images, names, size=(40, 48), masks=masks)
    killed_out = tmp_path / "killed"
    # One row per batch everywhere: a batch never mixes a finished shard's rows with a held-back one's.
    one_row = {stage: 1 for stage in ("decode", "mask", "inpaint", "metrics", "encode")}
    job = config([images], killed_out, given(masks), execution={"shard_size": 2, "batch_size": one_row})
    job_file = tmp_path / "job.json"
    job_file.write_text(job.canonical_json())
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_SCRIPT)

    # Hold back the inpainting of shards 2..5 so the kill lands after shards 0-1 commit and before the rest
    # can (a timing-free way to kill mid-job, whatever the machine's speed).
    env = _driver_env(**{FAULT_INJECTION_ENV: json.dumps({"delay_s": 60, "delay_from_shard": 2})})
    driver = subprocess.Popen([sys.executable, str(script), str(job_file)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = killed_out / "_shards"
    try:
        deadline = time.monotonic() + 180
        while not (markers.is_dir() and any(markers.glob("*_stats.json"))):
            assert driver.poll() is None, "the driver ended before committing a shard"
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.05)
        # A second driver on the same output (a scheduled run overlapping this one) is refused at once,
        # naming the live one, instead of redoing its pending shards and clearing its temporary files.
        with pytest.raises(OutputInUseError, match=f"another matpipe driver \\(pid {driver.pid} on "):
            run_job(job)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, like a lost machine
        driver.wait(timeout=60)
    committed_at_kill = len(list(markers.glob("*_stats.json")))
    assert 1 <= committed_at_kill <= 2

    resumed = run_job(job)
    uninterrupted = run_job(job.replace(output={"uri": str(tmp_path / "clean")}))

    assert resumed.shards_already_committed == committed_at_kill
    assert resumed.shards_committed_now == 6 - committed_at_kill
    after = committed_tables(str(killed_out))
    reference = committed_tables(str(tmp_path / "clean"))
    ids = after.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 12 and sorted(ids) == sorted(names)
    restored = {row["id"]: row["image"]["bytes"] for row in after.to_pylist()}
    expected = {row["id"]: row["image"]["bytes"] for row in reference.to_pylist()}
    assert restored == expected
    # Nothing half-written is left next to the shards.
    assert sorted(os.listdir(killed_out / "data")) == [f"shard-{i:05d}.parquet" for i in range(6)]


# --------------------------------------------------------------------------------------------------
# Two Ray nodes on one machine


CLUSTER_SCRIPT = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from pipeline.config import JobConfig
from pipeline.job import run_job

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
    ray.init(address=cluster.address)
    report = run_job(JobConfig.from_file(sys.argv[1]))
    alive = [node for node in ray.nodes() if node["Alive"]]
    print(json.dumps({"nodes": len(alive), "counts": report.counts}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_two_node_cluster_runs_a_job_end_to_end(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    names = [f"n{i}.png" for i in range(6)]
    make_image_folder(images, names, masks=masks)
    job_file = tmp_path / "job.json"
    job_file.write_text(config([images], tmp_path / "out", given(masks), execution={"shard_size": 3}).canonical_json())
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)

    result = subprocess.run([sys.executable, str(script), str(job_file)], env=_driver_env(), capture_output=True,
                            text=True, timeout=280)

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"nodes": 2, "counts": {"ok": 6, "failed": 0, "skipped": 0}}
    assert sorted(committed_tables(str(tmp_path / "out")).column("id").to_pylist()) == names
