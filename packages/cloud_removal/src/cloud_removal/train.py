"""``cr-train``: train the SAR-guided cloud-removal network (flags spelled like ``train_CR_kaggle.py``).

Example (the seed command of the researchers, unchanged)::

    cr-train --model_name CrossAttention --max_epochs 90 --batch_sz 8 --lr 1e-4 --weight_decay 1e-4 \\
        --lr_scheduler plateau --lr_patience 5 --early_stop_patience 15 --grad_clip 1.0 \\
        --warmup_epochs 2 --use_cross_attn --use_fft_loss --fft_weight 0.1 --use_gradient_loss \\
        --gradient_weight 0.1 --use_contrastive_loss --contrastive_weight 0.05 \\
        --perceptual_weight 0.1 --l1_weight 1.0 --use_cloud_focused_loss --cloud_weight_factor 2 \\
        --crop_size 128 --load_size 256 --data_list_filepath data.csv \\
        --input_data_folder /data/SEN12MS-CR --save_model_dir runs --experiment_name v4 \\
        --train_from_scratch --notes "first measured run"

and ``cr-train --demo`` (the sample dataset, a few minutes on CPU).

Flag spellings: ``--batch_sz`` and eo_common's ``--batch_size`` both set ``batch_size``;
``--save_model_dir`` and ``--output_dir`` both set ``output_dir``. Booleans accept ``--flag``,
``--flag true/false`` and ``--no-flag``. Every flag is one field of :class:`CRTrainConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from eo_common.io import atomic_save_json
from eo_common.training import (
    TrainConfig,
    add_training_args,
    build_trainer,
    prepare_run_dir,
    resume_checkpoint,
    seed_everything,
)

from .data import AugmentConfig, CloudRemovalDataError, CloudRemovalDataModule, parse_progressive
from .losses import LossConfig
from .model import ModelConfig, add_model_args, str2bool
from .task import CloudRemovalTask

__all__ = ["CRTrainConfig", "build_parser", "config_from_args", "train", "main"]


@dataclass
class CRTrainConfig:
    """Everything ``cr-train`` needs; one field per flag (nested configs group the fields).

    Attributes:
        train: the common eo_common training settings (``--seed``, ``--max_epochs``, ``--lr``, ...).
        model: :class:`ModelConfig`; ``model_name`` is the registry name.
        loss: :class:`LossConfig`.
        input_data_folder, data_list_filepath: dataset root and GLF-CR data list (default
            ``<input_data_folder>/data.csv``).
        load_size, crop_size, eval_crop_size: see :class:`~cloud_removal.data.SEN12MSCRDataset`.
        normalization: ``glf-cr`` (default), ``dsen2-cr`` or ``uncrtaints``.
        cloud_mask: ``difference`` or ``s2cloudless``.
        augment: switch the training augmentations on.
        synthetic_cloud_prob: probability of synthetic clouds over a clear target per training item.
        progressive: crop schedule ``"128:30,192:30,256:30"`` (empty: fixed ``crop_size``).
        hard_example_mining: oversample the worst-PSNR training samples each epoch.
        hard_example_factor: sampling weight of those samples (the worst 25 %).
        lr_patience: plateau scheduler patience (epochs).
        train_from_scratch: random initialisation; False needs ``pretrained_checkpoint``.
        pretrained_checkpoint: weights to start from (a cr-train checkpoint).
        notes: free text stored in ``config.json``.
        demo: use the sample dataset with small CPU settings.
        time_budget_s: stop training after this many seconds (0: no limit).
        limit_train_batches, limit_val_batches: Lightning's limits (1.0 = all).
        threads: torch intra-op threads (0: torch default; 1 is fastest on a shared, loaded CPU).
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    model_name: str = "CrossAttention"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    input_data_folder: Path | None = None
    data_list_filepath: Path | None = None
    load_size: int = 256
    crop_size: int = 128
    eval_crop_size: int = 0
    normalization: str = "glf-cr"
    cloud_mask: str = "difference"
    augment: bool = True
    synthetic_cloud_prob: float = 0.0
    progressive: str = ""
    hard_example_mining: bool = False
    hard_example_factor: float = 3.0
    lr_patience: int = 5
    train_from_scratch: bool = True
    pretrained_checkpoint: Path | None = None
    notes: str = ""
    demo: bool = False
    time_budget_s: float = 0.0
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    threads: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["train"] = self.train.to_dict()
        for k in ("input_data_folder", "data_list_filepath", "pretrained_checkpoint"):
            out[k] = None if out[k] is None else str(out[k])
        return out


