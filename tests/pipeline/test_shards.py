"""Shard planning, the commit protocol (data, then marker last), the manifest and resume decisions."""
from __future__ import annotations

import os

import pytest

from pipeline.config import OutputConfig
from pipeline.output.shards import (
    JobManifest,
    ResumeConflictError,
    ShardStats,
    check_resumable,
    commit_shard,
    committed_tables,
    load_manifest,
    merge_stats,
    plan_shards,
    read_marker,
)
from pipeline.output.root import OutputRoot
from pipeline.output.writer import ShardWriter

from .test_writer import final_batch


def test_plan_cuts_contiguous_shards():
    shards = plan_shards(10, 4)
    assert [(s.name, s.start, s.stop) for s in shards] == [
        ("shard-00000", 0, 4), ("shard-00001", 4, 8), ("shard-00002", 8, 10)]
    assert plan_shards(0, 4) == []
    with pytest.raises(ValueError):
        plan_shards(3, 0)


def write_shard(root, shard, ids, statuses=None, config_hash="h"):
    writer = ShardWriter(root, shard.name, OutputConfig(uri=root.uri))
    table = writer.write_batch(final_batch(ids, statuses=statuses))
    files = writer.close()
    return ShardStats.from_table(shard, table, files, config_hash, wall_s=1.0)


def test_commit_writes_a_marker_that_proves_the_shard(tmp_path):
    root = OutputRoot(str(tmp_path))
    shard = plan_shards(3, 3)[0]
    stats = write_shard(root, shard, ["a", "b", "c"], ["ok", "failed", "skipped"])

    # Data in place but no marker yet: a crash here leaves a shard that is not done.
    assert read_marker(root, shard) is None
    commit_shard(root, shard, stats)

    marker = read_marker(root, shard)
    assert marker["counts"] == {"ok": 1, "failed": 1, "skipped": 1}
    assert marker["data_size"] == os.path.getsize(tmp_path / shard.data_file)
    assert marker["timings_s"]["time_inpaint_s"]["mean"] == 0.5
    assert marker["metrics"]["seam_score"] is None


def test_marker_is_void_when_data_is_missing_resized_or_rows_differ(tmp_path):
    root = OutputRoot(str(tmp_path))
    shard = plan_shards(2, 2)[0]
    commit_shard(root, shard, write_shard(root, shard, ["a", "b"]))
    assert read_marker(root, shard) is not None

    (tmp_path / shard.data_file).write_bytes(b"truncated")
    assert read_marker(root, shard) is None
    os.unlink(tmp_path / shard.data_file)
    assert read_marker(root, shard) is None
    # A marker for a shard of another size (another plan) does not count either.
    assert read_marker(root, plan_shards(3, 3)[0]) is None


def test_commit_refuses_a_short_shard(tmp_path):
    root = OutputRoot(str(tmp_path))
    shard = plan_shards(3, 3)[0]
    stats = write_shard(root, shard, ["a", "b"])
    with pytest.raises(RuntimeError, match="2 rows written but the shard has 3"):
        commit_shard(root, shard, stats)
    assert read_marker(root, shard) is None


def test_manifest_states_come_from_markers_and_hash_guards_resume(tmp_path):
    root = OutputRoot(str(tmp_path))
    manifest = JobManifest.new("hash-1", total_rows=5, shard_size=2)
    manifest.save(root)
    first, second, _third = manifest.shards
    commit_shard(root, first, write_shard(root, first, ["a", "b"], config_hash="hash-1"))
    commit_shard(root, second, write_shard(root, second, ["c", "d"], config_hash="an-older-job"))

    loaded = load_manifest(root)
    markers = loaded.refresh_states(root)

    assert list(markers) == ["shard-00000"]  # the other marker belongs to a different configuration
    assert [s.name for s in loaded.pending()] == ["shard-00001", "shard-00002"]
    check_resumable(loaded, "hash-1", "out")
    with pytest.raises(ResumeConflictError, match="different configuration"):
        check_resumable(loaded, "hash-2", "out")
    assert load_manifest(OutputRoot(str(tmp_path / "fresh"))) is None


def test_committed_tables_ignore_uncommitted_files(tmp_path):
    root = OutputRoot(str(tmp_path))
    manifest = JobManifest.new("h", total_rows=4, shard_size=2)
    manifest.save(root)
    first, second = manifest.shards
    commit_shard(root, first, write_shard(root, first, ["a", "b"]))
    write_shard(root, second, ["c", "d"])  # written, never committed

    table = committed_tables(str(tmp_path))
    assert table.column("id").to_pylist() == ["a", "b"]


def test_merge_stats_totals_counts_and_weighted_means(tmp_path):
    root = OutputRoot(str(tmp_path))
    shards = plan_shards(3, 2)
    one = write_shard(root, shards[0], ["a", "b"], ["ok", "failed"]).to_dict()
    two = write_shard(root, shards[1], ["c"], ["ok"]).to_dict()
    totals = merge_stats([one, two])
    assert totals["rows"] == 3 and totals["counts"] == {"ok": 2, "failed": 1, "skipped": 0}
    assert totals["means"]["time_inpaint_s"] == pytest.approx(0.5)
