"""Shared fixtures: a tiny fake BigEarthNet v2 set and one tiny random TerraMind generator per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def fake_benv2(tmp_path_factory):
    """6 fake patches in the official BigEarthNet v2 layout (2 per split), from eo_common.testing."""
    from eo_common.testing import make_fake_benv2

    return make_fake_benv2(tmp_path_factory.mktemp("benv2"), n=6, seed=0)


@pytest.fixture(scope="session")
def tiny_generator():
    """terramind_v1_tiny_generate with random weights (built once: ~10-60 s on this machine)."""
    from gac_pipeline.model import build_generator

    return build_generator("tiny", random_init=True, timesteps=1, init_seed=0)
