"""The job's checkpoint reaches every node: pinned once on the driver, fetched by each node into its own
cache and checked there against the driver's sha256 (matcore.pinned), on a multi-node Ray cluster whose
nodes have different cache directories.

No real weights exist on the test machines: the bytes moved around are the tiny official-format
fixture (these tests are about getting the right file to the right place, not about loading it).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matcore import registry
from pipeline.config import EngineConfig
from pipeline.job.engine import resolve_engine
from pipeline.job.errors import JobError

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "checkpoints" / "tiny_official_format.pkl"
FIXTURE_SHA256 = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()


def test_the_driver_hashes_the_checkpoint_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "Places_512_FullData.pkl").write_bytes(FIXTURE.read_bytes())
    hashed: list[str] = []
    original = registry.file_digests
    monkeypatch.setattr(registry, "file_digests", lambda path: hashed.append(str(path)) or original(path))

    engine = resolve_engine(EngineConfig(name="auto", checkpoint="places512", cache_dir=str(cache)))

    assert engine.name == "mat" and engine.checkpoint_sha256 == FIXTURE_SHA256
    assert engine.checkpoint.source == "places512" and len(hashed) == 1  # was 2: verify, then sha256 again


def test_an_auto_job_that_falls_back_runs_opencv_with_its_defaults(tmp_path: Path) -> None:
    config = EngineConfig(name="auto", checkpoint="places512", cache_dir=str(tmp_path), options={"batch_size": 2})
    engine = resolve_engine(config)
    assert engine.name == "opencv" and "NO MAT CHECKPOINT" in engine.warning
    assert engine.stage_config(config) == EngineConfig(name="opencv", checkpoint="places512",
                                                       cache_dir=str(tmp_path), options={})


def test_a_corrupted_cached_checkpoint_stops_the_job_instead_of_falling_back(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pkl"
    weights.write_bytes(FIXTURE.read_bytes())
    with pytest.raises(JobError, match="has sha256 .*, but 0{64} was given"):
        resolve_engine(EngineConfig(name="auto", checkpoint=str(weights), checkpoint_sha256="0" * 64))


CLUSTER_SCRIPT = r"""
import functools, hashlib, http.server, json, os, sys, threading
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from matcore.pinned import fetch_checkpoint, pin_checkpoint

work, fixture = Path(sys.argv[1]), Path(sys.argv[2])
served = work / "served"
served.mkdir()
(served / "tiny.pkl").write_bytes(fixture.read_bytes())
(served / "changing.pkl").write_bytes(fixture.read_bytes())
requests = []

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        requests.append(self.path)
        super().do_GET()
    def log_message(self, *args):
        pass

httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
threading.Thread(target=httpd.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{httpd.server_address[1]}"

caches = {name: work / f"cache-{name}" for name in ("driver", "head", "a")}
for cache in caches.values():
    cache.mkdir()
# A registry checkpoint without a download link, cached by hand: the driver and node a hold the right
# file, the head node a corrupted copy (same size, last byte changed).
(caches["driver"] / "Places_512_FullData.pkl").write_bytes(fixture.read_bytes())
(caches["a"] / "Places_512_FullData.pkl").write_bytes(fixture.read_bytes())
(caches["head"] / "Places_512_FullData.pkl").write_bytes(fixture.read_bytes()[:-1] + b"\0")

cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "include_dashboard": False, "resources": {"node_head": 1},
    "env_vars": {"MATPIPE_CACHE_DIR": str(caches["head"])}})
cluster.add_node(num_cpus=1, resources={"node_a": 1}, env_vars={"MATPIPE_CACHE_DIR": str(caches["a"])})
cluster.wait_for_nodes()

@ray.remote(num_cpus=0)
def fetch_on_node(ref):
    try:
        path = fetch_checkpoint(ref)  # this node's cache: $MATPIPE_CACHE_DIR of its raylet
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "cache": os.environ.get("MATPIPE_CACHE_DIR")}

def on_every_node(ref):
    return {name: ray.get(fetch_on_node.options(resources={f"node_{name}": 0.01}).remote(ref))
            for name in ("head", "a")}

try:
    ray.init(address=cluster.address, log_to_driver=False)
    refs = {
        "http": pin_checkpoint(f"{base}/tiny.pkl", cache_dir=caches["driver"]),
        "file": pin_checkpoint(fixture.as_uri(), cache_dir=caches["driver"]),
        "name": pin_checkpoint("places512", cache_dir=caches["driver"]),
        "changing": pin_checkpoint(f"{base}/changing.pkl", cache_dir=caches["driver"]),
    }
    requests_after_pinning = len(requests)
    (served / "changing.pkl").write_bytes(b"the server now serves something else")
    results = {kind: on_every_node(ref) for kind, ref in refs.items()}
    again = on_every_node(refs["http"])  # second actors on the same nodes: their cached copies
    print(json.dumps({"pinned": {kind: ref.sha256 for kind, ref in refs.items()}, "results": results,
                      "again": again, "requests_after_pinning": requests_after_pinning,
                      "requests": sorted(requests)}))
finally:
    ray.shutdown()
    cluster.shutdown()
    httpd.shutdown()
"""


@pytest.mark.slow
def test_every_node_fetches_the_pinned_checkpoint_into_its_own_cache(tmp_path: Path) -> None:
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MATPIPE_CACHE_DIR", None)
    result = subprocess.run([sys.executable, str(script), str(tmp_path), str(FIXTURE)], env=env,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert set(report["pinned"].values()) == {FIXTURE_SHA256}

    # http(s): every node downloads into its own cache (different directories), verified.
    for node in ("head", "a"):
        fetched = results["http"][node]
        assert fetched["sha256"] == FIXTURE_SHA256, fetched
        assert fetched["cache"] == str(tmp_path / f"cache-{node}")
        assert fetched["path"].startswith(str(tmp_path / f"cache-{node}" / "uri")), fetched
        assert report["again"][node]["path"] == fetched["path"]
    # One download by the driver, one per node; the second round used the nodes' copies.
    assert report["requests"].count("/tiny.pkl") == 3

    # file://: used in place on every node (all of them see this file system).
    assert {results["file"][node]["path"] for node in ("head", "a")} == {str(FIXTURE)}

    # A registry name resolves into each node's own cache; a corrupted copy is refused.
    assert results["name"]["a"]["path"] == str(tmp_path / "cache-a" / "Places_512_FullData.pkl")
    assert results["name"]["head"]["error"].startswith("ChecksumMismatchError: ")
    assert f"but the job pinned {FIXTURE_SHA256}" in results["name"]["head"]["error"]

    # The server's file changed after the driver pinned it: every node refuses it, none keeps it.
    for node in ("head", "a"):
        error = results["changing"][node]["error"]
        assert error.startswith("ChecksumMismatchError: ") and f"pinned {FIXTURE_SHA256}" in error
    assert not list(tmp_path.glob("cache-[ha]*/uri/*/changing.pkl"))
