"""The training core shared by stages 2 and 3 (Lightning, through :mod:`eo_common.training`).

:class:`GACModule` wraps a :class:`~gac_pipeline.model.Stage2Refiner` or a
:class:`~gac_pipeline.model.Stage3Grounder` with its loss and streaming validation metrics. Its checkpoints
hold only what trains (LoRA adapters, heads, the cycle predictor) plus the optimiser state: a few MB even for
a 300M-parameter backbone, which is rebuilt from the stored config (registry name + weight source, or the
init seed of a random-init backbone). :func:`fit` runs a stage with validation every ``--val-every``
optimiser steps, ``best.ckpt`` by the stage's selection metric, ``last.ckpt`` (validation and every
``--save-every`` steps) for ``--resume``, and early stopping.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from eo_common.io import atomic_torch_save
from eo_common.training import (
    EOModule,
    TrainConfig,
    build_trainer,
    prepare_run_dir,
    resume_checkpoint,
    seed_everything,
)
from torch.utils.data import DataLoader

from gac_pipeline.data import PairedTileDataset, build_catalogue
from gac_pipeline.evaluate import StageMetrics
from gac_pipeline.losses import build_stage2_loss, build_stage3_loss
from gac_pipeline.model import (
    CycleSARPredictor,
    Stage2Config,
    Stage2Refiner,
    Stage3Config,
    Stage3Grounder,
    merge_lora,
)

__all__ = [
    "FitConfig",
    "GACModule",
    "load_module",
    "load_stage_model",
    "export_merged",
    "make_loaders",
    "fit",
    "add_fit_args",
    "fit_config_from_args",
]

SELECTION = {"stage2": ("val/psnr", "max"), "stage3": ("val/sar_edge", "min")}


@dataclass
class FitConfig:
    """Training flags common to ``gac-stage2`` and ``gac-stage3`` (one field per flag)."""

    data_dir: Path | None = None
    stage1_dir: Path | None = None
    output_dir: Path = Path("runs/gac_stage2")
    max_tiles: int | None = None
    train_split: str = "train"
    val_split: str = "validation"
    batch_size: int = 4
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    optim: str = "adamw"
    epochs: int = 10
    val_every: int = 0
    save_every: int = 0
    early_stopping: bool = True
    early_stopping_patience: int = 5
    resume: bool = False
    seed: int = 0
    precision: str = "32"
    devices: str = "auto"
    num_workers: int = 0
    lpips_weights: Path | None = None
    max_time_s: float | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class GACModule(EOModule):
    """Lightning module of stage 2 (``kind="stage2"``) or stage 3 (``kind="stage3"``).

    Batches are the dicts of :class:`gac_pipeline.data.PairedTileDataset`. Stage 3 computes opt_v2 on the
    fly with the frozen stage-2 model loaded from ``stage2_checkpoint``.

    Args:
        kind: ``"stage2"`` or ``"stage3"``.
        model_config: fields of :class:`Stage2Config` or :class:`Stage3Config`.
        loss_weights: stage 2: l1, msssim, lpips; stage 3: l1, edge, cycle.
        lr, weight_decay, optim: optimiser (``"adamw"`` or ``"adamw8bit"``, bitsandbytes).
        stage2_checkpoint: stage 3 only.
        lpips_weights: local LPIPS backbone weights (loss term and metric); None = LPIPS off.
    """

    def __init__(
        self,
        kind: str,
        model_config: dict,
        loss_weights: dict | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        optim: str = "adamw",
        stage2_checkpoint: str | None = None,
        lpips_weights: str | None = None,
    ):
        super().__init__()
        if kind not in SELECTION:
            raise ValueError(f"kind must be 'stage2' or 'stage3', got {kind!r}")
        if optim not in ("adamw", "adamw8bit"):
            raise ValueError(f"--optim must be adamw or adamw8bit, got {optim!r}")
        self.save_hyperparameters()
        self.kind = kind
        weights = dict(loss_weights or {})
        if kind == "stage2":
            self.model = Stage2Refiner(Stage2Config(**model_config))
            self.loss = build_stage2_loss(
                weights.get("l1", 1.0),
                weights.get("msssim", 0.2),
                weights.get("lpips", 0.1),
                lpips_weights,
            )
            self.refiner = None
        else:
            if stage2_checkpoint is None:
                raise ValueError("stage 3 needs --stage2-checkpoint (the trained stage-2 model)")
            self.model = Stage3Grounder(Stage3Config(**model_config))
            self.cycle = CycleSARPredictor()
            self.loss = build_stage3_loss(
                self.cycle,
                weights.get("l1", 1.0),
                weights.get("edge", 0.1),
                weights.get("cycle", 0.1),
            )
            refiner = load_stage_model(stage2_checkpoint)
            self.refiner = refiner.eval().requires_grad_(False)
        self.val_metrics = StageMetrics(lpips_weights)
        self.strict_loading = False

    # ------------------------------------------------------------------ forward and losses
    def opt_v2(self, batch: dict) -> torch.Tensor:
        """opt_v2 of a batch: the stage-2 model's output (stage 3: frozen, no gradient)."""
        if self.kind == "stage2":
            return self.model(batch["opt_v1"], batch["s1"] if self.model.config.use_s1 else None)
        with torch.no_grad():
            s1 = batch["s1"] if self.refiner.config.use_s1 else None
            return self.refiner(batch["opt_v1"], s1)

    def forward(self, batch: dict) -> torch.Tensor:
        opt_v2 = self.opt_v2(batch)
        if self.kind == "stage2":
            return opt_v2
        return self.model(opt_v2, batch["s1_db"], batch["s1"])

    def compute_losses(self, batch: dict, stage: str):
        pred = self(batch)
        target = batch["target"]
        if self.kind == "stage2":
            total, parts = self.loss(pred, target)
        else:
            total, parts = self.loss(
                l1=(pred, target), edge=(pred, batch["s1"]), cycle=(pred, target, batch["s1"])
            )
        return total, parts, pred

    def update_metrics(self, stage: str, batch: dict, outputs: Any) -> None:
        if stage == "val" and outputs is not None:
            self.val_metrics.update(outputs, batch["target"], batch["s1"])

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.hparams.optim == "adamw8bit":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(
                params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
            )
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ small checkpoints
    def trainable_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = sorted(self.trainable_names() - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(
                f"checkpoint lacks trained weights {missing[:5]} (built with other settings?)"
            )


def load_module(path: str | Path, **overrides: Any) -> GACModule:
    """Rebuild a :class:`GACModule` from a (small) stage-2/3 checkpoint: frozen parts from the stored
    config, trained parts from the file. ``overrides`` replace stored hyper-parameters, e.g.
    ``stage2_checkpoint=...`` when the stage-2 checkpoint a stage-3 run used has moved.

    Raises:
        FileNotFoundError: no such file. ValueError: not a gac_pipeline stage checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if (
        not isinstance(ckpt, dict)
        or "hyper_parameters" not in ckpt
        or "kind" not in ckpt["hyper_parameters"]
    ):
        raise ValueError(
            f"{path}: not a gac_pipeline stage-2/3 checkpoint (no hyper_parameters.kind)"
        )
    hp = {**ckpt["hyper_parameters"], **overrides}
    hp["lpips_weights"] = None  # LPIPS is a loss/metric detail, not needed to predict
    hp["loss_weights"] = {**(hp.get("loss_weights") or {}), "lpips": 0.0}
    module = GACModule(**hp)
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=False)
    return module.eval()


def load_stage_model(path: str | Path, **overrides: Any) -> Stage2Refiner | Stage3Grounder:
    """The trained network of a stage checkpoint (a Stage2Refiner or Stage3Grounder), in eval mode."""
    return load_module(path, **overrides).model.eval()


def export_merged(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Merge the LoRA adapters of a stage checkpoint into a float copy of the backbone and save the whole
    network (``{"kind", "model_config", "state_dict"}``) to ``out_path``, e.g. for deployment.

    The model is rebuilt without int8 layers (merging needs float weights) and without LoRA wrappers
    after the merge, so the file loads into a plain backbone + head.
    """
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    hp = dict(ckpt["hyper_parameters"])
    config = dict(hp["model_config"])
    if hp["kind"] == "stage2":
        config["load_in_8bit"] = False
    hp["model_config"] = config
    hp["lpips_weights"] = None
    hp["loss_weights"] = {**(hp.get("loss_weights") or {}), "lpips": 0.0}
    module = GACModule(**hp)
    module.load_state_dict(ckpt["state_dict"], strict=False)
    merged = merge_lora(module.model)
    atomic_torch_save(
        {
            "kind": hp["kind"],
            "model_config": config,
            "merged_lora_layers": merged,
            "state_dict": module.model.state_dict(),
        },
        out_path,
    )
    return Path(out_path)


def make_loaders(
    config: FitConfig,
) -> tuple[DataLoader, DataLoader, PairedTileDataset, PairedTileDataset]:
    """Train/val loaders of paired tiles (S1, opt_v1 from ``stage1_dir``, target)."""
    if config.data_dir is None or config.stage1_dir is None:
        raise ValueError(
            "give --data-dir (BigEarthNet v2 root) and --stage1-dir (gac-stage1 output)"
        )
    train_ds = PairedTileDataset(
        build_catalogue(config.data_dir, config.train_split, config.max_tiles), config.stage1_dir
    )
    val_ds = PairedTileDataset(
        build_catalogue(config.data_dir, config.val_split, config.max_tiles), config.stage1_dir
    )
    gen = torch.Generator().manual_seed(config.seed)
    train = DataLoader(
        train_ds, batch_size=config.batch_size, shuffle=True, num_workers=config.num_workers, generator=gen,
        drop_last=len(train_ds) > config.batch_size,
    )  # fmt: skip
    val = DataLoader(
        val_ds, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers
    )
    return train, val, train_ds, val_ds


def fit(
    module: GACModule, config: FitConfig, loaders: tuple[DataLoader, DataLoader] | None = None
) -> dict:
    """Train one stage. Returns ``{"run_dir", "best_checkpoint", "last_checkpoint", "best_score", "seconds",
    "steps", "trainable_params", "total_params"}``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    t0 = time.perf_counter()
    if loaders is None:
        train, val, _, _ = make_loaders(config)
    else:
        train, val = loaders
    run_dir = prepare_run_dir(
        Path(config.output_dir).parent,
        Path(config.output_dir).name,
        {**asdict(config), **module.hparams},
    )
    monitor, mode = SELECTION[module.kind]
    tc = TrainConfig(
        seed=config.seed, max_epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
        batch_size=config.batch_size, num_workers=config.num_workers,
        accumulate_grad_batches=config.grad_accum_steps, precision=config.precision, devices=config.devices,
        early_stop_patience=config.early_stopping_patience if config.early_stopping else 0,
        output_dir=run_dir.parent, experiment_name=run_dir.name, resume="last" if config.resume else None,
    )  # fmt: skip
    extra = []
    if config.save_every > 0:
        extra.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="periodic",
                every_n_train_steps=config.save_every,
                save_top_k=1,
                save_last=True,
                enable_version_counter=False,
            )  # fmt: skip
        )
    kwargs: dict[str, Any] = {"enable_progress_bar": config.progress, "num_sanity_val_steps": 0}
    if config.val_every > 0:
        kwargs["val_check_interval"] = config.val_every * config.grad_accum_steps
        kwargs["check_val_every_n_epoch"] = None
        kwargs["max_steps"] = -1
    if config.max_time_s is not None:
        kwargs["max_time"] = {"seconds": max(1, int(config.max_time_s))}
    trainer = build_trainer(
        tc, run_dir, monitor=monitor, mode=mode, extra_callbacks=extra, **kwargs
    )
    ckpt = resume_checkpoint(run_dir, tc.resume)
    trainer.fit(module, train, val, ckpt_path=ckpt)
    best = trainer.checkpoint_callback.best_model_path or None
    score = trainer.checkpoint_callback.best_model_score
    return {
        "run_dir": run_dir,
        "best_checkpoint": Path(best) if best else None,
        "last_checkpoint": run_dir / "checkpoints" / "last.ckpt",
        "best_score": None if score is None else float(score),
        "monitor": monitor,
        "seconds": time.perf_counter() - t0,
        "steps": trainer.global_step,
        "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in module.model.parameters()),
    }


def add_fit_args(p: argparse.ArgumentParser, default_output: str) -> None:
    """The training flags shared by gac-stage2 and gac-stage3."""
    d = FitConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", type=Path, help="BigEarthNet v2 root (targets and S1)")
    g.add_argument("--stage1-dir", type=Path, help="gac-stage1 --output-dir (opt_v1 GeoTIFFs)")
    g.add_argument("--output-dir", type=Path, default=Path(default_output), help="run folder")
    g.add_argument("--max-tiles", type=int, default=None, help="at most N tiles per split")
    g.add_argument("--train-split", default=d.train_split)
    g.add_argument("--val-split", default=d.val_split)
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument(
        "--grad-accum-steps",
        type=int,
        default=d.grad_accum_steps,
        help="batches per optimiser step",
    )
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument(
        "--optim", default=d.optim, choices=["adamw", "adamw8bit"], help="adamw8bit: bitsandbytes"
    )
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument(
        "--val-every",
        type=int,
        default=d.val_every,
        help="validate every N optimiser steps (0: per epoch)",
    )
    t.add_argument(
        "--save-every",
        type=int,
        default=d.save_every,
        help="also write last.ckpt every N steps (0: off)",
    )
    t.add_argument(
        "--early-stopping", action=argparse.BooleanOptionalAction, default=d.early_stopping
    )
    t.add_argument(
        "--early-stopping-patience", type=int, default=d.early_stopping_patience, help="validations"
    )
    t.add_argument(
        "--resume", action="store_true", help="continue from <output-dir>/checkpoints/last.ckpt"
    )
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--precision", default=d.precision, choices=["32", "bf16-mixed", "16-mixed"])
    t.add_argument("--devices", default=d.devices, help="auto, 1, 2, '0,1' (Lightning)")
    t.add_argument("--num-workers", type=int, default=d.num_workers)
    t.add_argument("--lpips-weights", type=Path, default=None,
                   help="local LPIPS backbone weights (e.g. alexnet-owt-7be5be79.pth); without it LPIPS is off")  # fmt: skip
    t.add_argument(
        "--max-time-s", type=float, default=None, help="stop training after this wall-clock time"
    )
    t.add_argument("--no-progress", action="store_true")


def fit_config_from_args(ns: argparse.Namespace) -> FitConfig:
    return FitConfig(
        data_dir=ns.data_dir, stage1_dir=ns.stage1_dir, output_dir=ns.output_dir, max_tiles=ns.max_tiles,
        train_split=ns.train_split, val_split=ns.val_split, batch_size=ns.batch_size,
        grad_accum_steps=ns.grad_accum_steps, lr=ns.lr, weight_decay=ns.weight_decay, optim=ns.optim,
        epochs=ns.epochs, val_every=ns.val_every, save_every=ns.save_every, early_stopping=ns.early_stopping,
        early_stopping_patience=ns.early_stopping_patience, resume=ns.resume, seed=ns.seed,
        precision=ns.precision, devices=ns.devices, num_workers=ns.num_workers, lpips_weights=ns.lpips_weights,
        max_time_s=ns.max_time_s, progress=not ns.no_progress,
    )  # fmt: skip


def weight_source(ns: argparse.Namespace) -> dict:
    """--backbone-checkpoint / --pretrained / --random-init -> model-config fields."""
    return {
        "backbone_checkpoint": None
        if ns.backbone_checkpoint is None
        else str(ns.backbone_checkpoint),
        "pretrained": bool(ns.pretrained),
    }


def add_weight_args(p: argparse.ArgumentParser, what: str) -> None:
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--backbone-checkpoint", type=Path, help=f"local {what} weights (.pt)")
    w.add_argument(
        "--pretrained", action="store_true", help=f"download {what} weights from the hub"
    )
    w.add_argument(
        "--random-init", action="store_true", help="random frozen backbone (tests and demos only)"
    )


def run_main(build: Any, argv: Sequence[str] | None, prog: str) -> int:
    """Shared CLI wrapper: errors become one line on stderr and exit code 2."""
    import sys

    try:
        build(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ += ["seed_everything"]
