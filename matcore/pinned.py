"""Checkpoints named by registry name or URI, pinned to one sha256, fetched into each machine's own cache.

A cluster job must not assume that every node holds the weights at the driver's absolute path. The
driver pins the checkpoint once — resolves what the user named and hashes it, the only time the job
reads the whole file on the driver — and ships the small `CheckpointRef` to the workers; each worker
fetches it into *its* node's cache and checks it against the pinned sha256, so a node with a different
or corrupted copy refuses to run instead of producing subtly different outputs.

    ref = pin_checkpoint("s3://bucket/mat/Places_512_FullData.pkl")   # driver
    path = fetch_checkpoint(ref)                                      # any node: a verified local file

Sources: a registry name (`places512`, see matcore.registry), a local path or `file://` URI (visible
on the node, e.g. a shared file system), `http(s)://` (the registry's verified, atomic download), and
any other fsspec URL (`s3://`, `gs://`, ... with the matching fsspec package installed). Files fetched
from a URI live under `<cache>/uri/<hash of the URI>/<file name>` with a `.sha256` record; files used
in place (paths, registry files) get a stamp in `<cache>/verified/` recording the size and mtime they
were verified at, so later actors on the same node do not hash them again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from matcore import registry
from matcore.registry import ChecksumMismatchError, CheckpointUnavailableError

log = logging.getLogger(__name__)

SourceKind = Literal["name", "path", "http", "fsspec"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as the driver pinned it: what the user named and the sha256 every copy must have.

    Attributes:
        source: a registry name, a local path, or a URI (`file://`, `http(s)://`, `s3://`, `gs://`, ...).
        sha256: hex digest of the file's bytes.
        size: the file's size in bytes, when the driver saw the file (None when the sha256 was given).
    """

    source: str
    sha256: str
    size: int | None = None

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.source)

    @property
    def filename(self) -> str:
        """The file's base name (what it is called in a node's cache)."""
        if self.kind == "name":
            return registry.KNOWN_CHECKPOINTS[self.source].filename
        if self.kind == "path":
            return local_path(self.source).name
        name = Path(urllib.parse.urlparse(self.source).path).name
        return name or "checkpoint"


def source_kind(source: str) -> SourceKind:
    """How a checkpoint source is read: "name" (registry), "path" (path or file://), "http", "fsspec"."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in ("http", "https"):
        return "http"
    if scheme == "file":
        return "path"
    if scheme:
        return "fsspec"
    if source in registry.KNOWN_CHECKPOINTS and not Path(source).expanduser().is_file():
        return "name"
    return "path"


def local_path(source: str) -> Path:
    """The file-system path of a "path" source (a plain path or a `file://` URI)."""
    if source.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(source)
        return Path(urllib.request.url2pathname(parsed.netloc + parsed.path))
    return Path(source).expanduser()


def cache_dir_of(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache of this machine: `cache_dir` when given, else matcore.registry's default
    (`$MATPIPE_CACHE_DIR`, `$XDG_CACHE_HOME/matpipe/checkpoints`, `~/.cache/matpipe/checkpoints`)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else registry.default_cache_dir()


def uri_cache_path(source: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a checkpoint fetched from the URI `source` lives in the cache."""
    folder = hashlib.sha256(source.encode()).hexdigest()[:16]
    return cache_dir_of(cache_dir) / "uri" / folder / CheckpointRef(source, "0" * 64).filename


# ------------------------------------------------------------------------------------------------ driver


def pin_checkpoint(source: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None,
                   sha256: str | None = None, download: bool = False) -> CheckpointRef:
    """Resolve `source` on this machine and pin it to its sha256 (hashing it once).

    With `sha256` given, a remote source is pinned without being read here (the nodes fetch and check
    it); a local one is still checked. Registry names come from this machine's cache (downloaded first
    when `download` and the registry has a URL); URIs are fetched into this machine's cache. Raises
    CheckpointUnavailableError (ChecksumMismatchError for a file that does not match) saying what to do.
    """
    source = str(source)
    expected = _checked_sha256(sha256)
    kind = source_kind(source)
    cache = cache_dir_of(cache_dir)
    if expected and kind in ("http", "fsspec"):
        return CheckpointRef(source, expected)
    if expected and kind == "name" and not registry.cached_path(source, cache).is_file():
        return CheckpointRef(source, expected)
    if kind == "path":
        path = local_path(source)
        if not path.is_file():
            raise CheckpointUnavailableError(
                f"'{source}' is neither an existing file nor a known checkpoint name "
                f"(known: {', '.join(registry.KNOWN_CHECKPOINTS)})")
        digest = registry.file_digests(path)[1]
    elif kind == "name":
        path, digest = registry.resolve_verified(source, cache, download=download)
    else:
        path = uri_cache_path(source, cache)
        digest = _fetch_uri(source, path, expected=None)
    if expected and digest != expected:
        raise ChecksumMismatchError(f"{path} (from {source}) has sha256 {digest}, but {expected} was given")
    _stamp(cache, path, digest)
    return CheckpointRef(source, digest, path.stat().st_size)


def _checked_sha256(sha256: str | None) -> str | None:
    if sha256 is None or not sha256.strip():
        return None
    value = sha256.strip().lower()
    if not _SHA256.match(value):
        raise ValueError(f"a sha256 is 64 hexadecimal digits, got {sha256!r}")
    return value


# ------------------------------------------------------------------------------------------------ nodes


