"""The restore-dataset flow end to end on Prefect's test API with the session's local Ray: artifacts,
cache on re-run, retry of a shard that fails once, and the scheduled deployment read back."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SAMPLES = REPO_ROOT / "samples"


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One Prefect test harness (ephemeral API on a temp database) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _job(tmp_path: Path, name: str, shard_size: int = 2) -> dict:
    images = tmp_path / f"{name}-images"
    masks = tmp_path / f"{name}-masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("3096", "12084", "14037"):
        shutil.copy(SAMPLES / "images" / f"{stem}.jpg", images)
        shutil.copy(SAMPLES / "masks" / f"{stem}.png", masks)
    return {
        "inputs": {"uris": [str(images)]},
        "masks": {"method": "given", "options": {"mask_dir": str(masks)}},
        "engine": {"name": "opencv"},
        "execution": {"shard_size": shard_size},
        "output": {"uri": str(tmp_path / f"{name}-out")},
    }


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _artifact_keys(flow_run_id) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key or a.type for a in artifacts}


def test_flow_restores_publishes_artifacts_and_reruns_from_cache(prefect_api, ray_session, tmp_path, monkeypatch):
    import flows.restore as restore

    job = _job(tmp_path, "cache")
    state = restore.restore_dataset(config=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["rows"] == 3 and summary["counts"] == {"ok": 3}
    assert Path(summary["html_report"]).is_file()
    assert {"shard-stats", "restore-report", "progress"} <= _artifact_keys(state.state_details.flow_run_id)

    # Second run: every shard comes from Prefect's cache, no shard work at all.
    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached shard was processed again")

    monkeypatch.setattr(restore, "run_job", must_not_run)
    second = restore.restore_dataset(config=job, return_state=True)
    assert second.is_completed(), second.message
    shard_runs = [r for r in _task_runs(second.state_details.flow_run_id) if r.name.startswith("restore-shard")]
    assert len(shard_runs) == 2
    assert all(r.state.name == "Cached" for r in shard_runs)

    # The output is deleted but Prefect still remembers the shards: they are redone, not served from cache.
    monkeypatch.undo()
    shutil.rmtree(job["output"]["uri"])
    third = restore.restore_dataset(config=job, html_report=False, return_state=True)
    assert third.is_completed(), third.message
    assert third.result()["counts"] == {"ok": 3}
    shard_runs = [r for r in _task_runs(third.state_details.flow_run_id) if r.name.startswith("restore-shard")]
    assert sorted(r.state.name for r in shard_runs) == ["Completed", "Completed"]


def test_shard_failing_once_is_retried_and_the_job_completes(prefect_api, ray_session, tmp_path, monkeypatch):
    import flows.restore as restore
    from pipeline.stages import FAULT_INJECTION_ENV

    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAULT_INJECTION_ENV, json.dumps(
        {"flow_fail_shard_once": {"shard": "shard-00001", "marker": str(marker)}}))
    # Same task, no back-off wait in the test.
    monkeypatch.setattr(restore, "restore_shard", restore.restore_shard.with_options(retry_delay_seconds=0))

    state = restore.restore_dataset(config=_job(tmp_path, "retry"), html_report=False, return_state=True)
    assert state.is_completed(), state.message
    assert marker.exists(), "the injected failure did not happen"
    assert state.result()["counts"] == {"ok": 3}
    runs = {r.name: r for r in _task_runs(state.state_details.flow_run_id) if r.name.startswith("restore-shard")}
    assert sorted(r.run_count for r in runs.values()) == [1, 2]


def test_every_shard_runs_concurrently_through_one_pipeline_that_loads_the_model_once(
        prefect_api, ray_session, tmp_path, monkeypatch):
    import flows.restore as restore
    from pipeline.stages import FAULT_INJECTION_ENV

    calls = []
    real_run_job = restore.run_job

    def counting_run_job(config, *, shards=None, **kwargs):
        calls.append(list(shards))
        return real_run_job(config, shards=shards, **kwargs)

    monkeypatch.setattr(restore, "run_job", counting_run_job)
    loads = tmp_path / "loads"
    monkeypatch.setenv(FAULT_INJECTION_ENV, json.dumps({"count_loads_dir": str(loads)}))
    state = restore.restore_dataset(config=_job(tmp_path, "shared", shard_size=1), html_report=False,
                                    return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["counts"] == {"ok": 3}
    assert calls == [["shard-00000", "shard-00001", "shard-00002"]]  # one pipeline, not one per task
    assert len(list(loads.iterdir())) == 1  # one inpainting actor, one model load, for the whole flow run
    runs = [r for r in _task_runs(state.state_details.flow_run_id) if r.name.startswith("restore-shard")]
    assert sorted(r.name for r in runs) == [f"restore-shard shard-{i:05d}" for i in range(3)]
    assert all(r.state.name == "Completed" for r in runs)


def test_scheduled_deployment_is_created_and_its_schedule_read_back(prefect_api):
    from prefect.client.orchestration import get_client

    from flows.serve import build_deployment, deployment_defaults

    defaults = deployment_defaults()
    assert defaults["cron"] == "0 2 * * *"
    deployment_id = build_deployment().apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.name == "nightly-restore"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert deployment.parameters["config_path"] == defaults["parameters"]["config_path"]


def test_invalid_config_fails_before_any_work(prefect_api, tmp_path):
    from flows.restore import restore_dataset

    state = restore_dataset(config={"inputs": {"uris": []}, "output": {"uri": str(tmp_path / "o")}},
                            return_state=True)
    assert state.is_failed()
    assert not (tmp_path / "o").exists()
