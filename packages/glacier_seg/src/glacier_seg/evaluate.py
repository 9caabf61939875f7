"""``glacier-eval``: competition MCC of one checkpoint or an ensemble, with TTA and multi-scale.

The MCC is computed exactly as the competition does: every valid pixel of every evaluated tile
flattened into one vector, scored with ``sklearn.metrics.matthews_corrcoef``. The streaming
confusion matrix (:class:`eo_common.metrics.SegmentationMetrics`) gives the same number and
``metrics.json`` stores both (``mcc`` and ``mcc_sklearn``) so any disagreement is visible. Pixels
without a value in some band (NaN, inf, nodata) are left out of both.

The run folder gets ``config.yaml``, ``summary.json`` (``test/mcc``, ``test/kappa``, per-class IoU),
``metrics.json``, ``confusion_matrix.png`` and ``panel_<tile>.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from eo_common.errors import InputError
from eo_common.io import atomic_save_json
from eo_common.metrics import SegmentationMetrics
from eo_common.runs import RunFolder

from glacier_seg.config import CLASS_NAMES, GlacierEvalConfig, split_keys
from glacier_seg.data import TileArrays, default_glcm_cache
from glacier_seg.inference import (
    LoadedModel,
    check_same_inputs,
    inference_device,
    iter_tiles,
    load_model,
    predict_tiles,
)
from glacier_seg.layout import (
    IGNORE_INDEX,
    LabelValueError,
    binary_mask_problem,
    canonical_key,
    check_tile_files,
    find_tiles,
    read_mask_values,
)

__all__ = ["COMMAND", "CLASS_COLORS", "evaluate", "save_prediction_panels", "select_tiles"]

COMMAND = "glacier-eval"
#: display colours (RGB, 0..1) of background, glacier, debris, lake in panels
CLASS_COLORS = np.array(
    [[0.15, 0.15, 0.15], [0.55, 0.85, 1.0], [0.65, 0.45, 0.25], [0.1, 0.2, 0.9]], dtype=np.float32
)


def _colorize(classes: np.ndarray) -> np.ndarray:
    out = CLASS_COLORS[np.where(classes == IGNORE_INDEX, 0, classes).astype(np.int64)]
    out[classes == IGNORE_INDEX] = 1.0  # invalid pixels white
    return out


def save_prediction_panels(
    tile: TileArrays, prediction: np.ndarray, out_png: Path, title: str | None = None
) -> Path:
    """PNG with RGB (B4, B3, B2), truth, prediction and the error map of one tile."""
    from eo_common.viz import rgb_composite, save_panels

    rgb = rgb_composite(np.nan_to_num(tile.image[:3]), bands=(2, 1, 0))
    panels: list[tuple[str, np.ndarray]] = [(f"tile {tile.tile_id} RGB (B4,B3,B2)", rgb)]
    if tile.mask is not None:
        panels.append(("truth (bg/glacier/debris/lake)", _colorize(tile.mask)))
    panels.append(("prediction", _colorize(np.where(tile.valid, prediction, IGNORE_INDEX))))
    if tile.mask is not None:
        wrong = (prediction != tile.mask) & (tile.mask != IGNORE_INDEX)
        panels.append(("errors (white)", np.repeat(wrong[..., None], 3, -1).astype(np.float32)))
    return save_panels(panels, out_png)


def select_tiles(cfg: GlacierEvalConfig, first: LoadedModel) -> list[Any]:
    """The labelled tiles to score: ``tile_ids``, else the checkpoint's validation tiles
    (``split val``), else all; every file checked, mask values read."""
    tiles = find_tiles(cfg.data.root)
    wanted = [canonical_key(k) for k in split_keys(cfg.tile_ids)] or None
    if wanted is None and cfg.split == "val":
        wanted = first.val_tiles
        if wanted is None:
            raise InputError(
                "split val: the checkpoint records no validation tiles (and no summary.json lies "
                "beside its folder); pass --tile_ids or --split all",
                path=first.path,
            )
    if wanted is not None:
        known = {t.tile_id for t in tiles}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise InputError(f"tile keys {missing} not found", path=cfg.data.root)
        tiles = [t for t in tiles if t.tile_id in set(wanted)]
    for tile in tiles:
        check_tile_files(tile)
    return tiles


def evaluate(cfg: GlacierEvalConfig) -> dict[str, Any]:
    """Score the checkpoint(s); write the run folder; return ``summary.json``'s record.

    ``metrics.json`` holds ``mcc`` (streaming confusion matrix), ``mcc_sklearn`` (flattened valid
    pixels, ``sklearn.metrics.matthews_corrcoef``), kappa, accuracy, per-class IoU/F1, the confusion
    matrix, the tile ids and the settings.

    Raises:
        eo_common.errors.CheckpointError: a checkpoint is missing, corrupt or of another command.
        eo_common.errors.InputError: tiles missing, unpaired, of another grid, bad mask values.
    """
    from sklearn.metrics import matthews_corrcoef

    folder = RunFolder.plan(cfg, COMMAND)
    device = inference_device(cfg.run)
    models = [load_model(p, device) for p in cfg.checkpoints]
    check_same_inputs(models)
    tiles = select_tiles(cfg, models[0])
    raw = {t.tile_id: read_mask_values(t.label_path) for t in tiles}
    if cfg.data.binary_masks == "refuse":
        problem = binary_mask_problem(
            {t.label_path: set(np.unique(raw[t.tile_id]).tolist()) for t in tiles},
            Path(cfg.data.root),
        )
        if problem:
            raise LabelValueError(problem)
    binary = "glacier" if cfg.data.binary_masks == "glacier" else "four_class"
    run_dir = folder.open()
    cache = cfg.data.glcm_cache or default_glcm_cache()
    arrays = list(
        iter_tiles(
            tiles,
            cfg.data.workers,
            glcm=models[0].texture,
            cache_dir=cache,
            masks=raw,
            binary=binary,
        )
    )
    predictions = predict_tiles(
        models, arrays, cfg.tta, cfg.scales, cfg.data.batch_size, cfg.window, cfg.window_overlap
    )

    metric = SegmentationMetrics(
        len(CLASS_NAMES), ignore_index=IGNORE_INDEX, class_names=CLASS_NAMES
    )
    for tile, pred in zip(arrays, predictions):
        metric.update(
            torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(tile.mask.astype(np.int64))
        )
    result = metric.compute()
    valid = [t.mask != IGNORE_INDEX for t in arrays]
    y_true = np.concatenate([t.mask[v] for t, v in zip(arrays, valid)])
    y_pred = np.concatenate([p[v] for p, v in zip(predictions, valid)])
    result["mcc_sklearn"] = float(matthews_corrcoef(y_true, y_pred))
    result["tile_ids"] = [t.tile_id for t in arrays]
    result["n_pixels"] = int(y_true.size)
    result["n_invalid_pixels"] = int(sum(int((~v).sum()) for v in valid))
    result["settings"] = {
        "checkpoints": [str(p) for p in cfg.checkpoints],
        "tta": cfg.tta,
        "scales": list(cfg.scales),
    }
    from eo_common.viz import plot_confusion_matrix

    atomic_save_json(result, run_dir / "metrics.json")
    plot_confusion_matrix(
        np.asarray(result["confusion_matrix"]), list(CLASS_NAMES), run_dir / "confusion_matrix.png"
    )
    # panels of the tiles with the most glacier/debris/lake pixels (the informative ones)
    ranked = sorted(
        zip(arrays, predictions),
        key=lambda tp: -int(((tp[0].mask > 0) & (tp[0].mask != IGNORE_INDEX)).sum()),
    )
    panels = [
        save_prediction_panels(tile, pred, run_dir / f"panel_{tile.tile_id}.png")
        for tile, pred in ranked[: cfg.max_panels]
    ]
    headline = {
        "test/mcc": result["mcc"],
        "test/mcc_sklearn": result["mcc_sklearn"],
        "test/kappa": result["kappa"],
        "test/accuracy": result["accuracy"],
    }
    for name, scores in result["per_class"].items():
        headline[f"test/per_class/{name}/iou"] = scores["iou"]
        headline[f"test/per_class/{name}/f1"] = scores["f1"]
    return folder.finish(
        metrics=headline,
        paths={
            "metrics_json": run_dir / "metrics.json",
            "confusion_matrix": run_dir / "confusion_matrix.png",
            **{f"panel_{p.stem[6:]}": p for p in map(Path, panels)},
        },
        device=str(device),
        extra={
            "tile_ids": result["tile_ids"],
            "n_pixels": result["n_pixels"],
            "n_invalid_pixels": result["n_invalid_pixels"],
            "confusion_matrix": result["confusion_matrix"],
        },
    )
