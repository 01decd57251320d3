"""The Ray session and the resources each stage asks for, sized to the cluster."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ExecutionConfig

log = logging.getLogger(__name__)


def _source_tree_pythonpath() -> str | None:
    """The folder holding `pipeline/` when it is imported from a checkout rather than installed:
    Ray workers do not inherit the driver's sys.path, so they need it on PYTHONPATH."""
    package_parent = Path(__file__).resolve().parents[2]
    if "site-packages" in package_parent.parts or "dist-packages" in package_parent.parts:
        return None
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(package_parent), existing]) if existing else str(package_parent)


@contextlib.contextmanager
def ray_session(execution: ExecutionConfig) -> Iterator[None]:
    """Use the running Ray, or start/join one for the duration of the job (and shut it down after)."""
    import ray

    if ray.is_initialized():
        yield
        return
    runtime_env: dict[str, Any] = {}
    pythonpath = _source_tree_pythonpath()
    if pythonpath and execution.ray_address is None:
        runtime_env["env_vars"] = {"PYTHONPATH": pythonpath}
    options: dict[str, Any] = {"include_dashboard": False, "runtime_env": runtime_env or None}
    if execution.ray_address is None:
        # "local" always starts a fresh instance, never a cluster some other process happens to run.
        options.update(address="local", num_cpus=execution.num_cpus or os.cpu_count() or 1)
    else:
        options["address"] = execution.ray_address
    log.info("starting Ray (%s)", "local" if execution.ray_address is None else execution.ray_address)
    ray.init(**options)
    try:
        yield
    finally:
        ray.shutdown()


# Share of the cluster's CPUs each CPU actor pool may grow to (the rest is for decoding, metrics and
# encoding tasks): enough text-detector actors to feed a few GPUs, never the whole cluster.
_POOL_CPU_SHARE = 0.25


@dataclass(frozen=True)
class Resources:
    """What each stage asks Ray for; pools are (min, max) actors (Ray Data autoscales in between)."""

    gpus_per_actor: float
    inpaint_pool: tuple[int, int]
    inpaint_cpus: float
    inpaint_threads: int | None
    mask_pool: tuple[int, int]
    metrics_pool: tuple[int, int]
    cpu_scale: float  # applied to every stage's logical CPUs so the actor pools fit the cluster


def _cpu_pool(explicit: int | None, cluster_cpus: float, cpus_per_actor: float) -> tuple[int, int]:
    """A fixed pool when configured, else one actor growing to a share of the cluster's CPUs."""
    if explicit is not None:
        return explicit, explicit
    return 1, max(1, int(cluster_cpus * _POOL_CPU_SHARE / cpus_per_actor))


def _cpu_scale(execution: ExecutionConfig, fixed_actor_cpus: float, cluster_cpus: float) -> float:
    """Actors hold their logical CPUs for the whole run; if the pools' minimum sizes and one task do not
    fit the cluster, Ray Data would wait forever for the task. Shrink every request in proportion instead
    (a 1-CPU node still runs)."""
    needed = fixed_actor_cpus + execution.task_num_cpus
    if cluster_cpus <= 0 or needed <= cluster_cpus:
        return 1.0
    scale = cluster_cpus / needed * 0.99  # float sums must not land a hair above the total
    log.warning("the stages ask for %.2f CPUs but the cluster has %.2f: scaling their CPU requests by %.2f",
                needed, cluster_cpus, scale)
    return scale


def plan_resources(execution: ExecutionConfig, engine: str, rerun_metrics: bool = False) -> Resources:
    """Pool sizes and per-actor requests for the cluster Ray is connected to."""
    import ray

    cluster = ray.cluster_resources()
    cluster_cpus, cluster_gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    gpus = execution.num_gpus_per_worker if execution.num_gpus_per_worker is not None else (1.0 if cluster_gpus else 0.0)
    if execution.inpaint_actors is not None:
        actors = execution.inpaint_actors
    elif gpus:
        actors = max(1, int(cluster_gpus // gpus))  # every GPU from the start: they are what the job waits on
    else:
        actors = 1
    threads = execution.inpaint_threads
    if threads is None and not gpus:
        # On a CPU-only node the inpainting model is the bottleneck: give its actors the node's cores.
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        node_cpus = max((int(node["Resources"].get("CPU", 1)) for node in nodes), default=os.cpu_count() or 1)
        threads = max(1, node_cpus // actors if actors <= node_cpus else 1)
    inpaint_cpus = execution.inpaint_num_cpus
    if inpaint_cpus is None:
        inpaint_cpus = 1.0 if engine == "mat" else 0.25
    mask_pool = _cpu_pool(execution.mask_actors, cluster_cpus, execution.mask_num_cpus)
    metrics_pool = _cpu_pool(execution.metrics_actors, cluster_cpus, execution.metrics_num_cpus) if rerun_metrics \
        else (0, 0)
    fixed = (mask_pool[0] * execution.mask_num_cpus + actors * inpaint_cpus
             + metrics_pool[0] * execution.metrics_num_cpus)
    scale = _cpu_scale(execution, fixed, cluster_cpus)
    resources = Resources(gpus, (actors, actors), inpaint_cpus, threads, mask_pool, metrics_pool, scale)
    log.info("pools: mask %s, inpaint %s (%.2g GPU each), metrics %s actors", mask_pool, resources.inpaint_pool,
             gpus, metrics_pool)
    return resources


@contextlib.contextmanager
def data_context(execution: ExecutionConfig) -> Iterator[None]:
    """Ray Data settings for this job only (the context is process-global: restore it afterwards)."""
    from ray.data import DataContext, ExecutionResources

    context = DataContext.get_current()
    saved = (context.execution_options, context.enable_auto_log_stats)
    options = context.execution_options.__class__()
    options.preserve_order = execution.preserve_order
    if execution.object_store_memory is not None:
        options.resource_limits = ExecutionResources(object_store_memory=execution.object_store_memory)
    context.execution_options = options
    context.enable_auto_log_stats = False
    try:
        yield
    finally:
        context.execution_options, context.enable_auto_log_stats = saved
