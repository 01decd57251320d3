"""Starting Ray Data's helper actors while the driver still plans, so the job's first seconds go to the models.

Ray Data (2.60) runs a few cluster-wide helper actors next to every dataset: a stats actor, an actor-location
tracker for actor pools, and an autoscaling coordinator that tells the executor how large the cluster is.
They are created, on the driver's node, only when execution starts; on a fresh cluster (a per-job KubeRay
cluster, `ray up`, a local Ray) each is a new Python worker process, a few seconds of CPU. Until the
coordinator answers, the executor believes the cluster has no resources and runs ONE decoding task at a
time, so the GPU actors, ready long before, wait for their first batches.

`prestart_ray_data_helpers()` asks Ray Data for those actors (by the same get-or-create functions Ray Data
uses, so they are the very actors it finds later) as soon as Ray is connected, without waiting for them:
their processes start while the driver lists, fits and packs the shards. On a cluster where they already
exist the calls only look them up. These functions are not Ray's public API: where a Ray version lacks one,
the warm-up skips it (logged at debug level) and Ray Data creates the actor at execution start as before.
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# (module, get-or-create function) of each helper actor Ray Data creates at execution start.
RAY_DATA_HELPERS = (
    ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator", "get_or_create_autoscaling_coordinator"),
    ("ray.data._internal.stats", "get_or_create_stats_actor"),
    ("ray.data._internal.execution.node_trackers.actor_location", "get_or_create_actor_location_tracker"),
)


def prestart_ray_data_helpers() -> list[str]:
    """Create (or look up) Ray Data's helper actors on the connected cluster, without waiting for them.

    Returns the names of the functions called; those this Ray version does not have are skipped.
    Needs `ray.init()` done (the actors are pinned to the driver's node, like Ray Data pins them).
    """
    started = []
    for module_name, function_name in RAY_DATA_HELPERS:
        try:
            get_or_create = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as exc:
            log.debug("Ray Data helper %s.%s not found (%s): Ray Data starts it itself", module_name,
                      function_name, exc)
            continue
        get_or_create()  # returns the handle at once; the actor's process starts in the background
        started.append(function_name)
    return started
