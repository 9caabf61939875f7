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

Example:
    glacier-diagnose --data_root GlacierHack/train --out_dir runs/diagnose --ablation_epochs 3
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eo_common.io import atomic_save_json
from eo_common.metrics import SegmentationMetrics
from eo_common.raster import read_raster
from eo_common.training import seed_everything

from glacier_seg import train as train_cli
from glacier_seg.data import (
    BAND_NAMES,
    CLASS_NAMES,
    MASK_VALUES,
    Normalizer,
    TileArrays,
    find_tiles,
    load_tiles,
    scan_layout,
    split_tiles,
)
from glacier_seg.model import LossConfig, ModelConfig, build_loss, build_model
from glacier_seg.train import GlacierTrainConfig, padded_forward, run_cli, train

__all__ = [
    "label_value_histogram",
    "class_fractions",
    "channel_statistics",
    "trivial_baseline_mcc",
    "overfit_one_batch",
    "run_ablation",
    "diagnose",
    "main",
]


def label_value_histogram(label_paths: Sequence[Path]) -> dict[str, Any]:
    """Counts of every raw value stored in the label files (before mapping to classes).

    Returns ``{"counts": {value: n}, "unexpected": [values], "per_file_unexpected": {file: [values]}}``.
    """
    counts: dict[int, int] = {}
    per_file: dict[str, list[int]] = {}
    for path in label_paths:
        values, n = np.unique(read_raster(path, bands=[1]).array, return_counts=True)
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
    """Share of each class over all pixels of ``masks`` (classes 0..3)."""
    counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    for m in masks:
        counts += np.bincount(m.ravel(), minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
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
    """scikit-learn MCC of an all-background prediction over all pixels flattened (0.0)."""
    from sklearn.metrics import matthews_corrcoef

    y = np.concatenate([m.ravel() for m in masks])
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
        images: (B, C, H, W) normalised. masks: (B, H, W) long classes.
        steps: most optimiser steps (stops early once ``target_mcc`` is reached).

    Returns:
        ``{"mcc", "steps", "loss_first", "loss_last", "passed", "seconds"}``.
    """
    seed_everything(seed)
    model_cfg = dataclasses.replace(model_cfg, in_channels=images.shape[1])
    model = build_model(model_cfg)
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
        metric = SegmentationMetrics(len(CLASS_NAMES), ignore_index=None)
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


def run_ablation(cfg: GlacierTrainConfig, epochs: int, out_dir: Path) -> dict[str, Any]:
    """Train short runs (same seed and split) with 5 vs 7 channels, and with the configured
    encoder weights vs none when weights are given; returns best validation MCC per variant."""
    variants: dict[str, GlacierTrainConfig] = {}
    base = copy.deepcopy(cfg)
    base.train.max_epochs = epochs
    base.train.early_stop_patience = 0
    base.train.output_dir = out_dir / "ablation"
    for name, include in (("5ch_bands", False), ("7ch_bands_glcm", True)):
        v = copy.deepcopy(base)
        v.data.include_glcm = include
        v.model.encoder_weights = "none"
        v.train.experiment_name = name
        variants[name] = v
    weights = (cfg.model.encoder_weights or "none").lower()
    if weights != "none":
        v = copy.deepcopy(base)
        v.train.experiment_name = "7ch_pretrained"
        variants["7ch_pretrained"] = v
    results = {}
    for name, v in variants.items():
        v.data.glcm_cache = cfg.data.glcm_cache or (out_dir / "glcm_cache")
        summary = train(v, enable_progress_bar=False, enable_model_summary=False)
        results[name] = {
            "best_val_mcc": summary["best_val_mcc"],
            "epochs": summary["epochs"],
            "seconds": summary["seconds"],
        }
    return results


@dataclass
class DiagnoseConfig:
    """Flags of ``glacier-diagnose`` (the data/model flags are those of ``glacier-train``)."""

    train: GlacierTrainConfig
    out_dir: Path
    overfit_steps: int = 200
    overfit_crop: int = 64
    target_mcc: float = 0.9
    ablation_epochs: int = 0


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


def diagnose(cfg: DiagnoseConfig) -> dict[str, Any]:
    """Run all checks; writes ``report.json``, ``report.md`` and ``class_fractions.png``."""
    tc = cfg.train
    if tc.data.data_root is None:
        raise ValueError("--data_root is required")
    out = Path(cfg.out_dir)
    report: dict[str, Any] = {}
    pairing = scan_layout(tc.data.data_root)
    report["pairing"] = pairing.to_dict()
    if not pairing.ok:  # nothing else can be trusted; report and stop
        atomic_save_json(report, out / "report.json")
        (out / "report.md").write_text(
            "# glacier-diagnose\n\nPAIRING FAILED:\n\n"
            + "\n".join(f"- {p}" for p in pairing.problems())
            + "\n"
        )
        return report
    tiles = find_tiles(tc.data.data_root)
    report["label_values"] = label_value_histogram([t.label_path for t in tiles if t.label_path])
    if report["label_values"]["unexpected"]:
        atomic_save_json(report, out / "report.json")
        return report
    glcm = tc.data.glcm
    arrays = load_tiles(
        tiles, glcm=glcm, cache_dir=tc.data.glcm_cache or out / "glcm_cache", progress=True
    )
    train_ids, val_ids = split_tiles(
        [a.tile_id for a in arrays], tc.data.val_fraction, tc.train.seed, tc.data.val_ids
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
    report["trivial_baseline_mcc"] = trivial_baseline_mcc([a.mask for a in arrays])
    # overfit one batch: crops (class-balanced, fixed seed) of up to 4 training tiles
    normalizer = Normalizer(tc.data.normalization).fit([a.image for a in splits["train"]])
    rng = np.random.default_rng(tc.train.seed)
    size = min(cfg.overfit_crop, *(min(a.image.shape[1:]) for a in splits["train"]))
    images, masks = [], []
    for a in splits["train"][:4]:
        r0 = int(rng.integers(a.image.shape[1] - size + 1))
        c0 = int(rng.integers(a.image.shape[2] - size + 1))
        images.append(normalizer(a.image)[:, r0 : r0 + size, c0 : c0 + size])
        masks.append(a.mask[r0 : r0 + size, c0 : c0 + size].astype(np.int64))
    batch_x = torch.from_numpy(np.stack(images))
    batch_y = torch.from_numpy(np.stack(masks))
    model_cfg = dataclasses.replace(tc.model, encoder_weights="none")
    report["overfit_one_batch"] = overfit_one_batch(
        batch_x,
        batch_y,
        model_cfg,
        steps=cfg.overfit_steps,
        target_mcc=cfg.target_mcc,
        seed=tc.train.seed,
    )
    if cfg.ablation_epochs > 0:
        report["ablation"] = run_ablation(tc, cfg.ablation_epochs, out)
    atomic_save_json(report, out / "report.json")
    _plot_fractions(report["class_fractions"], out / "class_fractions.png")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    return report


def _glcm_channel_names(glcm: Any) -> list[str]:
    if glcm.average_angles:
        return list(glcm.properties)
    return [
        f"{p}_d{d}_a{a:g}" for p in glcm.properties for d in glcm.distances for a in glcm.angles_deg
    ]


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# glacier-diagnose", ""]
    p = report["pairing"]
    lines.append(f"- pairing: {'OK' if p['ok'] else 'FAILED'}, {p['n_paired']} tiles paired by id")
    lines.append(
        f"- label values: {report['label_values']['counts']} (unexpected: {report['label_values']['unexpected'] or 'none'})"
    )
    lines.append(f"- trivial baseline (all background) MCC: {report['trivial_baseline_mcc']:.4f}")
    o = report["overfit_one_batch"]
    lines.append(
        f"- overfit one batch: MCC {o['mcc']:.4f} after {o['steps']} steps ({'PASS' if o['passed'] else 'FAIL'})"
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
            lines.append(f"| {name} | {r['best_val_mcc']:.4f} | {r['epochs']} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = train_cli.build_parser()
    parser.prog = "glacier-diagnose"
    parser.description = (
        "Checks for a glacier run that scores near MCC 0: pairing by tile id, raw label values, class "
        "fractions per split, band and GLCM statistics, trivial-baseline MCC, an overfit-one-batch sanity "
        "run, and a short 5- vs 7-channel ablation."
    )
    g = parser.add_argument_group("diagnose")
    g.add_argument(
        "--out_dir",
        type=Path,
        default=Path("runs/diagnose"),
        help="report folder (default %(default)s)",
    )
    g.add_argument(
        "--overfit_steps",
        type=int,
        default=200,
        help="most steps of the overfit-one-batch run (default %(default)s)",
    )
    g.add_argument("--overfit_crop", type=int, default=64, help="crop side of the overfit batch")
    g.add_argument(
        "--target_mcc",
        type=float,
        default=0.9,
        help="MCC the overfit run must reach (default %(default)s)",
    )
    g.add_argument(
        "--ablation_epochs",
        type=int,
        default=0,
        help="epochs per ablation variant; 0 skips the ablation",
    )
    parser.set_defaults(encoder_name="resnet18")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``glacier-diagnose``; exit code 1 when a check fails."""

    def run(ns: argparse.Namespace) -> dict[str, Any]:
        tc = train_cli.config_from_args(ns)
        tc.data.include_glcm = True
        report = diagnose(
            DiagnoseConfig(
                tc, ns.out_dir, ns.overfit_steps, ns.overfit_crop, ns.target_mcc, ns.ablation_epochs
            )
        )
        return {
            "pairing_ok": report["pairing"]["ok"],
            "unexpected_label_values": report.get("label_values", {}).get("unexpected"),
            "trivial_baseline_mcc": report.get("trivial_baseline_mcc"),
            "overfit_one_batch": report.get("overfit_one_batch"),
            "ablation": report.get("ablation"),
            "report": str(Path(ns.out_dir) / "report.md"),
        }

    return run_cli(run, argv, build_parser())


if __name__ == "__main__":
    raise SystemExit(main())
