"""The worked examples in the loss docstrings are exact: run them as doctests."""

from __future__ import annotations

import doctest
import importlib
import warnings

import pytest
import torch

MODULES = ["pixel", "perceptual", "contrastive", "segmentation", "ordinal", "combine"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"eo_common.losses.{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = doctest.testmod(
            module,
            extraglobs={"torch": torch},
            optionflags=doctest.NORMALIZE_WHITESPACE,
            verbose=False,
        )
    assert result.attempted > 0, f"{name} has no worked examples"
    assert result.failed == 0, (
        f"{result.failed} docstring example(s) of eo_common.losses.{name} failed"
    )
