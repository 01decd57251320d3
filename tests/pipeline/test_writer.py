"""Shard Parquet output (schema, Hugging Face metadata, nulls), image files, and containment of names."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import OutputConfig
from pipeline.stages import objects
from pipeline.output.layout import image_file_name, safe_relative_path
from pipeline.output.root import OutputRoot
from pipeline.output.writer import OUTPUT_SCHEMA, ShardWriter

HOSTILE = ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "C:\\x\\y.png", "a/../../b.png",
           "ok/../../../c.png", "nul\x00byte.png", "", ".", "/", "x" * 300 + ".png"]


def final_batch(ids, image_bytes=None, statuses=None):
    rows = len(ids)
    image_bytes = image_bytes if image_bytes is not None else [f"img-{i}".encode() for i in ids]
    return {
        "id": objects(ids), "source": objects([f"src/{i}" for i in ids]),
        "image_bytes": objects(image_bytes),
        "image_path": objects([image_file_name(i, "PNG") if b is not None else "" for i, b in zip(ids, image_bytes)]),
        "mask": objects([b"png"] * rows), "mask_method": objects(["given"] * rows),
        "status": objects(statuses or ["ok"] * rows), "error": objects([""] * rows),
        "hole_ratio": np.full(rows, 0.25), "seed": np.arange(rows), "width": np.full(rows, 4),
        "height": np.full(rows, 3), "format": objects(["PNG"] * rows), "seam_score": np.full(rows, np.nan),
        "time_inpaint_s": np.full(rows, 0.5),
    }


def test_safe_relative_paths_stay_inside_and_stay_distinct():
    assert safe_relative_path("a/./b/c.jpg") == "a/b/c.jpg"
    assert safe_relative_path("photos\\2024\\x.png") == "photos/2024/x.png"
    results = [safe_relative_path(name) for name in HOSTILE]
    for name, result in zip(HOSTILE, results):
        assert not result.startswith("/") and ".." not in result.split("/") and "\x00" not in result, name
        assert result.startswith("_unsafe/"), name
        assert all(len(part.encode()) <= 255 for part in result.split("/"))
    assert len(set(results)) == len(results)
    assert safe_relative_path("../../etc/passwd") != safe_relative_path("etc/passwd")


def test_image_file_name_adds_the_format_suffix_when_missing():
    assert image_file_name("a/b.jpeg", "JPEG") == "a/b.jpeg"
    assert image_file_name("data.parquet#3", "PNG") == "data.parquet#3.png"
    assert image_file_name("x.TIFF", "TIFF") == "x.TIFF"


def test_shard_parquet_has_the_schema_nulls_and_hf_metadata(tmp_path):
    root = OutputRoot(str(tmp_path / "out"))
    writer = ShardWriter(root, "shard-00000", OutputConfig(uri=root.uri, row_group_size=2))
    writer.write_batch(final_batch(["a.png", "b.png", "c.png"], [b"A", None, b"C"], ["ok", "failed", "skipped"]))
    files = writer.close()

    table = pq.read_table(tmp_path / "out" / files.parquet.path)
    assert table.schema.remove_metadata() == OUTPUT_SCHEMA
    assert pq.ParquetFile(tmp_path / "out" / files.parquet.path).metadata.num_row_groups == 2
    rows = table.to_pylist()
    assert rows[0]["image"] == {"bytes": b"A", "path": "a.png"}
    assert rows[1]["image"] is None and rows[1]["error"] is None  # "" → null
    assert rows[0]["seam_score"] is None and rows[0]["time_inpaint_s"] == 0.5  # NaN → null
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert set(features) == set(OUTPUT_SCHEMA.names)
    assert files.rows == 3 and files.parquet.size == os.path.getsize(tmp_path / "out" / files.parquet.path)


def test_hostile_ids_never_write_outside_the_output_root(tmp_path):
    out = tmp_path / "sandbox" / "out"
    root = OutputRoot(str(out))
    writer = ShardWriter(root, "shard-00000", OutputConfig(uri=str(out), write_images=True))
    writer.write_batch(final_batch(HOSTILE))
    writer.close()

    everything = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    assert everything and all(path.startswith(str(out) + os.sep) for path in everything)
    assert writer.image_files == len(HOSTILE)
    assert not (tmp_path / "etc").exists() and not (tmp_path / "sandbox" / "etc").exists()


def test_a_symlink_inside_the_output_cannot_lead_out(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "images").mkdir(parents=True)
    os.symlink(elsewhere, out / "images" / "evil")
    root = OutputRoot(str(out))
    with pytest.raises(ValueError, match="outside the output root"):
        root.write_bytes("images/evil/x.png", b"x")
    assert not list(elsewhere.iterdir())


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    root = OutputRoot(str(tmp_path))
    root.write_bytes("a/file.bin", b"old")
    with pytest.raises(RuntimeError):
        with root.open_atomic("a/file.bin") as sink:
            sink.write(b"new-but-broken")
            raise RuntimeError("crash mid-write")
    assert (tmp_path / "a" / "file.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path / "a") == ["file.bin"]


def test_aborted_shard_writer_leaves_nothing(tmp_path):
    root = OutputRoot(str(tmp_path))
    writer = ShardWriter(root, "shard-00003", OutputConfig(uri=str(tmp_path)))
    writer.write_batch(final_batch(["a"]))
    writer.abort()
    assert os.listdir(tmp_path / "data") == []


def test_remote_output_roots_write_through_pyarrow_filesystems():
    import uuid

    import fsspec

    uri = f"memory://out-{uuid.uuid4().hex[:8]}/job"
    root = OutputRoot(uri)
    assert not root.is_local
    writer = ShardWriter(root, "shard-00000", OutputConfig(uri=uri, write_images=True))
    writer.write_batch(final_batch(["a.png", "../../evil.png"]))
    files = writer.close()

    memory = fsspec.filesystem("memory")
    listed = sorted(path for path in memory.find(uri.removeprefix("memory:/")))
    assert all(path.startswith("/" + uri.removeprefix("memory://")) for path in listed)
    assert not any(".tmp-" in path for path in listed)
    with root.filesystem.open_input_file(root.path(files.parquet.path)) as handle:
        assert pq.read_table(handle).column("id").to_pylist() == ["a.png", "../../evil.png"]
    assert root.read_bytes("images/a.png") == b"img-a.png"
    assert root.size(files.parquet.path) == files.parquet.size
