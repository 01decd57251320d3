"""Known MAT checkpoints, where they live on disk, and verified downloads.

The official MAT weights sit in a OneDrive folder with no direct file links, so for most of them the
best this module can do is say precisely which file to put where. The one file with a stable URL (the
IOPaint re-export of the Places generator) is downloaded to a temp file, checked, and only then moved
into place, so the cache never holds a half-written or tampered checkpoint under its real name.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAT_HOMEPAGE = "https://github.com/fenglinglwb/MAT"
# The authors' release folder (linked from the README of MAT_HOMEPAGE); it offers no per-file links.
MAT_RELEASE_FOLDER = (
    "https://mycuhk-my.sharepoint.com/:f:/g/personal/1155137927_link_cuhk_edu_hk/"
    "EuY30ziF-G5BvwziuHNFzDkBVC6KBPRg69kCeHIu-BXORA?e=7OwJyE"
)
OFFICIAL_LICENSE_NOTE = (
    "non-commercial research use only: the MAT authors release their models 'for research purposes only' "
    f"(see {MAT_HOMEPAGE})"
)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownCheckpoint:
    """A checkpoint this tool knows by name.

    `url` is None when there is no direct download link; `manual_source` then says where a person can
    fetch the file. `sha256`/`md5` are the published checksums; when both are None the file cannot be
    verified: its sha256 is computed on download and recorded next to it (`<file>.sha256`), and later
    uses check the file against that record, which catches corruption but not a wrong original.
    """

    name: str
    filename: str
    url: str | None
    sha256: str | None
    md5: str | None
    resolution: int
    license_note: str
    description: str
    manual_source: str = MAT_RELEASE_FOLDER


def _official(name: str, filename: str, resolution: int, description: str) -> KnownCheckpoint:
    return KnownCheckpoint(
        name=name, filename=filename, url=None, sha256=None, md5=None, resolution=resolution,
        license_note=OFFICIAL_LICENSE_NOTE, description=description,
    )


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    spec.name: spec
    for spec in (
        _official("places512", "Places_512_FullData.pkl", 512,
                  "official MAT, Places365 full data (8M images), 512x512; the authors' best Places model"),
        _official("celeba512", "CelebA-HQ_512.pkl", 512, "official MAT, CelebA-HQ faces, 512x512"),
        _official("ffhq512", "FFHQ_512.pkl", 512, "official MAT, FFHQ faces, 512x512"),
        _official("celeba256", "CelebA-HQ_256.pkl", 256,
                  "official MAT, CelebA-HQ faces, 256x256 (retrained by the authors; results may differ "
                  "slightly from the paper)"),
        KnownCheckpoint(
            name="places512-iopaint",
            filename="Places_512_FullData_G.pth",
            url="https://github.com/Sanster/models/releases/download/add_mat/Places_512_FullData_G.pth",
            sha256=None,
            md5="8ca927835fa3f5e21d65ffcb165377ed",
            resolution=512,
            license_note="IOPaint's re-export of the official Places_512_FullData generator; "
            + OFFICIAL_LICENSE_NOTE,
            description="generator of places512 as a plain state dict (no decoder noise inputs), ~239 MiB",
        ),
    )
}


class CheckpointUnavailableError(RuntimeError):
    """The checkpoint is neither on disk nor downloadable right now; the message says how to provide it."""


class ChecksumMismatchError(CheckpointUnavailableError):
    """A downloaded or cached file does not match its expected checksum."""


def default_cache_dir() -> Path:
    """`$MATPIPE_CACHE_DIR`, else `$XDG_CACHE_HOME/matpipe/checkpoints`, else `~/.cache/matpipe/checkpoints`."""
    explicit = os.environ.get("MATPIPE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "matpipe" / "checkpoints"


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _spec(name_or_spec: str | KnownCheckpoint) -> KnownCheckpoint:
    if isinstance(name_or_spec, KnownCheckpoint):
        return name_or_spec
    try:
        return KNOWN_CHECKPOINTS[name_or_spec]
    except KeyError:
        raise CheckpointUnavailableError(
            f"unknown checkpoint name '{name_or_spec}' (known: {', '.join(KNOWN_CHECKPOINTS)})"
        ) from None


def cached_path(name_or_spec: str | KnownCheckpoint, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the checkpoint lives in the cache (whether or not it is there yet)."""
    spec = _spec(name_or_spec)
    return _cache_dir(cache_dir) / spec.filename


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _by_hand(spec: KnownCheckpoint, target: Path) -> str:
    where = f"download it from {spec.url}" if spec.url else f"get it from {spec.manual_source}"
    return f"put {spec.filename} at {target} by hand ({where})"


