"""The output layout: every file and folder a job writes under its output root, named in one place.

    data/<shard>.parquet           the restored rows of one shard (Hugging Face `datasets`-loadable)
    images/<safe id>[.suffix]      optional image files mirroring the input tree, in the input's format
    _shards/<shard>_stats.json     a shard's marker, written last: the only proof the shard is complete
    _job/manifest.json             the shards and their state (for people and tools; markers decide)
    _job/listing.parquet           the inputs as listed when the job was planned (a resume reuses it)
    _job/config.json               the configuration and what it resolved to
    _job/report.json               the last run's report
    _job/consistent_template.npz   the fitted consistent-watermark template (when the masks need one)
    _job/driver.lock               held by the driver writing this output (one at a time)
    _job/parts/<shard>/group-N.parquet  a shard's groups as the workers wrote them, until the shard's
                                   file is assembled from them (then deleted)
    report.html                    the HTML report (`matpipe report`, the flow)

Temporary files are hidden (`.<name>.tmp-<random>`) next to their target, so no reader ever takes them for
output. Every relative name built from row data goes through `safe_relative_path`: nothing leaves the root.
"""
from __future__ import annotations

import hashlib
import posixpath
import re
import uuid

DATA_DIR = "data"
IMAGES_DIR = "images"
MARKERS_DIR = "_shards"
JOB_DIR = "_job"
MANIFEST_FILE = f"{JOB_DIR}/manifest.json"
LISTING_FILE = f"{JOB_DIR}/listing.parquet"
CONFIG_FILE = f"{JOB_DIR}/config.json"
REPORT_FILE = f"{JOB_DIR}/report.json"
TEMPLATE_FILE = f"{JOB_DIR}/consistent_template.npz"
LOCK_FILE = f"{JOB_DIR}/driver.lock"
PARTS_DIR = f"{JOB_DIR}/parts"
HTML_REPORT_FILE = "report.html"
# The folders where an interrupted run can leave temporary files behind (image files are redone in place).
TEMPORARY_FOLDERS = (DATA_DIR, MARKERS_DIR, JOB_DIR)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def data_file(shard: str) -> str:
    """The Parquet file of the shard named `shard`."""
    return f"{DATA_DIR}/{shard}.parquet"


def marker_file(shard: str) -> str:
    """The marker (`_stats.json`) of the shard named `shard`."""
    return f"{MARKERS_DIR}/{shard}_stats.json"


def parts_dir(shard: str) -> str:
    """The folder of the shard's part files."""
    return f"{PARTS_DIR}/{shard}"


def part_file(shard: str, group: int) -> str:
    """The part file of group `group` (0-based, in row order) of the shard named `shard`."""
    return f"{parts_dir(shard)}/group-{group:05d}.parquet"


def image_file(relative: str) -> str:
    """Where a row's image file goes, given its `image_file_name`."""
    return f"{IMAGES_DIR}/{relative}"


def temporary_name(name: str) -> str:
    """The hidden name a file is written under before it is renamed to `name` (same folder)."""
    return f".{name}.tmp-{uuid.uuid4().hex[:8]}"


def is_temporary(name: str) -> bool:
    """Whether a file name (no folder) is one `temporary_name` made."""
    return name.startswith(".") and ".tmp-" in name


# --------------------------------------------------------------------------------------------------
# Safe names

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_COMPONENT_BYTES = 200  # below every common filesystem's 255-byte limit, with room for suffixes


def safe_relative_path(name: str) -> str:
    """Map any id or path onto a relative posix path that cannot leave a root.

    Ordinary relative paths come back normalised (`a/./b.jpg` → `a/b.jpg`). Anything hostile or
    unrepresentable (absolute paths, drive letters, `..`, control characters, over-long components,
    empty names) is defused and moved under `_unsafe/` with a hash of the original name in the file
    name, so two different hostile names never land on the same file and never on a legitimate one.
    """
    text = name.replace("\\", "/")
    hostile = (
        text.startswith("/") or bool(_DRIVE.match(text)) or bool(_CONTROL.search(text))
        or any(part == ".." for part in text.split("/"))
    )
    parts = [_CONTROL.sub("", part) for part in _DRIVE.sub("", text).split("/")]
    parts = [part for part in parts if part not in ("", ".", "..")]
    if any(len(part.encode()) > _MAX_COMPONENT_BYTES for part in parts):
        hostile = True
        parts = [part.encode()[:_MAX_COMPONENT_BYTES].decode("utf-8", "ignore") for part in parts]
    if not parts:
        hostile, parts = True, ["unnamed"]
    if not hostile:
        return "/".join(parts)
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem, suffix = posixpath.splitext(parts[-1])
    parts[-1] = f"{stem}.{digest}{suffix}"
    return "/".join(["_unsafe", *parts])


_FORMAT_SUFFIXES = {
    "JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif", "MPO": ".jpg",
}


def image_file_name(row_id: str, image_format: str | None) -> str:
    """The relative name of a row's image file: its id made safe, with a suffix matching its format."""
    relative = safe_relative_path(row_id)
    suffix = _FORMAT_SUFFIXES.get((image_format or "").upper())
    if suffix and not relative.lower().endswith(_suffixes_of(suffix)):
        relative += suffix
    return relative


def _suffixes_of(suffix: str) -> tuple[str, ...]:
    return {".jpg": (".jpg", ".jpeg"), ".tif": (".tif", ".tiff")}.get(suffix, (suffix,))
