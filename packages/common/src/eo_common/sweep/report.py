"""``eolab sweep report``: what a sweep found, as markdown, CSV, PNGs and the best config.

``<sweep>/report/`` gets

* ``REPORT.md``: the sweep, its trials by state, the best trials (objective mean ± sample sd over
  seeds, the fields that differ, epochs, wall seconds summed over seeds), the ablation table for a ``variants`` sweep (paired
  deltas and the seed-noise verdict of :mod:`eo_common.sweep.ablation`), parameter importances, and
  the failed trials with their errors;
* ``trials.csv``: one row per trial (state, value, sd, seed values, fields, folders, error);
* ``history.png``: each trial's objective (error bars: sd over seeds) and the best so far;
* ``importances.png``: Optuna's parameter importances (PED-ANOVA), for ``space`` and ``grid`` sweeps;
* ``best.yaml``: the best trial's full config for the command, ``run.output_dir`` set to
  ``<sweep>/best``: ``<command> --config best.yaml`` trains it again.

The figures are drawn on :class:`matplotlib.figure.Figure` (no pyplot), like :mod:`eo_common.viz`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write
from ..runs import resolved_config_dict
from .ablation import ablation_rows, format_ablation
from .spec import SweepSpec, load_sweep, parse_trial_config
from .storage import SURPLUS_ATTR, load_study, open_storage
from .values import run_fields, run_values

__all__ = ["write_report", "trial_rows", "print_presets", "best_config"]


def print_presets(cfg: Any) -> int:
    """``eolab sweep presets``: one line per shipped sweep file."""
    import yaml

    from .spec import list_presets

    presets = list_presets()
    if not presets:
        print("no sweep presets in the installed packages")
    for name, path in presets:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            data = {}
        text = str(data.get("description", "")).strip().splitlines()
        print(f"{name:<34} {data.get('command', '?'):<16} {text[0] if text else ''}")
    return 0


def _fields_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items()) or "base"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_rows(spec: SweepSpec, study: Any) -> list[dict[str, Any]]:
    """One dict per trial that counts (surplus trials left out), in trial order."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    trials = study.get_trials(deepcopy=False)
    retried_by = {}
    for t in trials:
        for n in RetryHeartbeatStaleTrialCallback.retry_history(t):
            retried_by[n] = t.number
    rows = []
    for t in trials:
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        seeds = {int(k): float(v) for k, v in (t.user_attrs.get("seed_values") or {}).items()}
        fields = spec.overrides_of(t.params)
        label = str(t.params.get("variant")) if spec.mode == "variants" else _fields_text(fields)
        error = str(t.user_attrs.get("error", ""))
        if t.number in retried_by:
            error = f"{error or 'failed'}; retried as trial {retried_by[t.number]}"
        pruned = t.user_attrs.get("eolab_pruned")
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "label": label,
                "fields": fields,
                "value": t.value if t.value is not None and t.state.name == "COMPLETE" else None,
                "sd": t.user_attrs.get("value_sd"),
                "seeds": seeds,
                "pruned_epoch": pruned.get("epoch") if isinstance(pruned, dict) else None,
                "seconds": t.user_attrs.get("seconds"),
                "run_dirs": list(t.user_attrs.get("run_dirs") or []),
                "error": error,
                "retired": t.number in retried_by,
            }
        )
    return rows


def best_config(spec: SweepSpec, command: Any, overrides: dict[str, Any], out_dir: Path) -> str:
    """YAML of the command's full config for the base plus ``overrides`` (a ``--config`` file)."""
    import yaml

    seed = spec.seeds[0] if spec.seeds else None
    values = {**overrides, **run_values(command, out_dir, "", seed)}
    progress = run_fields(command)["progress"]
    if progress:  # best.yaml is for a person at a terminal
        values[progress] = True
    cfg = parse_trial_config(command, spec, values)
    text = io.StringIO()
    text.write(f"# best trial of sweep {spec.name}: {_fields_text(overrides)}\n")
    text.write(f"# train it again: {command.prog} --config best.yaml [--output_dir OTHER]\n")
    yaml.safe_dump(resolved_config_dict(cfg), text, sort_keys=False)
    return text.getvalue()


