"""Shared fixtures for the risk_mapping tests: tiny fake stacks (eo_common.testing) and configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from eo_common.testing import make_fake_risk_stack

TINY_MODEL = {
    "encoder": "resnet18",
    "encoder_weights": None,
    "decoder_channels": [32, 16, 16, 8, 8],
    "dropout_prob": 0.1,
}


@pytest.fixture(scope="session")
def risk_stack(tmp_path_factory) -> tuple[Path, Path]:
    """A 128 x 128, 6-band fake risk stack (stack.tif, labels.tif) in the real layout."""
    root = tmp_path_factory.mktemp("risk_stack")
    return make_fake_risk_stack(root, size=128, bands=6, seed=0)


def make_raw_config(stack: Path, labels: Path, out_dir: Path, **sections) -> dict:
    """A small valid raw config dict; ``sections`` update whole sections (dicts are merged)."""
    raw = {
        "output_dir": str(out_dir),
        "seed": 0,
        "dataset": {
            "stack": str(stack),
            "labels": str(labels),
            "tile_size": 32,
            "overlap": 8,
            "block_size": 48,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "smote_k_neighbors": 3,
            "optical_bands": [4],
        },
        "model": dict(TINY_MODEL),
        "training": {"epochs": 1, "batch_size": 8, "patience": 2},
        "inference": {
            "tile_size": 64,
            "overlap": 16,
            "crf": {"tile_size": 64, "overlap": 16, "iterations": 3, "bilateral_sxy": 10.0},
        },
        "evaluation": {"split": "test"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            merged = copy.deepcopy(raw[key])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k].update(v)
                else:
                    merged[k] = v
            raw[key] = merged
        else:
            raw[key] = value
    return raw


@pytest.fixture
def raw_config(risk_stack, tmp_path) -> dict:
    stack, labels = risk_stack
    return make_raw_config(stack, labels, tmp_path / "run")


@pytest.fixture
def config_factory(risk_stack, tmp_path):
    """``config_factory(**sections) -> raw dict`` on the session's fake stack."""
    stack, labels = risk_stack

    def factory(out_name: str = "run", **sections) -> dict:
        return make_raw_config(stack, labels, tmp_path / out_name, **sections)

    return factory
