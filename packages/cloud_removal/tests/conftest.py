"""Shared fixtures for the cloud_removal tests: fake SEN12MS-CR layouts, tiny models, checkpoints.

The fake-data generators live in ``tests/data/sen12mscr.py`` (torchgeo style); tests reach them
through the ``layouts`` fixture. Commands are called in-process as ``cr_train([...])`` (the console
script object), which returns the exit status.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning
import pytest
import torch
from cloud_removal.config import ModelConfig
from cloud_removal.task import CloudRemovalTask
from eo_common.config import config_to_dict

DATA = Path(__file__).resolve().parent / "data"

TINY = {
    "base_width": 8,
    "num_heads": 2,
    "num_cross_attn_blocks": 1,
    "encoder_blocks": (1, 1, 1),
    "decoder_blocks": (1, 1),
}
#: cr-train flags of a tiny, fast run (CPU, no workers, no progress bars, CSV log only)
TINY_FLAGS = [
    "--base_width", "4", "--num_heads", "2", "--num_cross_attn_blocks", "1",
    "--encoder_blocks", "[1,1,1]", "--no_multi_scale", "--batch_sz", "2", "--num_workers", "2",
    "--threads", "1", "--no_progress", "--log", "[csv]", "--load_size", "48", "--crop_size", "16",
    "--eval_crop_size", "32",
]  # fmt: skip


def _load_layouts():
    spec = importlib.util.spec_from_file_location(
        "cloud_removal_test_layouts", DATA / "sen12mscr.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


LAYOUTS = _load_layouts()


@pytest.fixture(scope="session")
def tiny_flags() -> tuple[str, ...]:
    """cr-train flags of a tiny, fast run."""
    return tuple(TINY_FLAGS)


@pytest.fixture(scope="session")
def layouts():
    """The generator module ``tests/data/sen12mscr.py`` (make_official, make_glfcr, ...)."""
    return LAYOUTS


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    """Official-tree SEN12MS-CR set with data.csv: 4 train, 2 val, 2 test tiles of 48 x 48 px."""
    return LAYOUTS.make_official(tmp_path_factory.mktemp("sen12mscr"), (4, 2, 2), size=48, seed=0)


@pytest.fixture
def copied_root(fake_root, tmp_path) -> Path:
    """A private copy of ``fake_root`` that a test may damage."""
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(fake_root, dst)
    return dst


def _tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


@pytest.fixture
def tiny_config():
    """Factory: a small ModelConfig (base width 8) with overrides."""
    return _tiny_config


def _save_checkpoint(task: CloudRemovalTask, path: Path) -> Path:
    """A Lightning-format checkpoint of ``task`` (what ModelCheckpoint writes, minus trainer state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": task.state_dict(),
            "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


@pytest.fixture
def save_checkpoint():
    """Function (task, path) -> path writing a Lightning-format checkpoint."""
    return _save_checkpoint


@pytest.fixture
def identity_checkpoint(tmp_path) -> Path:
    """Checkpoint of a tiny model whose output head is exactly zero: prediction == cloudy input."""
    task = CloudRemovalTask(model_config=config_to_dict(_tiny_config(residual_init_std=0.0)))
    return _save_checkpoint(task, tmp_path / "identity" / "checkpoints" / "best.ckpt")