def _history_png(rows: list[dict[str, Any]], spec: SweepSpec, path: Path) -> None:
    from matplotlib.figure import Figure

    done = [r for r in rows if r["value"] is not None]
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    if done:
        xs = [r["number"] for r in done]
        ys = [r["value"] for r in done]
        sds = [r["sd"] or 0.0 for r in done]
        ax.errorbar(
            xs, ys, yerr=sds, fmt="o", color="C0", ms=4, capsize=2, label="trial (± sd over seeds)"
        )
        pick = max if spec.direction == "maximize" else min
        best, line = None, []
        for y in ys:
            best = y if best is None else pick(best, y)
            line.append(best)
        ax.step(xs, line, where="post", color="C3", label="best so far")
    for r in rows:
        if r["state"] == "pruned" and r["seeds"] == {}:
            ax.axvline(r["number"], color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("trial")
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: optimisation history ({spec.direction})", fontsize=9)
    if done:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def _importances(study: Any) -> dict[str, float]:
    import optuna

    try:  # PED-ANOVA: Optuna's own, needs no scikit-learn (its fANOVA does)
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (RuntimeError, ValueError, ImportError):  # too few finished trials, nothing varies
        return {}


def _importances_png(importances: dict[str, float], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(6.0, 0.5 + 0.35 * max(1, len(names))))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance (PED-ANOVA, normalised to sum 1)")
    ax.set_title("parameter importances", fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def _csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = sorted({k for r in rows for k in r["fields"]})
    seeds = sorted({s for r in rows for s in r["seeds"]})
    header = [
        "number",
        "state",
        "value",
        "sd",
        *[f"seed_{s}" for s in seeds],
        *keys,
        "run_dirs",
        "error",
    ]
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow(
                [r["number"], r["state"], r["value"], r["sd"]]
                + [r["seeds"].get(s, "") for s in seeds]
                + [r["fields"].get(k, "") for k in keys]
                + [";".join(r["run_dirs"]), r["error"]]
            )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(cfg: Any) -> dict[str, Any]:
    """``eolab sweep report``: write ``<sweep>/report`` (see the module docstring)."""
    folder = Path(cfg.sweep_dir)
    if not (folder / "sweep.yaml").is_file():
        raise UserError(
            "not a sweep folder (no sweep.yaml); run 'eolab sweep run' first", path=folder
        )
    spec, command = load_sweep(folder / "sweep.yaml")
    storage = open_storage(cfg.storage, folder)
    try:
        study = load_study(storage, spec)
    except KeyError:
        raise UserError(f"the storage holds no study named {spec.name!r}", path=folder) from None
    out = Path(cfg.out or folder / "report")
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(spec, study)
    counted = [r for r in rows if not r["retired"]]
    states: dict[str, int] = {}
    for r in counted:
        states[r["state"]] = states.get(r["state"], 0) + 1
    done = [r for r in counted if r["value"] is not None]
    done.sort(key=lambda r: r["value"], reverse=spec.direction == "maximize")

    lines = [
        f"# Sweep {spec.name}",
        "",
        f"*{spec.command}, {spec.mode} sweep, {spec.direction} `{spec.metric}`, seeds "
        f"{spec.seeds}; report written {time.strftime('%Y-%m-%d %H:%M:%S')}.*",
        "",
        "Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ".",
        "",
    ]
    if spec.description:
        lines += [spec.description.strip(), ""]
    paths: dict[str, str] = {}
    if done:
        lines += [
            f"## Best trials (top {min(cfg.top, len(done))})",
            "",
            f"| trial | {spec.metric} mean | sd over seeds | seeds | configuration | wall s (all seeds) | folders |",
            "|---:|---:|---:|---:|---|---:|---|",
        ]
        for r in done[: cfg.top]:
            lines.append(
                f"| {r['number']} | {_fmt(r['value'])} | {_fmt(r['sd']) if len(r['seeds']) > 1 else '–'} "
                f"| {len(r['seeds'])} | {r['label']} | {_fmt(r['seconds'])} | {', '.join(r['run_dirs'])} |"
            )
        lines.append("")
        best = done[0]
        best_yaml = out / "best.yaml"
        with atomic_write(best_yaml, "w") as f:
            f.write(best_config(spec, command, best["fields"], folder / "best"))
        paths["best_config"] = str(best_yaml)
        lines += [
            f"Best: trial {best['number']} ({best['label']}), {spec.metric} {_fmt(best['value'])}. "
            f"Its full config: [best.yaml](best.yaml) (`{command.prog} --config best.yaml`).",
            "",
        ]
    if spec.mode == "variants":
        values = {r["label"]: r["seeds"] for r in counted if r["state"] == "complete"}
        if spec.baseline in values:
            table = ablation_rows(values, spec.baseline, spec.direction)
            lines += [
                f"## Ablation against `{spec.baseline}`",
                "",
                format_ablation(table, spec.metric),
                "",
                "Δ is the mean over seeds of (variant − baseline) on the same seed. *Within seed "
                "noise*: the 95 % interval of that mean contains 0 (paired t-test p ≥ 0.05); "
                "one seed cannot tell.",
                "",
            ]
    importances = _importances(study) if spec.mode != "variants" else {}
    _history_png(rows, spec, out / "history.png")
    paths["history"] = str(out / "history.png")
    lines += ["## Optimisation history", "", "![history](history.png)", ""]
    if importances:
        _importances_png(importances, out / "importances.png")
        paths["importances"] = str(out / "importances.png")
        lines += ["## Parameter importances", "", "| field | importance |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in importances.items()]
        lines += ["", "![importances](importances.png)", ""]
    bad = [r for r in rows if r["state"] in ("fail", "pruned")]
    if bad:
        lines += [
            "## Failed and pruned trials",
            "",
            "| trial | state | configuration | error |",
            "|---:|---|---|---|",
        ]
        for r in bad:
            why = r["error"] or (
                f"pruned after epoch {r['pruned_epoch']}" if r["state"] == "pruned" else ""
            )
            lines.append(
                f"| {r['number']} | {r['state']} | {r['label']} | {why.replace('|', '/')} |"
            )
        lines.append("")
    _csv(rows, out / "trials.csv")
    report = out / "REPORT.md"
    with atomic_write(report, "w") as f:
        f.write("\n".join(lines))
    print(f"eolab sweep report: {report}")
    return {
        "report": str(report),
        "trials": states,
        "best_trial": done[0]["number"] if done else None,
        "best_value": done[0]["value"] if done else None,
        **paths,
    }
