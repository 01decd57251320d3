"""Known-checkpoint registry: cache location, verified atomic downloads, and the "put it here" message."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from matcore.registry import (
    KNOWN_CHECKPOINTS,
    MAT_RELEASE_FOLDER,
    ChecksumMismatchError,
    CheckpointUnavailableError,
    KnownCheckpoint,
    default_cache_dir,
    download_checkpoint,
    resolve_checkpoint,
)

PAYLOAD = b"MAT weights stand-in \x00\x01\x02" * 5000  # ~125 KB: several reads, still instant


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def served(tmp_path):
    """(base URL, folder) of an HTTP server on 127.0.0.1 serving `folder`, which holds `tiny.bin`."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "tiny.bin").write_bytes(PAYLOAD)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def fake_spec(**changes) -> KnownCheckpoint:
    spec = KnownCheckpoint(
        name="tiny",
        filename="tiny.bin",
        url=None,
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        md5=None,
        resolution=512,
        license_note="test only",
        description="a stand-in checkpoint",
        manual_source="https://example.org/release-folder",
    )
    return replace(spec, **changes)


def cache_listing(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --------------------------------------------------------------------------------------------------
# Downloads


def test_download_with_correct_checksum_lands_atomically(served, cache):
    base, _ = served
    path = download_checkpoint(fake_spec(), cache, url=f"{base}/tiny.bin", progress=False)

    assert path == cache / "tiny.bin"
    assert path.read_bytes() == PAYLOAD
    assert cache_listing(cache) == ["tiny.bin", "tiny.bin.sha256"]  # no partial file left behind
    assert (cache / "tiny.bin.sha256").read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verified_by_md5_only(served, cache):
    base, _ = served
    spec = fake_spec(sha256=None, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert download_checkpoint(spec, cache, url=f"{base}/tiny.bin", progress=False).read_bytes() == PAYLOAD


def test_download_with_wrong_checksum_keeps_nothing(served, cache):
    base, _ = served
    with pytest.raises(ChecksumMismatchError, match="expected 0+") as excinfo:
        download_checkpoint(fake_spec(sha256="0" * 64), cache, url=f"{base}/tiny.bin", progress=False)
    assert cache_listing(cache) == []
    assert str(cache / "tiny.bin") in str(excinfo.value)


def test_download_from_unreachable_host_fails_fast_with_manual_instructions(cache):
    started = time.monotonic()
    with pytest.raises(CheckpointUnavailableError) as excinfo:
        download_checkpoint(fake_spec(), cache, url="http://127.0.0.1:9/x", timeout=3, progress=False)

    assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert str(cache / "tiny.bin") in message
    assert "by hand" in message
    assert cache_listing(cache) == []


def test_download_of_missing_file_keeps_nothing(served, cache):
    base, _ = served
    with pytest.raises(CheckpointUnavailableError, match="404"):
        download_checkpoint(fake_spec(), cache, url=f"{base}/missing.bin", progress=False)
    assert cache_listing(cache) == []


def test_download_without_any_url_says_where_to_get_the_file(cache):
    with pytest.raises(CheckpointUnavailableError, match="no direct download link") as excinfo:
        download_checkpoint(fake_spec(), cache, progress=False)
    assert "https://example.org/release-folder" in str(excinfo.value)


# --------------------------------------------------------------------------------------------------
# Resolving names and paths


def test_existing_path_is_returned_as_is(tmp_path):
    path = tmp_path / "mine.pth"
    path.write_bytes(b"x")
    assert resolve_checkpoint(path) == path
    assert resolve_checkpoint(str(path)) == path


def test_uncached_official_checkpoint_says_which_file_goes_where(cache):
    with pytest.raises(CheckpointUnavailableError) as excinfo:
        resolve_checkpoint("places512", cache_dir=cache, download=True)

    message = str(excinfo.value)
    assert str(cache / "Places_512_FullData.pkl") in message
    assert MAT_RELEASE_FOLDER in message
    assert cache_listing(cache) == []


def test_uncached_name_without_download_gives_the_message(monkeypatch, served, cache):
    base, _ = served
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "tiny", fake_spec(url=f"{base}/tiny.bin"))
    with pytest.raises(CheckpointUnavailableError) as excinfo:
        resolve_checkpoint("tiny", cache_dir=cache)
    assert str(cache / "tiny.bin") in str(excinfo.value)
    assert f"{base}/tiny.bin" in str(excinfo.value)


def test_resolve_downloads_a_registry_name_when_asked(monkeypatch, served, cache):
    base, _ = served
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "tiny", fake_spec(url=f"{base}/tiny.bin"))

    path = resolve_checkpoint("tiny", cache_dir=cache, download=True)

    assert path.read_bytes() == PAYLOAD
    assert resolve_checkpoint("tiny", cache_dir=cache) == path  # now served from the cache


def test_cached_file_with_wrong_checksum_is_refused(monkeypatch, cache):
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "tiny", fake_spec())
    cache.mkdir()
    (cache / "tiny.bin").write_bytes(PAYLOAD[:-1])
    with pytest.raises(ChecksumMismatchError, match="delete it"):
        resolve_checkpoint("tiny", cache_dir=cache)
    (cache / "tiny.bin").write_bytes(PAYLOAD)
    assert resolve_checkpoint("tiny", cache_dir=cache) == cache / "tiny.bin"


def test_file_without_published_checksum_is_checked_against_the_download_record(served, cache):
    base, _ = served
    spec = fake_spec(sha256=None)
    path = download_checkpoint(spec, cache, url=f"{base}/tiny.bin", progress=False)
    assert resolve_checkpoint(spec, cache_dir=cache) == path

    path.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])  # e.g. a copy cut short later on
    with pytest.raises(ChecksumMismatchError, match="recorded at download"):
        resolve_checkpoint(spec, cache_dir=cache)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(CheckpointUnavailableError, match="places512-iopaint"):
        resolve_checkpoint("no-such-checkpoint")


# --------------------------------------------------------------------------------------------------
# Cache location and registry content


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MATPIPE_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("MATPIPE_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "matpipe" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "matpipe" / "checkpoints"


def test_registry_knows_the_published_checkpoints():
    assert {"places512", "celeba512", "ffhq512", "celeba256", "places512-iopaint"} <= set(KNOWN_CHECKPOINTS)
    iopaint = KNOWN_CHECKPOINTS["places512-iopaint"]
    assert iopaint.url == "https://github.com/Sanster/models/releases/download/add_mat/Places_512_FullData_G.pth"
    assert iopaint.md5 == "8ca927835fa3f5e21d65ffcb165377ed"
    for name in ("places512", "celeba512", "ffhq512", "celeba256"):
        spec = KNOWN_CHECKPOINTS[name]
        assert spec.url is None and spec.manual_source == MAT_RELEASE_FOLDER
        assert "research" in spec.license_note
    assert KNOWN_CHECKPOINTS["celeba256"].resolution == 256
