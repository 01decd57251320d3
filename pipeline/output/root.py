"""The output root (local or remote): containment-checked paths and atomic writes, the primitives the
commit protocol is built on.

Nothing here ever writes outside the output root: on local disks every target is checked against the
resolved root after symlinks.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.output.layout import temporary_name
from pipeline.sources import resolve_filesystem

log = logging.getLogger(__name__)


class _HashingSink(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.target.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()


@dataclass(frozen=True)
class WrittenFile:
    """A file committed under the output root."""

    path: str      # relative to the output root, posix
    size: int
    sha256: str


class OutputRoot:
    """The output folder (local or remote): containment-checked paths and atomic writes.

    Atomic means: the content goes to a hidden temporary name next to the target, is flushed (and
    fsynced with its folder on local disks), then renamed over the target. Readers see the old file or
    the complete new one, never a prefix. Object stores have no rename; there `move` is a copy, which
    is why commits never rely on a data file's presence alone (see pipeline.output.shards).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.filesystem, self.root = resolve_filesystem(uri)
        self.is_local = isinstance(self.filesystem, pafs.LocalFileSystem)
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
            self.root = os.path.realpath(self.root)
        else:
            self.filesystem.create_dir(self.root, recursive=True)

    def path(self, relative: str) -> str:
        """The absolute path of `relative` (already sanitised by the caller or a fixed layout name)."""
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"refusing a path outside the output root: {relative!r}")
        return posixpath.join(self.root, relative) if not self.is_local else os.path.join(self.root, relative)

    def _checked_local_parent(self, target: str) -> str:
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        real_parent = os.path.realpath(parent)
        # A symlinked folder inside the output could still point elsewhere: check after resolution.
        if os.path.commonpath([real_parent, self.root]) != self.root:
            raise ValueError(f"refusing to write {target}: it resolves outside the output root {self.root}")
        return real_parent

    @contextlib.contextmanager
    def open_atomic(self, relative: str) -> Iterator[_HashingSink]:
        """Write a file atomically; yields a binary sink. On an exception the target is left untouched."""
        target = self.path(relative)
        name = os.path.basename(target)
        if self.is_local:
            parent = self._checked_local_parent(target)
            temporary = os.path.join(parent, temporary_name(name))
            handle: BinaryIO = open(temporary, "wb")
            try:
                sink = _HashingSink(handle)
                yield sink
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                os.replace(temporary, os.path.join(parent, name))
                _fsync_dir(parent)
            except BaseException:
                handle.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        else:
            parent = posixpath.dirname(target)
            self.filesystem.create_dir(parent, recursive=True)
            temporary = posixpath.join(parent, temporary_name(name))
            stream = self.filesystem.open_output_stream(temporary)
            try:
                sink = _HashingSink(stream)
                yield sink
                stream.close()
                self.filesystem.move(temporary, target)
            except BaseException:
                if not stream.closed:
                    stream.close()
                with contextlib.suppress(OSError):
                    self.filesystem.delete_file(temporary)
                raise

    def write_bytes(self, relative: str, data: bytes) -> WrittenFile:
        """Write `data` to `relative` atomically."""
        with self.open_atomic(relative) as sink:
            sink.write(data)
        return WrittenFile(relative, sink.size, sink.digest.hexdigest())

    def write_json(self, relative: str, data: Mapping[str, Any]) -> WrittenFile:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
        return self.write_bytes(relative, text.encode())

    def read_bytes(self, relative: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def read_json(self, relative: str) -> Any:
        return json.loads(self.read_bytes(relative))

    def size(self, relative: str) -> int | None:
        """The file's size, or None when it does not exist."""
        info = self.filesystem.get_file_info(self.path(relative))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, relative: str) -> bool:
        return self.filesystem.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def list_files(self, relative_dir: str) -> list[str]:
        """Relative paths of the files directly inside `relative_dir` (empty when it does not exist)."""
        base = self.path(relative_dir)
        if self.filesystem.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.filesystem.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(posixpath.join(relative_dir, posixpath.basename(info.path))
                      for info in infos if info.type == pafs.FileType.File)

    def file_sizes(self, relative_dir: str) -> dict[str, int]:
        """Relative path → size of the files directly inside `relative_dir`, in one listing."""
        base = self.path(relative_dir)
        if self.filesystem.get_file_info(base).type != pafs.FileType.Directory:
            return {}
        infos = self.filesystem.get_file_info(pafs.FileSelector(base, recursive=False))
        return {posixpath.join(relative_dir, posixpath.basename(info.path)): info.size
                for info in infos if info.type == pafs.FileType.File}

    def delete(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.filesystem.delete_file(self.path(relative))

    def delete_dir(self, relative: str) -> None:
        """Delete a folder and everything in it (nothing when it does not exist)."""
        with contextlib.suppress(FileNotFoundError, OSError):
            self.filesystem.delete_dir(self.path(relative))

    def write_parquet(self, relative: str, table: pa.Table, compression: str | None = None,
                      row_group_size: int | None = None) -> WrittenFile:
        """Write `table` as one Parquet file, atomically."""
        with self.open_atomic(relative) as sink:
            pq.write_table(table, sink, compression=compression or "none", row_group_size=row_group_size)
        return WrittenFile(relative, sink.size, sink.digest.hexdigest())

    def read_parquet(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        with self.filesystem.open_input_file(self.path(relative)) as handle:
            return pq.read_table(handle, columns=columns)


def _fsync_dir(path: str) -> None:
    """Make a rename in `path` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as exc:  # some filesystems (network mounts) refuse fsync on folders: the rename stands
        log.debug("fsync of folder %s failed: %s", path, exc)
    finally:
        os.close(descriptor)
