"""Which inpainting engine a job uses, decided once on the driver: `mat` with its checkpoint pinned to a
sha256 (hashed once, here), or OpenCV (loudly, for `auto` without a checkpoint). The actors build the
engine from this decision with matcore.build, each fetching the checkpoint into its own node's cache."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from matcore.pinned import CheckpointRef
from pipeline.config import EngineConfig
from pipeline.job.errors import JobError

log = logging.getLogger(__name__)

FALLBACK_BANNER = "!" * 100
# Fallback warnings already shown as a banner in this process: a flow resolves the engine in every task,
# and one banner per run is loud enough (the summary and the report repeat it as one line).
_BANNERS_SHOWN: set[str] = set()


@dataclass(frozen=True)
class ResolvedEngine:
    """The engine a job actually uses; `warning` is set when `auto` fell back to OpenCV."""

    name: str
    checkpoint: CheckpointRef | None = None
    warning: str | None = None

    @property
    def checkpoint_sha256(self) -> str:
        return self.checkpoint.sha256 if self.checkpoint else ""

    @property
    def checkpoint_source(self) -> str | None:
        return self.checkpoint.source if self.checkpoint else None

    def stage_config(self, config: EngineConfig) -> EngineConfig:
        """The engine section the inpainting actors get: the resolved name, and the options only when
        they belong to that engine (an `auto` job that fell back to OpenCV runs OpenCV's defaults)."""
        options = config.options if config.options_engine == self.name else {}
        return dataclasses.replace(config, name=self.name, options=options)


def resolve_engine(config: EngineConfig) -> ResolvedEngine:
    """`mat` needs a checkpoint that resolves (and matches its checksum); `auto` falls back to OpenCV,
    loudly, when there is none. Raises JobError otherwise."""
    from matcore.build import choose_engine
    from matcore.registry import CheckpointUnavailableError

    try:
        choice = choose_engine(config.name, config.checkpoint, cache_dir=config.cache_dir,
                               checkpoint_sha256=config.checkpoint_sha256)
    except CheckpointUnavailableError as exc:
        raise JobError(f"engine {config.name!r}: {exc}") from None
    if choice.warning and choice.warning not in _BANNERS_SHOWN:
        _BANNERS_SHOWN.add(choice.warning)
        log.warning("\n%s\n%s\n%s", FALLBACK_BANNER, choice.warning, FALLBACK_BANNER)
    return ResolvedEngine(choice.name, choice.checkpoint, choice.warning)
