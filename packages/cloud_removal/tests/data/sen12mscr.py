"""Fake SEN12MS-CR data in the layouts people have on disk (torchgeo-style test-data generator).

Every layout writes tiny GeoTIFFs with the real dtypes, band counts and names: S1 2 bands VV, VH
float32 dB; S2 13 bands B01..B12 with B8A and B10, uint16 DN; one UTM grid per sample shared by the
three files (real tiles are 256 x 256 px at 10 m; here ``size``). The clear scene mixes vegetation,
soil and water spectra; the cloudy one lays a bright smooth cloud over 20-60 % of it; S1 is brighter
over vegetation and dark over water.

=========================  =====================================================================
layout                     files
=========================  =====================================================================
:func:`make_official`      the official download tree + an eolab data list ``data.csv``:
                           ``<ROI>_<season>_s1/s1_<scene>/<ROI>_<season>_s1_<scene>_p<patch>.tif``,
                           ``..._s2/s2_<scene>/..._s2_<scene>_p<patch>.tif``,
                           ``..._s2_cloudy/s2_cloudy_<scene>/..._s2_cloudy_<scene>_p<patch>.tif``
:func:`make_official_tree` the official tree of all four seasons, several scenes, no list
                           (what ``cr-make-datalist`` reads)
:func:`make_glfcr`         GLF-CR ``data/``: ``s1/``, ``s2_cloudfree/``, ``s2_cloudy/`` with the same
                           file name ``ROIs1970_fall_139_p839.tif`` in each, ``data.csv`` (no header)
:func:`make_dsen2cr`       DSen2-CR: ``s1/``, ``s2_cloudFree/``, ``s2_cloudy/``, names like
                           ``ROIs1158_spring_101_0.tif``, tab-separated ``datasetfilelist.csv``
=========================  =====================================================================

``python tests/data/sen12mscr.py DEST`` writes one example of each under ``DEST``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine
from eo_common.raster import write_raster
from scipy import ndimage

S2_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
S1_BANDS = ("VV", "VH")
SEASONS = (
    ("ROIs1158", "spring", 32633),
    ("ROIs1868", "summer", 32617),
    ("ROIs1970", "fall", 32650),
    ("ROIs2017", "winter", 32631),
)
# surface reflectance spectra (fraction) for the 13 bands
_VEG = np.array([0.03, 0.04, 0.07, 0.04, 0.10, 0.30, 0.38, 0.40, 0.42, 0.14, 0.005, 0.20, 0.10])
_SOIL = np.array([0.08, 0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.10, 0.010, 0.33, 0.28])
_WATER = np.array(
    [0.07, 0.06, 0.05, 0.03, 0.02, 0.015, 0.012, 0.01, 0.01, 0.005, 0.002, 0.005, 0.003]
)
_CLOUD = np.array([0.55, 0.56, 0.57, 0.58, 0.60, 0.62, 0.63, 0.64, 0.64, 0.35, 0.10, 0.50, 0.40])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-12)


def _dn(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(refl * 10000), 0, 65535).astype(np.uint16)


def fake_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S1 (2, size, size) float32 dB, clear (13, ...) uint16 DN, cloudy (13, ...) uint16 DN)."""
    veg = _smooth_field(rng, (size, size), size / 10)
    water = _smooth_field(rng, (size, size), size / 8) > 0.8
    refl = veg[None] * _VEG[:, None, None] + (1 - veg[None]) * _SOIL[:, None, None]
    refl = np.where(water[None], _WATER[:, None, None], refl)
    clear = np.clip(refl * (1 + 0.03 * rng.standard_normal(refl.shape)), 0, 1)
    cover = rng.uniform(0.2, 0.6)
    thickness = _smooth_field(rng, (size, size), size / 6)
    alpha = np.clip((thickness - (1 - cover)) / 0.15, 0.0, 1.0)
    cloudy = (1 - alpha[None]) * clear + alpha[None] * _CLOUD[:, None, None]
    vv = -15.0 + 8.0 * veg + 1.5 * rng.standard_normal(veg.shape)
    vv = np.where(water, -22.0 + rng.standard_normal(veg.shape), vv)
    vh = vv - 6.5 + 1.5 * rng.standard_normal(veg.shape)
    s1 = np.stack([np.clip(vv, -25.0, 0.0), np.clip(vh, -32.5, -2.0)]).astype(np.float32)
    return s1, _dn(clear), _dn(cloudy)


def _write_triplet(
    paths: tuple[Path, Path, Path], sample: tuple[np.ndarray, ...], epsg: int, index: int
) -> None:
    transform = Affine(10.0, 0.0, 300000.0 + 2560.0 * index, 0.0, -10.0, 5000000.0)
    common = {"crs": f"EPSG:{epsg}", "transform": transform}
    write_raster(paths[0], sample[0], band_names=list(S1_BANDS), **common)
    write_raster(paths[1], sample[1], band_names=list(S2_BANDS), **common)
    write_raster(paths[2], sample[2], band_names=list(S2_BANDS), **common)


