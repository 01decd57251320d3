"""Listing and reading the job's inputs: image folders and Parquet datasets, local or remote.

Listing is cheap and deterministic: it reads directory entries and Parquet metadata (plus the id/path
columns), never the images. Every listed row gets a stable id and a locator (filesystem URI + path,
and for Parquet the row group and offset) from which any process can fetch the encoded bytes later.
Remote URIs go through `pyarrow.fs` (`FileSystem.from_uri`) and, for protocols pyarrow lacks,
fsspec wrapped in `PyFileSystem(FSSpecHandler(...))`.
"""
from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import InputConfig

log = logging.getLogger(__name__)

KIND_FILE = "file"
KIND_PARQUET = "parquet"

# One row per listed input. `row` is the position in the listing (the shard plan cuts this order).
LISTING_SCHEMA = pa.schema([
    ("row", pa.int64()),
    ("id", pa.string()),
    ("source", pa.string()),            # where the image is, for people: a path/URI, or "file.parquet#row"
    ("fs_uri", pa.string()),            # re-opens the filesystem in any process (see resolve_filesystem)
    ("path", pa.string()),              # the file to read within that filesystem
    ("kind", pa.string()),              # "file" (an encoded image file) or "parquet" (a cell of a file)
    ("row_group", pa.int32()),          # Parquet only, else -1
    ("row_in_group", pa.int32()),       # Parquet only, else -1
    ("column", pa.string()),            # Parquet column holding the image, else ""
    ("reference_column", pa.string()),  # Parquet column holding a reference image, else ""
    ("listing_error", pa.string()),     # why this row cannot be read (e.g. a path escaping its root), else ""
    ("duplicate_of", pa.string()),      # id of the earlier row with the same id or source, else ""
    # The image's own relative path where the input names one (a folder's file, a Parquet path column,
    # the `path` of a Hugging Face {bytes, path} struct), else the id: given masks and prompts match on it.
    ("key", pa.string()),
])

# A Parquet column of this name holds row ids unless `inputs.id_column` names another (Hugging Face
# datasets and most exports call it so).
DEFAULT_ID_COLUMN = "id"

_LOCAL_KEY = "local"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


class SourceError(ValueError):
    """An input cannot be listed at all (missing, unreadable, ambiguous); the message names it."""


# --------------------------------------------------------------------------------------------------
# Filesystems


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://") or bool(_WINDOWS_DRIVE.match(uri))


def filesystem_key(uri: str) -> str:
    """The key `open_filesystem` re-creates a filesystem from: "local", or the URI's scheme and host."""
    if _is_local(uri):
        return _LOCAL_KEY
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


