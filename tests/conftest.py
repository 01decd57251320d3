"""Session-wide test settings: deterministic CPU threads and paths to the fixtures shipped in the repo."""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
MAT_FIXTURES = FIXTURES / "mat"
CHECKPOINT_FIXTURES = FIXTURES / "checkpoints"

# Prefect reads its home at import: point it at a fresh writable temp dir before any test imports prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="matpipe-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Two cores on the reference machine: use both for the forwards, but never oversubscribe.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def load_fill_module():
    """The fixtures' `fill.py` (weights that are a pure function of each tensor's name)."""
    spec = importlib.util.spec_from_file_location("mat_fixture_fill", MAT_FIXTURES / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PARITY_CASES = {case["name"]: case for case in json.loads((MAT_FIXTURES / "cases.json").read_text())}


def rel_l2(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


def load_parity_case(case_name: str, fill_state_dict) -> tuple:
    """A fixture case ready to run: (case, generator with the fill weights, images, masks, z, keep_maps)."""
    import numpy as np

    from matcore import Generator, sample_latents

    case = PARITY_CASES[case_name]
    generator = Generator(case["resolution"])
    generator.load_state_dict(fill_state_dict(generator.state_dict()))
    generator.eval()
    images = torch.from_numpy(np.load(MAT_FIXTURES / f"{case_name}_image_u8.npy")).float() / 127.5 - 1
    masks = torch.from_numpy(np.load(MAT_FIXTURES / f"{case_name}_mask_u8.npy")).float()
    z, k1, k2 = sample_latents(case["seeds"])
    return case, generator, images, masks, z, (k1, k2)


@pytest.fixture(scope="session")
def fill_state_dict():
    return load_fill_module().fill_state_dict


# Keep the test Ray light and quiet; set before ray is imported anywhere in this process.
for _name, _value in {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DEDUP_LOGS": "0",
    "RAY_DISABLE_IMPORT_WARNING": "1",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    # Keep idle workers for a minute (default: 1 s) so consecutive small jobs reuse them instead of
    # paying a fresh process per stage per test.
    "RAY_idle_worker_killing_time_threshold_ms": "60000",
}.items():
    os.environ.setdefault(_name, _value)

RAY_TEST_OBJECT_STORE_BYTES = 1 << 30


@pytest.fixture(scope="session")
def ray_session():
    """The session's single Ray instance (2 CPUs, no dashboard). Jobs run inside it reuse it.

    Tests needing their own Ray (a multi-node `Cluster`, a killed driver) run in subprocesses.
    """
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        ray.init(
            # "local": always a fresh instance, never a cluster another process on the machine runs (a plain
            # ray.init() joins any running one, and then refuses num_cpus).
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=RAY_TEST_OBJECT_STORE_BYTES,
            log_to_driver=False,
            # Workers do not inherit the driver's sys.path: point them at this checkout.
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
        )
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
