"""Shared fixtures for the cloud_removal tests: fake SEN12MS-CR data, tiny models, checkpoints."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import lightning
import pytest
import torch
from cloud_removal.model import ModelConfig
from cloud_removal.task import CloudRemovalTask
from eo_common.testing import make_fake_sen12mscr

TINY = {
    "base_width": 8,
    "num_heads": 2,
    "num_cross_attn_blocks": 1,
    "encoder_blocks": (1, 1, 1),
    "decoder_blocks": (1, 1),
}


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    """Fake SEN12MS-CR set (eo_common.testing): 4 train, 2 val, 2 test tiles of 48 x 48 px."""
    return make_fake_sen12mscr(
        tmp_path_factory.mktemp("sen12mscr"), n_per_split=(4, 2, 2), size=48, seed=0
    )


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
    task = CloudRemovalTask(model_config=asdict(_tiny_config(residual_init_std=0.0)))
    return _save_checkpoint(task, tmp_path / "identity" / "checkpoints" / "best.ckpt")
