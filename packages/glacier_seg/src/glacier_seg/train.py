"""``glacier-train``: train the 4-class glacier U-Net, keeping the checkpoint with the best
validation MCC computed the way the competition computes it.

Validation runs on **whole tiles** (no crops), and :class:`eo_common.metrics.SegmentationMetrics`
accumulates one confusion matrix over every valid pixel of every validation tile, so ``val/mcc``
equals ``sklearn.metrics.matthews_corrcoef`` on those pixels flattened (tested).

The run folder (:func:`eo_common.training.fit_run`): ``config.yaml`` (``glacier-train --config
<run>/config.yaml --output_dir other`` repeats the run), ``summary.json`` (best epoch, ``val/mcc``,
``val/kappa``, per-class IoU/F1, the split), ``metrics.csv``, ``training_curves.png``,
``checkpoints/best.ckpt`` / ``last.ckpt`` and ``smp_model/`` (the best network for
``segmentation_models_pytorch.from_pretrained``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from eo_common.runs import RunFolder
from eo_common.training import fit_run, seed_everything
from lightning.pytorch.utilities import rank_zero_only

from glacier_seg.config import CLASS_NAMES, TRAIN_METRICS, GlacierTrainConfig
from glacier_seg.data import GlacierDataModule
from glacier_seg.model import export_smp, model_hparams
from glacier_seg.sampling import WeightedTileSampler
from glacier_seg.task import GlacierTask

__all__ = ["COMMAND", "HEADLINE", "build_task", "prepare_demo", "train"]

COMMAND = "glacier-train"
#: the metrics of the best epoch that summary.json reports (glacier-train's declared metrics)
HEADLINE: tuple[str, ...] = TRAIN_METRICS
EXPORT_DIR = "smp_model"


class SamplerEpoch(L.Callback):
    """Keeps the tile sampler's epoch equal to the trainer's (the same crops after ``--resume``)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if isinstance(sampler, WeightedTileSampler):
            sampler.set_epoch(trainer.current_epoch)


class ExportSMP(L.Callback):
    """At the end of training, writes the best checkpoint's network with smp's ``save_pretrained``."""

    def __init__(self, out_dir: Path, inputs: dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.inputs = inputs

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        task = pl_module
        assert isinstance(task, GlacierTask)
        net = task.net
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        metrics = None
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            net = _net_with(task, {k[4:]: v for k, v in state.items() if k.startswith("net.")})
            score = getattr(callback, "best_model_score", None)
            metrics = {"val/mcc": float(score)} if score is not None else None
        export_smp(
            net, task.model_cfg, task.in_channels, self.out_dir, inputs=self.inputs, metrics=metrics
        )


def _net_with(task: GlacierTask, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    import copy

    net = copy.deepcopy(task.net).cpu()
    net.load_state_dict(state)
    return net.eval()


def prepare_demo(cfg: GlacierTrainConfig) -> None:
    """``--demo``: write the derived-label Landsat-8 tiles (idempotent) and point ``cfg.data`` at them."""
    from glacier_seg.demo_data import build_demo_layout, default_demo_root

    root = Path(cfg.data.root) if cfg.data.root else default_demo_root(cfg.run.seed)
    cfg.data.root = build_demo_layout(root, seed=cfg.run.seed)
    if not cfg.data.val_ids:
        split = json.loads((cfg.data.root / "split.json").read_text(encoding="utf-8"))
        cfg.data.val_ids = ",".join(split["val"])


def build_task(cfg: GlacierTrainConfig, datamodule: GlacierDataModule) -> GlacierTask:
    """The LightningModule for ``cfg`` (network inputs follow the data module's channels)."""
    optim = cfg.optim.hparams()
    optim.update(monitor="val/mcc", mode="max")
    return GlacierTask(
        model=model_hparams(cfg.model, cfg.in_channels),
        loss=asdict(cfg.loss),
        data=datamodule.hparams_data(),
        mixup=cfg.data.mixup,
        mixup_alpha=cfg.data.mixup_alpha,
        cutmix=cfg.data.cutmix,
        cutmix_alpha=cfg.data.cutmix_alpha,
        seed=cfg.run.seed,
        **optim,
    )


def train(cfg: GlacierTrainConfig, **trainer_kwargs: Any) -> dict[str, Any]:
    """Train one run; returns its ``summary.json`` record (``trainer_kwargs`` override Trainer args).

    Inputs are checked (every file, band count, grid, mask values, split) before the run folder is
    touched; with ``run.resume`` the run continues from ``checkpoints/last.ckpt``.

    Raises:
        eo_common.errors.InputError: bad inputs (the message names the file or key).
        eo_common.errors.RunFolderError: the output folder holds a run (neither --resume nor
            --overwrite) or cannot be written.
        eo_common.training.NonFiniteLossError: NaN/inf losses or gradients stopped the training.
    """
    RunFolder.plan(cfg, COMMAND)
    if cfg.data.demo:
        prepare_demo(cfg)
    seed_everything(cfg.run.seed)
    datamodule = GlacierDataModule(cfg.data, cfg.glcm, seed=cfg.run.seed)
    datamodule.check_inputs()
    datamodule.load()
    task = build_task(cfg, datamodule)
    callbacks: list[L.Callback] = [SamplerEpoch()]
    extra: dict[str, Any] = {
        "train_tiles": datamodule.train_ids,
        "val_tiles": datamodule.val_ids,
        "in_channels": cfg.in_channels,
    }
    if cfg.export_smp:
        out = Path(cfg.run.run_dir) / EXPORT_DIR
        inputs = {
            "channels": ["B2", "B3", "B4", "B6", "B10"]
            + (list(task.hparams["data"]["glcm"]["properties"]) if cfg.data.include_glcm else []),
            "classes": list(CLASS_NAMES),
            **task.hparams["data"],
        }
        callbacks.append(ExportSMP(out, inputs))
        extra["smp_model"] = str(out.resolve())
    trainer_kwargs.setdefault("enable_model_summary", False)
    return fit_run(
        task,
        datamodule,
        cfg,
        command=COMMAND,
        monitor="val/mcc",
        mode="max",
        headline=HEADLINE,
        extra_callbacks=callbacks,
        extra=extra,
        plot_metrics=("loss", "mcc"),
        **trainer_kwargs,
    )
