"""`python -m flows.ray_entry` joins a running Ray cluster and runs the job there."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq

from tests.conftest import REPO_ROOT


def test_ray_entry_joins_a_running_cluster_and_runs_the_job(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("3096", "12084"):
        shutil.copy(REPO_ROOT / "samples" / "images" / f"{stem}.jpg", images)
        shutil.copy(REPO_ROOT / "samples" / "masks" / f"{stem}.png", masks)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({
        "inputs": {"uris": [str(images)]},
        "masks": {"method": "given", "options": {"mask_dir": str(masks)}},
        "engine": {"name": "opencv"},
        "output": {"uri": str(tmp_path / "out")},
    }))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    # A cluster of its own, as on a real cluster where the script runs; `Cluster.shutdown` stops only its
    # own processes (unlike `ray stop`, which would also kill the test session's Ray).
    launcher = (
        "import subprocess, sys\n"
        "from ray.cluster_utils import Cluster\n"
        "cluster = Cluster(initialize_head=True, head_node_args={'num_cpus': 2, 'include_dashboard': False})\n"
        "try:\n"
        "    run = subprocess.run([sys.executable, '-m', 'flows.ray_entry', '--config', sys.argv[1],\n"
        "                          '--address', cluster.address], capture_output=True, text=True, timeout=300)\n"
        "    sys.stdout.write(run.stdout + run.stderr)\n"
        "finally:\n"
        "    cluster.shutdown()\n"
        "sys.exit(run.returncode)\n"
    )
    run = subprocess.run([sys.executable, "-c", launcher, str(job)], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=420)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rows: 2 (ok 2" in run.stdout, run.stdout
    table = pq.read_table(next((tmp_path / "out" / "data").glob("*.parquet")))
    assert sorted(table.column("id").to_pylist()) == ["12084.jpg", "3096.jpg"]
