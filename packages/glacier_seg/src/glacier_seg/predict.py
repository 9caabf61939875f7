"""``glacier-predict``: tiles -> competition masks (0/85/170/255) and GIS class maps.

Input: any GlacierHack layout (Band1..Band5 folders; no mask folder needed), e.g. the platform's test
data ``Band1/img001.tif ...``. For each tile the run folder gets:

* ``masks/<name>``: the competition mask, single-band uint8 0/85/170/255 (background, glacier,
  debris, lake), named like the tile's **Band1 file** by default (``--name_template {band1}``: what the
  GlacierHack platform expects; ``Y_output_resized_{key}.tif`` names it after the whole tile key), with
  Band1's CRS and transform. Pixels without a value in some input band get 0 (the format has no
  nodata value).
* ``class_maps/<stem>.tif`` (``--class_maps``, default on): the same prediction as a GIS class map,
  values 0..3 with 255 = nodata where an input band has no value; a Cloud-Optimised GeoTIFF with a
  colour table, category names, ``mode`` overviews, a GDAL ``.aux.xml`` and a QGIS ``.qml`` style
  (:func:`eo_common.raster.write_class_map`), so QGIS shows it coloured and labelled on open.

Every file is written atomically; ``--resume`` skips tiles whose outputs are complete, so an
interrupted prediction continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from eo_common.errors import InputError
from eo_common.raster import ClassInfo, write_class_map, write_raster
from eo_common.runs import RunFolder

from glacier_seg.config import GlacierPredictConfig
from glacier_seg.data import TileArrays, default_glcm_cache
from glacier_seg.inference import (
    check_same_inputs,
    inference_device,
    iter_tiles,
    load_model,
    predict_tiles,
    resolve_tile_batch,
)
from glacier_seg.layout import GlacierTile, check_tile_files, classes_to_mask_values, find_tiles

__all__ = ["COMMAND", "GLACIER_CLASSES", "output_names", "predict"]

COMMAND = "glacier-predict"
#: the class map's classes: value, name, colour
GLACIER_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", (38, 38, 38)),
    ClassInfo(1, "glacier", (140, 217, 255)),
    ClassInfo(2, "debris", (166, 115, 64)),
    ClassInfo(3, "lake", (26, 51, 230)),
)
MASKS_DIR = "masks"
CLASS_MAPS_DIR = "class_maps"


def output_names(template: str, tiles: list[GlacierTile]) -> dict[str, str]:
    """Competition mask file name per tile id: ``{band1}`` = Band1 file name, ``{key}`` = tile key.

    Raises:
        InputError: the template is malformed, a name is not a GeoTIFF name, or two tiles would get
            the same name.

    Example:
        >>> t = GlacierTile("2_7", "02_07", (Path("Band1/B2_B2_masked_02_07.tif"),) * 5, None)
        >>> output_names("Y_output_resized_{key}.tif", [t]), output_names("{band1}", [t])
        ({'2_7': 'Y_output_resized_02_07.tif'}, {'2_7': 'B2_B2_masked_02_07.tif'})
    """
    names: dict[str, str] = {}
    for tile in tiles:
        try:
            name = template.format(band1=tile.band1_name, key=tile.key)
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(
                f"name_template {template!r}: only {{band1}} and {{key}} may be used ({exc})"
            ) from None
        if Path(name).name != name or Path(name).suffix.lower() not in (".tif", ".tiff"):
            raise InputError(f"name_template: {name!r} is not a .tif file name (tile {tile.key})")
        names[tile.tile_id] = name
    seen: dict[str, str] = {}
    for tid, name in names.items():
        if name in seen:
            raise InputError(
                f"name_template {template!r}: tiles {seen[name]} and {tid} would both be {name}"
            )
        seen[name] = tid
    return names


def _done(run_dir: Path, name: str, class_maps: bool) -> bool:
    mask = run_dir / MASKS_DIR / name
    style = run_dir / CLASS_MAPS_DIR / f"{Path(name).stem}.qml"  # written last
    return mask.is_file() and (not class_maps or style.is_file())


def _write(
    run_dir: Path, name: str, tile: TileArrays, classes: np.ndarray, class_maps: bool
) -> None:
    crs = tile.crs
    transform = tile.transform if tile.transform is not None else Affine.identity()
    competition = np.where(tile.valid, classes, 0)
    write_raster(
        run_dir / MASKS_DIR / name,
        classes_to_mask_values(competition)[None],
        crs=crs,
        transform=transform,
        dtype="uint8",
        band_names=["class (0 background, 85 glacier, 170 debris, 255 lake)"],
    )
    if class_maps:
        write_class_map(
            run_dir / CLASS_MAPS_DIR / f"{Path(name).stem}.tif",
            np.where(tile.valid, classes, 255).astype(np.uint8),
            crs=crs,
            transform=transform,
            classes=GLACIER_CLASSES,
            nodata=255,
            description="glacier class",
        )


def predict(cfg: GlacierPredictConfig) -> dict[str, Any]:
    """Write one competition mask (and class map) per tile; return ``summary.json``'s record.

    Raises:
        eo_common.errors.CheckpointError: a checkpoint is missing, corrupt or of another command.
        eo_common.errors.InputError: band folders missing, unpaired keys, a band file with several
            bands or on another grid, output names that collide.
    """
    folder = RunFolder.plan(cfg, COMMAND)
    device = inference_device(cfg.run)
    models = [load_model(p, device) for p in cfg.checkpoints]
    check_same_inputs(models)
    tiles = find_tiles(cfg.data.root, require_labels=False)
    for tile in tiles:
        check_tile_files(tile)
    names = output_names(cfg.name_template, tiles)
    run_dir = folder.open()
    todo = [t for t in tiles if not _done(run_dir, names[t.tile_id], cfg.class_maps)]
    skipped = [names[t.tile_id] for t in tiles if t not in todo]
    cache = cfg.data.glcm_cache or default_glcm_cache()
    written: list[str] = []
    batch: list[TileArrays] = []
    per_forward = 0  # tiles per forward pass, resolved on the first tile (data.batch_size "auto")

    def flush() -> None:
        classes = predict_tiles(
            models, batch, cfg.tta, cfg.scales, per_forward, cfg.window, cfg.window_overlap
        )
        for tile, pred in zip(batch, classes):
            _write(run_dir, names[tile.tile_id], tile, pred, cfg.class_maps)
            written.append(names[tile.tile_id])
        batch.clear()

    reader = iter_tiles(todo, cfg.data.workers, glcm=models[0].texture, cache_dir=cache)
    for arrays in reader:
        if not per_forward:
            per_forward = resolve_tile_batch(
                models, arrays, cfg.data.batch_size, cfg.tta, cfg.scales, cfg.window
            )
        batch.append(arrays)
        if len(batch) >= (1 if cfg.window else per_forward):  # windows are batched within a tile
            flush()
    if batch:
        flush()
    paths: dict[str, Path] = {"masks": run_dir / MASKS_DIR}
    if cfg.class_maps:
        paths["class_maps"] = run_dir / CLASS_MAPS_DIR
    return folder.finish(
        metrics={"tiles_written": len(written), "tiles_skipped": len(skipped)},
        paths=paths,
        device=str(device),
        extra={"written": written, "skipped": skipped, "names": names},
    )