@functools.lru_cache(maxsize=32)
def open_filesystem(key: str) -> pafs.FileSystem:
    """A filesystem for a `filesystem_key`, cached per process (S3 clients, fsspec instances are costly)."""
    if key == _LOCAL_KEY:
        return pafs.LocalFileSystem()
    try:
        filesystem, _ = pafs.FileSystem.from_uri(key + "/")
        return filesystem
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        log.debug("%s: no pyarrow filesystem (%s); trying fsspec", key, exc)
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec ships with the declared dependencies
        raise SourceError(f"{key}: pyarrow has no filesystem for this scheme and fsspec is not installed") from None
    try:
        fsspec_fs, _ = fsspec.core.url_to_fs(key + "/")
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{key}: no filesystem for this URI scheme ({exc})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs))


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it for a local path or URI."""
    if _is_local(uri):
        if uri.startswith("file://"):
            path = urllib.parse.unquote(urllib.parse.urlsplit(uri).path)
        else:
            path = os.path.expanduser(uri)
        return open_filesystem(_LOCAL_KEY), os.path.abspath(path)
    key = filesystem_key(uri)
    filesystem = open_filesystem(key)
    if isinstance(filesystem, pafs.PyFileSystem):
        import fsspec

        _, path = fsspec.core.url_to_fs(uri)
        return filesystem, path
    _, path = pafs.FileSystem.from_uri(uri)
    return filesystem, path


def is_process_local(fs_uri: str) -> bool:
    """True for filesystems that exist only inside this process (fsspec `memory://`): other Ray workers
    cannot read them, so the job reads such rows on the driver."""
    filesystem = open_filesystem(filesystem_key(fs_uri))
    if isinstance(filesystem, pafs.PyFileSystem):
        handler = filesystem.handler
        protocol = getattr(getattr(handler, "fs", None), "protocol", ())
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "memory" in protocols
    return False


def _display(fs_uri: str, path: str) -> str:
    """A human-readable location: a local path as is, a remote one as a URI."""
    key = filesystem_key(fs_uri)
    if key == _LOCAL_KEY:
        return path
    scheme, netloc = key.split("://", 1)
    stripped = path.lstrip("/")
    # pyarrow's S3/GCS paths start with the bucket, fsspec's memory paths with the "host" part too.
    if netloc and not stripped.startswith(netloc):
        return f"{scheme}://{netloc}/{stripped}"
    return f"{scheme}://{stripped}"


# --------------------------------------------------------------------------------------------------
# Listing


@dataclass
class _Row:
    id: str
    source: str
    fs_uri: str
    path: str
    kind: str
    row_group: int = -1
    row_in_group: int = -1
    column: str = ""
    reference_column: str = ""
    listing_error: str = ""
    duplicate_of: str = ""
    key: str = ""


def _is_hidden(relative: str, prefixes: tuple[str, ...] = (".",)) -> bool:
    # Dot files are editor/OS debris (.DS_Store, AppleDouble "._x.jpg"); for Parquet, "_" files are
    # dataset metadata (_SUCCESS, _common_metadata), as pyarrow's own discovery treats them.
    return any(part.startswith(prefixes) for part in PurePosixPath(relative).parts)


def _walk(filesystem: pafs.FileSystem, root: str) -> list[str]:
    """Relative posix paths of all files under `root`, sorted (byte order, so every OS agrees)."""
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    base = root.rstrip("/")
    relative = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        name = info.path[len(base):].lstrip("/") if info.path.startswith(base) else info.path
        relative.append(name.replace("\\", "/"))
    return sorted(rel for rel in relative if not _is_hidden(rel))


def _has_suffix(name: str, suffixes: Iterable[str]) -> bool:
    lowered = name.lower()
    return any(lowered.endswith(suffix.lower()) for suffix in suffixes)


def _list_image_files(uri: str, filesystem: pafs.FileSystem, root: str, files: list[str],
                      config: InputConfig) -> list[_Row]:
    return [
        _Row(id=rel, source=_display(uri, posixpath.join(root, rel)), fs_uri=uri,
             path=posixpath.join(root, rel), kind=KIND_FILE, key=rel)
        for rel in files if _has_suffix(rel, config.extensions)
    ]


def _image_column(schema: pa.Schema, config: InputConfig, where: str) -> str:
    """The column holding images: as configured, else the Hugging Face Image feature, else a guess."""
    if config.image_column is not None:
        if config.image_column not in schema.names:
            raise SourceError(f"{where}: no column {config.image_column!r} (columns: {', '.join(schema.names)})")
        return config.image_column
    features = _hf_features(schema)
    for name, feature in features.items():
        if isinstance(feature, Mapping) and feature.get("_type") == "Image" and name in schema.names:
            return name
    for item in schema:
        if _is_image_struct(item.type):
            return item.name
    if "image" in schema.names:
        return "image"
    for item in schema:
        if pa.types.is_binary(item.type) or pa.types.is_large_binary(item.type):
            return item.name
    raise SourceError(
        f"{where}: cannot tell which column holds the images (columns: {', '.join(schema.names)}); "
        "set inputs.image_column"
    )


def _hf_features(schema: pa.Schema) -> dict:
    import json

    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def _is_image_struct(arrow_type: pa.DataType) -> bool:
    return pa.types.is_struct(arrow_type) and {arrow_type.field(i).name for i in range(arrow_type.num_fields)} >= {
        "bytes", "path"}


def _check_column_type(schema: pa.Schema, column: str, where: str) -> str:
    """"bytes", "struct" or "path" for a column that can hold an image; SourceError otherwise."""
    arrow_type = schema.field(column).type
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "bytes"
    if _is_image_struct(arrow_type):
        return "struct"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "path"
    raise SourceError(f"{where}: column {column!r} has type {arrow_type}; expected binary, a {{bytes, path}} "
                      "struct, or a string path")


def resolve_relative_path(base_dir: str, value: str, allow_external: bool) -> tuple[str, str]:
    """Resolve a path read from a dataset against the dataset's folder.

    Returns (path, error): error is non-empty when the path is absolute or climbs out of `base_dir`
    and `allow_external` is off: a hostile dataset must not make the job read the machine's files.
    """
    cleaned = value.replace("\\", "/")
    if posixpath.isabs(cleaned) or _WINDOWS_DRIVE.match(value) or "://" in cleaned:
        if not allow_external:
            return "", f"path {value!r} is absolute (set inputs.allow_external_paths to allow it)"
        return cleaned, ""
    joined = posixpath.normpath(posixpath.join(base_dir, cleaned))
    if not (joined == base_dir or joined.startswith(base_dir.rstrip("/") + "/")) and not allow_external:
        return "", f"path {value!r} leaves the dataset folder (set inputs.allow_external_paths to allow it)"
    return joined, ""


@dataclass
class _ParquetIndex:
    """What listing needs from one Parquet file: never the image bytes."""

    column: str                     # the image column
    column_kind: str                # "bytes", "struct" or "path"
    group_rows: list[int]           # rows per row group
    id_column: str | None           # the id column in use (configured, or a column named "id"), if any
    ids: list[str | None] | None    # its values
    paths: list[str | None] | None  # the path column's values, or the struct's `path` field


def _read_parquet_index(filesystem: pafs.FileSystem, path: str, where: str, config: InputConfig) -> _ParquetIndex:
    """The image column, row groups, ids and image paths of one Parquet file (metadata and small columns)."""
    try:
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            column = _image_column(schema, config, where)
            column_kind = _check_column_type(schema, column, where)
            for name in (config.id_column, config.reference_column):
                if name is not None and name not in schema.names:
                    raise SourceError(f"{where}: no column {name!r} (columns: {', '.join(schema.names)})")
            id_column = config.id_column
            if id_column is None and DEFAULT_ID_COLUMN in schema.names and DEFAULT_ID_COLUMN != column:
                id_column = DEFAULT_ID_COLUMN
            ids = None
            if id_column is not None:
                ids = [None if v is None else str(v) for v in parquet.read(columns=[id_column]).column(0).to_pylist()]
            paths = None
            if column_kind == "path":
                paths = parquet.read(columns=[column]).column(0).to_pylist()
            elif column_kind == "struct":
                # Only the struct's `path` child is read: the bytes stay on disk until a worker fetches them.
                paths = [None if cell is None else cell.get("path")
                         for cell in parquet.read(columns=[f"{column}.path"]).column(0).to_pylist()]
            group_rows = [parquet.metadata.row_group(g).num_rows for g in range(parquet.metadata.num_row_groups)]
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{where}: not a readable Parquet file ({exc})") from None
    return _ParquetIndex(column, column_kind, group_rows, id_column, ids, paths)


def _relative_name(path: str) -> str:
    cleaned = path.replace("\\", "/")
    normalised = posixpath.normpath(cleaned)
    if posixpath.isabs(cleaned) or _WINDOWS_DRIVE.match(path) or "://" in cleaned or normalised.startswith(".."):
        return posixpath.basename(cleaned)
    return normalised


def _unique_paths(paths: list[str | None]) -> list[str | None]:
    """Struct paths usable as ids: normalised, and None where a path repeats in the file (Hugging Face
    keeps only the file name, so two folders' `0001.jpg` collide; those rows keep `file#row` ids)."""
    # `datasets` stores the path it was given: an absolute path of the machine that built the dataset
    # names nothing here, so only its file name is kept.
    cleaned = [None if not p else _relative_name(p) for p in paths]
    seen: dict[str, int] = {}
    for value in cleaned:
        if value is not None:
            seen[value] = seen.get(value, 0) + 1
    return [value if value is not None and seen[value] == 1 else None for value in cleaned]


def _list_parquet_file(uri: str, filesystem: pafs.FileSystem, path: str, relative: str,
                       config: InputConfig) -> list[_Row]:
    where = _display(uri, path)
    index_ = _read_parquet_index(filesystem, path, where, config)
    column, column_kind = index_.column, index_.column_kind
    struct_paths = _unique_paths(index_.paths) if column_kind == "struct" and index_.paths else None
    base_dir = posixpath.dirname(path)

    rows: list[_Row] = []
    index = 0
    for group, count in enumerate(index_.group_rows):
        for offset in range(count):
            row = _Row(id=f"{relative}#{index}", source=f"{where}#{index}", fs_uri=uri, path=path, kind=KIND_PARQUET,
                       row_group=group, row_in_group=offset, column=column,
                       reference_column=config.reference_column or "")
            if column_kind == "path":
                value = index_.paths[index]
                if value:
                    row.id = row.key = value.replace("\\", "/")
                    resolved, error = resolve_relative_path(base_dir, value, config.allow_external_paths)
                    # The image is a file of its own: read it directly, remembering the Parquet row.
                    row.kind, row.path, row.column, row.listing_error = KIND_FILE, resolved, "", error
                    row.source = _display(uri, resolved) if resolved else f"{where}#{index}"
                else:
                    row.listing_error = f"column {column!r} is empty in this row"
            elif struct_paths is not None and struct_paths[index]:
                # A Hugging Face Image cell names its file: that is the row's id and its key for given masks.
                row.id = row.key = struct_paths[index]
                row.source = f"{where}#{index} ({struct_paths[index]})"
            if index_.ids is not None:
                if index_.ids[index] is None:
                    row.listing_error = row.listing_error or f"id column {index_.id_column!r} is null in this row"
                else:
                    row.id = index_.ids[index]
            row.key = row.key or row.id
            rows.append(row)
            index += 1
    return rows


def _list_input(uri: str, config: InputConfig) -> list[_Row]:
    filesystem, root = resolve_filesystem(uri)
    info = filesystem.get_file_info(root)
    fs_uri = uri if not _is_local(uri) else "file://"
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"input {uri!r} does not exist")
    if info.type == pafs.FileType.File:
        name = posixpath.basename(root)
        if name.lower().endswith(".parquet") and config.format != "images":
            return _list_parquet_file(fs_uri, filesystem, root, name, config)
        if config.format == "parquet":
            raise SourceError(f"input {uri!r} is not a .parquet file (inputs.format is 'parquet')")
        return [_Row(id=name, source=_display(fs_uri, root), fs_uri=fs_uri, path=root, kind=KIND_FILE, key=name)]

    files = _walk(filesystem, root)
    parquet_files = [rel for rel in files if rel.lower().endswith(".parquet") and not _is_hidden(rel, (".", "_"))]
    has_images = any(_has_suffix(rel, config.extensions) for rel in files)
    fmt = config.format
    if fmt == "auto":
        if parquet_files and has_images:
            raise SourceError(f"input {uri!r} holds both images and Parquet files; set inputs.format")
        fmt = "parquet" if parquet_files else "images"
    if fmt == "parquet":
        rows: list[_Row] = []
        for rel in parquet_files:
            rows.extend(_list_parquet_file(fs_uri, filesystem, posixpath.join(root, rel), rel, config))
        return rows
    return _list_image_files(fs_uri, filesystem, root, files, config)


