"""Session-wide test settings: deterministic CPU threads and paths to the fixtures shipped in the repo."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
MAT_FIXTURES = FIXTURES / "mat"
CHECKPOINT_FIXTURES = FIXTURES / "checkpoints"

# Two cores on the reference machine: use both for the forwards, but never oversubscribe.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def load_fill_module():
    """The fixtures' `fill.py` (weights that are a pure function of each tensor's name)."""
    spec = importlib.util.spec_from_file_location("mat_fixture_fill", MAT_FIXTURES / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fill_state_dict():
    return load_fill_module().fill_state_dict
