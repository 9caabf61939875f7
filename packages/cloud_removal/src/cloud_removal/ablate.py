"""``cr-ablate``: what each enhancement is worth, every variant with the same seeds and budget.

A thin preset over ``eolab sweep``: the base configuration is everything ``cr-train`` accepts (its
defaults are the ``base`` of the sweep preset ``cloud_removal:ablation``, all enhancements on); each
variant of ``--configs`` is one of that preset's ``variants`` (:data:`cloud_removal.config_ablate.ABLATIONS`)
and runs once per seed (``run.seed``, ``run.seed + 1``, ...). :func:`ablation_sweep` writes the sweep
file; :func:`eo_common.sweep.launcher.run_sweep` runs it (every variant x seed an ordinary cr-train run
folder, a subprocess each, ``--sweep_workers`` side by side); the table is read back from the runs.

* The sweep folder is ``<ablation>/sweeps/<key>``, ``key`` the hash of the whole ablation (every field
  of the base configuration, the variants, the seeds). A rerun with ``--resume`` and the same settings
  resumes that sweep: finished runs are kept, a killed one continues from its last checkpoint; other
  settings (another budget, variants or seeds) make another sweep folder, so results of different
  settings are never mixed in one table.
* ``ablation.md`` (atomic) shows the best validation PSNR and the SSIM of that epoch, mean ± sample
  standard deviation over seeds, and each variant's paired difference to ``full`` (per-seed
  differences, then mean ± sd); below it the sweep's ablation table with the paired t-test verdict
  (:mod:`eo_common.sweep.ablation`: *within seed noise* when p >= 0.05). ``ablation.json`` holds the
  numbers, ``<sweep>/report/`` the sweep's own report.

Example::

    cr-ablate --demo --max_epochs 2 --seeds 2 --ablation_dir runs/cr_ablation
    cr-ablate --input_data_folder /data/SEN12MS-CR --configs '[full,no_cross_attn]' --time_budget_s 3600
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

from eo_common.config import config_from_dict
from eo_common.errors import UserError
from eo_common.io import atomic_save_json, atomic_write
from eo_common.runs import RunFolder, read_summary, resolved_config_dict

from .config import CRTrainConfig
from .config_ablate import ABLATIONS, CRAblateConfig, ablation_preset

__all__ = ["train_config", "ablation_sweep", "sweep_results", "format_table", "ablate"]

Result = dict[str, Any]
#: run fields the sweep sets in every trial (folder, name, seed, resume/overwrite, progress bars)
_SET_BY_SWEEP = ("output_dir", "name", "seed", "resume", "overwrite", "progress")


def train_config(cfg: CRAblateConfig) -> CRTrainConfig:
    """The cr-train configuration of ``cfg`` (everything but the ``ablate`` group)."""
    values = resolved_config_dict(cfg)
    values.pop("ablate", None)
    return config_from_dict(CRTrainConfig, values)


def ablation_sweep(cfg: CRAblateConfig, out_dir: Path) -> tuple[Path, Path, list[int]]:
    """Write the sweep file of this ablation; return ``(sweep file, sweep folder, seeds)``.

    The sweep is the ``cloud_removal:ablation`` preset with ``cfg``'s cr-train configuration as its
    base (absolute paths), the variants of ``--configs`` and the seeds ``run.seed + k``.
    """
    import yaml

    preset = ablation_preset()
    base = resolved_config_dict(train_config(cfg))
    for key in _SET_BY_SWEEP:
        base["run"].pop(key, None)
    seeds = [cfg.run.seed + k for k in range(cfg.ablate.seeds)]
    configs = list(cfg.ablate.configs)
    raw = {
        "name": "cr_ablation",
        "description": "cr-ablate: variants of the cloud_removal:ablation preset, paired by seed",
        "command": preset["command"],
        "base": base,
        "variants": {name: dict(ABLATIONS[name]) for name in configs},
        "baseline": "full" if "full" in configs else configs[0],
        "objective": dict(preset["objective"]),
        "seeds": seeds,
        "pruning": "none",
    }
    key = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = out_dir / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    sweep_file = folder / f"{key}.yaml"
    with atomic_write(sweep_file, "w") as f:
        f.write("# cr-ablate's sweep (eolab sweep run this file --out <the folder beside it>)\n")
        yaml.safe_dump(raw, f, sort_keys=False)
    return sweep_file, folder / key, seeds


def _result(summary: dict[str, Any], run_dir: Path) -> Result:
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
        "run_dir": str(run_dir),
    }


def sweep_results(sweep_dir: Path) -> tuple[dict[str, dict[int, Result]], list[dict[str, Any]]]:
    """``({variant: {seed: result}}, failed trials)`` of a cr-ablate sweep folder."""
    from eo_common.sweep.report import trial_rows
    from eo_common.sweep.spec import load_sweep
    from eo_common.sweep.storage import load_study, open_storage

    spec, _ = load_sweep(sweep_dir / "sweep.yaml")
    study = load_study(open_storage("", sweep_dir), spec)
    results: dict[str, dict[int, Result]] = {}
    failed = []
    for row in trial_rows(spec, study):
        if row["retired"]:
            continue
        if row["state"] != "complete":
            failed.append(row)
            continue
        for seed, run in zip(spec.seeds, row["run_dirs"], strict=True):
            summary = read_summary(sweep_dir / run) or {}
            results.setdefault(row["label"], {})[seed] = _result(summary, sweep_dir / run)
    return results, failed


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def format_table(results: dict[str, dict[int, Result]], configs: list[str]) -> str:
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


def _verdicts(results: dict[str, dict[int, Result]], baseline: str) -> str:
    """The sweep report's ablation table (paired t-test verdicts) for val/psnr."""
    from eo_common.sweep.ablation import ablation_rows, format_ablation

    values = {n: {s: r["psnr"] for s, r in by_seed.items()} for n, by_seed in results.items()}
    if baseline not in values:
        return ""
    rows = ablation_rows(values, baseline, "maximize")
    return format_ablation(rows, "val/psnr") + "\n"


