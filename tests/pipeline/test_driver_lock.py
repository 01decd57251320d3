"""One driver per output folder: the lock is exclusive, says who holds it, and is gone with its holder."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.output.lock import LOCK_FILE, OutputInUseError, exclusive_driver
from pipeline.output.root import OutputRoot

from .conftest import REPO_ROOT


def test_a_second_driver_is_refused_while_the_first_holds_the_output(tmp_path):
    root = OutputRoot(str(tmp_path / "out"))
    with exclusive_driver(root):
        with pytest.raises(OutputInUseError, match=rf"another matpipe driver \(pid {os.getpid()} on .*since"):
            with exclusive_driver(OutputRoot(str(tmp_path / "out"))):
                pass
    with exclusive_driver(root):  # released on exit: the next run goes ahead
        pass
    with exclusive_driver(OutputRoot(str(tmp_path / "other"))):  # other outputs are independent
        with exclusive_driver(OutputRoot(str(tmp_path / "third"))):
            pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipeline.output.lock import exclusive_driver\n"
         "from pipeline.output.root import OutputRoot\nwith exclusive_driver(OutputRoot(sys.argv[1])):\n"
         "    print('held', flush=True)\n    time.sleep(600)\n", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputInUseError, match=f"pid {holder.pid} "):
            with exclusive_driver(OutputRoot(str(out))):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert (out / LOCK_FILE).is_file()  # the file stays; the lock went with the process
    with exclusive_driver(OutputRoot(str(out))):
        pass
