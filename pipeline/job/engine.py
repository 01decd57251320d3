"""Which inpainting engine a job uses: `mat` with a resolved checkpoint, or OpenCV (loudly, for `auto`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.config import EngineConfig
from pipeline.job.errors import JobError

log = logging.getLogger(__name__)

FALLBACK_BANNER = "!" * 100


@dataclass(frozen=True)
class ResolvedEngine:
    """The engine a job actually uses; `warning` is set when `auto` fell back to OpenCV."""

    name: str
    checkpoint_path: str | None = None
    checkpoint_sha256: str = ""
    warning: str | None = None


def resolve_engine(config: EngineConfig) -> ResolvedEngine:
    """`mat` needs a resolvable checkpoint; `auto` falls back to OpenCV, loudly, when there is none."""
    if config.name == "opencv":
        return ResolvedEngine("opencv")
    from matcore.registry import CheckpointUnavailableError, resolve_checkpoint

    try:
        path = resolve_checkpoint(config.checkpoint, cache_dir=config.cache_dir)
    except CheckpointUnavailableError as exc:
        if config.name == "mat":
            raise JobError(f"engine 'mat': {exc}") from None
        warning = (f"NO MAT CHECKPOINT: using the classical OpenCV engine instead of MAT; large holes will look "
                   f"smeared. {exc}")
        log.warning("\n%s\n%s\n%s", FALLBACK_BANNER, warning, FALLBACK_BANNER)
        return ResolvedEngine("opencv", warning=warning)
    from matcore.checkpoints import file_sha256

    return ResolvedEngine("mat", str(path), file_sha256(path))
