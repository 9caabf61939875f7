"""The worked examples in the docstrings are executed (they are part of the documentation)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "glacier_seg.texture",
        "glacier_seg.config",
        "glacier_seg.layout",
        "glacier_seg.data",
        "glacier_seg.sampling",
        "glacier_seg.model",
        "glacier_seg.predict",
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
