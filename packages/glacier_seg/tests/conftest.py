"""Shared fixtures: fake GlacierHack tiles in the real layout (eo_common.testing)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def glacier_root(tmp_path_factory):
    """4 fake tiles of 64 x 64 px (ids 2, 5, 8, 11), every class present in every tile."""
    from eo_common.testing import make_fake_glacierhack

    return make_fake_glacierhack(tmp_path_factory.mktemp("glacierhack"), n=4, size=64, seed=0)


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # 2+ threads thrash on the shared 2-core CI machine
    yield
    torch.set_num_threads(previous)