_BOOL = {"type": str2bool, "nargs": "?", "const": True}


def _bool_flag(group: argparse._ArgumentGroup, name: str, default: bool, help_text: str) -> None:
    group.add_argument(
        f"--{name}", default=default, help=f"{help_text} (default {default})", **_BOOL
    )
    group.add_argument(f"--no-{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The ``cr-train`` argument parser."""
    p = argparse.ArgumentParser(
        prog="cr-train",
        description="Train the SAR-guided cloud-removal network on SEN12MS-CR (GLF-CR data list).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_training_args(p)
    p.set_defaults(
        batch_size=8,
        max_epochs=30,
        lr=1e-4,
        num_workers=2,
        lr_scheduler="plateau",
        experiment_name="cloud_removal",
        early_stop_patience=15,
    )
    t = p.add_argument_group("cr-train aliases")
    t.add_argument("--batch_sz", dest="batch_size", type=int, help="alias of --batch_size")
    t.add_argument("--save_model_dir", dest="output_dir", type=Path, help="alias of --output_dir")
    t.add_argument(
        "--lr_patience", type=int, default=5, help="plateau scheduler patience (default 5)"
    )
    add_model_args(p)
    d = p.add_argument_group("data")
    d.add_argument("--input_data_folder", type=Path, help="dataset root (SEN12MS-CR layout)")
    d.add_argument(
        "--data_list_filepath",
        type=Path,
        help="GLF-CR data list CSV (default <input_data_folder>/data.csv)",
    )
    d.add_argument(
        "--load_size",
        type=int,
        default=256,
        help="centre crop of each tile (default 256; 0 = as stored)",
    )
    d.add_argument("--crop_size", type=int, default=128, help="random training crop (default 128)")
    d.add_argument(
        "--eval_crop_size", type=int, default=0, help="centre crop for validation (0 = crop_size)"
    )
    d.add_argument(
        "--normalization", default="glf-cr", choices=("glf-cr", "dsen2-cr", "uncrtaints")
    )
    d.add_argument(
        "--cloud_mask",
        default="difference",
        choices=("difference", "s2cloudless"),
        help="per-sample cloud mask: cloudy-vs-clear difference or the s2cloudless detector",
    )
    _bool_flag(d, "augment", True, "flips, 90-degree rotations, brightness/contrast jitter, noise")
    d.add_argument(
        "--synthetic_cloud_prob",
        type=float,
        default=0.0,
        help="probability of procedural clouds over the clear target (default 0)",
    )
    d.add_argument(
        "--progressive", default="", help="crop schedule size:epochs,..., e.g. 128:30,192:30,256:30"
    )
    _bool_flag(
        d, "hard_example_mining", False, "oversample the worst-PSNR training samples each epoch"
    )
    d.add_argument("--hard_example_factor", type=float, default=3.0)
    lo = p.add_argument_group("losses")
    ld = LossConfig()
    for name, wname, help_text in (
        ("use_l1_loss", "l1_weight", "L1"),
        (
            "use_perceptual_loss",
            "perceptual_weight",
            "VGG perceptual (needs --vgg_weights for meaning)",
        ),
        ("use_fft_loss", "fft_weight", "FFT"),
        ("use_gradient_loss", "gradient_weight", "Sobel gradient"),
        ("use_contrastive_loss", "contrastive_weight", "optical/SAR contrastive"),
        ("use_texture_loss", "texture_weight", "Gram-matrix texture"),
        ("use_cloud_focused_loss", "cloud_focused_weight", "cloud-focused L1"),
        ("use_confidence_loss", "confidence_weight", "confidence-map BCE vs cloud mask"),
    ):
        _bool_flag(lo, name, getattr(ld, name), f"{help_text} loss term")
        lo.add_argument(f"--{wname}", type=float, default=getattr(ld, wname))
    lo.add_argument(
        "--cloud_weight_factor",
        type=float,
        default=ld.cloud_weight_factor,
        help="CloudFocusedLoss pixel weight = 1 + factor x cloud intensity",
    )
    lo.add_argument(
        "--vgg_weights", default=None, help="local VGG16 weights for perceptual/texture losses"
    )
    r = p.add_argument_group("run")
    _bool_flag(
        r, "train_from_scratch", True, "random initialisation (false: --pretrained_checkpoint)"
    )
    r.add_argument("--pretrained_checkpoint", type=Path, default=None)
    r.add_argument("--notes", default="", help="free text stored in config.json")
    r.add_argument(
        "--demo",
        action="store_true",
        help="train on the sample dataset (built from the real samples) for a few CPU minutes",
    )
    r.add_argument(
        "--time_budget_s", type=float, default=0.0, help="stop after this many seconds (0 = none)"
    )
    r.add_argument("--limit_train_batches", type=float, default=1.0)
    r.add_argument("--limit_val_batches", type=float, default=1.0)
    r.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    return p


DEMO_DEFAULTS = {
    "max_epochs": 4,
    "batch_size": 4,
    "load_size": 120,
    "crop_size": 64,
    "eval_crop_size": 112,
    "num_workers": 0,
    "lr": 1e-3,
    "lr_scheduler": "cosine",
    "synthetic_cloud_prob": 0.5,
    "experiment_name": "cr_demo",
    "base_width": 32,
    "threads": 1,
}


def config_from_args(ns: argparse.Namespace, argv: list[str] | None = None) -> CRTrainConfig:
    """Turn parsed flags into a :class:`CRTrainConfig` (``--demo`` fills unset flags with small values)."""
    values = vars(ns).copy()
    if values.get("demo"):
        given = set()
        for a in argv or []:
            if a.startswith("--"):
                given.add(a[2:].split("=")[0].replace("no-", ""))
        given |= {"batch_size"} if "batch_sz" in given else set()
        for k, v in DEMO_DEFAULTS.items():
            if k not in given:
                values[k] = v
        if values.get("input_data_folder") is None:
            from .samples import build_sample_dataset

            values["input_data_folder"] = build_sample_dataset()
    if values.get("input_data_folder") is None:
        raise CloudRemovalDataError("--input_data_folder is required (or use --demo)")
    mfields = {f.name for f in fields(ModelConfig)}
    lfields = {f.name for f in fields(LossConfig)}
    model = ModelConfig(**{k: v for k, v in values.items() if k in mfields})
    loss = LossConfig(**{k: v for k, v in values.items() if k in lfields})
    rest = {
        f.name: values[f.name]
        for f in fields(CRTrainConfig)
        if f.name in values and f.name not in ("train", "model", "loss")
    }
    return CRTrainConfig(train=TrainConfig.from_args(values), model=model, loss=loss, **rest)


def build_datamodule(cfg: CRTrainConfig) -> CloudRemovalDataModule:
    """The data module of a run."""
    return CloudRemovalDataModule(
        cfg.input_data_folder,
        cfg.data_list_filepath,
        batch_size=cfg.train.batch_size,
        num_workers=cfg.train.num_workers,
        load_size=cfg.load_size,
        crop_size=cfg.crop_size,
        eval_crop_size=cfg.eval_crop_size,
        convention=cfg.normalization,
        augment=AugmentConfig(synthetic_cloud_prob=cfg.synthetic_cloud_prob)
        if cfg.augment
        else None,
        cloud_mask=cfg.cloud_mask,
        progressive=parse_progressive(cfg.progressive),
        hard_example_mining=cfg.hard_example_mining,
        hard_example_factor=cfg.hard_example_factor,
        seed=cfg.train.seed,
    )


def build_task(cfg: CRTrainConfig) -> CloudRemovalTask:
    """The Lightning module of a run (optionally initialised from ``pretrained_checkpoint``)."""
    task = CloudRemovalTask.from_configs(
        cfg.model,
        cfg.loss,
        model_name=cfg.model_name,
        convention=cfg.normalization,
        lr_patience=cfg.lr_patience,
        **cfg.train.optimizer_hparams(),
    )
    if not cfg.train_from_scratch:
        if cfg.pretrained_checkpoint is None:
            raise ValueError("--train_from_scratch false needs --pretrained_checkpoint PATH")
        path = Path(cfg.pretrained_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: --pretrained_checkpoint not found")
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        own = task.state_dict()
        compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        task.load_state_dict(compatible, strict=False)
        print(f"initialised {len(compatible)}/{len(own)} tensors from {path}", file=sys.stderr)
    return task


def train(cfg: CRTrainConfig, *, enable_progress_bar: bool = True) -> dict[str, Any]:
    """Run one training; returns a summary (also written to ``<run dir>/summary.json``).

    The best checkpoint by validation PSNR is ``<run dir>/checkpoints/best.ckpt``; ``last.ckpt`` is
    what ``--resume`` continues from.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.train.seed)
    stride = cfg.model.stride
    sizes = [cfg.crop_size, cfg.eval_crop_size] + [s for s, _ in parse_progressive(cfg.progressive)]
    for s in sizes:
        if s and s % stride:
            raise ValueError(
                f"crop size {s} is not divisible by the network stride {stride}; choose a multiple of {stride}"
            )
    dm = build_datamodule(cfg)
    task = build_task(cfg)
    run_dir = prepare_run_dir(cfg.train.output_dir, cfg.train.experiment_name, cfg.to_dict())
    ckpt = resume_checkpoint(run_dir, cfg.train.resume)
    extra: dict[str, Any] = {
        "reload_dataloaders_every_n_epochs": 1,
        "enable_progress_bar": enable_progress_bar,
        "limit_train_batches": _limit(cfg.limit_train_batches),
        "limit_val_batches": _limit(cfg.limit_val_batches),
        "num_sanity_val_steps": 0,
    }
    if cfg.time_budget_s:
        extra["max_time"] = {"seconds": float(cfg.time_budget_s)}
    trainer = build_trainer(cfg.train, run_dir, monitor="val/psnr", mode="max", **extra)
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt)
    seconds = time.perf_counter() - t0
    cb = trainer.checkpoint_callback
    best = (
        float(cb.best_model_score) if cb is not None and cb.best_model_score is not None else None
    )
    best_path = Path(cb.best_model_path) if cb is not None and cb.best_model_path else None
    if best_path is None or not best_path.is_file():  # stopped (time budget) before any validation
        best_path = Path(run_dir) / "checkpoints" / "last.ckpt"
        if not best_path.is_file():
            trainer.save_checkpoint(best_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    summary = {
        "run_dir": str(run_dir),
        "best_val_psnr": best,
        "best_checkpoint": str(best_path),
        "epochs_run": int(trainer.current_epoch),
        "train_seconds": seconds,
        "last_metrics": metrics,
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "normalization": cfg.normalization,
    }
    atomic_save_json(summary, run_dir / "summary.json")
    try:
        from eo_common.viz import plot_training_curves

        plot_training_curves(
            run_dir / "metrics.csv",
            run_dir / "training_curves.png",
            metrics=["loss", "psnr", "psnr_gain"],
        )
    except Exception as exc:  # noqa: BLE001 - a missing plot must not fail a finished training
        print(f"training curves not plotted: {exc}", file=sys.stderr)
    return summary


def _limit(v: float) -> float | int:
    return int(v) if v > 1 else float(v)


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``cr-train``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(ns, argv)
        summary = train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cr-train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("run_dir", "best_val_psnr", "epochs_run")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
