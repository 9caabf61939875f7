"""The worked examples in the loss docstrings are exact: run them as doctests."""

from __future__ import annotations

import doctest
import importlib
import re
import warnings
from pathlib import Path

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


def _losses_doc_text() -> str:
    """The `eo_common.losses` section of docs/common.md (up to the next heading of its level)."""
    merged = Path(__file__).resolve().parents[3] / "docs" / "common.md"
    lines = merged.read_text(encoding="utf-8").splitlines()
    for start, line in enumerate(lines):
        match = re.match(r"^(#+)\s.*`eo_common\.losses`", line)
        if match:
            level = len(match.group(1))
            end = next(
                (
                    i
                    for i in range(start + 1, len(lines))
                    if re.match(rf"^#{{1,{level}}}\s", lines[i])
                ),
                len(lines),
            )
            return "\n".join(lines[start:end])
    raise AssertionError("docs/common.md has no `eo_common.losses` section")


def test_documentation_examples():
    text = _losses_doc_text()
    test = doctest.DocTestParser().get_doctest(text, {"torch": torch}, "common.md", None, 0)
    assert test.examples, "the losses documentation has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) in the losses documentation failed"