def _mark_duplicates(rows: list[_Row], on_duplicate: str) -> int:
    """Flag later rows repeating an id or a source; returns how many. Their ids get `#dupN`."""
    first_by_id: dict[str, str] = {}
    first_by_source: dict[tuple, str] = {}
    duplicates: list[str] = []
    taken = {row.id for row in rows}
    for row in rows:
        source_key = (filesystem_key(row.fs_uri), row.path, row.row_group, row.row_in_group)
        original = first_by_id.get(row.id) or (first_by_source.get(source_key) if row.path else None)
        if original is None:
            first_by_id[row.id] = row.id
            if row.path:
                first_by_source[source_key] = row.id
            continue
        duplicates.append(f"{row.id!r} ({row.source})")
        row.duplicate_of = original
        if row.id in first_by_id:
            number = 1
            while f"{row.id}#dup{number}" in taken:
                number += 1
            row.id = f"{row.id}#dup{number}"
            taken.add(row.id)
        first_by_id.setdefault(row.id, row.id)
    if duplicates and on_duplicate == "error":
        shown = "; ".join(duplicates[:5]) + (f"; … ({len(duplicates)} in all)" if len(duplicates) > 5 else "")
        raise SourceError(f"duplicate rows in the inputs: {shown} (set inputs.on_duplicate: skip to keep going)")
    return len(duplicates)


