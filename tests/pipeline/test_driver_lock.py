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


def test_planning_waits_for_no_one_and_deletes_nothing_while_a_run_holds_the_output(tmp_path):
    """A flow planning while `matpipe run` writes the same output must not delete that run's live files."""
    from pipeline.config import JobConfig
    from pipeline.job import plan_job

    from .conftest import make_image_folder

    images, masks = tmp_path / "images", tmp_path / "masks"
    make_image_folder(images, ["a.png", "b.png"], masks=masks)
    out = tmp_path / "out"
    job = JobConfig.from_mapping({"inputs": {"uris": [str(images)]}, "output": {"uri": str(out)},
                                  "masks": {"method": "given", "options": {"mask_dir": str(masks)}},
                                  "engine": {"name": "opencv"}})
    assert [shard["committed"] for shard in plan_job(job).shards] == [False]
    # What a running driver has open: a shard file being written, under its held lock.
    live = out / "data" / ".shard-00000.parquet.tmp-0badc0de"
    live.parent.mkdir(parents=True, exist_ok=True)
    live.write_bytes(b"in progress")
    with exclusive_driver(OutputRoot(str(out))):
        with pytest.raises(OutputInUseError):
            plan_job(job)
        assert live.read_bytes() == b"in progress"
    plan_job(job)  # once the run is gone, planning clears what it left
    assert not live.exists()
