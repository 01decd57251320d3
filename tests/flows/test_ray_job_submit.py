"""README's cluster path against the real thing: `ray start --head`, then `ray job submit --working-dir .
-- python -m flows.ray_entry --config examples/sample-job.yaml` completes and writes the example's output.

The head gets free ports and a temp dir of its own, runs in the foreground (`--block`) in its own process
group, and is stopped through that group: never `ray stop`, which would end every Ray on the machine.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent  # the environment's `ray` and `python`, as an activated venv has them


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def ray_head():
    """(env for Ray clients, temp dir) of a one-node cluster started with `ray start --head`."""
    gcs, dashboard, client, agent_http, agent_grpc, metrics = free_ports(6)
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           # Ray 2.60 starts clusters with token authentication; its CLI clients must say so.
           "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--ray-client-server-port",
         str(client), "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port",
         str(agent_grpc), "--metrics-export-port", str(metrics), "--num-cpus", "2", "--temp-dir", temp_dir,
         "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 420  # a loaded 2-core machine needs minutes
        while True:
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True, timeout=120)
            if probe.returncode == 0:
                break
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not come up:\n{probe.stderr[-3000:]}")
            time.sleep(2)
        yield {**env, "RAY_ADDRESS": address}, Path(temp_dir)
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        except ProcessLookupError:  # the head and its group already exited
            head.wait()


def test_ray_job_submit_runs_the_example_job(ray_head):
    env, temp_dir = ray_head
    for _attempt in range(3):
        submit = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--working-dir", ".", "--",
             "python", "-m", "flows.ray_entry", "--config", "examples/sample-job.yaml"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
        logs = submit.stdout + submit.stderr
        # On a loaded machine the dashboard can miss the client's first connection check (nothing was
        # submitted then): try again; any other outcome is the job's.
        if "Failed to connect to Ray at address" not in logs:
            break
        time.sleep(10)
    assert submit.returncode == 0, logs[-6000:]
    assert "succeeded" in logs and "rows: 6 (ok 6, failed 0, skipped 0)" in logs, logs[-6000:]
    # The example's relative output lands in the job's copy of the working directory.
    outputs = {path.resolve() for path in  # session_latest links to the session: count each folder once
               temp_dir.glob("session_*/runtime_resources/working_dir_files/*/out/sample-job/data")}
    assert len(outputs) == 1, logs[-3000:]
    table = pq.read_table(outputs.pop())
    assert table.num_rows == 6 and set(table.column("status").to_pylist()) == {"ok"}