def list_inputs(config: InputConfig) -> pa.Table:
    """List every input row, in a deterministic order, as a table with LISTING_SCHEMA.

    Inputs are taken in the given order; files within a folder in byte order of their relative paths;
    Parquet rows in file order. Ids: a file's path relative to its input folder, a Parquet id column,
    a Parquet path column's value, else "<parquet path>#<row>". A later row repeating an id or source is
    flagged in `duplicate_of` (or refused, per `config.on_duplicate`). Parquet ids: `inputs.id_column`,
    else a column named "id", else the path column's value or the Hugging Face struct's `path`, else
    "<parquet path>#<row>".
    """
    rows: list[_Row] = []
    for uri in config.uris:
        listed = _list_input(uri, config)
        if not listed:
            log.warning("input %s lists no images (suffixes %s)", uri, ", ".join(config.extensions))
        rows.extend(listed)
    duplicates = _mark_duplicates(rows, config.on_duplicate)
    if duplicates:
        log.warning("%d duplicate row(s) in the inputs: they are kept as skipped rows", duplicates)
    columns = {name: [getattr(row, name) for row in rows] for name in LISTING_SCHEMA.names if name != "row"}
    columns["row"] = list(range(len(rows)))
    return pa.table({name: columns[name] for name in LISTING_SCHEMA.names}, schema=LISTING_SCHEMA)


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass
class FetchedRow:
    """The encoded bytes of one listed row (and of its reference image), or why they could not be read."""

    data: bytes | None = None
    reference: bytes | None = None
    error: str = ""


