"""Train stage: one :class:`risk_mapping.task.RiskModule` per ensemble seed, each via ``fit_run``.

Each seed of ``inference.ensemble_seeds`` (or the top-level ``seed``) trains in
``<output_dir>/train/seed<k>/``, an ordinary eolab training run folder written by
:func:`eo_common.training.fit_run`: ``config.yaml``, ``summary.json`` (best ``val/kappa``),
``metrics.csv``, ``training_curves.png``, ``checkpoints/best.ckpt`` (by validation kappa) and
``last.ckpt``, plus ``smp_unet/`` (the network through smp's ``save_pretrained`` when it can be
expressed as a plain smp U-Net, see :func:`risk_mapping.model.to_smp_unet`).

Resuming is exact: a seed whose ``summary.json`` says ``finished`` is skipped; an interrupted one
continues from its ``last.ckpt`` (``fit_run`` with ``resume``), and :class:`eo_common.training.EpochSeed`
re-seeds Python, NumPy and torch from ``(seed, epoch)`` at every epoch, which also fixes the training
loader's shuffling (it draws from the global generator, :mod:`risk_mapping.data`). The time budget
(``time_budget_s``) is split evenly over the seeds.

Example:
    >>> checkpoints = train_models(cfg, "runs/risk/prepare", "runs/risk/train")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from eo_common.config import config_to_dict
from eo_common.normalize import BandStats
from eo_common.runs import read_summary, run_status

from risk_mapping.config import RiskConfig

__all__ = ["ensemble_seeds", "checkpoint_paths", "seed_config", "train_one", "train_models"]

HEADLINE = ("val/kappa", "val/kappa_quadratic", "val/loss", "val/per_class/medium/precision")


def ensemble_seeds(cfg: RiskConfig) -> list[int]:
    """Seeds to train: ``inference.ensemble_seeds`` or ``[seed]``."""
    return list(cfg.inference.ensemble_seeds) or [cfg.seed]


def checkpoint_paths(train_dir: str | os.PathLike, cfg: RiskConfig) -> list[Path]:
    """Best checkpoint of every ensemble member (``seed<k>/checkpoints/best.ckpt``)."""
    out = []
    for seed in ensemble_seeds(cfg):
        summary = read_summary(Path(train_dir) / f"seed{seed}") or {}
        best = (summary.get("paths") or {}).get("best_checkpoint")
        out.append(Path(best) if best else Path(train_dir) / f"seed{seed}/checkpoints/best.ckpt")
    return out


def seed_config(cfg: RiskConfig, train_dir: Path, seed: int, budget_s: float) -> RiskConfig:
    """The run config of one ensemble member: its folder, its seed, always ``resume``."""
    return cfg.with_run(
        output_dir=train_dir / f"seed{seed}",
        name="",
        seed=seed,
        resume=True,
        overwrite=False,
        time_budget_s=budget_s,
        stages="train",
        force_recreate=False,
    )


def train_one(
    cfg: RiskConfig,
    prepare_dir: str | os.PathLike,
    train_dir: str | os.PathLike,
    seed: int,
    *,
    budget_s: float = 0.0,
) -> Path:
    """Train (or continue, or skip when finished) the model of one seed; return its best checkpoint."""
    from eo_common.training import fit_run, seed_everything

    from risk_mapping.data import RiskDataModule
    from risk_mapping.task import RiskModule

    prepare_dir, train_dir = Path(prepare_dir), Path(train_dir)
    run_dir = train_dir / f"seed{seed}"
    if run_status(run_dir) == "finished":
        best = ((read_summary(run_dir) or {}).get("paths") or {}).get("best_checkpoint")
        if best and Path(best).is_file():
            return Path(best)
    scfg = seed_config(cfg, train_dir, seed, budget_s)
    seed_everything(seed)  # the initial weights depend on the seed only, not on earlier work
    datamodule = RiskDataModule(scfg, prepare_dir)
    datamodule.check_inputs()
    stats = BandStats.load(prepare_dir / "band_stats.json")
    t = cfg.training
    task = RiskModule(
        model_config=config_to_dict(cfg.model),
        in_channels=datamodule.in_channels,
        band_mean=stats.mean.tolist(),
        band_std=stats.std.tolist(),
        focal_gamma=t.focal_gamma if t.use_focal_loss else 0.0,
        class_weights=t.class_weights,
        label_smoothing=t.label_smoothing,
        coral_weight=t.coral_weight,
        use_ordinal=t.use_ordinal_loss,
        head=cfg.inference.head,
        pipeline_config=config_to_dict(cfg),
        band_names=stats_band_names(prepare_dir),
        **scfg.optim.hparams(),
    )
    summary = fit_run(
        task,
        datamodule,
        scfg,
        command="risk-pipeline",
        monitor="val/kappa",
        mode="max",
        headline=HEADLINE,
        plot_metrics=("loss", "kappa"),
        enable_model_summary=False,
        extra={"stage": "train", "ensemble_seed": seed},
    )
    best = Path(summary["paths"]["best_checkpoint"])
    _export(best, run_dir / "smp_unet")
    return best


def stats_band_names(prepare_dir: Path) -> list[str] | None:
    """Band names recorded by the prepare stage (None for older prepare folders)."""
    import json

    path = prepare_dir / "dataset_summary.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("band_names")


def _export(checkpoint: Path, out_dir: Path) -> Path | None:
    """The best checkpoint's network through smp's ``save_pretrained`` (when expressible)."""
    from risk_mapping.model import export_smp
    from risk_mapping.predict import load_models

    model = load_models([checkpoint])[0]
    return export_smp(
        model.net,
        out_dir,
        band_mean=model.stats.mean.tolist(),
        band_std=model.stats.std.tolist(),
        band_names=model.config.get("band_names"),
    )


def train_models(
    cfg: RiskConfig, prepare_dir: str | os.PathLike, train_dir: str | os.PathLike
) -> list[Path]:
    """Train one model per ensemble seed (``time_budget_s`` split evenly); their best checkpoints."""
    seeds = ensemble_seeds(cfg)
    per_seed = cfg.time_budget_s / len(seeds) if cfg.time_budget_s else 0.0
    return [train_one(cfg, prepare_dir, train_dir, s, budget_s=per_seed) for s in seeds]
