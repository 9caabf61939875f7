"""``eolab runs compare``: run folders side by side, instead of diffing JSON files by hand.

Each run folder's ``config.yaml`` and ``summary.json`` give one row: the run, its command and status,
the config fields whose values differ between the runs (fields that only say where or how a run
executes, ``identity=False`` in the command's config, are left out), and the headline metrics.
``--baseline`` adds the delta of every metric against a run folder, a ``summary.json``, or a flat JSON
of metrics (the researchers' ``--compare_baseline v2_metrics.json``; nested mappings are read as
``a/b`` names). ``metrics.csv`` of each run gives the overlaid training curves.

Arguments may be run folders, globs (``'runs/cr_*'``) or sweep folders (their ``trials/*``).
Output: the markdown table on stdout, and ``compare.md``, ``compare.csv`` and ``curves.png`` in
``--out``.
"""

from __future__ import annotations

import csv
import glob
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError
from .io import atomic_write
from .runs import SUMMARY_NAME, read_config, read_summary

__all__ = ["expand_runs", "load_baseline", "compare_runs", "compare_command", "plot_curves"]

#: Left out of the "differs" columns when a run's command cannot be looked up.
WHERE_FIELDS = ("run.output_dir", "run.name", "run.resume", "run.overwrite", "run.progress")


def expand_runs(items: Sequence[str]) -> list[Path]:
    """Run folders from folders, globs and sweep folders (in the order given, each once)."""
    out: list[Path] = []
    for item in items:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise InputError("no run folder matches this pattern", path=item)
        for match in matches:
            path = Path(match)
            if (path / "sweep.yaml").is_file() and (path / "trials").is_dir():
                out.extend(
                    sorted(p for p in (path / "trials").iterdir() if (p / SUMMARY_NAME).is_file())
                )
            elif (path / SUMMARY_NAME).is_file():
                out.append(path)
            elif path.is_dir() and glob.has_magic(item):
                continue  # a glob may also match folders that are not runs
            else:
                raise InputError("not a run folder (no summary.json) nor a sweep folder", path=path)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    if not unique:
        raise InputError("no run folders to compare", path=" ".join(items))
    return unique


