"""The job's own error."""
from __future__ import annotations


class JobError(RuntimeError):
    """The job cannot run as configured (no checkpoint for engine 'mat', a failed fit, lost rows)."""