def fetch_checkpoint(ref: CheckpointRef, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local file on this machine holding exactly the pinned bytes (fetched into its cache if needed).

    Raises ChecksumMismatchError when this machine's copy differs from the pinned sha256, and
    CheckpointUnavailableError when it has none and cannot fetch one; both messages name the machine.
    """
    cache = cache_dir_of(cache_dir)
    kind = ref.kind
    if kind == "path":
        path = local_path(ref.source)
        if path.is_file():
            return _verify_in_place(cache, path, ref)
    if kind == "name":
        path = registry.cached_path(ref.source, cache)
        if path.is_file():
            return _verify_in_place(cache, path, ref)
        spec = registry.KNOWN_CHECKPOINTS[ref.source]
        if spec.url:
            with _locked(path):
                if not path.is_file():
                    registry.download_checkpoint(spec, cache, expected_sha256=ref.sha256, progress=False)
            return _verify_in_place(cache, path, ref)
        raise CheckpointUnavailableError(
            f"checkpoint '{ref.source}' (sha256 {ref.sha256[:12]}…) is not cached on {_machine()} and has no "
            f"download link: put {spec.filename} at {path}, or name the checkpoint by a URI every node can read "
            "(s3://, gs://, http(s)://, a shared path)")
    if kind in ("http", "fsspec"):
        path = uri_cache_path(ref.source, cache)
        with _locked(path):
            if not _fetched_copy_matches(path, ref):
                _fetch_uri(ref.source, path, expected=ref.sha256)
        return path
    raise CheckpointUnavailableError(
        f"checkpoint {ref.source} is not visible on {_machine()}: put the file there, or name it by a URI "
        "every node can read (s3://, gs://, http(s)://, a shared path)")


def _fetched_copy_matches(path: Path, ref: CheckpointRef) -> bool:
    """A copy fetched earlier was hashed as it was written (its `.sha256` record): trust it if it is the
    pinned one and still has the pinned size."""
    if not path.is_file():
        return False
    recorded = registry.recorded_sha256(path)
    return recorded == ref.sha256 and (ref.size is None or path.stat().st_size == ref.size)


def _fetch_uri(source: str, target: Path, expected: str | None) -> str:
    """Fetch a URI into `target` (atomically, hashed while written); returns its sha256."""
    def check(_md5: str, sha256: str) -> str | None:
        return None if expected is None or sha256 == expected else f"sha256 {sha256}, pinned {expected}"

    hint = (f"check that every node reads the same file at {source} (the driver pinned sha256 {expected}), "
            f"or put a copy at {target} on {_machine()}") if expected else f"put the file at {target} by hand"
    if source_kind(source) == "http":
        return registry.download_verified(source, target, check, label=f"checkpoint {target.name}", hint=hint,
                                          progress=False)
    try:
        import fsspec
    except ImportError as exc:
        raise CheckpointUnavailableError(f"reading {source} needs fsspec ({exc})") from None
    try:
        handle = fsspec.open(source, "rb").open()
    except ImportError as exc:  # e.g. s3:// without s3fs
        raise CheckpointUnavailableError(f"reading {source} needs its fsspec filesystem package: {exc}") from None
    except (OSError, ValueError) as exc:
        raise CheckpointUnavailableError(f"cannot read checkpoint {source} on {_machine()}: {exc}; {hint}") from None

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    return registry.write_verified(chunks(), target, check, label=f"copy of {source}", hint=hint)


# ------------------------------------------------------------------------------------------------ stamps


def _verify_in_place(cache: Path, path: Path, ref: CheckpointRef) -> Path:
    """`path` if its bytes are the pinned ones: a stamp from an earlier check, else one hash."""
    if _stamped(cache, path, ref.sha256):
        return path
    digest = registry.file_digests(path)[1]
    if digest != ref.sha256:
        raise ChecksumMismatchError(
            f"{path} on {_machine()} has sha256 {digest}, but the job pinned {ref.sha256} for {ref.source} "
            "(the file differs from the one the driver hashed: a corrupted or different copy); replace it with "
            "the driver's file, or delete it so that this node fetches its own copy")
    _stamp(cache, path, digest)
    return path


def _stamp_file(cache: Path, sha256: str) -> Path:
    return cache / "verified" / f"{sha256}.json"


def _identity(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _stamped(cache: Path, path: Path, sha256: str) -> bool:
    try:
        stamps = json.loads(_stamp_file(cache, sha256).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stamps, dict) and stamps.get(str(path.resolve())) == _identity(path)


def _stamp(cache: Path, path: Path, sha256: str) -> None:
    """Record that `path`, as it is now (size, mtime, inode), has `sha256`. Best effort: a cache that
    cannot be written only costs a hash next time."""
    stamp = _stamp_file(cache, sha256)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        try:
            stamps = json.loads(stamp.read_text())
        except (OSError, ValueError):
            stamps = {}
        stamps = stamps if isinstance(stamps, dict) else {}
        stamps[str(path.resolve())] = _identity(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{stamp.name}.", dir=stamp.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(stamps, handle)
        os.replace(tmp, stamp)
    except OSError as exc:
        log.info("cannot record the verification of %s in %s: %s", path, stamp, exc)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise fetches of one file between the actors of a node (one download, not one per actor)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent fetches stay correct (atomic rename), only wasteful
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _machine() -> str:
    return f"node {socket.gethostname()} (pid {os.getpid()})"
