"""Evaluation: pixel-level metrics over a whole split, with and without CRF, against targets and a baseline.

Every metric is computed over *every valid pixel of the split at once* (one confusion matrix and one
Spearman ranking for the split, streamed strip by strip with :class:`eo_common.metrics.SegmentationMetrics`
and :class:`eo_common.metrics.SpearmanRho`), never as a mean of per-tile scores. A pixel counts when its
label is 0/1/2, it lies in the split's blocks (``split_mask.tif`` from the prepare stage; all pixels
when there is no mask) and the prediction is not nodata. Pixels with a label but no prediction
(stack nodata) are counted in ``n_unpredicted`` and left out.

Reported per variant (``no_crf``, ``crf``): Cohen's kappa (plain and quadratic weights), accuracy,
MCC, per-class precision / recall / F1 (``class0_precision`` ... ``class2_f1``), and Spearman's rho
between the predicted susceptibility (expected rank, continuous) and the true rank. ``crf_effect``
holds ``crf - no_crf`` for every number. ``report.md`` has the success-criteria table (targets from
``evaluation.targets``, each ``>=``) and, given a baseline ``metrics.json``, the change against it.

CLI::

    risk-evaluate --model_path runs/risk/train --test_data_path data/ --output_dir runs/eval \\
        [--pipeline_config config.yaml] [--split_mask runs/risk/prepare/split_mask.tif --split test] \\
        [--compare_baseline baseline/metrics.json] [--no_crf]

Example:
    >>> m = evaluate_maps("labels.tif", "class_map.tif", "susceptibility.tif")  # doctest: +SKIP
    >>> sorted(k for k in m if k.startswith("class1_"))  # doctest: +SKIP
    ['class1_f1', 'class1_precision', 'class1_recall']
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from eo_common.errors import CheckpointError, ConfigError, InputError
from eo_common.io import atomic_save_json, atomic_write
from eo_common.metrics import SegmentationMetrics, SpearmanRho
from eo_common.raster import RasterError, check_same_grid
from rasterio.windows import Window

from risk_mapping.config import (
    CLASS_NAMES,
    HEADLINE_SCORES,
    IGNORE_INDEX,
    NUM_CLASSES,
    EvaluateConfig,
    InferenceConfig,
    TargetsConfig,
)

__all__ = [
    "HEADLINE",
    "evaluate_maps",
    "flat_metrics",
    "load_baseline",
    "success_rows",
    "render_report",
    "write_evaluation",
    "evaluate_products",
    "headline_metrics",
    "evaluate",
]

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
HEADLINE = (
    "kappa",
    "kappa_quadratic",
    "accuracy",
    "mcc",
    "class0_precision",
    "class0_recall",
    "class0_f1",
    "class1_precision",
    "class1_recall",
    "class1_f1",
    "class2_precision",
    "class2_recall",
    "class2_f1",
    "spearman_rho",
)
_STRIP = 256


def flat_metrics(scores: dict[str, Any], rho: float) -> dict[str, Any]:
    """Headline numbers from :meth:`SegmentationMetrics.compute` output and Spearman's rho."""
    out: dict[str, Any] = {
        k: float(scores[k]) for k in ("kappa", "kappa_quadratic", "accuracy", "mcc")
    }
    for k, name in enumerate(CLASS_NAMES):
        for what in ("precision", "recall", "f1"):
            out[f"class{k}_{what}"] = float(scores["per_class"][name][what])
    out["spearman_rho"] = float(rho)
    return out


