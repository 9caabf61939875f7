"""Fixtures of the risk_mapping tests: fake data in the real layouts (generators in ``tests/data``)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DATA = Path(__file__).resolve().parent / "data"
PACKAGE = Path(__file__).resolve().parents[1]

TINY_MODEL = {  # timm's test network: 0.1 M parameters, so an optimiser step takes milliseconds
    "encoder": "tu-test_efficientnet",
    "encoder_weights": None,
    "decoder_channels": [16, 16, 8, 8, 8],
    "dropout_prob": 0.1,
    "attention_reduction": 4,
}


def load_generator(name: str) -> ModuleType:
    """Import ``tests/data/<name>.py`` under a name no other package's tests use."""
    module_name = f"risk_mapping_testdata_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, DATA / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture(scope="session")
def risk_stack(tmp_path_factory) -> tuple[Path, Path]:
    """A 128 x 128, 6-band fake risk stack (stack.tif, labels.tif) in the real layout."""
    root = tmp_path_factory.mktemp("risk_stack")
    return load_generator("risk_stack").make_risk_stack(root, size=128, bands=6, seed=0)


@pytest.fixture(scope="session")
def mixed_sources(tmp_path_factory) -> dict[str, Path]:
    """30 m int16 DEM, float slope, 10 m land cover in another CRS, labels at 10 m."""
    root = tmp_path_factory.mktemp("mixed")
    return load_generator("mixed_sources").make_mixed_sources(root, size=96, seed=0)


def make_raw_config(stack: Path, labels: Path, out_dir: Path, **sections) -> dict:
    """A small valid raw config dict; ``sections`` update whole sections (dicts are merged)."""
    raw = {
        "output_dir": str(out_dir),
        "seed": 0,
        "progress": False,
        "log": ["csv"],
        "dataset": {
            "stack": [str(p) for p in stack] if isinstance(stack, list | tuple) else str(stack),
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


def build_config(raw: dict):
    """A :class:`RiskConfig` from a raw dict, checked like the command layer checks it."""
    from eo_common.config import config_from_dict, config_problems
    from eo_common.errors import ConfigError
    from risk_mapping.config import RiskConfig

    cfg = config_from_dict(RiskConfig, copy.deepcopy(raw))
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


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


@pytest.fixture(scope="session")
def helpers():
    """The helpers above for test modules (``import conftest`` is not reliable under importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        DATA=DATA,
        PACKAGE=PACKAGE,
        load_generator=load_generator,
        make_raw_config=make_raw_config,
        build_config=build_config,
    )