@functools.lru_cache(maxsize=8)
def _parquet_file(fs_key: str, path: str) -> pq.ParquetFile:
    # Kept open per process: a fetch batch usually hits the same file and row group again.
    return pq.ParquetFile(open_filesystem(fs_key).open_input_file(path))


def _read_file(fs_uri: str, path: str) -> bytes:
    filesystem = open_filesystem(filesystem_key(fs_uri))
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def _cell_bytes(value: object, fs_uri: str, parquet_path: str, allow_external: bool) -> bytes | None:
    """An image cell → encoded bytes: binary as is; a `{bytes, path}` struct by its bytes, else its path."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        if value.get("path"):
            resolved, error = resolve_relative_path(posixpath.dirname(parquet_path), value["path"], allow_external)
            if error:
                raise ValueError(error)
            return _read_file(fs_uri, resolved)
        return None
    raise ValueError(f"image cell holds {type(value).__name__}, expected bytes or a {{bytes, path}} struct")


def fetch_rows(rows: Sequence[Mapping[str, object]], allow_external_paths: bool = False) -> list[FetchedRow]:
    """Read the encoded image (and reference) of each listed row; failures become `error` text.

    Parquet rows are grouped by file and row group so each row group's columns are read once per call.
    """
    results = [FetchedRow() for _ in rows]
    groups: dict[tuple[str, str, int], list[int]] = {}
    for index, row in enumerate(rows):
        if row.get("listing_error"):
            results[index].error = str(row["listing_error"])
        elif row["kind"] == KIND_FILE:
            try:
                results[index].data = _read_file(str(row["fs_uri"]), str(row["path"]))
            except FileNotFoundError:
                results[index].error = f"file not found: {row['source']}"
            except OSError as exc:
                results[index].error = f"cannot read {row['source']}: {exc}"
        else:
            groups.setdefault((str(row["fs_uri"]), str(row["path"]), int(row["row_group"])), []).append(index)

    for (fs_uri, path, group), indices in groups.items():
        columns = sorted({str(rows[i]["column"]) for i in indices} | {
            str(rows[i]["reference_column"]) for i in indices if rows[i].get("reference_column")})
        try:
            table = _parquet_file(filesystem_key(fs_uri), path).read_row_group(group, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            for i in indices:
                results[i].error = f"cannot read row group {group} of {_display(fs_uri, path)}: {exc}"
            continue
        for i in indices:
            row = rows[i]
            offset = int(row["row_in_group"])
            try:
                results[i].data = _cell_bytes(table.column(str(row["column"]))[offset].as_py(), fs_uri, path,
                                              allow_external_paths)
                if results[i].data is None:
                    results[i].error = f"column {row['column']!r} is null in this row"
                if row.get("reference_column"):
                    results[i].reference = _cell_bytes(
                        table.column(str(row["reference_column"]))[offset].as_py(), fs_uri, path, allow_external_paths)
            except (OSError, ValueError) as exc:
                results[i].error = f"cannot read the image of {row['source']}: {exc}"
    return results
