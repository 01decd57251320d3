"""Hugging Face in and out: a `datasets`-style Parquet input ({bytes, path} images) with given masks
matched by the struct's path stem, and the output folder loaded with `datasets.load_dataset(OUT)`."""
from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
STEMS = ("3096", "12084", "14037")


def hf_parquet(path, cells):
    """A Parquet file as `datasets` writes one: an Image-typed {bytes, path} column and its metadata."""
    struct = pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    features = {"image": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"}}
    table = pa.table({"image": struct, "label": list(range(len(cells)))}).replace_schema_metadata(
        {b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    pq.write_table(table, path)


def test_hf_parquet_with_given_masks_in_and_a_loadable_dataset_out(ray_session, tmp_path, capsys):
    import datasets  # the dev extra installs it

    masks = tmp_path / "masks"
    masks.mkdir()
    cells = []
    for stem in STEMS:
        shutil.copy(REPO_ROOT / "samples" / "masks" / f"{stem}.png", masks)
        cells.append({"bytes": (REPO_ROOT / "samples" / "images" / f"{stem}.jpg").read_bytes(), "path": f"{stem}.jpg"})
    cells.append({"bytes": b"\x89PNG garbage", "path": "corrupt.png"})
    (tmp_path / "data").mkdir()
    hf_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", cells)
    out = tmp_path / "out"
    argv = ["run", "--input", str(tmp_path / "data"), "--masks", f"given:{masks}", "--output", str(out),
            "--engine", "opencv", "--image-column", "image"]

    # One row failed: the exit status says so, and names the row and the reason.
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "rows: 4 (ok 3, failed 1, skipped 0)" in captured.out
    assert "1 of 4 rows failed" in captured.err and "--allow-failures" in captured.err
    assert main([*argv, "--allow-failures", "0.25"]) == 0  # resumes (nothing to redo) and accepts it

    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(loaded.features["image"], datasets.Image) and isinstance(loaded.features["mask"], datasets.Image)
    rows = {row["id"]: row for row in loaded}
    assert sorted(rows) == sorted([f"{stem}.jpg" for stem in STEMS] + ["corrupt.png"])  # ids from the struct path
    for stem in STEMS:
        row = rows[f"{stem}.jpg"]
        assert row["status"] == "ok" and row["mask_method"] == "given" and row["hole_ratio"] > 0.01
        assert row["mask"].size == row["image"].size
    corrupt = rows["corrupt.png"]
    assert corrupt["status"] == "failed" and corrupt["error"].startswith("decode: ")
    assert "BytesIO" not in corrupt["error"] and "bytes starting 89 50 4e 47" in corrupt["error"]
    # The job's own files stay out of the dataset, and the card says what it holds.
    assert (out / "_job" / "listing.parquet").is_file() and (out / "README.md").read_text().startswith("---\n")
