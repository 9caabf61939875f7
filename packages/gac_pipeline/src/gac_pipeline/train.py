"""Training of stages 2 and 3: ``train_stage2(cfg)`` and ``train_stage3(cfg)`` through ``fit_run``.

Both build a :class:`~gac_pipeline.data.PairedDataModule` and a :class:`~gac_pipeline.task.GACTask` from
the typed config and hand them to :func:`eo_common.training.fit_run`, which applies the rerun rule,
writes ``config.yaml`` and ``summary.json`` and keeps ``checkpoints/best.ckpt`` (stage 2: highest
``val/psnr``; stage 3: lowest ``val/sar_edge``) and ``checkpoints/last.ckpt`` (every validation, and
every ``--save_every`` optimiser steps). At the end the LoRA adapters of the best checkpoint are written
with PEFT into ``peft_adapter/`` (``PeftModel.from_pretrained(backbone, <run>/peft_adapter)`` loads them).

``--resume`` continues from ``last.ckpt``. From an end-of-epoch checkpoint the resumed run equals an
uninterrupted one (weights and metrics); a checkpoint written mid-epoch (``--val_every`` /
``--save_every`` inside an epoch) resumes at the next epoch boundary's data order, as Lightning does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from eo_common.errors import InputError
from eo_common.io import atomic_torch_save
from eo_common.runs import read_config
from eo_common.training import fit_run

from gac_pipeline.config import TRAIN_METRICS, Stage2Config, Stage3Config
from gac_pipeline.data import PairedDataModule
from gac_pipeline.lora import export_peft_adapter, merge_lora
from gac_pipeline.model import GrounderConfig, RefinerConfig
from gac_pipeline.task import (
    SELECTION,
    GACTask,
    network_from_checkpoint,
    read_stage_checkpoint,
    resolve_stage_checkpoint,
)

__all__ = ["train_stage2", "train_stage3", "export_merged", "stage2_run_stage1_dir"]

PEFT_DIR = "peft_adapter"
_HEADLINE = TRAIN_METRICS


class _PeftExport(L.Callback):
    """At the end of training, write the LoRA adapters of the best checkpoint with PEFT."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def on_fit_end(self, trainer: L.Trainer, pl_module: GACTask) -> None:
        if trainer.global_rank != 0 or not pl_module.model.config.use_lora:
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            own = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
            pl_module.model.load_state_dict(own, strict=False)
        export_peft_adapter(pl_module.model.backbone, pl_module.model.build_base, self.out_dir)


def _periodic_checkpoint(every: int, run_dir: Path) -> list[L.Callback]:
    if every <= 0:
        return []
    from lightning.pytorch.callbacks import ModelCheckpoint

    return [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="periodic",
            every_n_train_steps=every,
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        )  # fmt: skip
    ]


def _datamodule(cfg: Stage2Config | Stage3Config, stage1_dir: Path) -> PairedDataModule:
    data = cfg.data
    dm = PairedDataModule(
        data.root, stage1_dir, data.train_split, data.val_split, data.max_tiles,
        data.batch_size, data.workers,
    )  # fmt: skip
    dm.check_inputs()  # before the (slow) model build: a bad input costs seconds, not minutes
    return dm


def _fit(task: GACTask, dm: PairedDataModule, cfg: Any, command: str, export: bool) -> dict:
    monitor, mode = SELECTION[task.kind]
    run_dir = cfg.run.run_dir
    callbacks = _periodic_checkpoint(cfg.optim.save_every_n_steps, run_dir)
    extra: dict[str, Any] = {
        "trainable_params": sum(p.numel() for p in task.parameters() if p.requires_grad),
        "network_params": sum(p.numel() for p in task.model.parameters()),
    }
    if export and task.model.config.use_lora:
        callbacks.append(_PeftExport(run_dir / PEFT_DIR))
        extra["peft_adapter"] = str(Path(run_dir).resolve() / PEFT_DIR)
    return fit_run(
        task, dm, cfg, command=command, monitor=monitor, mode=mode, headline=_HEADLINE,
        extra_callbacks=callbacks, extra=extra, plot_metrics=("loss", "psnr", "sar_edge"),
        num_sanity_val_steps=0, enable_model_summary=False,
    )  # fmt: skip


def _weights(model: Any) -> dict[str, Any]:
    source = model.weight_source
    return {
        "backbone_checkpoint": str(model.backbone_checkpoint) if source == "file" else None,
        "pretrained": source == "hub",
    }


