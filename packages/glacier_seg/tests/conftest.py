"""Fixtures: fake GlacierHack data in the real layouts (generators in ``tests/data/glacierhack.py``).

The modules of ``tests/data`` are loaded under unique names (``glacier_fake_data``: the layouts;
``glacier_tiny``: the smallest training run), so they never collide with other packages' ``tests/data``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _register(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "data" / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fake = _register("glacier_fake_data", "glacierhack.py")
_register("glacier_tiny", "tiny_run.py")


@pytest.fixture(scope="session")
def glacier_root(tmp_path_factory):
    """Organisers' layout: 4 tiles of 64 x 64 px (keys 02, 05, 08, 11), every class in every tile."""
    return fake.make_organisers_train(tmp_path_factory.mktemp("glacierhack"), n=4, size=64, seed=0)


@pytest.fixture(scope="session")
def glcm_cache(tmp_path_factory):
    """One texture cache for the session (never the user's cache dir)."""
    return tmp_path_factory.mktemp("glcm_cache")
