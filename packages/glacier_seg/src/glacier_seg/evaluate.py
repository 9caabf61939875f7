"""``glacier-eval``: competition MCC of one checkpoint or an ensemble, with TTA and multi-scale.

The MCC is computed exactly as the competition does: every pixel of every evaluated tile
flattened into one vector, scored with ``sklearn.metrics.matthews_corrcoef``. The streaming
confusion matrix (:class:`eo_common.metrics.SegmentationMetrics`) gives the same number and
``metrics.json`` stores both (``mcc`` and ``mcc_sklearn``) so any disagreement is visible.

Example:
    glacier-eval --checkpoints runs/glacier/checkpoints/best.ckpt --data_root GlacierHack/train \\
        --split val --tta --scales 1.0,0.75 --out_dir runs/glacier/eval
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from eo_common.io import atomic_save_json
from eo_common.metrics import SegmentationMetrics
from tqdm.auto import tqdm

from glacier_seg.data import CLASS_NAMES, Normalizer, TileArrays, find_tiles, load_tiles
from glacier_seg.texture import GLCMConfig
from glacier_seg.train import GlacierSegModule, padded_forward, run_cli

__all__ = [
    "EvalConfig",
    "LoadedModel",
    "load_model",
    "check_same_inputs",
    "predict_probabilities",
    "predict_tiles",
    "evaluate",
    "save_prediction_panels",
    "main",
]

CLASS_COLORS = np.array(
    [[0.15, 0.15, 0.15], [0.55, 0.85, 1.0], [0.65, 0.45, 0.25], [0.1, 0.2, 0.9]], dtype=np.float32
)


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: the module (eval mode), its GLCM setting and normaliser."""

    module: GlacierSegModule
    include_glcm: bool
    glcm: GLCMConfig
    normalizer: Normalizer
    path: Path


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Load a ``glacier-train`` checkpoint (the data config travels inside it).

    Raises:
        FileNotFoundError: no such checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    hparams = torch.load(path, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    if "model" not in hparams:
        raise ValueError(f"{path}: not a glacier-train checkpoint (no model hyper-parameters)")
    # the trained weights are in the checkpoint: never fetch or read the initial encoder weights again
    model_hparams = dict(hparams["model"], encoder_weights="none")
    module = GlacierSegModule.load_from_checkpoint(path, map_location=device, model=model_hparams)
    module.eval()
    data = module.hparams.get("data") or {}
    glcm_dict = dict(data.get("glcm") or {})
    for key in ("distances", "angles_deg", "properties", "clip_percentiles"):
        if key in glcm_dict:
            glcm_dict[key] = tuple(glcm_dict[key])
    return LoadedModel(
        module=module,
        include_glcm=bool(data.get("include_glcm", False)),
        glcm=GLCMConfig(**glcm_dict),
        normalizer=Normalizer.from_dict(data["normalizer"]),
        path=path,
    )


def check_same_inputs(models: Sequence[LoadedModel]) -> None:
    """An ensemble must read the same channels (same GLCM setting); normalisers may differ."""
    first = models[0]
    for m in models[1:]:
        if m.include_glcm != first.include_glcm or (m.include_glcm and m.glcm != first.glcm):
            raise ValueError(
                f"{m.path}: its input channels (GLCM setting) differ from {first.path}"
            )


@torch.no_grad()
def predict_probabilities(
    module: torch.nn.Module,
    image: torch.Tensor,
    tta: bool = False,
    scales: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Class probabilities of one normalised tile, averaged over flips and scales.

    Args:
        module: maps (B, C, h, w) -> (B, K, h, w) logits (h, w multiples of 32 after padding).
        image: (C, H, W) float32.
        tta: average over identity, horizontal, vertical and both flips.
        scales: resize factors (bilinear input, bilinear logits back to (H, W)).

    Returns:
        (K, H, W) float32 probabilities.
    """
    x = image.unsqueeze(0)
    height, width = x.shape[-2:]
    flips: list[tuple[int, ...]] = [()] + ([(-1,), (-2,), (-2, -1)] if tta else [])
    total = None
    count = 0
    for scale in scales:
        xs = (
            x
            if scale == 1.0
            else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        )
        for dims in flips:
            xin = torch.flip(xs, dims) if dims else xs
            logits = padded_forward(module, xin)
            logits = torch.flip(logits, dims) if dims else logits
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
            probs = logits.softmax(dim=1)[0]
            total = probs if total is None else total + probs
            count += 1
    assert total is not None
    return total / count


def predict_tiles(
    models: Sequence[LoadedModel],
    tiles: Sequence[TileArrays],
    tta: bool = False,
    scales: Sequence[float] = (1.0,),
    progress: bool = True,
) -> list[np.ndarray]:
    """Ensemble prediction: mean probabilities over models, argmax -> (H, W) uint8 classes."""
    out = []
    for tile in tqdm(tiles, desc="predict", disable=not progress):
        probs = None
        for m in models:
            x = torch.from_numpy(m.normalizer(tile.image)).to(m.module.device)
            p = predict_probabilities(m.module.net, x, tta, scales)
            probs = p if probs is None else probs + p
        assert probs is not None
        out.append(probs.argmax(0).cpu().numpy().astype(np.uint8))
    return out


def _colorize(classes: np.ndarray) -> np.ndarray:
    return CLASS_COLORS[classes.astype(np.int64)]


def save_prediction_panels(
    tile: TileArrays, prediction: np.ndarray, out_png: Path, title: str | None = None
) -> Path:
    """PNG with RGB (B4, B3, B2), truth, prediction and the error map of one tile."""
    from eo_common.viz import rgb_composite, save_panels

    rgb = rgb_composite(tile.image[:3], bands=(2, 1, 0))
    panels: list[tuple[str, np.ndarray]] = [(f"tile {tile.tile_id} RGB (B4,B3,B2)", rgb)]
    if tile.mask is not None:
        panels.append(("truth (bg/glacier/debris/lake)", _colorize(tile.mask)))
    panels.append(("prediction", _colorize(prediction)))
    if tile.mask is not None:
        panels.append(
            (
                "errors (white)",
                np.repeat((prediction != tile.mask)[..., None], 3, -1).astype(np.float32),
            )
        )
    return save_panels(panels, out_png)


@dataclass
class EvalConfig:
    """Flags of ``glacier-eval``."""

    checkpoints: list[Path]
    data_root: Path
    split: str = "val"
    tile_ids: tuple[str, ...] = ()
    tta: bool = False
    scales: tuple[float, ...] = (1.0,)
    out_dir: Path | None = None
    max_panels: int = 8
    glcm_cache: Path | None = None
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


def _default_cache(checkpoint: Path) -> Path | None:
    """``<output_dir>/glcm_cache`` for a checkpoint in ``<output_dir>/<run>/checkpoints/``, else
    no cache (never guess a folder outside a run layout)."""
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent.parent / "glcm_cache"
    return None


def _val_ids_of(checkpoint: Path) -> list[str] | None:
    summary = checkpoint.parent.parent / "summary.json"
    if summary.is_file():
        return list(json.loads(summary.read_text())["val_tiles"])
    return None


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate; writes ``metrics.json``, ``confusion_matrix.png`` and panels under ``out_dir``.

    Returns the metrics dict: ``mcc`` (streaming confusion matrix), ``mcc_sklearn`` (flattened
    pixels, ``sklearn.metrics.matthews_corrcoef``), kappa, accuracy, per-class IoU/F1, the
    confusion matrix, the tile ids and the settings.
    """
    from sklearn.metrics import matthews_corrcoef

    if not cfg.checkpoints:
        raise ValueError("give at least one --checkpoints path")
    models = [load_model(p, cfg.device) for p in cfg.checkpoints]
    check_same_inputs(models)
    tiles = find_tiles(cfg.data_root)
    wanted: list[str] | None = list(cfg.tile_ids) or None
    if wanted is None and cfg.split == "val":
        wanted = _val_ids_of(models[0].path)
        if wanted is None:
            raise ValueError(
                f"--split val: no summary.json beside {models[0].path.parent}; pass --tile_ids or --split all"
            )
    if wanted is not None:
        known = {t.tile_id for t in tiles}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise ValueError(f"{cfg.data_root}: tile ids {missing} not found")
        tiles = [t for t in tiles if t.tile_id in set(wanted)]
    glcm = models[0].glcm if models[0].include_glcm else None
    cache = cfg.glcm_cache or _default_cache(models[0].path)
    arrays = load_tiles(tiles, glcm=glcm, cache_dir=cache, progress=True)
    predictions = predict_tiles(models, arrays, cfg.tta, cfg.scales)

    metric = SegmentationMetrics(len(CLASS_NAMES), ignore_index=None, class_names=CLASS_NAMES)
    for tile, pred in zip(arrays, predictions):
        metric.update(
            torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(tile.mask.astype(np.int64))
        )
    result = metric.compute()
    y_true = np.concatenate([t.mask.ravel() for t in arrays])
    y_pred = np.concatenate([p.ravel() for p in predictions])
    result["mcc_sklearn"] = float(matthews_corrcoef(y_true, y_pred))
    result["tile_ids"] = [t.tile_id for t in arrays]
    result["n_pixels"] = int(y_true.size)
    result["settings"] = {
        "checkpoints": [str(p) for p in cfg.checkpoints],
        "tta": cfg.tta,
        "scales": list(cfg.scales),
    }
    if cfg.out_dir is not None:
        from eo_common.viz import plot_confusion_matrix

        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_save_json(result, out / "metrics.json")
        plot_confusion_matrix(
            np.asarray(result["confusion_matrix"]), list(CLASS_NAMES), out / "confusion_matrix.png"
        )
        # panels of the tiles with the most glacier/debris/lake pixels (the informative ones)
        ranked = sorted(zip(arrays, predictions), key=lambda tp: -int((tp[0].mask > 0).sum()))
        for tile, pred in ranked[: cfg.max_panels]:
            save_prediction_panels(tile, pred, out / f"panel_{tile.tile_id}.png")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glacier-eval",
        description="Evaluate glacier-train checkpoints (one or an ensemble) on labelled GlacierHack "
        "tiles: competition MCC over all pixels flattened, per-class IoU/F1, confusion matrix PNG, "
        "prediction panels; optional flip TTA and multi-scale inference.",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        nargs="+",
        required=True,
        help="one or more .ckpt files (ensemble = mean probabilities)",
    )
    parser.add_argument(
        "--data_root", type=Path, required=True, help="GlacierHack root with Band1..Band5 and Label"
    )
    parser.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="val: the validation tiles recorded in the run's summary.json; all: every tile",
    )
    parser.add_argument(
        "--tile_ids", default="", help="comma-separated tile ids (overrides --split)"
    )
    parser.add_argument("--tta", action="store_true", help="average over horizontal/vertical flips")
    parser.add_argument(
        "--scales", default="1.0", help="comma-separated inference scales, e.g. '1.0,0.75,1.25'"
    )
    parser.add_argument(
        "--out_dir",
        type=Path,
        default=None,
        help="where metrics.json, confusion_matrix.png and panels go",
    )
    parser.add_argument(
        "--max_panels",
        type=int,
        default=8,
        help="prediction panels to draw, tiles with most non-background pixels first (default %(default)s)",
    )
    parser.add_argument("--glcm_cache", type=Path, default=None, help="texture cache folder")
    parser.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    return parser


def config_from_args(ns: argparse.Namespace) -> EvalConfig:
    scales = tuple(float(v) for v in ns.scales.replace(",", " ").split())
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"--scales must be positive numbers, got {ns.scales!r}")
    ids = tuple(str(int(v)) if v.isdigit() else v for v in ns.tile_ids.replace(",", " ").split())
    return EvalConfig(
        checkpoints=list(ns.checkpoints),
        data_root=ns.data_root,
        split=ns.split,
        tile_ids=ids,
        tta=ns.tta,
        scales=scales,
        out_dir=ns.out_dir,
        max_panels=ns.max_panels,
        glcm_cache=ns.glcm_cache,
        device=ns.device,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``glacier-eval``."""

    def run(ns: argparse.Namespace) -> dict[str, Any]:
        result = evaluate(config_from_args(ns))
        return {k: result[k] for k in ("mcc", "mcc_sklearn", "kappa", "accuracy", "n_pixels")} | {
            "iou": {k: v["iou"] for k, v in result["per_class"].items()}
        }

    return run_cli(run, argv, build_parser())


if __name__ == "__main__":
    raise SystemExit(main())
