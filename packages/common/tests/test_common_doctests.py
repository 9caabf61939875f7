"""Every worked example in an ``eo_common`` docstring runs as written (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import eo_common
import numpy as np
import pytest
import torch

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(eo_common.__path__, prefix="eo_common.")
    if not m.name.startswith("eo_common.losses")  # test_common_losses_doctest.py runs those
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(
            module,
            extraglobs={"torch": torch, "np": np, "tmp": tmp_path},
            optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
            verbose=False,
        )
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_modules_with_examples_are_covered():
    """The doctest sweep finds the modules whose examples matter (a guard against an empty list)."""
    for name in (
        "eo_common.config",
        "eo_common.command",
        "eo_common.runs",
        "eo_common.raster.tiles",
    ):
        assert name in MODULES