def _write_list(path: Path, rows: list[list[object]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return path


def make_official(
    root: str | Path, n_per_split: Sequence[int] = (2, 1, 1), size: int = 64, seed: int = 0
) -> Path:
    """The official SEN12MS-CR tree (one patch per scene, seasons in turn) plus ``data.csv``.

    Row ``i`` uses season ``i % 4``, scene ``1 + i // 4``, patch ``30 + 7 i``; the list's file name is
    the S1 name (``..._s1_...``), the S2 names follow the official tree. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows: list[list[object]] = []
    i = 0
    for split, count in zip((1, 2, 3), n_per_split):
        for _ in range(count):
            roi, season, epsg = SEASONS[i % len(SEASONS)]
            scene, patch = 1 + i // len(SEASONS), 30 + 7 * i
            base = f"{roi}_{season}"
            s1f, s2f, s2c = (
                f"{base}_s1/s1_{scene}",
                f"{base}_s2/s2_{scene}",
                f"{base}_s2_cloudy/s2_cloudy_{scene}",
            )
            name = f"{base}_s1_{scene}_p{patch}.tif"
            paths = (
                root / s1f / name,
                root / s2f / name.replace("_s1_", "_s2_"),
                root / s2c / name.replace("_s1_", "_s2_cloudy_"),
            )
            _write_triplet(paths, fake_sample(rng, size), epsg, i)
            rows.append([split, s1f, s2f, s2c, name])
            i += 1
    _write_list(root / "data.csv", rows)
    return root


def make_official_tree(
    root: str | Path,
    scenes_per_season: int = 3,
    patches_per_scene: int = 2,
    size: int = 16,
    seed: int = 0,
) -> Path:
    """The official tree of all four seasons (``scenes_per_season`` scenes each), no data list."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    i = 0
    for roi, season, epsg in SEASONS:
        base = f"{roi}_{season}"
        for k in range(scenes_per_season):
            scene = (
                10 + 17 * k + len(season)
            )  # scene ids differ between seasons, like the real ones
            for p in range(patches_per_scene):
                name = f"{base}_s1_{scene}_p{100 + p}.tif"
                paths = (
                    root / f"{base}_s1/s1_{scene}" / name,
                    root / f"{base}_s2/s2_{scene}" / name.replace("_s1_", "_s2_"),
                    root
                    / f"{base}_s2_cloudy/s2_cloudy_{scene}"
                    / name.replace("_s1_", "_s2_cloudy_"),
                )
                _write_triplet(paths, fake_sample(rng, size), epsg, i)
                i += 1
    return root


def _same_name_layout(
    root: Path, folders: tuple[str, str, str], names: list[str], seed: int, size: int
) -> None:
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        epsg = SEASONS[i % len(SEASONS)][2]
        _write_triplet(tuple(root / f / name for f in folders), fake_sample(rng, size), epsg, i)  # type: ignore[arg-type]


def make_glfcr(
    root: str | Path,
    splits: Sequence[int] = (1, 1, 1, 1, 2, 3),
    size: int = 32,
    seed: int = 0,
    scenes: Sequence[int] | None = None,
) -> Path:
    """GLF-CR's ``data/`` layout: the same file name in ``s1/``, ``s2_cloudfree/``, ``s2_cloudy/``.

    One row per entry of ``splits`` (1 train, 2 val, 3 test); row ``i`` is
    ``ROIs<roi>_<season>_<scene>_p<patch>.tif`` with ``scenes[i]`` (default: a scene per row) and the
    season ``scene % 4``.
    """
    root = Path(root)
    folders = ("s1", "s2_cloudfree", "s2_cloudy")
    names, rows = [], []
    for i, split in enumerate(splits):
        scene = scenes[i] if scenes is not None else 100 + i
        roi, season, _ = SEASONS[scene % len(SEASONS)]
        name = f"{roi}_{season}_{scene}_p{800 + i}.tif"
        names.append(name)
        rows.append([split, *folders, name])
    _same_name_layout(root, folders, names, seed, size)
    _write_list(root / "data.csv", rows)
    return root


def make_dsen2cr(
    root: str | Path, splits: Sequence[int] = (1, 1, 1, 1, 2, 3), size: int = 32, seed: int = 0
) -> Path:
    """DSen2-CR's layout: ``s1/``, ``s2_cloudFree/``, ``s2_cloudy/``, tab-separated list."""
    root = Path(root)
    folders = ("s1", "s2_cloudFree", "s2_cloudy")
    names, rows = [], []
    for i, split in enumerate(splits):
        roi, season, _ = SEASONS[i % len(SEASONS)]
        name = f"{roi}_{season}_{101 + i}_{i % 3}.tif"
        names.append(name)
        rows.append([split, *folders, name])
    _same_name_layout(root, folders, names, seed, size)
    _write_list(root / "datasetfilelist.csv", rows, delimiter="\t")
    return root


if __name__ == "__main__":
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "sen12mscr_examples")
    make_official(dest / "official_with_list")
    make_official_tree(dest / "official_tree")
    make_glfcr(dest / "glfcr")
    make_dsen2cr(dest / "dsen2cr")
    print(dest)
