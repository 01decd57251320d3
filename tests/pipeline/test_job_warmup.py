"""Ray Data's helper actors are started while the driver plans, and the job then uses those very actors."""
from __future__ import annotations

import json
import os

import pytest

from pipeline.config import JobConfig
from pipeline.job import run_job
from pipeline.job.warmup import RAY_DATA_HELPERS, prestart_ray_data_helpers
from pipeline.stages import FAULT_INJECTION_ENV

from .conftest import make_image_folder

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("ray_session")]

# The named actors the helpers are (name, namespace), as Ray Data 2.60 registers them.
HELPER_ACTORS = (("AutoscalingCoordinator", "AutoscalingCoordinator"),
                 ("datasets_stats_actor", "_dataset_stats_actor"),
                 ("ActorLocationTracker", "ActorLocationTracker"))


def _helper_actor_ids() -> dict[str, str]:
    import ray

    return {name: ray.get_actor(name, namespace=namespace)._actor_id.hex() for name, namespace in HELPER_ACTORS}


def test_the_helpers_of_this_ray_version_are_all_found_and_started():
    # A Ray upgrade that renames one of them makes the warm-up skip it silently: this test says so.
    started = prestart_ray_data_helpers()

    assert started == [function for _, function in RAY_DATA_HELPERS]
    assert set(_helper_actor_ids()) == {name for name, _ in HELPER_ACTORS}


@pytest.mark.slow
def test_a_job_after_the_warm_up_uses_the_same_helpers_and_loads_its_model_once(tmp_path, monkeypatch):
    prestart_ray_data_helpers()
    before = _helper_actor_ids()
    images, masks = tmp_path / "images", tmp_path / "masks"
    names = [f"img{i}.png" for i in range(6)]
    make_image_folder(images, names, size=(16, 16), masks=masks)
    loads = tmp_path / "loads"
    monkeypatch.setenv(FAULT_INJECTION_ENV, json.dumps({"count_loads_dir": str(loads)}))
    config = JobConfig.from_mapping({
        "inputs": {"uris": [str(images)]}, "output": {"uri": str(tmp_path / "out")},
        "masks": {"method": "given", "options": {"mask_dir": str(masks)}}, "engine": {"name": "opencv"},
        "execution": {"shard_size": 2, "inpaint_actors": 1}})

    report = run_job(config)

    assert report.counts["ok"] == 6 and report.shards_committed_now == 3
    # No second coordinator, stats actor or tracker: the job found the ones the warm-up started.
    assert _helper_actor_ids() == before
    assert len(os.listdir(loads)) == 1
