"""``glacier-diagnose``: the checks that would have caught a run stuck at MCC 0.02-0.04.

An MCC that low means predictions unrelated to the labels (DOMAIN_FACTS): image and mask paired
by sorted file order instead of tile id, labels left as 0/85/170/255, or a collapsed model. This
tool looks at each of those before any long training:

1. **pairing report**: tile ids per folder, unpaired ids, duplicates, names without an id;
2. **label value histogram**: the raw values stored in the masks (0/85/170/255 expected) and
   whether anything unexpected is present;
3. **class fractions per split** (train/validation as ``glacier-train`` would split them);
4. **band statistics** per channel and split (mean, std, 2/98 percentiles, NaN count), including
   the **GLCM channels**;
5. **trivial baseline MCC**: all-background prediction (scikit-learn gives 0): anything near it
   learned nothing;
6. **overfit one batch**: the model must reach a high MCC on one fixed batch within a few dozen
   steps; if it cannot, the labels do not belong to the images or the pipeline is broken;
7. **short ablation**: 5 vs 7 channels (and ``--encoder_weights`` vs none when given), a few
   epochs each with the same seed, validation MCC side by side.

The run folder gets ``report.json`` and ``report.md`` (always; when the pairing or the mask values
fail they say so and nothing else is checked), ``class_fractions.png`` once the tiles could be read,
and one ``ablation/<variant>/`` training run per variant. ``summary.json`` lists exactly the files
written.

Example:
    glacier-diagnose --data_root GlacierHack/train --output_dir runs/diagnose --ablation_epochs 3
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eo_common.config import RunConfig
from eo_common.io import atomic_save_json, atomic_write
from eo_common.metrics import SegmentationMetrics
from eo_common.runs import RunFolder
from eo_common.training import seed_everything

from glacier_seg.config import (
    CLASS_NAMES,
    GlacierDiagnoseConfig,
    GlacierTrainConfig,
    LossConfig,
    ModelConfig,
    split_keys,
)
from glacier_seg.data import Normalizer, TileArrays, default_glcm_cache, load_tiles, split_tiles
from glacier_seg.layout import (
    BAND_NAMES,
    IGNORE_INDEX,
    MASK_VALUES,
    find_tiles,
    read_mask_values,
    scan_layout,
)
from glacier_seg.model import build_loss, build_model, padded_forward
from glacier_seg.train import prepare_demo, train

__all__ = [
    "COMMAND",
    "label_value_histogram",
    "class_fractions",
    "channel_statistics",
    "trivial_baseline_mcc",
    "overfit_one_batch",
    "run_ablation",
    "diagnose",
]

COMMAND = "glacier-diagnose"


def label_value_histogram(label_paths: Sequence[Path]) -> dict[str, Any]:
    """Counts of every raw value stored in the label files (before mapping to classes).

    Returns ``{"counts": {value: n}, "unexpected": [values], "per_file_unexpected": {file: [values]}}``.
    """
    counts: dict[int, int] = {}
    per_file: dict[str, list[int]] = {}
    for path in label_paths:
        values, n = np.unique(read_mask_values(path), return_counts=True)
        for v, c in zip(values.tolist(), n.tolist()):
            counts[int(v)] = counts.get(int(v), 0) + int(c)
        bad = [int(v) for v in values if int(v) not in MASK_VALUES]
        if bad:
            per_file[str(path)] = bad
    unexpected = sorted(v for v in counts if v not in MASK_VALUES)
    return {
        "counts": dict(sorted(counts.items())),
        "unexpected": unexpected,
        "per_file_unexpected": per_file,
    }


def class_fractions(masks: Sequence[np.ndarray]) -> dict[str, float]:
    """Share of each class over the valid pixels of ``masks`` (classes 0..3, 255 = invalid)."""
    counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    for m in masks:
        valid = m[m != IGNORE_INDEX]
        counts += np.bincount(valid.ravel(), minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
    total = max(int(counts.sum()), 1)
    return {name: float(c / total) for name, c in zip(CLASS_NAMES, counts)}


def channel_statistics(
    images: Sequence[np.ndarray], names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per-channel mean, std, min, 2/98 percentiles, max and NaN count over ``images`` (C, H, W)."""
    stacked = np.concatenate([im.reshape(im.shape[0], -1) for im in images], axis=1).astype(
        np.float64
    )
    out = {}
    for name, values in zip(names, stacked):
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            out[name] = {"nan": int(values.size)}
            continue
        p2, p98 = np.percentile(finite, [2, 98])
        out[name] = {
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "min": float(finite.min()),
            "p2": float(p2),
            "p98": float(p98),
            "max": float(finite.max()),
            "nan": int(values.size - finite.size),
        }
    return out


