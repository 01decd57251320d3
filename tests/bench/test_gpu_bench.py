"""The GPU benchmark runs end to end (on the CPU, at the smallest size) so that it cannot rot between the
rare occasions a CUDA machine is at hand."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_bench_prints_a_checked_table_on_cpu():
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--resolution", "256", "--batch", "1",
         "--runs", "1", "--warmup", "0", "--dtype", "fp32,bf16", "--small-ceiling"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("variant") and "images/s" in line and "% bf16" in line for line in lines)
    # variant dtype batch ms/image images/s TFLOP/s %bf16 peak rel-L2 runs
    rows = {cells[1]: cells for cells in map(str.split, lines) if len(cells) == 10 and cells[0] == "eager"}
    assert set(rows) == {"fp32", "bf16"}
    assert rows["fp32"][8] == "ref"
    # bf16 is checked against the float32 output of the same inputs and must stay close to it.
    assert float(rows["bf16"][8]) < 2e-2
    assert all(float(rows[d][4]) > 0 for d in rows)  # images/s
