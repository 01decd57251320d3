"""Dataset processing: sources, decoding, mask generators, stages, metrics, writers, the Ray job, the CLI.

    from pipeline import JobConfig, run_job

    report = run_job(JobConfig.from_file("job.yaml"))
"""
from __future__ import annotations

import importlib
from typing import Any

# Public name → defining module, imported on first use (PEP 562) so `import pipeline` (and with it
# every `matpipe` command) does not pay for Ray and pyarrow.
_LAZY = {
    "JobConfig": "pipeline.config",
    "ConfigError": "pipeline.config",
    "run_job": "pipeline.job",
    "JobReport": "pipeline.job",
    "JobError": "pipeline.job",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