def _flat_numbers(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_numbers(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def load_baseline(source: str) -> tuple[str, dict[str, float]]:
    """(label, metrics) of a run folder, a ``summary.json`` or a flat metrics JSON."""
    path = Path(source)
    if path.is_dir():
        summary = read_summary(path)
        if summary is None:
            raise InputError("baseline folder has no summary.json", path=path)
        return path.name, _flat_numbers(summary.get("metrics") or {})
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("baseline not found", path=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"baseline is not readable JSON ({exc})", path=path) from None
    if not isinstance(data, Mapping):
        raise InputError("baseline JSON must be a mapping of metric names to numbers", path=path)
    metrics = data.get("metrics") if isinstance(data.get("metrics"), Mapping) else data
    numbers = _flat_numbers(metrics)
    if not numbers:
        raise InputError("baseline JSON holds no numeric metrics", path=path)
    return path.stem, numbers


def _flat_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _where_fields(command: str | None) -> set[str]:
    """Fields of ``command`` declared ``identity=False`` (where/how a run executes)."""
    if command:
        try:
            from .sweep.resolve import resolve_command

            cmd = resolve_command(command)
            return {leaf.key for leaf in cmd.leaves() if not leaf.meta.get("identity", True)}
        except Exception:  # noqa: BLE001,S110 - an unknown command: use the generic list
            pass
    return set(WHERE_FIELDS)


def compare_runs(
    runs: Sequence[Path],
    *,
    baseline: tuple[str, dict[str, float]] | None = None,
    metrics: Sequence[str] = (),
    all_fields: bool = False,
) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of the comparison table; a row per run (strings and floats)."""
    labels = _labels(runs)
    configs = [_flat_config(read_config(r) or {}) for r in runs]
    summaries = [read_summary(r) or {} for r in runs]
    skip: set[str] = set()
    for command in {s.get("command") for s in summaries}:
        skip |= _where_fields(command)
    keys = [k for k in dict.fromkeys(k for c in configs for k in c) if k not in skip]
    if not all_fields and len(runs) > 1:
        keys = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    names = list(metrics) or list(
        dict.fromkeys(m for s in summaries for m in (s.get("metrics") or {}))
    )
    columns = ["run", "command", "status", *keys, *names]
    if baseline:
        columns += [f"Δ {m}" for m in names if m in baseline[1]]
    rows = []
    for label, cfg, summary in zip(labels, configs, summaries):
        row: dict[str, Any] = {
            "run": label,
            "command": summary.get("command", ""),
            "status": summary.get("status", ""),
        }
        row.update({k: cfg.get(k, "") for k in keys})
        values = summary.get("metrics") or {}
        for m in names:
            row[m] = values.get(m)
        if baseline:
            for m in names:
                if m in baseline[1]:
                    v = values.get(m)
                    row[f"Δ {m}"] = None if v is None else float(v) - baseline[1][m]
        rows.append(row)
    if baseline:
        base_row: dict[str, Any] = {"run": f"baseline: {baseline[0]}", "command": "", "status": ""}
        base_row.update({k: "" for k in keys})
        base_row.update({m: baseline[1].get(m) for m in names})
        base_row.update({f"Δ {m}": 0.0 for m in names if m in baseline[1]})
        rows.insert(0, base_row)
    return columns, rows


def _labels(runs: Sequence[Path]) -> list[str]:
    resolved = [r.resolve() for r in runs]
    if len(resolved) == 1:
        return [resolved[0].name]
    import os

    common = Path(os.path.commonpath([str(r) for r in resolved]))
    return [str(r.relative_to(common)) if r != common else r.name for r in resolved]


def _cell(value: Any, delta: bool = False) -> str:
    if value is None or value == "":
        return "–" if value is None else ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:+.4g}" if delta else f"{value:.4g}"
    return str(value).replace("|", "/")


def format_markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| " + " | ".join(_cell(row.get(c), c.startswith("Δ ")) for c in columns) + " |"
        )
    return "\n".join(lines)


def _read_curves(run: Path) -> dict[str, list[tuple[float, float]]]:
    """``{column: [(epoch, value), ...]}`` from a run's metrics.csv (rows without epoch skipped)."""
    path = run / "metrics.csv"
    out: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return out
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if epoch in (None, ""):
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                try:
                    out.setdefault(key, []).append((float(epoch), float(value)))
                except ValueError:
                    continue
    return out


def plot_curves(
    runs: Sequence[Path], labels: Sequence[str], columns: Sequence[str], out_png: Path
) -> list[str]:
    """Overlay ``columns`` of each run's metrics.csv per epoch, one panel per column; the columns
    drawn (those found in at least one run)."""
    from matplotlib.figure import Figure

    curves = [_read_curves(r) for r in runs]
    drawn = [c for c in columns if any(c in cv for cv in curves)]
    if not drawn:
        return []
    ncols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, column in enumerate(drawn):
        ax = axes[i // ncols][i % ncols]
        for label, cv in zip(labels, curves):
            points = cv.get(column)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", ms=2.5, lw=1.2, label=label)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("epoch")
    for j in range(len(drawn), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return drawn


def compare_command(cfg: Any) -> int:
    """``eolab runs compare``: print the table; write compare.md, compare.csv, curves.png."""
    runs = expand_runs(cfg.runs)
    baseline = load_baseline(cfg.baseline) if cfg.baseline else None
    columns, rows = compare_runs(
        runs, baseline=baseline, metrics=cfg.metrics, all_fields=cfg.all_fields
    )
    table = format_markdown(columns, rows)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [
        c
        for c in columns
        if c not in ("run", "command", "status") and "/" in c and not c.startswith("Δ ")
    ]
    wanted = list(cfg.curves) or list(dict.fromkeys([*names, "val/loss", "train/loss"]))
    drawn = plot_curves(runs, _labels(runs), wanted, out / "curves.png")
    with atomic_write(out / "compare.md", "w") as f:
        f.write(f"# {len(runs)} runs compared\n\n{table}\n")
        if drawn:
            f.write("\n![curves](curves.png)\n")
    with atomic_write(out / "compare.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    print(table)
    where = f"{out}/compare.md, compare.csv" + (
        ", curves.png" if drawn else " (no metrics.csv curves)"
    )
    print(f"\neolab runs compare: {where}")
    return 0