def file_digests(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(md5, sha256) of a file in one pass: the one place checkpoint bytes are hashed when they are
    checked rather than written."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def _mismatch(spec: KnownCheckpoint, md5: str, sha256: str, recorded: str | None = None) -> str | None:
    """Describe how the digests differ from what is expected, or None when they match."""
    if spec.sha256 and sha256 != spec.sha256.lower():
        return f"sha256 {sha256}, expected {spec.sha256}"
    if spec.md5 and md5 != spec.md5.lower():
        return f"md5 {md5}, expected {spec.md5}"
    if recorded and sha256 != recorded:
        return f"sha256 {sha256}, recorded at download {recorded}"
    return None


def recorded_sha256(path: str | os.PathLike[str]) -> str | None:
    """The sha256 recorded next to a file when it was written (`<file>.sha256`), or None."""
    return _read_sidecar(Path(path))


def _read_sidecar(path: Path) -> str | None:
    try:
        return _sidecar(path).read_text().split()[0].lower()
    except (OSError, IndexError):
        return None


def _write_sidecar(path: Path, sha256: str) -> None:
    """Record the file's sha256 next to it (sha256sum format), atomically like the file itself."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".sha256.tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{sha256}  {path.name}\n")
    os.replace(tmp, _sidecar(path))


def verify_checkpoint_file(name_or_spec: str | KnownCheckpoint, path: str | os.PathLike[str]) -> str:
    """Check a file against the published checksum (or the sha256 recorded at download); return its sha256.

    Raises ChecksumMismatchError on a mismatch. A file with nothing to check against passes unverified.
    """
    spec, path = _spec(name_or_spec), Path(path)
    md5, sha256 = file_digests(path)
    recorded = _read_sidecar(path)
    problem = _mismatch(spec, md5, sha256, recorded)
    if problem:
        replaced = f" (if you replaced it on purpose, delete {_sidecar(path)})" if "recorded" in problem else ""
        raise ChecksumMismatchError(
            f"{path} is not the expected {spec.name} checkpoint ({problem}){replaced}; delete it and "
            + _by_hand(spec, path)
        )
    if not (spec.sha256 or spec.md5 or recorded):
        log.info("%s: no published checksum for %s; using it unverified (sha256 %s)", path, spec.name, sha256)
    return sha256


def resolve_verified(path_or_name: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
                     download: bool = False) -> tuple[Path, str]:
    """`resolve_checkpoint` plus the file's sha256, reading the file once: the digest that verifying a
    cached known checkpoint computes (or that a download computed while writing) is the one returned."""
    candidate = Path(path_or_name).expanduser()
    if candidate.is_file():
        return candidate, file_digests(candidate)[1]
    name = str(path_or_name)
    target = cached_path(name, cache_dir) if name in KNOWN_CHECKPOINTS else None
    if target is not None and not target.is_file() and download and _spec(name).url:
        path = download_checkpoint(name, cache_dir)
        return path, _read_sidecar(path) or file_digests(path)[1]
    path = resolve_checkpoint(path_or_name, cache_dir, download=False, verify=False)
    return path, verify_checkpoint_file(name, path)


def resolve_checkpoint(
    path_or_name: str | os.PathLike[str] | KnownCheckpoint,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    verify: bool = True,
) -> Path:
    """Turn a file path or a known checkpoint name into an existing, verified checkpoint file.

    An existing path is returned as is. A known name gives the cached file (checked against its
    checksum when `verify`), else a download when `download` is set and the checkpoint has a URL.
    Otherwise CheckpointUnavailableError says which file to put where, and where to get it.
    """
    if not isinstance(path_or_name, KnownCheckpoint):
        candidate = Path(path_or_name).expanduser()
        if candidate.is_file():
            return candidate
        if str(path_or_name) not in KNOWN_CHECKPOINTS:
            raise CheckpointUnavailableError(
                f"'{path_or_name}' is neither an existing file nor a known checkpoint name "
                f"(known: {', '.join(KNOWN_CHECKPOINTS)})"
            )
    spec = _spec(path_or_name if isinstance(path_or_name, KnownCheckpoint) else str(path_or_name))
    target = cached_path(spec, cache_dir)
    if target.is_file():
        if verify:
            verify_checkpoint_file(spec, target)
        return target
    if download and spec.url:
        return download_checkpoint(spec, cache_dir)
    reason = "is not cached" if spec.url else "is not cached and has no direct download link"
    hint = "" if spec.url is None else "; or pass download=True (CLI: matpipe weights download " + spec.name + ")"
    raise CheckpointUnavailableError(f"checkpoint '{spec.name}' {reason}: {_by_hand(spec, target)}{hint}")


class _Progress:
    """Throttled one-line progress on stderr; silent when disabled."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.5):
            return
        self.last = now
        total = f" / {self.total / 2**20:.1f}" if self.total else ""
        sys.stderr.write(f"\r{self.label}: {done / 2**20:.1f}{total} MiB" + ("\n" if final else ""))
        sys.stderr.flush()


def download_checkpoint(
    name_or_spec: str | KnownCheckpoint,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    timeout: float = 10.0,
    progress: bool = True,
    expected_sha256: str | None = None,
) -> Path:
    """Download a known checkpoint into the cache, verify it, and move it into place atomically.

    `url` overrides the registry's URL (mirrors, tests). `timeout` bounds connecting and each read, so
    an offline machine fails in seconds. `expected_sha256` adds a digest to check on top of the published
    ones (the one a job's driver pinned). On any failure nothing is left in the cache under the real name
    and CheckpointUnavailableError (ChecksumMismatchError for a bad checksum) says how to provide the
    file by hand.
    """
    spec = _spec(name_or_spec)
    target = cached_path(spec, cache_dir)
    source = url or spec.url
    if not source:
        raise CheckpointUnavailableError(
            f"checkpoint '{spec.name}' has no direct download link: {_by_hand(spec, target)}"
        )

    def check(md5: str, sha256: str) -> str | None:
        problem = _mismatch(spec, md5, sha256)
        if problem is None and expected_sha256 and sha256 != expected_sha256.lower():
            problem = f"sha256 {sha256}, expected {expected_sha256}"
        return problem

    sha256 = download_verified(source, target, check, label=f"'{spec.name}'", hint=_by_hand(spec, target),
                               timeout=timeout, progress=progress)
    if not (spec.sha256 or spec.md5 or expected_sha256):
        log.warning("%s: no published checksum to verify against; recorded sha256 %s", target, sha256)
    return target


DigestCheck = Callable[[str, str], "str | None"]


def download_verified(url: str, target: Path, check: DigestCheck, *, label: str, hint: str,
                      timeout: float = 10.0, progress: bool = True) -> str:
    """Download `url` to `target` atomically; returns the file's sha256.

    The bytes go to a temp file beside `target`, hashed as they arrive; `check(md5, sha256)` returns
    None to accept them or a description of the mismatch, and only an accepted, complete file is moved
    into place (with its `.sha256` record). Failures raise CheckpointUnavailableError
    (ChecksumMismatchError for a mismatch) whose message names `label` and ends with `hint`.
    """
    def chunks() -> Iterator[bytes]:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "matpipe"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                meter = _Progress(f"downloading {target.name}", total, progress)
                done = 0
                while chunk := response.read(_CHUNK):
                    done += len(chunk)
                    meter.update(done)
                    yield chunk
                meter.update(done, final=True)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise CheckpointUnavailableError(f"could not download {label} from {url} ({reason}): {hint}") from None
        if total is not None and done != total:
            raise CheckpointUnavailableError(
                f"download of {label} from {url} stopped after {done} of {total} bytes: {hint}")

    return write_verified(chunks(), target, check, label=f"download of {label} from {url}", hint=hint)


def write_verified(chunks: Iterable[bytes], target: Path, check: DigestCheck, *, label: str, hint: str) -> str:
    """Write `chunks` to `target` atomically if `check(md5, sha256)` accepts them; returns the sha256.

    What `download_verified` does once the bytes arrive, for any source of bytes (an object store, a
    shared file system). Nothing is left under `target`'s name unless the whole file passed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        problem = check(md5.hexdigest(), sha256.hexdigest())
        if problem:
            raise ChecksumMismatchError(f"{label} failed verification ({problem}); nothing was kept: {hint}")
        _sidecar(target).unlink(missing_ok=True)  # a record of an earlier file must not outlive it
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_sidecar(target, sha256.hexdigest())
    return sha256.hexdigest()
