"""``cr-ablate``: what each enhancement is worth, every variant with the same seeds and budget.

The base configuration is everything ``cr-train`` accepts; each variant of ``--configs`` (see
:data:`cloud_removal.config.ABLATIONS`) changes a few ``model.*`` / ``loss.*`` fields of it, and runs
once per seed (``run.seed``, ``run.seed + 1``, ...). The core is :func:`run_configs`, a small function
over complete run configurations:

* every run is identified by :func:`eo_common.runs.config_hash` of its *full resolved* configuration
  (data, model, loss, optimisation, epochs, time budget, seed) and trains in
  ``<ablation>/runs/<variant>_s<seed>_<hash>``; a run whose ``summary.json`` says ``finished`` with that
  hash is reused, one that was killed is resumed, so a rerun with ``--resume`` only trains what is
  missing and never mixes results of another budget;
* the table (``ablation.md``, rewritten atomically after every run) shows the best validation PSNR and
  the SSIM of that epoch, mean ± sample standard deviation over seeds, and each variant's paired
  difference to ``full`` (per-seed differences, then mean ± sd).

Example::

    cr-ablate --demo --max_epochs 2 --seeds 2 --ablation_dir runs/cr_ablation
    cr-ablate --input_data_folder /data/SEN12MS-CR --configs full,no_cross_attn --time_budget_s 3600
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eo_common.config import config_from_dict, config_to_dict
from eo_common.io import atomic_save_json, atomic_write
from eo_common.runs import RunFolder, config_hash, read_summary

from .config import ABLATIONS, CRAblateConfig, CRTrainConfig

__all__ = ["variant_config", "run_configs", "format_table", "ablate"]

Result = dict[str, Any]


def variant_config(
    base: CRTrainConfig, name: str, seed: int, runs_dir: Path | None = None
) -> CRTrainConfig:
    """The cr-train configuration of variant ``name`` with ``seed``; with ``runs_dir``, its run folder
    ``runs_dir/<name>_s<seed>_<hash>`` (resumed if it exists)."""
    values = config_to_dict(base)
    values.pop("ablate", None)
    cfg: CRTrainConfig = config_from_dict(CRTrainConfig, copy.deepcopy(values))
    for key, value in ABLATIONS[name].items():
        group, field_name = key.split(".")
        if not hasattr(getattr(cfg, group), field_name):
            raise ValueError(f"ablation {name!r} names an unknown field {key}")
        setattr(getattr(cfg, group), field_name, value)
    cfg.run.seed = seed
    if runs_dir is not None:
        cfg.run.output_dir = Path(runs_dir)
        cfg.run.name = f"{name}_s{seed}_{config_hash(cfg)[:10]}"
        cfg.run.resume, cfg.run.overwrite = True, False
    return cfg


def _result(summary: dict[str, Any]) -> Result:
    metrics = summary.get("metrics") or {}
    extra = summary.get("extra") or {}
    return {
        "psnr": metrics.get("val/psnr", float("nan")),
        "ssim": metrics.get("val/ssim", float("nan")),
        "psnr_gain": metrics.get("val/psnr_gain", float("nan")),
        "parameters": extra.get("parameters", 0),
        "best_epoch": summary.get("best_epoch"),
        "epochs": summary.get("epochs_run"),
        "seconds": summary.get("seconds"),
        "config_hash": summary.get("config_hash"),
        "run_dir": str(Path(summary.get("paths", {}).get("config", ".")).parent),
    }


def run_configs(
    runs: Sequence[tuple[str, int, CRTrainConfig]],
    *,
    train_fn: Callable[[CRTrainConfig], dict[str, Any]] | None = None,
    after_each: Callable[[dict[str, dict[int, Result]]], None] | None = None,
) -> dict[str, dict[int, Result]]:
    """Train (or reuse) each ``(label, seed, config)``; return ``{label: {seed: result}}``.

    A run is reused when the ``summary.json`` in its folder is ``finished`` with the configuration's
    :func:`~eo_common.runs.config_hash`; otherwise ``train_fn`` (default :func:`cloud_removal.train.train`)
    runs it (resuming a killed run in that folder).
    """
    if train_fn is None:
        from .train import train as train_fn
    results: dict[str, dict[int, Result]] = {}
    for label, seed, cfg in runs:
        summary = read_summary(cfg.run.run_dir)
        done = (
            summary is not None
            and summary.get("status") == "finished"
            and summary.get("config_hash") == config_hash(cfg)
        )
        if not done:
            summary = train_fn(cfg)
        results.setdefault(label, {})[seed] = _result(summary)
        if after_each is not None:
            after_each(results)
    return results


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def format_table(results: dict[str, dict[int, Result]], configs: Sequence[str]) -> str:
    """Markdown table: variant, parameters, val PSNR, Δ PSNR vs full, val SSIM, Δ SSIM, seeds."""
    lines = [
        "| configuration | parameters | val PSNR (dB) | Δ PSNR vs full | val SSIM | Δ SSIM vs full | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    full = results.get("full", {})
    for name in configs:
        runs = results.get(name, {})
        if not runs:
            continue
        seeds = sorted(runs)
        psnr = [runs[s]["psnr"] for s in seeds]
        ssim = [runs[s]["ssim"] for s in seeds]
        paired = [s for s in seeds if s in full]
        if name != "full" and paired:
            dp = _mean_sd([runs[s]["psnr"] - full[s]["psnr"] for s in paired])
            ds = _mean_sd([runs[s]["ssim"] - full[s]["ssim"] for s in paired])
        else:
            dp = ds = "—"
        params = int(runs[seeds[0]]["parameters"])
        lines.append(
            f"| {name} | {params / 1e6:.2f} M | {_mean_sd(psnr)} | {dp} | {_mean_sd(ssim)} | {ds} | {len(seeds)} |"
        )
    return "\n".join(lines) + "\n"


def _write_table(
    out_dir: Path, cfg: CRAblateConfig, seeds: list[int], results: dict[str, dict[int, Result]]
) -> str:
    table = format_table(results, cfg.ablate.configs)
    budget = (
        f"epochs={cfg.optim.epochs}, time_budget_s={cfg.run.time_budget_s or 'none'}, "
        f"batch {cfg.data.batch_size}, crop {cfg.data.crop_size}, lr {cfg.optim.lr}, "
        f"seeds {seeds}, data {cfg.data.root or 'the sample dataset'}"
    )
    header = (
        "# cr-ablate\n\n"
        f"Every row ran with the same base configuration and budget ({budget}); only the fields "
        "named by its variant differ (runs are keyed by the hash of their full configuration). "
        "PSNR/SSIM: best validation epoch by PSNR "
        f"({cfg.data.normalization} normalisation, data_range 1 for glf-cr).\n\n"
    )
    with atomic_write(out_dir / "ablation.md", "w") as f:
        f.write(header + table)
    atomic_save_json(
        {
            "configs": list(cfg.ablate.configs),
            "seeds": seeds,
            "results": results,
            "table_md": table,
        },
        out_dir / "ablation.json",
    )
    return table


def ablate(cfg: CRAblateConfig) -> dict[str, Any]:
    """``cr-ablate``: run every variant x seed (see the module docstring); return ``summary.json``."""
    from .data import CloudRemovalDataModule
    from .train import resolved_data

    folder = RunFolder.plan(cfg, "cr-ablate")
    seeds = [cfg.run.seed + k for k in range(cfg.ablate.seeds)]
    out_dir = folder.path
    runs = [
        (name, seed, variant_config(cfg, name, seed, out_dir / "runs"))
        for name in cfg.ablate.configs
        for seed in seeds
    ]
    data = resolved_data(runs[0][2].data, cfg.run.progress)
    CloudRemovalDataModule(data, seed=cfg.run.seed).check_inputs()  # before the folder is touched
    out_dir = folder.open()
    results = run_configs(runs, after_each=lambda r: _write_table(out_dir, cfg, seeds, r))
    table = _write_table(out_dir, cfg, seeds, results)
    print(table)
    metrics = {
        f"{name}/val_psnr": statistics.mean(r["psnr"] for r in by_seed.values())
        for name, by_seed in results.items()
    }
    return folder.finish(
        metrics=metrics,
        paths={"table": out_dir / "ablation.md", "results": out_dir / "ablation.json"},
        extra={"seeds": seeds, "configs": list(cfg.ablate.configs)},
    )