def evaluate_maps(
    labels_path: str | os.PathLike,
    class_map_path: str | os.PathLike,
    rank_path: str | os.PathLike | None,
    *,
    split_mask_path: str | os.PathLike | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Metrics of a class map (and susceptibility map) over every valid pixel of a split.

    Args:
        labels_path: uint8 truth 0/1/2, 255 = ignore.
        class_map_path: uint8 prediction, 255 = nodata.
        rank_path: float susceptibility (expected rank); nodata < 0. None: rho from the class map.
        split_mask_path: ``split_mask.tif`` (0 train, 1 val, 2 test); None uses every pixel.
        split: ``train``, ``val``, ``test`` or ``all``.

    Returns:
        :func:`flat_metrics` numbers plus ``confusion_matrix``, ``per_class``, ``n_pixels`` and
        ``n_unpredicted``.

    Raises:
        RasterError: the rasters are not on one grid (names the files).
    """
    paths = [Path(labels_path), Path(class_map_path)] + ([Path(rank_path)] if rank_path else [])
    if split_mask_path is not None:
        paths.append(Path(split_mask_path))
    check_same_grid(paths)
    if split != "all" and split not in SPLIT_CODES:
        raise ValueError(f"split must be train, val, test or all, got {split!r}")
    seg = SegmentationMetrics(NUM_CLASSES, ignore_index=IGNORE_INDEX, class_names=list(CLASS_NAMES))
    rho = SpearmanRho(levels=NUM_CLASSES)
    n_unpredicted = 0
    srcs = [rasterio.open(p) for p in paths]
    try:
        labels_src, class_src = srcs[0], srcs[1]
        rank_src = srcs[2] if rank_path else None
        mask_src = srcs[-1] if split_mask_path is not None else None
        for r0 in range(0, labels_src.height, _STRIP):
            window = Window(0, r0, labels_src.width, min(_STRIP, labels_src.height - r0))
            y = labels_src.read(1, window=window)
            pred = class_src.read(1, window=window)
            valid = y != IGNORE_INDEX
            bad = np.setdiff1d(np.unique(y), [0, 1, 2, IGNORE_INDEX])
            if bad.size:
                raise RasterError(
                    f"label values must be 0, 1, 2 or 255; found {bad[:5].tolist()}", labels_path
                )
            if mask_src is not None and split != "all":
                valid &= mask_src.read(1, window=window) == SPLIT_CODES[split]
            unpredicted = valid & (pred == IGNORE_INDEX)
            if rank_src is not None:
                rank = rank_src.read(1, window=window).astype(np.float64)
                unpredicted |= valid & ~(np.isfinite(rank) & (rank >= 0))
            else:
                rank = pred.astype(np.float64)
            n_unpredicted += int(unpredicted.sum())
            keep = valid & ~unpredicted
            if not keep.any():
                continue
            truth = torch.from_numpy(y[keep].astype(np.int64))
            seg.update(torch.from_numpy(pred[keep].astype(np.int64)), truth)
            rho.update(torch.from_numpy(rank[keep]), truth.double())
    finally:
        for s in srcs:
            s.close()
    cm = seg.confusion_matrix
    n = int(cm.sum())
    if n == 0:
        raise ValueError(f"{labels_path}: no valid labelled pixel in split {split!r} to evaluate")
    scores = seg.compute()
    out = flat_metrics(scores, rho.compute() if n > 1 else float("nan"))
    out.update(
        confusion_matrix=cm.tolist(),
        per_class=scores["per_class"],
        n_pixels=n,
        n_unpredicted=n_unpredicted,
    )
    return out


def load_baseline(path: str | os.PathLike) -> dict[str, float]:
    """Headline numbers of a baseline: a ``metrics.json`` of this tool (``crf`` variant if present,
    else ``no_crf``) or a flat JSON object with keys of :data:`HEADLINE`.

    Raises:
        FileNotFoundError / ValueError: missing file, or no known metric in it (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"baseline metrics file not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if isinstance(obj, dict) and "variants" in obj:
        variants = obj["variants"]
        obj = variants.get("crf") or variants.get("no_crf") or {}
    flat = {k: float(v) for k, v in obj.items() if k in HEADLINE and isinstance(v, int | float)}
    if not flat:
        raise ValueError(f"{path}: no known metric (expected some of {', '.join(HEADLINE)})")
    return flat


def success_rows(
    variants: dict[str, dict[str, Any]], targets: TargetsConfig
) -> list[dict[str, Any]]:
    """One row per target: ``{"metric", "target", <variant>: value, "<variant>_met": bool}``."""
    rows = []
    for name in ("kappa", "class1_precision", "class2_recall", "spearman_rho"):
        target = getattr(targets, name)
        if target is None:
            continue
        row: dict[str, Any] = {"metric": name, "target": target}
        for variant, metrics in variants.items():
            value = metrics.get(name)
            row[variant] = value
            row[f"{variant}_met"] = value is not None and not math.isnan(value) and value >= target
        rows.append(row)
    return rows


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f} %" if pct else f"{value:.4f}"


def _is_pct(metric: str) -> bool:
    return any(metric.endswith(s) for s in ("precision", "recall", "f1", "accuracy"))


def render_report(
    variants: dict[str, dict[str, Any]],
    targets: TargetsConfig,
    baseline: dict[str, float] | None = None,
    baseline_path: str | None = None,
    title: str = "Risk mapping evaluation",
) -> str:
    """Markdown: success criteria, all metrics per variant with the CRF effect, baseline deltas."""
    names = list(variants)
    lines = [f"# {title}", ""]
    first = next(iter(variants.values()))
    lines.append(
        f"Pixels evaluated: {first['n_pixels']:,} (every valid pixel of the split; "
        f"{first['n_unpredicted']:,} labelled pixels without a prediction left out)."
    )
    lines += [
        "",
        "## Success criteria",
        "",
        "| metric | target | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for row in success_rows(variants, targets):
        pct = _is_pct(row["metric"])
        cells = [f"{_fmt(row[v], pct)} {'PASS' if row[f'{v}_met'] else 'FAIL'}" for v in names]
        lines.append(
            f"| {row['metric']} | >= {_fmt(row['target'], pct)} | " + " | ".join(cells) + " |"
        )
    header = (
        "| metric | "
        + " | ".join(names)
        + (" | CRF effect |" if {"crf", "no_crf"} <= set(names) else " |")
    )
    lines += ["", "## All metrics", "", header, "|---|" + "---|" * (header.count("|") - 2)]
    for metric in HEADLINE:
        pct = _is_pct(metric)
        cells = [_fmt(variants[v].get(metric), pct) for v in names]
        if {"crf", "no_crf"} <= set(names):
            delta = variants["crf"][metric] - variants["no_crf"][metric]
            cells.append(f"{delta:+.4f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    if baseline:
        lines += [
            "",
            f"## Change against the baseline ({baseline_path})",
            "",
            "| metric | baseline | " + " | ".join(f"{v} (delta)" for v in names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for metric in HEADLINE:
            if metric not in baseline:
                continue
            cells = [
                f"{_fmt(variants[v][metric])} ({variants[v][metric] - baseline[metric]:+.4f})"
                for v in names
            ]
            lines.append(f"| {metric} | {_fmt(baseline[metric])} | " + " | ".join(cells) + " |")
    lines += ["", "Confusion matrices (rows = truth, columns = prediction; low, medium, high):", ""]
    for v in names:
        lines.append(f"- {v}: `{variants[v]['confusion_matrix']}` (`confusion_{v}.png`)")
    return "\n".join(lines) + "\n"


def write_evaluation(
    out_dir: str | os.PathLike,
    variants: dict[str, dict[str, Any]],
    targets: TargetsConfig,
    baseline_path: str | os.PathLike | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and ``confusion_<variant>.png`` into ``out_dir``."""
    from eo_common.viz import plot_confusion_matrix

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline = load_baseline(baseline_path) if baseline_path else None
    record: dict[str, Any] = {
        "variants": variants,
        "success_criteria": success_rows(variants, targets),
    }
    if {"crf", "no_crf"} <= set(variants):
        record["crf_effect"] = {m: variants["crf"][m] - variants["no_crf"][m] for m in HEADLINE}
    if baseline:
        record["baseline"] = {"path": str(baseline_path), "metrics": baseline}
        record["delta_vs_baseline"] = {
            v: {m: variants[v][m] - baseline[m] for m in HEADLINE if m in baseline}
            for v in variants
        }
    record.update(extra or {})
    paths = {"metrics": atomic_save_json(record, out_dir / "metrics.json")}
    with atomic_write(out_dir / "report.md", "w") as f:
        f.write(
            render_report(
                variants, targets, baseline, None if baseline_path is None else str(baseline_path)
            )
        )
    paths["report"] = out_dir / "report.md"
    for v, metrics in variants.items():
        paths[f"confusion_{v}"] = plot_confusion_matrix(
            np.asarray(metrics["confusion_matrix"]),
            list(CLASS_NAMES),
            out_dir / f"confusion_{v}.png",
        )
    return paths


def evaluate_products(
    infer_dir: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    split_mask_path: str | os.PathLike | None,
    split: str,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``class_map.tif``/``susceptibility.tif`` and, when present, their ``_crf`` versions."""
    infer_dir = Path(infer_dir)
    variants = {
        "no_crf": evaluate_maps(
            labels_path,
            infer_dir / "class_map.tif",
            infer_dir / "susceptibility.tif",
            split_mask_path=split_mask_path,
            split=split,
        )
    }
    if (infer_dir / "class_map_crf.tif").is_file():
        variants["crf"] = evaluate_maps(
            labels_path,
            infer_dir / "class_map_crf.tif",
            infer_dir / "susceptibility_crf.tif",
            split_mask_path=split_mask_path,
            split=split,
        )
    return variants


def _checkpoints(model_path: Path) -> list[Path]:
    if model_path.is_file():
        return [model_path]
    if model_path.is_dir():
        found = sorted(model_path.glob("seed*/checkpoints/best.ckpt")) or sorted(
            model_path.glob("**/best.ckpt")
        )
        if found:
            return found
        raise CheckpointError(
            "no seed*/checkpoints/best.ckpt (nor any best.ckpt) in this folder", path=model_path
        )
    raise InputError("--model_path does not exist", path=model_path)


def _test_data(path: Path, labels: Path | None) -> tuple[Path, Path]:
    if not path.exists():
        raise InputError("--test_data_path does not exist", path=path)
    if path.is_dir():
        stack, lab = path / "stack.tif", labels or path / "labels.tif"
        for p in (stack, lab):
            if not p.is_file():
                raise InputError(
                    f"--test_data_path is a folder without {p.name} (expected stack.tif and "
                    "labels.tif, or give the stack file and --labels)",
                    path=p,
                )
        return stack, lab
    if labels is None:
        raise InputError("--test_data_path is a stack file: give --labels as well", path=path)
    if not labels.is_file():
        raise InputError("--labels does not exist", path=labels)
    return path, labels


def _sections(cfg: EvaluateConfig, stored: dict[str, Any]) -> tuple[InferenceConfig, TargetsConfig]:
    """Inference and target settings: from ``--pipeline_config`` or those stored in the checkpoint
    (a checkpoint stored before ``inference.last_tile`` existed predicts with the square tiles it
    was evaluated with then)."""
    from eo_common.config import config_from_dict, config_problems

    source: str | Path = "the checkpoint's stored config"
    raw = stored
    if cfg.pipeline_config is not None:
        import yaml

        source = cfg.pipeline_config
        try:
            raw = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"not a readable YAML config ({exc})", path=source) from None
    stored_inference = dict(raw.get("inference") or {})
    if cfg.pipeline_config is None:  # a checkpoint from before --inference.last_tile: square tiles
        stored_inference.setdefault("last_tile", "shift")
    try:
        inference = config_from_dict(InferenceConfig, stored_inference)
        targets = config_from_dict(
            TargetsConfig, (raw.get("evaluation") or {}).get("targets") or {}
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    problems = config_problems(inference, "inference.") + config_problems(targets, "targets.")
    if problems:
        raise ConfigError([f"{p} (in {source})" for p in problems])
    return inference, targets


def headline_metrics(variants: dict[str, dict[str, Any]], split: str) -> dict[str, float]:
    """``{split}/kappa``, ``{split}/kappa_crf``, ``{split}/class1_precision``, ... (summary.json)."""
    out = {}
    for variant, suffix in (("no_crf", ""), ("crf", "_crf")):
        for name in HEADLINE_SCORES:
            value = variants.get(variant, {}).get(name)
            if value is not None:
                out[f"{split}/{name}{suffix}"] = float(value)
    return out


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """``risk-evaluate``: predict a stack with trained model(s), refine with the CRF, score it.

    Every input is checked before the output folder is touched: the paths, that the stack, labels
    and split mask share one grid, that each checkpoint loads (:func:`load_checkpoint`) and fits the
    stack's band count. Returns the ``summary.json`` record.
    """
    from eo_common.raster import finalize_geotiff
    from eo_common.runs import RunFolder

    from risk_mapping.crf import crf_raster
    from risk_mapping.predict import (
        finalize_class_map,
        inference_device,
        load_models,
        predict_raster,
    )

    folder = RunFolder.plan(cfg, "risk-evaluate")
    ckpts = _checkpoints(Path(cfg.model_path))
    stack, labels = _test_data(Path(cfg.test_data_path), cfg.labels)
    check_same_grid([stack, labels] + ([cfg.split_mask] if cfg.split_mask else []))
    device = inference_device(cfg.run.accelerator)
    models = load_models(ckpts, device)
    with rasterio.open(stack) as src:
        bands = src.count
    for path, model in zip(ckpts, models):
        if int(model.config["in_channels"]) != bands:
            raise InputError(
                f"{stack.name} has {bands} bands, the model in {path} expects "
                f"{model.config['in_channels']}",
                path=stack,
            )
    inference, targets = _sections(cfg, models[0].config.get("pipeline_config") or {})
    use_crf = inference.crf.enabled and cfg.crf
    bad = [b for b in inference.crf.image_bands if b >= bands]
    if use_crf and bad:
        raise ConfigError(f"inference.crf.image_bands: band(s) {bad} do not exist in {stack}")
    if cfg.compare_baseline is not None:
        load_baseline(cfg.compare_baseline)  # a bad baseline file is reported before any work
    out_dir = folder.open()
    maps = out_dir / "maps"
    paths = predict_raster(
        models, stack, maps, inference, device=device, seed=cfg.seed, progress=cfg.progress
    )
    if use_crf:
        crf_raster(
            paths["probabilities"],
            stack,
            maps / "class_map_crf.tif",
            maps / "susceptibility_crf.tif",
            inference.crf,
            progress=cfg.progress,
        )
        finalize_class_map(maps / "class_map_crf.tif", "risk class after dense CRF")
        finalize_geotiff(maps / "susceptibility_crf.tif", cog=inference.cog)
    split = cfg.split if cfg.split_mask else "all"
    variants = evaluate_products(maps, labels, split_mask_path=cfg.split_mask, split=split)
    written = write_evaluation(
        out_dir,
        variants,
        targets,
        cfg.compare_baseline,
        extra={"checkpoints": [str(c) for c in ckpts], "stack": str(stack), "labels": str(labels)},
    )
    return folder.finish(
        metrics=headline_metrics(variants, split),
        paths={"maps": maps, **{k: v for k, v in written.items()}},
        device=device,
        extra={"checkpoints": [str(c) for c in ckpts], "split": split},
    )
