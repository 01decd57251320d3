"""Listing and reading inputs: folders, Parquet (bytes, HF struct, path column), file:// and memory://."""
from __future__ import annotations

import json
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import InputConfig
from pipeline.sources import SourceError, fetch_rows, is_process_local, list_inputs

from .conftest import encode, make_image_folder, textured_image


def listed(config: InputConfig) -> list[dict]:
    return list_inputs(config).to_pylist()


def test_folder_listing_is_recursive_sorted_and_filtered(tmp_path):
    make_image_folder(tmp_path, ["b.png", "a.JPG", "sub/z.webp", "sub/m.tif", "x.bmp"])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "sub" / "._z.webp").write_bytes(b"AppleDouble")

    rows = listed(InputConfig(uris=(str(tmp_path),)))

    assert [row["id"] for row in rows] == ["a.JPG", "b.png", "sub/m.tif", "sub/z.webp", "x.bmp"]
    assert [row["row"] for row in rows] == list(range(5))
    assert rows[0]["source"] == str(tmp_path / "a.JPG") and rows[0]["kind"] == "file"
    assert all(row["duplicate_of"] == "" and row["listing_error"] == "" for row in rows)
    # The same folder as a file:// URI lists the same rows with the same ids.
    assert [row["id"] for row in listed(InputConfig(uris=(tmp_path.as_uri(),)))] == [row["id"] for row in rows]


def test_fetch_reads_the_listed_bytes(tmp_path):
    make_image_folder(tmp_path, ["a.png", "b.jpg"])
    rows = listed(InputConfig(uris=(str(tmp_path),)))
    (tmp_path / "b.jpg").unlink()  # vanished between listing and reading

    fetched = fetch_rows(rows)

    assert fetched[0].data == (tmp_path / "a.png").read_bytes() and not fetched[0].error
    assert fetched[1].data is None and "file not found" in fetched[1].error


def test_memory_filesystem_lists_and_reads_through_fsspec():
    bucket = f"memory://bucket-{uuid.uuid4().hex[:8]}/photos"
    filesystem = fsspec.filesystem("memory")
    payloads = {name: encode(textured_image(8, 8, i)) for i, name in enumerate(["b.png", "a/c.png"])}
    for name, data in payloads.items():
        with filesystem.open(f"{bucket}/{name}", "wb") as handle:
            handle.write(data)

    rows = listed(InputConfig(uris=(bucket,)))

    assert [row["id"] for row in rows] == ["a/c.png", "b.png"]
    assert rows[0]["source"] == f"{bucket}/a/c.png"
    assert is_process_local(rows[0]["fs_uri"])
    assert [result.data for result in fetch_rows(rows)] == [payloads["a/c.png"], payloads["b.png"]]


def write_parquet(path, table: pa.Table, row_group_size: int | None = None, hf_image_column: str | None = None):
    if hf_image_column:
        features = {hf_image_column: {"_type": "Image"}}
        table = table.replace_schema_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def test_parquet_bytes_and_hf_struct_across_row_groups(tmp_path):
    images = [encode(textured_image(8, 8, i)) for i in range(7)]
    struct = pa.array([{"bytes": data, "path": f"img{i}.png"} for i, data in enumerate(images)],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    write_parquet(tmp_path / "data" / "hf.parquet", pa.table({"picture": struct, "label": list(range(7))}),
                  row_group_size=3, hf_image_column="picture")
    write_parquet(tmp_path / "data" / "raw.parquet", pa.table({"jpeg": pa.array(images[:2], pa.binary())}))

    rows = listed(InputConfig(uris=(str(tmp_path / "data"),)))

    # A Hugging Face Image cell names its file: that is the id (and the key given masks match on).
    assert [row["id"] for row in rows] == [f"img{i}.png" for i in range(7)] + ["raw.parquet#0", "raw.parquet#1"]
    assert [row["key"] for row in rows] == [row["id"] for row in rows]
    assert {row["column"] for row in rows} == {"picture", "jpeg"}
    assert [(row["row_group"], row["row_in_group"]) for row in rows[:7]] == [(0, 0), (0, 1), (0, 2), (1, 0),
                                                                             (1, 1), (1, 2), (2, 0)]
    assert [result.data for result in fetch_rows(rows)] == images + images[:2]


def test_parquet_id_and_reference_columns(tmp_path):
    images = [encode(textured_image(8, 8, i)) for i in range(3)]
    table = pa.table({"key": ["x", "y", None], "image": pa.array(images, pa.binary()),
                      "clean": pa.array(images[::-1], pa.binary())})
    write_parquet(tmp_path / "d.parquet", table)

    rows = listed(InputConfig(uris=(str(tmp_path / "d.parquet"),), id_column="key", reference_column="clean"))

    assert [row["id"] for row in rows[:2]] == ["x", "y"]
    assert "id column 'key' is null" in rows[2]["listing_error"]
    fetched = fetch_rows(rows)
    assert (fetched[0].data, fetched[0].reference) == (images[0], images[2])
    assert "is null" in fetched[2].error


def test_parquet_path_column_reads_files_and_refuses_escapes(tmp_path):
    dataset = tmp_path / "dataset"
    make_image_folder(dataset / "files", ["a.png", "b.png"])
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"private")
    paths = ["files/a.png", "files/b.png", "../secret.png", str(secret), "../../etc/passwd"]
    write_parquet(dataset / "index.parquet", pa.table({"file": paths}))

    rows = listed(InputConfig(uris=(str(dataset / "index.parquet"),), image_column="file"))

    assert [row["id"] for row in rows[:2]] == ["files/a.png", "files/b.png"]
    fetched = fetch_rows(rows)
    assert fetched[0].data == (dataset / "files" / "a.png").read_bytes()
    assert "leaves the dataset folder" in fetched[2].error and fetched[2].data is None
    assert "is absolute" in fetched[3].error and fetched[3].data is None
    assert "leaves the dataset folder" in fetched[4].error

    # Opting in reads them.
    allowed = listed(InputConfig(uris=(str(dataset / "index.parquet"),), image_column="file", allow_external_paths=True))
    assert fetch_rows(allowed[2:4], allow_external_paths=True)[1].data == b"private"


