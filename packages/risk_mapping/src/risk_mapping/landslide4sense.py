"""Landslide4Sense (HDF5 patches) as a training source for risk_mapping.

Layout (the public benchmark; GDAL misreads these files as 128 bands of 128 x 14 pixels)::

    <root>/images/<split>/image_<N>.h5        dataset "img":  (128, 128, 14) float, channels last
    <root>/annotations/<split>/mask_<N>.h5    dataset "mask": (128, 128) integer, 0 / 1 (landslide)

``<split>`` folder names: ``train``/``training``, ``val``/``valid``/``validation``, ``test``/
``testing`` (any case). The 14 bands are Sentinel-2 B1-B12 (12 bands), slope and DEM (ALOS PALSAR).

The patches are laid side by side into one *mosaic* raster (in pixel coordinates, no CRS) with one
patch per cell, ``stack.tif`` (float32, NaN in empty cells) and ``labels.tif`` (through
``dataset.label_map``, e.g. ``[0, 2]``: no landslide = low, landslide = high), and each cell is one
block of the official split, so the whole pipeline (tiles inside blocks, oversampling, SMOTE,
training, sliding-window inference, CRF, evaluation of the test split) runs unchanged. So that no
prediction mixes two patches, inference (and the CRF) must use tiles of exactly one patch without
overlap (``inference.tile_size: 128``, ``inference.overlap: 0``); :func:`check_landslide4sense`
says so. ``patches.csv`` maps each cell to its file.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from eo_common.errors import InputError
from eo_common.io import atomic_temp_path, atomic_write
from rasterio.windows import Window

from risk_mapping.config import IGNORE_INDEX, RiskConfig

__all__ = [
    "SPLIT_FOLDERS",
    "BAND_NAMES",
    "Patch",
    "find_patches",
    "check_landslide4sense",
    "build_landslide4sense",
]

SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
BAND_NAMES = [f"S2_B{b}" for b in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12")]
BAND_NAMES += ["slope", "dem"]
_NUMBER = re.compile(r"^image_(\d+)\.h5$")


@dataclass
class Patch:
    """One image patch and its mask."""

    split: str
    number: int
    image: Path
    mask: Path


def find_patches(root: Path) -> tuple[list[Patch], list[str]]:
    """``(patches, problems)`` of a Landslide4Sense folder, sorted by split and number."""
    problems: list[str] = []
    images, annotations = root / "images", root / "annotations"
    for folder in (images, annotations):
        if not folder.is_dir():
            problems.append(f"dataset.root: {folder} not found (expected images/ and annotations/)")
    if problems:
        return [], problems
    patches: list[Patch] = []
    for sub in sorted(p for p in images.iterdir() if p.is_dir()):
        split = next((k for k, names in SPLIT_FOLDERS.items() if sub.name.lower() in names), None)
        if split is None:
            problems.append(
                f"dataset.root: {sub}: unknown split folder (use train, val/validation or test)"
            )
            continue
        for image in sorted(sub.iterdir()):
            match = _NUMBER.match(image.name)
            if not match:
                continue
            mask = annotations / sub.name / f"mask_{match.group(1)}.h5"
            if not mask.is_file():
                problems.append(f"dataset.root: {image}: its mask {mask} is missing")
                continue
            patches.append(Patch(split, int(match.group(1)), image, mask))
    if not patches and not problems:
        problems.append(f"dataset.root: no images/<split>/image_N.h5 under {root}")
    order = {s: i for i, s in enumerate(SPLIT_FOLDERS)}
    patches.sort(key=lambda p: (order[p.split], p.number))
    return patches, problems


def _read(path: Path, name: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if name not in f:
                raise InputError(f"no dataset {name!r} (has {sorted(f.keys())})", path=path)
            return np.asarray(f[name][()])
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", path=path) from None


def _image_chw(path: Path) -> np.ndarray:
    """``(C, H, W)`` float32 of one image patch (stored channels-last)."""
    img = _read(path, "img")
    if img.ndim != 3:
        raise InputError(f'dataset "img" has shape {img.shape}, expected (H, W, C)', path=path)
    return np.ascontiguousarray(np.moveaxis(img, -1, 0)).astype(np.float32)


def check_landslide4sense(cfg: RiskConfig) -> list[str]:
    """Every problem of a Landslide4Sense folder and of the settings it needs."""
    ds, inf = cfg.dataset, cfg.inference
    patches, problems = find_patches(Path(ds.root))
    if problems:
        return problems
    shapes = set()
    lut_max = len(ds.label_map) - 1 if ds.label_map else 2
    for patch in patches:
        try:
            img = _image_chw(patch.image)
            mask = _read(patch.mask, "mask")
        except InputError as exc:
            problems.append(f"dataset.root: {exc}")
            continue
        if mask.shape != img.shape[1:]:
            problems.append(
                f"dataset.root: {patch.mask}: mask {mask.shape} does not match its image "
                f"{img.shape[1:]} ({patch.image.name})"
            )
        bad = sorted(int(v) for v in np.unique(mask) if not (0 <= v <= lut_max or v == 255))
        if bad:
            problems.append(
                f"dataset.root: {patch.mask}: mask values {bad[:5]} have no risk class; "
                "set dataset.label_map (e.g. [0, 2]: landslide = high)"
            )
        shapes.add(img.shape)
        if len(problems) > 10:
            break
    if len(shapes) > 1:
        problems.append(f"dataset.root: patches differ in shape: {sorted(shapes)}")
    if problems or not shapes:
        return problems
    bands, size, _ = next(iter(shapes))
    splits = {p.split for p in patches}
    for need in ("train", "val"):
        if need not in splits:
            problems.append(f"dataset.root: no images/{need}/ patches (training needs them)")
    if cfg.evaluation.split == "test" and "test" not in splits:
        problems.append("evaluation.split: 'test' but the folder has no test patches")
    if ds.tile_size > size:
        problems.append(f"dataset.tile_size: {ds.tile_size} px exceeds the {size} px patches")
    if inf.tile_size != size or inf.overlap != 0:
        problems.append(
            f"inference.tile_size: set it to the patch size {size} with inference.overlap: 0 "
            "so every patch is predicted on its own"
        )
    if inf.crf.enabled and (inf.crf.tile_size != size or inf.crf.overlap != 0):
        problems.append(
            f"inference.crf.tile_size: set it to the patch size {size} with "
            "inference.crf.overlap: 0 (or inference.crf.enabled: false)"
        )
    bad = [b for b in ds.optical_bands if b >= bands]
    if bad:
        problems.append(f"dataset.optical_bands: band(s) {bad} do not exist ({bands} bands)")
    bad = [b for b in inf.crf.image_bands if b >= bands]
    if bad and inf.crf.enabled:
        problems.append(f"inference.crf.image_bands: band(s) {bad} do not exist ({bands} bands)")
    if ds.band_names is not None and len(ds.band_names) != bands:
        problems.append(f"dataset.band_names: {len(ds.band_names)} name(s) for {bands} bands")
    return problems


def build_landslide4sense(cfg: RiskConfig, out_dir: Path):
    """Write the mosaic ``stack.tif``, ``labels.tif`` and ``patches.csv``; return the inputs.

    Memory: one patch at a time.
    """
    from risk_mapping.sources import PreparedInputs, label_lookup

    problems = check_landslide4sense(cfg)
    if problems:
        raise InputError("; ".join(problems))
    ds = cfg.dataset
    patches, _ = find_patches(Path(ds.root))
    first = _image_chw(patches[0].image)
    bands, size = first.shape[0], first.shape[1]
    cols = math.ceil(math.sqrt(len(patches)))
    rows = math.ceil(len(patches) / cols)
    height, width = rows * size, cols * size
    names = list(ds.band_names or (BAND_NAMES if bands == len(BAND_NAMES) else []))
    names = names or [f"band{b + 1}" for b in range(bands)]
    lut = label_lookup(ds.label_map)
    transform = Affine(1.0, 0.0, 0.0, 0.0, -1.0, float(height))  # pixel coordinates
    out_dir.mkdir(parents=True, exist_ok=True)
    stack_path, labels_path = out_dir / "stack.tif", out_dir / "labels.tif"
    common = dict(
        driver="GTiff",
        height=height,
        width=width,
        crs=None,
        transform=transform,
        compress="deflate",
        tiled=True,
        blockxsize=size if size % 16 == 0 else 256,
        blockysize=size if size % 16 == 0 else 256,
        BIGTIFF="IF_SAFER",
    )
    tmp_stack, tmp_labels = atomic_temp_path(stack_path), atomic_temp_path(labels_path)
    blocks, splits = [], []
    try:
        with (
            rasterio.open(
                tmp_stack,
                "w",
                count=bands,
                dtype="float32",
                nodata=float("nan"),
                interleave="pixel",
                **common,
            ) as dst,
            rasterio.open(
                tmp_labels, "w", count=1, dtype="uint8", nodata=IGNORE_INDEX, **common
            ) as lab,
        ):
            for b, name in enumerate(names, start=1):
                dst.set_band_description(b, name)
            lab.set_band_description(1, "risk")
            empty = np.full((bands, size, size), np.nan, np.float32)
            for cell in range(rows * cols):
                window = Window((cell % cols) * size, (cell // cols) * size, size, size)
                if cell < len(patches):
                    patch = patches[cell]
                    img = _image_chw(patch.image)
                    img[~np.isfinite(img)] = np.nan
                    mask = _read(patch.mask, "mask").astype(np.int64)
                    mask = lut[np.where((mask < 0) | (mask > 255), IGNORE_INDEX, mask)]
                    dst.write(img, window=window)
                    lab.write(mask[None], window=window)
                    blocks.append(window)
                    splits.append(patch.split)
                else:
                    dst.write(empty, window=window)
                    lab.write(np.full((1, size, size), IGNORE_INDEX, np.uint8), window=window)
        os.replace(tmp_stack, stack_path)
        os.replace(tmp_labels, labels_path)
    except BaseException:
        tmp_stack.unlink(missing_ok=True)
        tmp_labels.unlink(missing_ok=True)
        raise
    with atomic_write(out_dir / "patches.csv", "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["row_off", "col_off", "size", "split", "image", "mask"])
        for window, patch in zip(blocks, patches):
            writer.writerow(
                [
                    int(window.row_off),
                    int(window.col_off),
                    size,
                    patch.split,
                    patch.image,
                    patch.mask,
                ]
            )
    return PreparedInputs(
        stack_path,
        labels_path,
        names,
        ["continuous"] * bands,
        blocks=blocks,
        block_splits=splits,
        built=["stack", "labels"],
    )
