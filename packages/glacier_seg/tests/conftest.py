"""Shared fixtures: fake GlacierHack tiles in the real layout (eo_common.testing)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def glacier_root(tmp_path_factory):
    """4 fake tiles of 64 x 64 px (ids 2, 5, 8, 11), every class present in every tile."""
    from eo_common.testing import make_fake_glacierhack

    return make_fake_glacierhack(tmp_path_factory.mktemp("glacierhack"), n=4, size=64, seed=0)
