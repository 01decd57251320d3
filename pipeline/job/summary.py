"""What a job run reports (`JobReport`, saved as `_job/report.json`) and what planning says (`JobPlanSummary`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class JobReport:
    """What a run did and what the output holds (also saved as `_job/report.json`)."""

    output_uri: str
    config_hash: str
    engine: str
    checkpoint_sha256: str
    engine_warning: str | None
    total_rows: int
    shards_total: int
    shards_already_committed: int
    shards_committed_now: int
    rows_processed_now: int
    counts: dict[str, int]
    errors: dict[str, int]
    means: dict[str, float]
    wall_s: float
    rows_per_s: float
    warnings: list[str] = field(default_factory=list)
    finished_at: str = ""
    shard_stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # committed shards' `_stats.json`

    @property
    def complete(self) -> bool:
        return self.shards_already_committed + self.shards_committed_now == self.shards_total

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people (the CLI prints this)."""
        counts = ", ".join(f"{name} {self.counts.get(name, 0)}" for name in ("ok", "failed", "skipped"))
        lines = [
            f"output: {self.output_uri}",
            f"rows: {self.total_rows} ({counts})",
            f"shards: {self.shards_total} ({self.shards_already_committed} already committed, "
            f"{self.shards_committed_now} committed now)",
            f"engine: {self.engine}" + (f" (checkpoint sha256 {self.checkpoint_sha256[:12]}…)"
                                       if self.checkpoint_sha256 else ""),
            f"throughput: {self.rows_processed_now} rows in {self.wall_s:.1f} s ({self.rows_per_s:.2f} rows/s)",
        ]
        if self.errors:
            top = sorted(self.errors.items(), key=lambda item: -item[1])[:5]
            lines.append("failures by stage: " + ", ".join(f"{name} {count}" for name, count in top))
        for name in ("seam_score", "color_delta_e", "texture_ratio", "residual_hole_ratio", "psnr", "ssim"):
            if name in self.means:
                lines.append(f"mean {name}: {self.means[name]:.4g}")
        if self.engine_warning:
            lines.append(f"WARNING: {self.engine_warning}")
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)



@dataclass(frozen=True)
class JobPlanSummary:
    """The shards of a job and their state, before any processing (what orchestrators schedule)."""

    output_uri: str
    config_hash: str
    engine: str
    checkpoint_sha256: str
    engine_warning: str | None
    total_rows: int
    shards: list[dict[str, Any]]  # {"name", "rows", "committed"} in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
