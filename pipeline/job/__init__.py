"""The dataset job, one concern per module: `plan` (output root, listing, shards), `engine` (which
inpainting engine), `resources` (Ray session, pool sizes), `fit` (dataset-level mask fitting), `dataset` (the
Ray Data stages chained), `run` (streaming, committing, reporting), `summary` (what is reported).

    from pipeline.job import plan_job, run_job

    report = run_job(JobConfig.from_file("job.yaml"))
"""
from __future__ import annotations

from pipeline.job.engine import ResolvedEngine, resolve_engine
from pipeline.job.errors import JobError
from pipeline.job.plan import plan_job
from pipeline.job.resources import ray_session
from pipeline.job.run import run_job
from pipeline.job.summary import JobPlanSummary, JobReport

__all__ = ["JobError", "JobPlanSummary", "JobReport", "ResolvedEngine", "plan_job", "ray_session", "resolve_engine",
           "run_job"]
