"""Shards: the unit of work, commit and resume.

The listing is cut into contiguous shards. A shard is committed in three steps (img2dataset's
protocol, made crash-safe): its Parquet file (and image files) are written atomically, then its marker
`_shards/<shard>_stats.json` (counts, timings, metric summaries, the data file's size and sha256, the
config hash) is written LAST, atomically. The marker is the only proof of completion: a crash at any
point leaves either no marker (the shard is redone from scratch, overwriting whatever it had written)
or a complete shard. The job manifest (`_job/manifest.json`) lists the shards and their state for
people and tools; on restart the states are recomputed from the markers, never trusted from it.
"""
from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.output.layout import (
    CONFIG_FILE,
    DATA_DIR,
    MANIFEST_FILE,
    MARKERS_DIR,
    PARTS_DIR,
    TEMPORARY_FOLDERS,
    data_file,
    is_temporary,
    marker_file,
    shard_name,
)
from pipeline.output.root import OutputRoot
from pipeline.output.writer import METRIC_COLUMNS, TIMING_COLUMNS, ShardFiles

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
STATUSES = ("ok", "failed", "skipped")


class ResumeConflictError(RuntimeError):
    """The output already holds a job whose configuration differs from the one given."""


@dataclass(frozen=True)
class ShardSpec:
    """A contiguous range [start, stop) of listing rows."""

    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return shard_name(self.index)

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def data_file(self) -> str:
        return data_file(self.name)

    @property
    def marker_file(self) -> str:
        return marker_file(self.name)


