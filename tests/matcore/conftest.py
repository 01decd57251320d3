"""Fixtures of the matcore tests: one randomly-weighted MAT generator for the whole session."""
from __future__ import annotations

import pytest
import torch

from matcore.generator import Generator

GENERATOR_INIT_SEED = 1234


@pytest.fixture(scope="session")
def generator256() -> Generator:
    """A 256² MAT generator with fixed random weights (no trained weights exist on the test machines).

    Built once: a CPU forward costs seconds, so tests share it and keep their forwards few.
    """
    torch.manual_seed(GENERATOR_INIT_SEED)
    return Generator(256).eval().requires_grad_(False)
