"""Shared fixtures: a tiny fake BigEarthNet v2 set, opt_v1 stand-ins, one tiny random TerraMind generator."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).parent / "data"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gac_test_data_{name}", DATA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fake_benv2(tmp_path_factory):
    """6 fake patches in the official BigEarthNet v2 layout (2 per split), tests/data/benv2.py."""
    return _load("benv2").make_fake_benv2(tmp_path_factory.mktemp("benv2"), n=6, seed=0)


def write_stage1_standins(data_root: Path, out: Path) -> Path:
    """opt_v1 stand-ins (target + N(0, 300) DN noise, seed 0) in stage 1's file format, so stage 2/3
    tests need no generation; the same as tests/data/old_release/make_old_checkpoints.py writes."""
    import numpy as np
    from gac_pipeline.data import build_catalogue, read_tile, stage1_path
    from gac_pipeline.stage1 import write_opt_v1

    rng = np.random.default_rng(0)
    for record in build_catalogue(data_root):
        tile = read_tile(record)
        noisy = tile.s2 + rng.normal(0, 300, tile.s2.shape)
        write_opt_v1(
            stage1_path(out, record.patch_id),
            noisy,
            crs=tile.crs,
            transform=tile.transform,
            tags={},
        )
    return out


@pytest.fixture(scope="session")
def stage1_dir(fake_benv2, tmp_path_factory):
    return write_stage1_standins(fake_benv2, tmp_path_factory.mktemp("stage1"))


@pytest.fixture(scope="session")
def tiny_generator():
    """terramind_v1_tiny_generate with random weights (built once: ~10-60 s on this machine)."""
    from gac_pipeline.generator import build_generator

    return build_generator("tiny", random_init=True, timesteps=1, init_seed=0)
