"""Checkpoints pinned on a driver by name or URI, fetched into another machine's cache and verified there.

"Another machine" is another cache directory here; tests/pipeline/test_checkpoint_nodes.py does the same
across the nodes of a Ray cluster. The checkpoint bytes are the tiny official-format fixture: these
tests are about moving and checking files, not about loading them.
"""
from __future__ import annotations

import hashlib
import http.server
import importlib.util
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from matcore import registry
from matcore.pinned import CheckpointRef, fetch_checkpoint, pin_checkpoint, source_kind, uri_cache_path
from matcore.registry import ChecksumMismatchError, CheckpointUnavailableError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints" / "tiny_official_format.pkl"
FIXTURE_SHA256 = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()


class _Server:
    """A static file server on 127.0.0.1 that records the paths it was asked for."""

    def __init__(self, root: Path) -> None:
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 - http.server's naming
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *_args):  # keep pytest's output clean
                pass

        self.requests = requests
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "tiny.pkl").write_bytes(FIXTURE.read_bytes())
    server = _Server(root)
    yield server
    server.close()


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every full read-and-hash of a checkpoint file (what the job should do once per run)."""
    seen: list[Path] = []
    original = registry.file_digests

    def counting(path):
        seen.append(Path(path))
        return original(path)

    monkeypatch.setattr(registry, "file_digests", counting)
    return seen


def test_source_kinds() -> None:
    assert source_kind("places512") == "name"
    assert source_kind("/weights/model.pkl") == "path"
    assert source_kind("file:///weights/model.pkl") == "path"
    assert source_kind("https://example.org/model.pkl") == "http"
    assert source_kind("s3://bucket/model.pkl") == "fsspec"
    assert source_kind("gs://bucket/model.pkl") == "fsspec"


def test_a_local_file_is_hashed_once_per_run_on_the_driver_machine(tmp_path: Path, hashes: list[Path]) -> None:
    ref = pin_checkpoint(str(FIXTURE), cache_dir=tmp_path / "cache")
    assert ref.sha256 == FIXTURE_SHA256 and ref.size == FIXTURE.stat().st_size
    # Two actors on the driver's machine: the driver's check is recorded, nobody hashes again.
    assert fetch_checkpoint(ref, tmp_path / "cache") == FIXTURE
    assert fetch_checkpoint(ref, tmp_path / "cache") == FIXTURE
    assert len(hashes) == 1
    # Another machine (another cache) checks the file once, then trusts its own record.
    fetch_checkpoint(ref, tmp_path / "other")
    fetch_checkpoint(ref, tmp_path / "other")
    assert len(hashes) == 2


def test_a_file_uri_is_used_in_place(tmp_path: Path) -> None:
    ref = pin_checkpoint(FIXTURE.as_uri(), cache_dir=tmp_path / "driver")
    assert ref.kind == "path" and ref.sha256 == FIXTURE_SHA256
    assert fetch_checkpoint(ref, tmp_path / "node") == FIXTURE


def test_a_file_that_changed_after_pinning_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pkl"
    weights.write_bytes(FIXTURE.read_bytes())
    ref = pin_checkpoint(str(weights), cache_dir=tmp_path / "cache")
    fetch_checkpoint(ref, tmp_path / "cache")  # verified and stamped
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF  # one flipped byte, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=rf"has sha256 [0-9a-f]{{64}}, but the job pinned {ref.sha256}"):
        fetch_checkpoint(ref, tmp_path / "cache")


def test_http_checkpoints_are_fetched_into_each_machines_cache(tmp_path: Path, served: _Server) -> None:
    url = f"{served.url}/tiny.pkl"
    ref = pin_checkpoint(url, cache_dir=tmp_path / "driver")
    assert ref.sha256 == FIXTURE_SHA256 and ref.kind == "http"
    driver_copy = uri_cache_path(url, tmp_path / "driver")
    assert driver_copy.read_bytes() == FIXTURE.read_bytes()
    assert fetch_checkpoint(ref, tmp_path / "driver") == driver_copy
    assert len(served.requests) == 1  # the driver's copy was reused on its own machine

    node_copy = fetch_checkpoint(ref, tmp_path / "node")
    assert node_copy == uri_cache_path(url, tmp_path / "node") and node_copy.read_bytes() == FIXTURE.read_bytes()
    assert fetch_checkpoint(ref, tmp_path / "node") == node_copy
    assert len(served.requests) == 2  # one download per machine, not per actor


def test_a_served_file_that_differs_from_the_pinned_one_is_refused_and_not_kept(tmp_path: Path,
                                                                                served: _Server) -> None:
    url = f"{served.url}/tiny.pkl"
    ref = pin_checkpoint(url, cache_dir=tmp_path / "driver")
    (tmp_path / "served" / "tiny.pkl").write_bytes(b"not the checkpoint")  # the server's copy changed
    with pytest.raises(ChecksumMismatchError, match="failed verification .*pinned " + ref.sha256):
        fetch_checkpoint(ref, tmp_path / "node")
    target = uri_cache_path(url, tmp_path / "node")
    assert not target.exists() and not list(target.parent.glob("*.part"))


def test_a_given_sha256_pins_a_remote_checkpoint_without_downloading_it(tmp_path: Path, served: _Server) -> None:
    url = f"{served.url}/tiny.pkl"
    ref = pin_checkpoint(url, cache_dir=tmp_path / "driver", sha256=FIXTURE_SHA256.upper())
    assert ref == CheckpointRef(url, FIXTURE_SHA256) and served.requests == []
    assert fetch_checkpoint(ref, tmp_path / "node").read_bytes() == FIXTURE.read_bytes()
    wrong = replace(ref, sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError):
        fetch_checkpoint(wrong, tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        pin_checkpoint(url, sha256="abc")


def test_an_unreachable_url_says_where_to_put_the_file(tmp_path: Path, served: _Server) -> None:
    with pytest.raises(CheckpointUnavailableError, match="HTTP 404"):
        pin_checkpoint(f"{served.url}/missing.pkl", cache_dir=tmp_path / "driver")


def test_registry_names_come_from_each_machines_own_cache(tmp_path: Path, served: _Server,
                                                          monkeypatch: pytest.MonkeyPatch, hashes: list[Path]) -> None:
    spec = registry.KnownCheckpoint(name="tiny", filename="tiny.pkl", url=None, sha256=FIXTURE_SHA256, md5=None,
                                    resolution=256, license_note="test fixture", description="tiny")
    monkeypatch.setitem(registry.KNOWN_CHECKPOINTS, "tiny", spec)
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "tiny.pkl").write_bytes(FIXTURE.read_bytes())
    ref = pin_checkpoint("tiny", cache_dir=driver)
    assert ref.kind == "name" and ref.sha256 == FIXTURE_SHA256
    assert fetch_checkpoint(ref, driver) == driver / "tiny.pkl"
    assert len(hashes) == 1  # verification against the registry's checksum is the pin's only hash

    # A node without the file and without a download link: a clear message naming its cache.
    with pytest.raises(CheckpointUnavailableError, match=r"not cached on node .* put tiny\.pkl at .*node-a"):
        fetch_checkpoint(ref, tmp_path / "node-a")
    # With a download link the node downloads it into its own cache, checked against the pinned sha256.
    monkeypatch.setitem(registry.KNOWN_CHECKPOINTS, "tiny", replace(spec, url=f"{served.url}/tiny.pkl"))
    fetched = fetch_checkpoint(ref, tmp_path / "node-b")
    assert fetched == tmp_path / "node-b" / "tiny.pkl" and fetched.read_bytes() == FIXTURE.read_bytes()


def test_fsspec_urls_are_copied_into_the_cache(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    filesystem = fsspec.filesystem("memory")
    filesystem.pipe("/matpipe-test/tiny.pkl", FIXTURE.read_bytes())
    try:
        url = "memory://matpipe-test/tiny.pkl"
        ref = pin_checkpoint(url, cache_dir=tmp_path / "driver")
        assert ref.kind == "fsspec" and ref.sha256 == FIXTURE_SHA256
        node_copy = fetch_checkpoint(ref, tmp_path / "node")
        assert node_copy.read_bytes() == FIXTURE.read_bytes()
        filesystem.pipe("/matpipe-test/tiny.pkl", b"changed on the store")
        with pytest.raises(ChecksumMismatchError):
            fetch_checkpoint(ref, tmp_path / "another-node")
    finally:
        filesystem.rm("/matpipe-test", recursive=True)


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_an_object_store_without_its_package_says_which_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointUnavailableError, match="s3"):
        pin_checkpoint("s3://bucket/model.pkl", cache_dir=tmp_path)