def _write_table(
    out_dir: Path,
    cfg: CRAblateConfig,
    seeds: list[int],
    results: dict[str, dict[int, Result]],
    sweep_dir: Path,
) -> str:
    configs = list(cfg.ablate.configs)
    table = format_table(results, configs)
    baseline = "full" if "full" in configs else configs[0]
    verdicts = _verdicts(results, baseline)
    budget = (
        f"epochs={cfg.optim.epochs}, time_budget_s={cfg.run.time_budget_s or 'none'}, "
        f"batch {cfg.data.batch_size}, crop {cfg.data.crop_size}, lr {cfg.optim.lr}, "
        f"seeds {seeds}, data {cfg.data.root or 'the sample dataset'}"
    )
    header = (
        "# cr-ablate\n\n"
        f"Every row ran with the same base configuration and budget ({budget}); only the fields "
        "named by its variant differ (the variants of the `cloud_removal:ablation` sweep preset; "
        f"runs in `{sweep_dir}`). PSNR/SSIM: best validation epoch by PSNR "
        f"({cfg.data.normalization} normalisation, data_range 1 for glf-cr).\n\n"
    )
    noise = (
        f"\n## Paired by seed against `{baseline}`\n\n{verdicts}\nΔ is the mean over seeds of "
        "(variant − baseline) on the same seed. *Within seed noise*: the 95 % interval of that "
        "mean contains 0 (paired t-test p ≥ 0.05); one seed cannot tell.\n"
        if verdicts
        else ""
    )
    with atomic_write(out_dir / "ablation.md", "w") as f:
        f.write(header + table + noise)
    atomic_save_json(
        {
            "configs": configs,
            "seeds": seeds,
            "sweep": str(sweep_dir),
            "results": results,
            "table_md": table,
            "verdicts_md": verdicts,
        },
        out_dir / "ablation.json",
    )
    return table + noise


def ablate(cfg: CRAblateConfig) -> dict[str, Any]:
    """``cr-ablate``: run the preset's variants x seeds as a sweep (module docstring); the summary."""
    from eo_common.sweep.cli import SweepReportConfig, SweepRunConfig
    from eo_common.sweep.launcher import run_sweep
    from eo_common.sweep.report import write_report

    from .data import CloudRemovalDataModule
    from .train import resolved_data

    folder = RunFolder.plan(cfg, "cr-ablate")
    data = resolved_data(cfg.data, cfg.run.progress)  # builds the sample dataset once, here
    CloudRemovalDataModule(data, seed=cfg.run.seed).check_inputs()  # before the folder is touched
    out_dir = folder.open()
    try:
        sweep_file, sweep_dir, seeds = ablation_sweep(cfg, out_dir)
        status = run_sweep(
            SweepRunConfig(sweep=str(sweep_file), out=sweep_dir, workers=cfg.ablate.sweep_workers)
        )
        write_report(SweepReportConfig(sweep_dir=sweep_dir))
        results, failed = sweep_results(sweep_dir)
        text = _write_table(out_dir, cfg, seeds, results, sweep_dir)
        print(text)
        if failed or status != 0:
            what = "; ".join(
                f"{r['label']}: {r['state']}" + (f" ({r['error']})" if r["error"] else "")
                for r in failed
            )
            raise UserError(
                f"{len(failed) or 'some'} variant(s) did not finish "
                f"({what or 'see the sweep log'}); the table shows the others; rerun with "
                "--resume to retry them",
                path=sweep_dir,
            )
    except BaseException as exc:
        state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        folder.finish(status=state, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    metrics = {
        f"{name}/val_psnr": statistics.mean(r["psnr"] for r in by_seed.values())
        for name, by_seed in results.items()
    }
    return folder.finish(
        metrics=metrics,
        paths={
            "table": out_dir / "ablation.md",
            "results": out_dir / "ablation.json",
            "sweep": sweep_dir,
            "sweep_report": sweep_dir / "report" / "REPORT.md",
        },
        extra={"seeds": seeds, "configs": list(cfg.ablate.configs)},
    )