def test_duplicate_ids_and_sources_are_flagged_and_renamed(tmp_path):
    make_image_folder(tmp_path / "one", ["a.png", "sub/b.png"])
    make_image_folder(tmp_path / "two", ["a.png"], seed=9)

    rows = listed(InputConfig(uris=(str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path / "one" / "sub"))))

    ids = [row["id"] for row in rows]
    assert ids == ["a.png", "sub/b.png", "a.png#dup1", "b.png"]
    assert len(set(ids)) == len(ids)
    # Same id from another folder, and the same file listed again through an overlapping input.
    assert [row["duplicate_of"] for row in rows] == ["", "", "a.png", "sub/b.png"]

    with pytest.raises(SourceError, match="duplicate rows in the inputs: 'a.png'"):
        list_inputs(InputConfig(uris=(str(tmp_path / "one"), str(tmp_path / "two")), on_duplicate="error"))


def test_listing_errors_name_the_input(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list_inputs(InputConfig(uris=(str(tmp_path / "nope"),)))
    make_image_folder(tmp_path / "mixed", ["a.png"])
    write_parquet(tmp_path / "mixed" / "t.parquet", pa.table({"image": pa.array([b"x"], pa.binary())}))
    with pytest.raises(SourceError, match="both images and Parquet files; set inputs.format"):
        list_inputs(InputConfig(uris=(str(tmp_path / "mixed"),)))
    assert [r["id"] for r in listed(InputConfig(uris=(str(tmp_path / "mixed"),), format="images"))] == ["a.png"]
    write_parquet(tmp_path / "bad" / "t.parquet", pa.table({"n": [1, 2]}))
    with pytest.raises(SourceError, match="cannot tell which column holds the images"):
        list_inputs(InputConfig(uris=(str(tmp_path / "bad"),)))


def hf_struct(cells):
    return pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def test_hf_parquet_picks_up_an_id_column_and_keeps_the_struct_path_as_key(tmp_path):
    images = [encode(textured_image(8, 8, i)) for i in range(3)]
    table = pa.table({"id": [10, 11, 12], "image": hf_struct(
        [{"bytes": data, "path": f"photos/p{i}.jpg"} for i, data in enumerate(images)])})
    write_parquet(tmp_path / "train.parquet", table, hf_image_column="image")

    rows = listed(InputConfig(uris=(str(tmp_path / "train.parquet"),)))

    assert [row["id"] for row in rows] == ["10", "11", "12"]
    assert [row["key"] for row in rows] == ["photos/p0.jpg", "photos/p1.jpg", "photos/p2.jpg"]
    # --id-column wins over the column named "id"
    rows = listed(InputConfig(uris=(str(tmp_path / "train.parquet"),), id_column="id", image_column="image"))
    assert [row["id"] for row in rows] == ["10", "11", "12"]


def test_hf_struct_paths_that_repeat_or_point_elsewhere_stay_safe_ids(tmp_path):
    data = encode(textured_image(8, 8, 0))
    cells = [{"bytes": data, "path": "same.jpg"}, {"bytes": data, "path": "same.jpg"},
             {"bytes": data, "path": "/home/someone/data/abs.jpg"}, {"bytes": data, "path": "../up.jpg"},
             {"bytes": data, "path": None}]
    write_parquet(tmp_path / "t.parquet", pa.table({"image": hf_struct(cells)}), hf_image_column="image")

    rows = listed(InputConfig(uris=(str(tmp_path / "t.parquet"),)))

    # Two rows naming the same file keep their row ids (not duplicates of each other: their bytes differ).
    assert [row["id"] for row in rows] == ["t.parquet#0", "t.parquet#1", "abs.jpg", "up.jpg", "t.parquet#4"]
    assert not any(row["duplicate_of"] for row in rows)