def train_stage2(cfg: Stage2Config) -> dict:
    """Train stage 2 (``gac-stage2``); returns the run's ``summary.json`` record."""
    if cfg.data.stage1_dir is None:
        raise InputError("data.stage1_dir: required (give --stage1_dir, the gac-stage1 run folder)")
    dm = _datamodule(cfg, Path(cfg.data.stage1_dir))
    m = cfg.model
    network = RefinerConfig(
        backbone=m.backbone, use_s1=m.use_s1, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
        lora_targets=m.lora_targets, lora_dropout=m.lora_dropout, load_in_8bit=m.load_in_8bit,
        use_lora=m.use_lora, init_seed=cfg.run.seed, img_size=m.img_size, **_weights(m),
    )  # fmt: skip
    loss = cfg.loss
    task = GACTask(
        "stage2", network.to_dict(),
        loss_weights={"l1": loss.l1_weight, "msssim": loss.msssim_weight, "lpips": loss.lpips_weight},
        lpips_weights=None if loss.lpips_weights is None else str(loss.lpips_weights),
        **cfg.optim.hparams(),
    )  # fmt: skip
    summary = _fit(task, dm, cfg, "gac-stage2", cfg.export_peft)
    if cfg.export_merged is not None and summary:
        best = summary["paths"]["best_checkpoint"]
        summary["paths"]["merged"] = str(export_merged(best, cfg.export_merged))
    return summary


def stage2_run_stage1_dir(stage2_checkpoint: str | Path) -> Path | None:
    """The ``data.stage1_dir`` of the gac-stage2 run a checkpoint belongs to (its ``config.yaml``)."""
    ckpt = resolve_stage_checkpoint(stage2_checkpoint)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    value = ((read_config(run_dir) or {}).get("data") or {}).get("stage1_dir")
    return None if value in (None, "") else Path(value)


def train_stage3(cfg: Stage3Config) -> dict:
    """Train stage 3 (``gac-stage3``); returns the run's ``summary.json`` record.

    Without ``--stage1_dir`` the stage-1 folder of the stage-2 run is used (from its ``config.yaml``).
    """
    m = cfg.model
    stage2 = read_stage_checkpoint(m.stage2_checkpoint, expect_kind="stage2")["path"]
    stage1_dir = cfg.data.stage1_dir or stage2_run_stage1_dir(stage2)
    if stage1_dir is None:
        raise InputError(
            "data.stage1_dir: give --stage1_dir (the gac-stage1 run folder); the stage-2 checkpoint "
            f"{stage2} is not inside a gac-stage2 run folder that names one"
        )
    dm = _datamodule(cfg, Path(stage1_dir))
    network = GrounderConfig(
        model_size=m.model_size, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
        lora_cross_attention_only=m.lora_cross_attention_only, lora_dropout=m.lora_dropout,
        use_lora=m.use_lora, init_seed=cfg.run.seed, **_weights(m),
    )  # fmt: skip
    loss = cfg.loss
    task = GACTask(
        "stage3", network.to_dict(),
        loss_weights={"l1": loss.l1_weight, "edge": loss.edge_weight, "cycle": loss.cycle_weight},
        stage2_checkpoint=str(stage2),
        lpips_weights=None if loss.lpips_weights is None else str(loss.lpips_weights),
        **cfg.optim.hparams(),
    )  # fmt: skip
    return _fit(task, dm, cfg, "gac-stage3", cfg.export_peft)


def export_merged(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Merge the LoRA adapters of a stage checkpoint into a float copy of the network and save it
    whole (``{"kind", "model_config", "merged_lora_layers", "state_dict"}``) to ``out_path``.

    The network is rebuilt without int8 layers (merging needs float weights); after the merge it has
    no LoRA wrappers, so the file loads into a plain backbone + head.
    """
    ckpt = read_stage_checkpoint(checkpoint)
    hp = ckpt["hyper_parameters"]
    overrides = {"load_in_8bit": False} if hp["kind"] == "stage2" else {}
    network = network_from_checkpoint(ckpt, **overrides)
    merged = merge_lora(network)
    return atomic_torch_save(
        {
            "kind": hp["kind"],
            "model_config": {**hp["model_config"], **overrides},
            "merged_lora_layers": merged,
            "state_dict": network.state_dict(),
        },
        out_path,
    )
