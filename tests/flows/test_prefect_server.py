"""README's Prefect path against the real thing: `prefect server start`, a process work pool, `prefect
deploy` from the repository root, `prefect deployment run`, and a worker that completes the example job.
Also `python -m flows.serve` on that server stops on SIGTERM.

One server for the module (it takes ~15 s or more to start), on 127.0.0.1 with a port of its own and its
own PREFECT_HOME, stopped by PID: nothing here touches another Prefect on the machine.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
PREFECT = [sys.executable, "-m", "prefect"]
SERVER_START_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """(env for Prefect clients, server process) of a fresh server; the env points clients at it."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    server_env = {**base, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                  "PREFECT_SERVER_UI_ENABLED": "false"}
    log = open(home / "server.log", "w")
    server = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        client_env = {**server_env, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO_ROOT),
                      "RAY_USAGE_STATS_ENABLED": "0"}
        yield client_env
    finally:
        # The server's own process group: it and the services it spawned, nothing else.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def prefect(env: dict, *args: str, timeout: float = 240) -> str:
    run = subprocess.run([*PREFECT, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"prefect {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


def example_job_copy(tmp_path: Path) -> Path:
    """examples/sample-job.yaml with its paths made absolute and the output in tmp_path (the rest as is)."""
    job = yaml.safe_load((REPO_ROOT / "examples" / "sample-job.yaml").read_text())
    job["inputs"]["uris"] = [str(REPO_ROOT / uri) for uri in job["inputs"]["uris"]]
    job["output"]["uri"] = str(tmp_path / "out")
    path = tmp_path / "sample-job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_deploy_run_and_a_process_worker_complete_the_example_job(prefect_server, tmp_path):
    import httpx

    env = prefect_server
    prefect(env, "work-pool", "create", "matpipe", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--name", "nightly-restore")
    deployment = httpx.get(f"{env['PREFECT_API_URL']}/deployments/name/restore-dataset/nightly-restore").json()
    # The pull step is the checkout the deployment was made from, and the default job is the example.
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}]
    assert deployment["parameters"]["config_path"] == "examples/sample-job.yaml"

    job = example_job_copy(tmp_path)
    started = prefect(env, "deployment", "run", "restore-dataset/nightly-restore", "--param", f"config_path={job}")
    flow_run_id = re.search(r"flow-run/([0-9a-f-]{36})", started).group(1)
    worker = subprocess.run([*PREFECT, "worker", "start", "--pool", "matpipe", "--run-once"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    state = httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{flow_run_id}").json()["state"]
    assert state["type"] == "COMPLETED", f"{state}\n{worker.stdout[-4000:]}\n{worker.stderr[-4000:]}"

    table = pq.read_table(tmp_path / "out" / "data")
    assert sorted(table.column("id").to_pylist()) == sorted(os.listdir(REPO_ROOT / "samples" / "watermarked"))
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert (tmp_path / "out" / "report.html").is_file()
    # Quiet: no httpx request lines and no Ray Data progress lines in the worker's terminal.
    assert "HTTP Request:" not in worker.stdout + worker.stderr
    assert "logging_progress" not in worker.stdout + worker.stderr


def test_serve_stops_on_sigterm(prefect_server):
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=REPO_ROOT, env=prefect_server,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        lines = []
        for line in serve.stdout:  # wait until it serves (it prints how to run the deployment)
            lines.append(line)
            if "prefect deployment run" in line or time.monotonic() > deadline:
                break
        assert serve.poll() is None, "".join(lines)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
