"""``cr-train``: train the SAR-guided cloud-removal network (the work behind :data:`cloud_removal.cli.cr_train`).

:func:`train` builds the data module first (every row of the data list is checked), then the task,
and hands both to :func:`eo_common.training.fit_run`: seed, input checks, run folder by the rerun
rule (``--resume`` / ``--overwrite``), ``config.yaml``, Lightning fit with the best checkpoint by
validation PSNR, ``summary.json`` with the headline metrics of the best epoch (:data:`HEADLINE`).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from eo_common.errors import CheckpointError, ConfigError
from eo_common.training import fit_run, load_checkpoint, seed_everything

from .config import TRAIN_METRICS, CRDataConfig, CRTrainConfig
from .data import CloudRemovalDataModule
from .task import CloudRemovalTask

__all__ = ["HEADLINE", "train", "build_datamodule", "build_task", "resolved_data"]

#: headline metrics of summary.json (best validation epoch by val/psnr): cr-train's declared metrics
HEADLINE = TRAIN_METRICS


def resolved_data(data: CRDataConfig, progress: bool = True) -> CRDataConfig:
    """``data`` itself, or with ``data.samples`` a copy whose root is the sample dataset (built on
    first use; the run's config keeps ``samples: true``, so its config.yaml stays portable)."""
    if not data.samples:
        return data
    from .samples import build_sample_dataset

    return replace(data, root=build_sample_dataset(progress=progress), data_list=None)


def build_datamodule(cfg: CRTrainConfig) -> CloudRemovalDataModule:
    """The data module of a run (reads and checks the data list)."""
    if cfg.data.root is None and not cfg.data.samples:
        raise ConfigError("data.root: required (--input_data_folder DIR, or --demo)")
    return CloudRemovalDataModule(resolved_data(cfg.data, cfg.run.progress), seed=cfg.run.seed)


def build_task(cfg: CRTrainConfig) -> CloudRemovalTask:
    """The Lightning module of a run (optionally initialised from ``pretrained_checkpoint``)."""
    task = CloudRemovalTask.from_configs(
        cfg.model,
        cfg.loss,
        model_name=cfg.model_name,
        convention=cfg.data.normalization,
        **cfg.optim.hparams(),
    )
    if not cfg.train_from_scratch:
        path = Path(cfg.pretrained_checkpoint)  # type: ignore[arg-type]
        state = load_checkpoint(path)
        state = state.get("state_dict", state) if isinstance(state, dict) else None
        own = task.state_dict()
        compatible = {
            k: v
            for k, v in (state or {}).items()
            if k in own and getattr(v, "shape", None) == own[k].shape
        }
        if not compatible:
            raise CheckpointError(
                "--pretrained_checkpoint: no tensor matches this network (not a cr-train checkpoint?)",
                path=path,
            )
        task.load_state_dict(compatible, strict=False)
        print(f"initialised {len(compatible)}/{len(own)} tensors from {path}", file=sys.stderr)
    return task


def train(cfg: CRTrainConfig) -> dict[str, Any]:
    """Run one training; return its ``summary.json`` record.

    The best checkpoint by validation PSNR is ``<run>/checkpoints/best.ckpt``; ``last.ckpt`` is what
    ``--resume`` continues from.
    """
    seed_everything(cfg.run.seed)  # the network's initial weights come from the run's seed
    datamodule = build_datamodule(cfg)
    task = build_task(cfg)
    return fit_run(
        task,
        datamodule,
        cfg,
        command="cr-train",
        monitor="val/psnr",
        mode="max",
        headline=HEADLINE,
        extra={
            "parameters": sum(p.numel() for p in task.model.parameters()),
            "normalization": cfg.data.normalization,
            "data_root": str(datamodule.cfg.root),
        },
        plot_metrics=("loss", "psnr", "psnr_gain"),
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
    )
