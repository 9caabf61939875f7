"""``glacier-predict``: tiles -> masks holding 0/85/170/255, as the competition reads them.

Input is a GlacierHack root (Band1..Band5; a Label folder is not needed). One mask per tile is
written as a single-band uint8 GeoTIFF keeping the CRS and transform of the tile's Band1 file when
it has them (opens in QGIS on top of the bands); a tile without georeference gets a plain TIFF.
Finished tiles are skipped on a re-run (every file is written atomically), so an interrupted
prediction is resumed by running the same command again.

Example:
    glacier-predict --checkpoints runs/glacier/checkpoints/best.ckpt --input GlacierHack/test \\
        --out_dir predictions --tta
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affine import Affine
from eo_common.raster import write_raster
from tqdm.auto import tqdm

from glacier_seg.data import classes_to_mask_values, find_tiles, load_tiles
from glacier_seg.evaluate import check_same_inputs, load_model, predict_tiles
from glacier_seg.train import run_cli

__all__ = ["PredictConfig", "predict", "main"]


@dataclass
class PredictConfig:
    """Flags of ``glacier-predict``.

    Attributes:
        checkpoints: one or more checkpoints (mean probabilities).
        input: GlacierHack root with Band1..Band5.
        out_dir: output folder.
        name_template: output file name; ``{tile_id}`` is the id (default mirrors the label
            names, ``Y_output_resized_07.tif``).
        tta, scales: as in ``glacier-eval``.
        overwrite: recompute tiles whose output exists.
    """

    checkpoints: list[Path]
    input: Path
    out_dir: Path
    name_template: str = "Y_output_resized_{tile_id:0>2}.tif"
    tta: bool = False
    scales: tuple[float, ...] = (1.0,)
    overwrite: bool = False
    glcm_cache: Path | None = None
    device: str = "cpu"


def predict(cfg: PredictConfig) -> dict[str, Any]:
    """Write one 0/85/170/255 mask per tile; returns ``{"written": [...], "skipped": [...]}``."""
    if not cfg.checkpoints:
        raise ValueError("give at least one --checkpoints path")
    models = [load_model(p, cfg.device) for p in cfg.checkpoints]
    check_same_inputs(models)
    tiles = find_tiles(cfg.input, require_labels=False)
    out_dir = Path(cfg.out_dir)
    todo, skipped = [], []
    for tile in tiles:
        target = out_dir / cfg.name_template.format(tile_id=tile.tile_id)
        if target.exists() and not cfg.overwrite:
            skipped.append(str(target))
        else:
            todo.append((tile, target))
    glcm = models[0].glcm if models[0].include_glcm else None
    cache = cfg.glcm_cache or out_dir / "glcm_cache"
    written = []
    for tile, target in tqdm(todo, desc="tiles", disable=not todo):
        arrays = load_tiles([tile], glcm=glcm, cache_dir=cache)
        classes = predict_tiles(models, arrays, cfg.tta, cfg.scales, progress=False)[0]
        values = classes_to_mask_values(classes)[None]
        georeferenced = arrays[0].crs is not None
        write_raster(
            target,
            values,
            crs=arrays[0].crs if georeferenced else None,
            transform=arrays[0].transform if georeferenced else Affine.identity(),
            dtype="uint8",
        )
        written.append(str(target))
    return {"written": written, "skipped": skipped, "out_dir": str(out_dir)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glacier-predict",
        description="Predict glacier masks for GlacierHack tiles and write them with the competition "
        "values 0/85/170/255 (background/glacier/debris/lake), as GeoTIFF when the input is georeferenced.",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        nargs="+",
        required=True,
        help="one or more .ckpt files (ensemble)",
    )
    parser.add_argument(
        "--input", type=Path, required=True, help="GlacierHack root with Band1..Band5"
    )
    parser.add_argument("--out_dir", type=Path, required=True, help="output folder for the masks")
    parser.add_argument(
        "--name_template",
        default=PredictConfig.name_template,
        help="output name, {tile_id} is replaced (default %(default)s)",
    )
    parser.add_argument("--tta", action="store_true", help="average over flips")
    parser.add_argument("--scales", default="1.0", help="comma-separated inference scales")
    parser.add_argument(
        "--overwrite", action="store_true", help="recompute tiles whose mask already exists"
    )
    parser.add_argument(
        "--glcm_cache",
        type=Path,
        default=None,
        help="texture cache folder (default <out_dir>/glcm_cache)",
    )
    parser.add_argument("--device", default="cpu", help="torch device")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``glacier-predict``."""

    def run(ns: argparse.Namespace) -> dict[str, Any]:
        scales = tuple(float(v) for v in ns.scales.replace(",", " ").split())
        cfg = PredictConfig(
            checkpoints=list(ns.checkpoints),
            input=ns.input,
            out_dir=ns.out_dir,
            name_template=ns.name_template,
            tta=ns.tta,
            scales=scales,
            overwrite=ns.overwrite,
            glcm_cache=ns.glcm_cache,
            device=ns.device,
        )
        result = predict(cfg)
        return {
            "written": len(result["written"]),
            "skipped": len(result["skipped"]),
            "out_dir": result["out_dir"],
        }

    return run_cli(run, argv, build_parser())


if __name__ == "__main__":
    raise SystemExit(main())