def plan_shards(num_rows: int, shard_size: int) -> list[ShardSpec]:
    """Cut `num_rows` listing rows into shards of `shard_size` (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [ShardSpec(index, start, min(start + shard_size, num_rows))
            for index, start in enumerate(range(0, num_rows, shard_size))]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# Shard statistics (the marker's content)


def _summary(values: pa.ChunkedArray | pa.Array) -> dict[str, float] | None:
    array = np.asarray(values.drop_null().to_numpy(zero_copy_only=False), dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return None
    return {
        "count": int(array.size), "mean": round(float(array.mean()), 6),
        "p50": round(float(np.percentile(array, 50)), 6), "p90": round(float(np.percentile(array, 90)), 6),
        "min": round(float(array.min()), 6), "max": round(float(array.max()), 6),
    }


@dataclass
class ShardStats:
    """Counts, timings and metric summaries of one committed shard (the marker's body)."""

    shard: str
    rows: int
    counts: dict[str, int]
    timings_s: dict[str, dict[str, float] | None]
    metrics: dict[str, dict[str, float] | None]
    errors: dict[str, int]
    data_file: str
    data_size: int
    data_sha256: str
    image_files: int
    config_hash: str
    wall_s: float
    committed_at: str = field(default_factory=now_iso)

    @classmethod
    def from_table(cls, shard: ShardSpec, table: pa.Table, files: ShardFiles, config_hash: str,
                   wall_s: float) -> ShardStats:
        status = table.column("status")
        counts = {name: int(pc.sum(pc.equal(status, name)).as_py() or 0) for name in STATUSES}
        # Group errors by their stage prefix ("decode: ...") so the summary stays short.
        errors: dict[str, int] = {}
        for message in table.column("error").drop_null().to_pylist():
            key = message.split(":", 1)[0][:80]
            errors[key] = errors.get(key, 0) + 1
        return cls(
            shard=shard.name, rows=table.num_rows, counts=counts,
            timings_s={name: _summary(table.column(name)) for name in TIMING_COLUMNS},
            metrics={name: _summary(table.column(name)) for name in METRIC_COLUMNS},
            errors=errors, data_file=files.parquet.path, data_size=files.parquet.size,
            data_sha256=files.parquet.sha256, image_files=files.image_files, config_hash=config_hash,
            wall_s=round(wall_s, 3),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge_stats(stats: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals over shard markers: counts, errors, and row-weighted metric and timing means."""
    counts = {name: 0 for name in STATUSES}
    errors: dict[str, int] = {}
    weighted: dict[str, list[float]] = {}
    rows = 0
    for item in stats:
        rows += int(item["rows"])
        for name, value in item["counts"].items():
            counts[name] = counts.get(name, 0) + int(value)
        for name, value in item.get("errors", {}).items():
            errors[name] = errors.get(name, 0) + int(value)
        for group in ("metrics", "timings_s"):
            for name, summary in item.get(group, {}).items():
                if summary:
                    total = weighted.setdefault(name, [0.0, 0.0])
                    total[0] += summary["mean"] * summary["count"]
                    total[1] += summary["count"]
    means = {name: round(total / count, 6) for name, (total, count) in weighted.items() if count}
    return {"rows": rows, "counts": counts, "errors": errors, "means": means}


# --------------------------------------------------------------------------------------------------
# Markers


def read_marker(root: OutputRoot, shard: ShardSpec, data_sizes: Mapping[str, int] | None = None) -> dict[str, Any] | None:
    """The shard's marker if it proves a complete commit for this job, else None.

    A marker counts only when it parses, names this shard, covers all its rows and the data file it
    names exists with the recorded size: a marker is written after the data, but a reader must not
    trust an older layout or a data file replaced behind the job's back. `data_sizes` (relative path →
    size, from one listing of `data/`) saves one request per shard.
    """
    try:
        marker = root.read_json(shard.marker_file)
    except (FileNotFoundError, OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("shard") != shard.name or marker.get("rows") != shard.rows:
        return None
    data_file = str(marker.get("data_file", ""))
    size = data_sizes.get(data_file) if data_sizes is not None else root.size(data_file)
    if size != marker.get("data_size"):
        log.warning("%s: marker present but its data file is missing or resized; redoing the shard", shard.name)
        return None
    return marker


def commit_shard(root: OutputRoot, shard: ShardSpec, stats: ShardStats) -> None:
    """Write the marker — the last step of a shard's commit (its data must already be in place)."""
    if stats.rows != shard.rows:
        raise RuntimeError(f"{shard.name}: {stats.rows} rows written but the shard has {shard.rows}; not committing")
    root.write_json(shard.marker_file, stats.to_dict())


def remove_stale_temporaries(root: OutputRoot) -> int:
    """Delete the hidden temporary files a killed run left in the data and marker folders, and its
    part files.

    They never count as output (readers skip dot files, markers decide completion); removing them only
    keeps the folders clean. Only call this while no other run writes to the same output.
    """
    removed = 0
    if root.exists(PARTS_DIR):
        # Part files of shards that never committed: their shards are redone whole, parts included.
        root.delete_dir(PARTS_DIR)
        removed += 1
    for folder in TEMPORARY_FOLDERS:
        for relative in root.list_files(folder):
            name = relative.rsplit("/", 1)[-1]
            if is_temporary(name):
                root.delete(relative)
                removed += 1
    return removed


# --------------------------------------------------------------------------------------------------
# Manifest


@dataclass
class JobManifest:
    """The job's plan and progress: the shards, their row ranges and states."""

    config_hash: str
    total_rows: int
    shard_size: int
    shards: list[ShardSpec]
    created_at: str = field(default_factory=now_iso)
    states: dict[str, str] = field(default_factory=dict)  # shard name → "pending" | "committed"
    updated_at: str = field(default_factory=now_iso)

    @classmethod
    def new(cls, config_hash: str, total_rows: int, shard_size: int) -> JobManifest:
        shards = plan_shards(total_rows, shard_size)
        return cls(config_hash, total_rows, shard_size, shards, states={s.name: "pending" for s in shards})

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "config_hash": self.config_hash,
            "total_rows": self.total_rows,
            "shard_size": self.shard_size,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "committed": sum(1 for state in self.states.values() if state == "committed"),
            "shards": [
                {"name": s.name, "start": s.start, "stop": s.stop, "rows": s.rows,
                 "state": self.states.get(s.name, "pending"), "data_file": s.data_file, "marker": s.marker_file}
                for s in self.shards
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobManifest:
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"unsupported manifest version {data.get('version')!r}")
        shards = [ShardSpec(index, int(item["start"]), int(item["stop"])) for index, item in enumerate(data["shards"])]
        for spec, item in zip(shards, data["shards"]):
            if spec.name != item["name"]:
                raise ValueError(f"manifest shard {spec.index} is named {item['name']!r}, expected {spec.name!r}")
        return cls(
            config_hash=str(data["config_hash"]), total_rows=int(data["total_rows"]),
            shard_size=int(data["shard_size"]), shards=shards, created_at=str(data.get("created_at", "")),
            states={item["name"]: item.get("state", "pending") for item in data["shards"]},
            updated_at=str(data.get("updated_at", "")),
        )

    def save(self, root: OutputRoot) -> None:
        self.updated_at = now_iso()
        root.write_json(MANIFEST_FILE, self.to_dict())

    def refresh_states(self, root: OutputRoot) -> dict[str, dict[str, Any]]:
        """Recompute every state from the markers; returns the valid markers by shard name."""
        # One listing of the markers and one of the data files, then reads of the markers that exist
        # only: a fresh job costs two requests, not one per shard.
        present = set(root.list_files(MARKERS_DIR))
        data_sizes = root.file_sizes(DATA_DIR) if present else {}
        markers = {}
        for shard in self.shards:
            marker = read_marker(root, shard, data_sizes) if shard.marker_file in present else None
            if marker is not None and marker.get("config_hash") != self.config_hash:
                marker = None
            self.states[shard.name] = "committed" if marker else "pending"
            if marker:
                markers[shard.name] = marker
        return markers

    def pending(self) -> list[ShardSpec]:
        return [shard for shard in self.shards if self.states.get(shard.name) != "committed"]


def load_manifest(root: OutputRoot) -> JobManifest | None:
    """The manifest of the job already in `root`, or None for a fresh output."""
    try:
        data = root.read_json(MANIFEST_FILE)
    except (FileNotFoundError, OSError):
        return None
    try:
        return JobManifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResumeConflictError(f"{root.uri}: unreadable job manifest {MANIFEST_FILE} ({exc}); "
                                  "use a new output folder") from None


def check_resumable(manifest: JobManifest, config_hash: str, uri: str) -> None:
    """Refuse to mix two different jobs in one output folder."""
    if manifest.config_hash != config_hash:
        raise ResumeConflictError(
            f"{uri} already holds a job with a different configuration (config hash {manifest.config_hash[:12]}…, "
            f"this one {config_hash[:12]}…); see {CONFIG_FILE} there. Use a new output folder, or delete "
            "that one to start over."
        )


def committed_tables(uri: str, columns: Sequence[str] | None = None, ids: Iterable[str] | None = None) -> pa.Table:
    """All committed rows of an output folder, shard by shard in order (uncommitted files ignored).

    `columns` reads only those columns (a verification or a summary never needs the image bytes);
    `ids` keeps only those rows (e.g. the few a report shows thumbnails of).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.output.writer import output_schema

    root = OutputRoot(uri)
    manifest = load_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"{uri}: no job manifest ({MANIFEST_FILE})")
    markers = manifest.refresh_states(root)
    wanted = None if ids is None else pa.array(sorted(set(ids)), pa.string())
    tables = []
    for shard in manifest.shards:
        if shard.name in markers:
            with root.filesystem.open_input_file(root.path(shard.data_file)) as handle:
                table = pq.read_table(handle, columns=None if columns is None else list(columns))
            tables.append(table if wanted is None else table.filter(pc.is_in(table.column("id"), wanted)))
    if not tables:
        schema = output_schema()
        return schema.empty_table() if columns is None else pa.schema([schema.field(c) for c in columns]).empty_table()
    return pa.concat_tables(tables)