def trivial_baseline_mcc(masks: Sequence[np.ndarray]) -> float:
    """scikit-learn MCC of an all-background prediction over all valid pixels flattened (0.0)."""
    from sklearn.metrics import matthews_corrcoef

    y = np.concatenate([m[m != IGNORE_INDEX].ravel() for m in masks])
    return float(matthews_corrcoef(y, np.zeros_like(y)))


def overfit_one_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig | None = None,
    steps: int = 100,
    lr: float = 3e-3,
    target_mcc: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a fresh model on one fixed batch; report the MCC it reaches on that batch.

    The MCC is that of each training-mode forward pass over the whole batch (all pixels
    flattened); the run stops at the first step reaching ``target_mcc``.

    Args:
        images: (B, C, H, W) normalised. masks: (B, H, W) long classes (255 = invalid).
        steps: most optimiser steps (stops early once ``target_mcc`` is reached).

    Returns:
        ``{"mcc", "steps", "loss_first", "loss_last", "passed", "seconds"}``.
    """
    seed_everything(seed)
    model = build_model(replace(model_cfg, encoder_weights="none"), in_channels=images.shape[1])
    criterion = build_loss(
        loss_cfg or LossConfig(focal_weight=1.0, dice_weight=1.0, mcc_weight=0.0)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    started = time.perf_counter()
    losses: list[float] = []
    mcc = float("nan")
    steps_done = 0
    model.train()
    for step in range(1, steps + 1):
        steps_done = step
        logits = padded_forward(model, images)
        loss, _ = criterion(logits, masks)
        # MCC of this forward pass (training mode, i.e. batch-norm on batch statistics, as the
        # network sees the batch while fitting it); eval-mode running statistics lag far behind
        # in a few dozen steps and would hide whether the labels can be fitted at all
        metric = SegmentationMetrics(len(CLASS_NAMES), ignore_index=IGNORE_INDEX)
        metric.update(logits.detach(), masks)
        mcc = float(metric.compute()["mcc"])
        losses.append(float(loss.detach()))
        if mcc >= target_mcc:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {
        "mcc": mcc,
        "steps": steps_done,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "passed": bool(mcc >= target_mcc),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _train_config(cfg: GlacierDiagnoseConfig, run: RunConfig) -> GlacierTrainConfig:
    return GlacierTrainConfig(
        data=copy.deepcopy(cfg.data),
        glcm=copy.deepcopy(cfg.glcm),
        model=copy.deepcopy(cfg.model),
        loss=copy.deepcopy(cfg.loss),
        optim=copy.deepcopy(cfg.optim),
        run=run,
        export_smp=False,
    )


def run_ablation(cfg: GlacierDiagnoseConfig, epochs: int, out_dir: Path) -> dict[str, Any]:
    """Short ``glacier-train`` runs (same seed and split) with 5 vs 7 channels, and with the configured
    encoder weights vs none when weights are given; returns best validation MCC per variant.

    Each variant is an ordinary run folder ``out_dir/ablation/<variant>``.
    """
    variants: dict[str, GlacierTrainConfig] = {}
    for name, include, weights in (
        ("5ch_bands", False, "none"),
        ("7ch_bands_glcm", True, "none"),
        ("7ch_pretrained", True, cfg.model.encoder_weights),
    ):
        if name == "7ch_pretrained" and (weights or "none").strip().lower() in ("none", ""):
            continue
        run = replace(
            cfg.run, output_dir=Path(out_dir) / "ablation", name=name, progress=False, log=["csv"]
        )
        v = _train_config(cfg, run)
        v.data.include_glcm = include
        v.model.encoder_weights = weights
        v.optim.epochs = epochs
        v.optim.early_stop_patience = 0
        variants[name] = v
    results = {}
    for name, v in variants.items():
        summary = train(v)
        results[name] = {
            "best_val_mcc": summary["metrics"].get("val/mcc"),
            "epochs": summary["epochs_run"],
            "seconds": summary["seconds"],
        }
    return results


def _plot_fractions(fractions: dict[str, dict[str, float]], out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(len(fractions), 1)
    x = np.arange(len(CLASS_NAMES))
    for k, (split, fr) in enumerate(fractions.items()):
        ax.bar(x + k * width, [100 * fr[c] for c in CLASS_NAMES], width, label=split)
    ax.set_xticks(x + width * (len(fractions) - 1) / 2, CLASS_NAMES)
    ax.set_ylabel("% of pixels")
    ax.set_yscale("log")
    ax.set_title("class fractions per split")
    ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def _write_report(report: dict[str, Any], out: Path) -> list[Path]:
    atomic_save_json(report, out / "report.json")
    with atomic_write(out / "report.md", "w") as f:
        f.write(_markdown(report))
    return [out / "report.json", out / "report.md"]


def _finish(
    folder: RunFolder, report: dict[str, Any], metrics: dict[str, float], paths: list[Path]
) -> dict[str, Any]:
    return folder.finish(
        metrics=metrics,
        paths={p.name.replace(".", "_"): p for p in paths},
        extra={
            "pairing_ok": report["pairing"]["ok"],
            "problems": report["pairing"]["problems"],
            "unexpected_label_values": report.get("label_values", {}).get("unexpected"),
            "overfit_passed": report.get("overfit_one_batch", {}).get("passed"),
        },
    )


def diagnose(cfg: GlacierDiagnoseConfig) -> dict[str, Any]:
    """Run every check; write ``report.json``, ``report.md`` and ``class_fractions.png``.

    Returns ``summary.json``'s record: ``metrics`` holds ``diagnose/pairing_ok``,
    ``diagnose/overfit_mcc`` ...; ``paths`` exactly the files written.
    """
    folder = RunFolder.plan(cfg, COMMAND)
    if cfg.data.demo:
        tc = _train_config(cfg, cfg.run)
        prepare_demo(tc)
        cfg.data.root, cfg.data.val_ids = tc.data.root, tc.data.val_ids
    root = Path(cfg.data.root)
    report: dict[str, Any] = {}
    pairing = scan_layout(root)
    report["pairing"] = pairing.to_dict()
    out = folder.open()
    metrics: dict[str, float] = {"diagnose/pairing_ok": float(pairing.ok)}
    if not pairing.ok:  # nothing else can be trusted; report and stop
        return _finish(folder, report, metrics, _write_report(report, out))
    tiles = find_tiles(root)
    report["label_values"] = label_value_histogram([t.label_path for t in tiles if t.label_path])
    if report["label_values"]["unexpected"]:
        return _finish(folder, report, metrics, _write_report(report, out))
    glcm = cfg.glcm.texture()
    cache = cfg.data.glcm_cache or default_glcm_cache()
    arrays = load_tiles(tiles, glcm=glcm, cache_dir=cache, progress=cfg.run.progress)
    train_ids, val_ids = split_tiles(
        [a.tile_id for a in arrays],
        cfg.data.val_fraction,
        cfg.run.seed,
        split_keys(cfg.data.val_ids),
    )
    splits: dict[str, list[TileArrays]] = {
        "train": [a for a in arrays if a.tile_id in set(train_ids)],
        "val": [a for a in arrays if a.tile_id in set(val_ids)],
    }
    report["split"] = {"train": train_ids, "val": val_ids}
    report["class_fractions"] = {
        s: class_fractions([a.mask for a in v]) for s, v in splits.items() if v
    }
    names = list(BAND_NAMES) + [f"glcm_{n}" for n in _glcm_channel_names(glcm)]
    report["channel_statistics"] = {
        s: channel_statistics([a.image for a in v], names) for s, v in splits.items() if v
    }
    report["invalid_pixels"] = int(sum(int((~a.valid).sum()) for a in arrays))
    report["trivial_baseline_mcc"] = trivial_baseline_mcc([a.mask for a in arrays])
    # overfit one batch: crops (fixed seed) of up to 4 training tiles
    fit_tiles = splits["train"] or arrays
    normalizer = Normalizer(cfg.data.normalization).fit([a.image for a in fit_tiles])
    rng = np.random.default_rng(cfg.run.seed)
    size = min(cfg.diagnose.overfit_crop, *(min(a.image.shape[1:]) for a in fit_tiles))
    images, masks = [], []
    for a in fit_tiles[:4]:
        r0 = int(rng.integers(a.image.shape[1] - size + 1))
        c0 = int(rng.integers(a.image.shape[2] - size + 1))
        images.append(normalizer(a.image)[:, r0 : r0 + size, c0 : c0 + size])
        masks.append(a.mask[r0 : r0 + size, c0 : c0 + size].astype(np.int64))
    report["overfit_one_batch"] = overfit_one_batch(
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(masks)),
        cfg.model,
        steps=cfg.diagnose.overfit_steps,
        target_mcc=cfg.diagnose.target_mcc,
        seed=cfg.run.seed,
    )
    metrics["diagnose/trivial_baseline_mcc"] = report["trivial_baseline_mcc"]
    metrics["diagnose/overfit_mcc"] = report["overfit_one_batch"]["mcc"]
    if cfg.diagnose.ablation_epochs > 0:
        report["ablation"] = run_ablation(cfg, cfg.diagnose.ablation_epochs, out)
        for name, r in report["ablation"].items():
            if r["best_val_mcc"] is not None:
                metrics[f"diagnose/ablation/{name}/val_mcc"] = r["best_val_mcc"]
    paths = _write_report(report, out)
    paths.append(_plot_fractions(report["class_fractions"], out / "class_fractions.png"))
    return _finish(folder, report, metrics, paths)


def _glcm_channel_names(glcm: Any) -> list[str]:
    if glcm.average_angles:
        return list(glcm.properties)
    return [
        f"{p}_d{d}_a{a:g}" for p in glcm.properties for d in glcm.distances for a in glcm.angles_deg
    ]


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# glacier-diagnose", ""]
    p = report["pairing"]
    lines.append(f"- pairing: {'OK' if p['ok'] else 'FAILED'}, {p['n_paired']} tiles paired by key")
    if not p["ok"]:
        lines += ["", "PAIRING FAILED:", ""] + [f"- {line}" for line in p["problems"]]
        return "\n".join(lines) + "\n"
    labels = report["label_values"]
    lines.append(
        f"- mask values: {labels['counts']} (unexpected: {labels['unexpected'] or 'none'})"
    )
    if labels["unexpected"]:
        lines += ["", "UNEXPECTED MASK VALUES (expected 0/85/170/255):", ""]
        lines += [f"- {f}: {v}" for f, v in labels["per_file_unexpected"].items()]
        return "\n".join(lines) + "\n"
    lines.append(f"- invalid pixels (no value in some band): {report['invalid_pixels']}")
    lines.append(f"- trivial baseline (all background) MCC: {report['trivial_baseline_mcc']:.4f}")
    o = report["overfit_one_batch"]
    lines.append(
        f"- overfit one batch: MCC {o['mcc']:.4f} after {o['steps']} steps "
        f"({'PASS' if o['passed'] else 'FAIL'})"
    )
    lines += [
        "",
        "| split | " + " | ".join(CLASS_NAMES) + " |",
        "|---" * (len(CLASS_NAMES) + 1) + "|",
    ]
    for split, fr in report["class_fractions"].items():
        lines.append(
            f"| {split} | " + " | ".join(f"{100 * fr[c]:.3f} %" for c in CLASS_NAMES) + " |"
        )
    if "ablation" in report:
        lines += ["", "| variant | best val MCC | epochs |", "|---|---|---|"]
        for name, r in report["ablation"].items():
            score = "n/a" if r["best_val_mcc"] is None else f"{r['best_val_mcc']:.4f}"
            lines.append(f"| {name} | {score} | {r['epochs']} |")
    return "\n".join(lines) + "\n"
