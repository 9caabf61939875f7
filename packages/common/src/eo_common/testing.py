"""DEPRECATED: tiny fake data sets in each package's folder layout (to be deleted).

Fake-data generators live beside the tests of the package that reads the layout (torchgeo style,
``packages/<pkg>/tests/data/<layout>.py``): SEN12MS-CR in cloud_removal, BigEarthNet v2 GeoTIFFs
in gac_pipeline, the risk stack in risk_mapping, GlacierHack in glacier_seg, and the BigEarthNet v2
LMDB that eo_common itself reads in ``packages/common/tests/data/benv2_lmdb.py``. Nothing here is
generic enough to stay in the library: every generator below is one package's layout. They remain
only until every package's tests use their own copy; then this module and
``tests/test_common_testing.py`` are deleted. Do not add to it.

Tiny fake data sets in each real folder layout, for tests (torchgeo style).

Each generator writes a few small but real GeoTIFFs (UTM CRS, north-up transform, the real dtypes,
band counts and file names) so that the package readers are tested on the same code path as the
real data. Everything is deterministic from ``seed``; the pixel values are synthetic but plausible
(smooth land-cover fields with realistic spectra), and labels follow the pixels, so a model can learn
something from them in a few steps. The layouts are the ones in ``docs/eo_common_api.md`` ("Real
layouts"); ``docs/common_raster.md`` lists them file by file.

From the command line (for manual tries)::

    python -m eo_common.testing glacierhack /tmp/fake_glacierhack --n 4 --size 64

Example:
    >>> root = make_fake_glacierhack(tmp_path / "gh", n=2, size=32)  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "Label").iterdir())  # doctest: +SKIP
    ['Y_output_resized_02.tif', 'Y_output_resized_05.tif']
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from scipy import ndimage

from eo_common.io import atomic_temp_path, atomic_write
from eo_common.raster import write_raster

__all__ = [
    "make_fake_sen12mscr",
    "make_fake_benv2",
    "make_fake_risk_stack",
    "make_fake_glacierhack",
    "SEN12MSCR_S2_BANDS",
    "S1_BANDS",
    "BENV2_S2_RESOLUTION",
    "BENV2_LABELS",
    "RISK_BAND_NAMES",
    "GLACIERHACK_BAND_FILES",
    "GLACIERHACK_LABEL_PREFIX",
    "GLACIERHACK_CLASS_VALUES",
    "glacierhack_tile_ids",
    "LAYOUTS",
    "main",
]

PathLike = str | os.PathLike

#: the 13 Sentinel-2 L1C bands of SEN12MS-CR, in file order
SEN12MSCR_S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
#: Sentinel-1 GRD bands, in file order (dB, float32)
S1_BANDS: tuple[str, ...] = ("VV", "VH")
#: BigEarthNet v2 Sentinel-2 L2A bands (12, no B10) and their pixel size in metres
BENV2_S2_RESOLUTION: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20,
    "B07": 20, "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20,
}  # fmt: skip
#: the 19 BigEarthNet v2 classes
BENV2_LABELS: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
#: band names of the fake risk stack (the first ``bands`` of them; more bands are ``feature<k>``)
RISK_BAND_NAMES: tuple[str, ...] = ("elevation", "slope", "aspect", "curvature", "ndvi", "rainfall")
#: GlacierHack folder -> file-name prefix (Band1..Band5 = Landsat-8 B2, B3, B4, B6, B10)
GLACIERHACK_BAND_FILES: dict[str, str] = {
    "Band1": "B2_B2_masked",
    "Band2": "B3_B3_masked",
    "Band3": "B4_B4_masked",
    "Band4": "B6_B6_masked",
    "Band5": "B10_B10_masked",
}
GLACIERHACK_LABEL_PREFIX = "Y_output_resized"
#: stored label values: background, glacier, debris, lake
GLACIERHACK_CLASS_VALUES: tuple[int, ...] = (0, 85, 170, 255)

_SEN12MSCR_ROIS = (
    ("ROIs1158", "spring", 32633),
    ("ROIs1868", "summer", 32617),
    ("ROIs1970", "fall", 32650),
    ("ROIs2017", "winter", 32631),
)
# BigEarthNet tiles: (country, S2 product, S1 product, MGRS tile, EPSG, tile origin x, y); the origins
# are those of the georeferenced BigEarthNet v1 example patches of the same tiles
_BENV2_TILES = (
    (
        "Austria",
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP",
        "S1B_IW_GRDH_1SDV_20170612T165809",
        "33UUP",
        32633,
        300000.0,
        5400000.0,
    ),
    (
        "Finland",
        "S2B_MSIL2A_20170924T093020_N9999_R136_T35VPK",
        "S1A_IW_GRDH_1SDV_20170925T043256",
        "35VPK",
        32635,
        600000.0,
        7000020.0,
    ),
)

# surface reflectance spectra (fraction) for the 13 SEN12MS-CR bands B01..B12 incl. B8A and B10
_VEG = np.array([0.03, 0.04, 0.07, 0.04, 0.10, 0.30, 0.38, 0.40, 0.42, 0.14, 0.005, 0.20, 0.10])
_SOIL = np.array([0.08, 0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.10, 0.010, 0.33, 0.28])
_WATER = np.array(
    [0.07, 0.06, 0.05, 0.03, 0.02, 0.015, 0.012, 0.01, 0.01, 0.005, 0.002, 0.005, 0.003]
)
_CLOUD = np.array([0.55, 0.56, 0.57, 0.58, 0.60, 0.62, 0.63, 0.64, 0.64, 0.35, 0.10, 0.50, 0.40])


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Spatially correlated noise scaled to [0, 1] (Gaussian-filtered white noise)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-12)


def _check_size(size: int, minimum: int, name: str = "size") -> None:
    if int(size) != size or size < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {size}")


def _utm(epsg: int) -> str:
    return f"EPSG:{epsg}"


# --------------------------------------------------------------------------------------------------
# SEN12MS-CR
# --------------------------------------------------------------------------------------------------
def _s2_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(13, size, size) float reflectance of a clear scene, plus vegetation and water fields."""
    veg = _smooth_field(rng, (size, size), size / 10)
    water = _smooth_field(rng, (size, size), size / 8) > 0.8
    refl = veg[None] * _VEG[:, None, None] + (1 - veg[None]) * _SOIL[:, None, None]
    refl = np.where(water[None], _WATER[:, None, None], refl)
    refl = refl * (1 + 0.03 * rng.standard_normal(refl.shape))
    return np.clip(refl, 0, 1), veg, water


def _s1_scene(rng: np.random.Generator, veg: np.ndarray, water: np.ndarray) -> np.ndarray:
    """(2, H, W) float32 VV, VH backscatter in dB: vegetation brighter, water dark, speckle."""
    vv = -15.0 + 8.0 * veg + 1.5 * rng.standard_normal(veg.shape)
    vv = np.where(water, -22.0 + rng.standard_normal(veg.shape), vv)
    vh = vv - 6.5 + 1.5 * rng.standard_normal(veg.shape)
    return np.stack([np.clip(vv, -25.0, 0.0), np.clip(vh, -32.5, -2.0)]).astype(np.float32)


# DEPRECATED: cloud_removal's layout; its generator lives in packages/cloud_removal/tests/data/.
def make_fake_sen12mscr(
    root: PathLike, n_per_split: Sequence[int] = (2, 1, 1), size: int = 64, seed: int = 0
) -> Path:
    """Write a fake SEN12MS-CR set in the GLF-CR layout (``data.csv`` + ``ROIs...`` folders).

    Layout (``<roi>`` like ``ROIs1158_spring``, ``<k>`` the scene, ``<p>`` the patch)::

        root/data.csv    no header: split,s1_folder,s2_cloudfree_folder,s2_cloudy_folder,s1_filename
                         split 1 = train, 2 = val, 3 = test
        root/<roi>_s1/s1_<k>/<roi>_s1_<k>_p<p>.tif                    2 bands VV, VH, float32 dB
        root/<roi>_s2/s2_<k>/<roi>_s2_<k>_p<p>.tif                    13 bands B01..B12 (B8A, B10), uint16
        root/<roi>_s2_cloudy/s2_cloudy_<k>/<roi>_s2_cloudy_<k>_p<p>.tif  13 bands, uint16

    The cloudy image is the clear one with a bright, smooth cloud layer laid over part of it (cover
    between about 20 % and 60 %); S1 is brighter over vegetation and dark over water. CRS: a UTM zone
    per ROI, 10 m pixels.

    Args:
        root: output folder (created).
        n_per_split: number of samples for train, val, test.
        size: tile side in pixels (real tiles are 256).
        seed: fixes all values.

    Returns:
        ``root``.
    """
    _check_size(size, 8)
    if len(n_per_split) != 3 or min(n_per_split) < 0:
        raise ValueError(f"n_per_split must be 3 counts >= 0 (train, val, test), got {n_per_split}")
    root = Path(root)
    rng = _rng(seed)
    rows = []
    i = 0
    for split, count in zip((1, 2, 3), n_per_split):
        for _ in range(count):
            roi, season, epsg = _SEN12MSCR_ROIS[i % len(_SEN12MSCR_ROIS)]
            scene, patch = 1 + i // len(_SEN12MSCR_ROIS), 30 + 7 * i
            base = f"{roi}_{season}"
            s1_folder, s2_folder = f"{base}_s1/s1_{scene}", f"{base}_s2/s2_{scene}"
            cloudy_folder = f"{base}_s2_cloudy/s2_cloudy_{scene}"
            s1_file = f"{base}_s1_{scene}_p{patch}.tif"
            transform = Affine(10.0, 0.0, 300000.0 + 2560.0 * i, 0.0, -10.0, 5000000.0)

            clear, veg, water = _s2_scene(rng, size)
            cover = rng.uniform(0.2, 0.6)
            thickness = _smooth_field(rng, (size, size), size / 6)
            alpha = np.clip((thickness - (1 - cover)) / 0.15, 0.0, 1.0)
            cloudy = (1 - alpha[None]) * clear + alpha[None] * _CLOUD[:, None, None]
            s1 = _s1_scene(rng, veg, water)

            def dn(refl: np.ndarray) -> np.ndarray:
                return np.clip(np.rint(refl * 10000), 0, 65535).astype(np.uint16)

            common = {"crs": _utm(epsg), "transform": transform}
            write_raster(root / s1_folder / s1_file, s1, band_names=list(S1_BANDS), **common)
            write_raster(
                root / s2_folder / s1_file.replace("_s1_", "_s2_"),
                dn(clear),
                band_names=list(SEN12MSCR_S2_BANDS),
                **common,
            )
            write_raster(
                root / cloudy_folder / s1_file.replace("_s1_", "_s2_cloudy_"),
                dn(cloudy),
                band_names=list(SEN12MSCR_S2_BANDS),
                **common,
            )
            rows.append([split, s1_folder, s2_folder, cloudy_folder, s1_file])
            i += 1
    with atomic_write(root / "data.csv", "w") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return root


# --------------------------------------------------------------------------------------------------
# BigEarthNet v2
# --------------------------------------------------------------------------------------------------
# DEPRECATED: gac_pipeline's layout; its generator lives in packages/gac_pipeline/tests/data/.
def make_fake_benv2(root: PathLike, n: int = 6, seed: int = 0) -> Path:
    """Write a fake BigEarthNet v2 set in the official GeoTIFF folder layout.

    Layout (the official BigEarthNet v2 folders, as in torchgeo's v2 test data)::

        root/BigEarthNet-S2/<s2_product>/<patch_id>/<patch_id>_<band>.tif   12 bands, 1 band per file,
            uint16 reflectance x 1e4 at native size: B02 B03 B04 B08 120x120 (10 m),
            B05 B06 B07 B8A B11 B12 60x60 (20 m), B01 B09 20x20 (60 m)
        root/BigEarthNet-S1/<s1_product>/<s1_name>/<s1_name>_VV.tif, _VH.tif  120x120 float32 dB
        root/metadata.parquet   patch_id, labels (list of str), split ('train'/'validation'/'test'),
            country, s1_name, s2v1_name, contains_seasonal_snow, contains_cloud_or_shadow

    ``patch_id = <s2_product>_<col>_<row>`` and ``s1_name = <s1_product>_<tile>_<col>_<row>``, e.g.
    ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88`` in folder
    ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP`` and ``S1B_IW_GRDH_1SDV_20170612T165809_33UUP_37_88``
    in folder ``S1B_IW_GRDH_1SDV_20170612T165809`` (no tile in the S1 product folder); patches
    are placed in their tile's 1200 m grid (UTM 33N for Austria, 35N for Finland). Splits go round robin
    (train, validation, test), the first three patches are Austrian, the next three Finnish, and so on.
    Coarse bands are block means of a 10 m field, so resampling them back is consistent.

    Args:
        root: output folder (created).
        n: number of patches.
        seed: fixes all values.

    Returns:
        ``root``.
    """
    import pandas as pd

    _check_size(n, 1, "n")
    root = Path(root)
    rng = _rng(seed)
    size = 120
    s13 = {b: i for i, b in enumerate(SEN12MSCR_S2_BANDS)}
    records = []
    for i in range(n):
        country, s2_product, s1_product, tile, epsg, x0, y0 = _BENV2_TILES[
            (i // 3) % len(_BENV2_TILES)
        ]
        col, row = 37 + i, 88 - (i % 3)
        patch_id = f"{s2_product}_{col}_{row}"
        s1_name = f"{s1_product}_{tile}_{col}_{row}"
        left, top = x0 + 1200.0 * col, y0 - 1200.0 * row
        refl, veg, water = _s2_scene(rng, size)
        for band, res in BENV2_S2_RESOLUTION.items():
            factor = res // 10
            band_refl = refl[s13[band]].reshape(size // factor, factor, size // factor, factor)
            band_dn = np.clip(np.rint(band_refl.mean(axis=(1, 3)) * 10000), 0, 65535).astype(
                np.uint16
            )
            write_raster(
                root / "BigEarthNet-S2" / s2_product / patch_id / f"{patch_id}_{band}.tif",
                band_dn[None],
                crs=_utm(epsg),
                transform=Affine(float(res), 0.0, left, 0.0, -float(res), top),
                band_names=[band],
            )
        s1 = _s1_scene(rng, veg, water)
        for j, band in enumerate(S1_BANDS):
            write_raster(
                root / "BigEarthNet-S1" / s1_product / s1_name / f"{s1_name}_{band}.tif",
                s1[j : j + 1],
                crs=_utm(epsg),
                transform=Affine(10.0, 0.0, left, 0.0, -10.0, top),
                band_names=[band],
            )
        k = int(rng.integers(1, 5))
        labels = sorted(str(x) for x in rng.choice(BENV2_LABELS, size=k, replace=False))
        if water.mean() > 0.05 and "Inland waters" not in labels:
            labels = sorted([*labels, "Inland waters"])
        records.append(
            {
                "patch_id": patch_id,
                "labels": labels,
                "split": ("train", "validation", "test")[i % 3],
                "country": country,
                "s1_name": s1_name,
                "s2v1_name": f"{s2_product.split('_N9999')[0]}_{col}_{row}",
                "contains_seasonal_snow": i % 5 == 4,
                "contains_cloud_or_shadow": i % 5 == 3,
            }
        )
    tmp = atomic_temp_path(root / "metadata.parquet")
    try:
        pd.DataFrame.from_records(records).to_parquet(tmp, index=False)
        os.replace(tmp, root / "metadata.parquet")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return root


# --------------------------------------------------------------------------------------------------
# risk raster stack
# --------------------------------------------------------------------------------------------------
# DEPRECATED: risk_mapping's layout; its generator lives in packages/risk_mapping/tests/data/.
def make_fake_risk_stack(
    root: PathLike, size: int = 128, bands: int = 6, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``root/stack.tif`` (float32 features, nodata -9999) and ``root/labels.tif`` (uint8).

    The stack holds terrain and environment features named by :data:`RISK_BAND_NAMES` (elevation m,
    slope deg, aspect deg, curvature, NDVI, rainfall mm; further bands are ``feature<k>`` noise
    fields). A border of ``max(2, size // 32)`` pixels and a small interior hole are nodata (-9999 in
    every band). Labels are the ordinal risk 0 = low, 1 = medium, 2 = high, from thresholds on a score
    that grows with slope and rainfall and falls with NDVI (about 50 / 33 / 17 %); 255 = nodata on
    the stack's nodata pixels and on a few unlabelled patches. Both files share CRS (UTM 32N), 30 m
    transform and shape.

    Args:
        root: output folder (created).
        size: side in pixels.
        bands: number of feature bands (>= 1).
        seed: fixes all values.

    Returns:
        ``(stack_path, labels_path)``.
    """
    _check_size(size, 16)
    _check_size(bands, 1, "bands")
    root = Path(root)
    rng = _rng(seed)
    shape = (size, size)
    elevation = 300.0 + 2200.0 * _smooth_field(rng, shape, size / 8)
    dz_dy, dz_dx = np.gradient(elevation, 30.0)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    aspect = (np.degrees(np.arctan2(-dz_dx, dz_dy)) + 360.0) % 360.0
    curvature = ndimage.laplace(elevation) / 30.0**2
    ndvi = -0.1 + 1.0 * _smooth_field(rng, shape, size / 12)
    rainfall = 600.0 + 1800.0 * _smooth_field(rng, shape, size / 4)
    features = [elevation, slope, aspect, curvature, ndvi, rainfall]
    names = list(RISK_BAND_NAMES)
    for k in range(len(features), bands):
        features.append(_smooth_field(rng, shape, size / 16))
        names.append(f"feature{k + 1}")
    stack = np.stack(features[:bands]).astype(np.float32)
    names = names[:bands]

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() + 1e-12)

    score = z(slope) + 0.7 * z(rainfall) - 0.8 * z(ndvi) + 0.3 * rng.standard_normal(shape)
    low, high = np.quantile(score, [0.5, 0.83])
    labels = np.digitize(score, [low, high]).astype(np.uint8)

    nodata = np.zeros(shape, dtype=bool)
    border = max(2, size // 32)
    nodata[:border] = nodata[-border:] = True
    nodata[:, :border] = nodata[:, -border:] = True
    cy, cx = int(size * 0.6), int(size * 0.3)
    yy, xx = np.mgrid[:size, :size]
    nodata |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 20) ** 2
    stack[:, nodata] = -9999.0
    unlabelled = _smooth_field(rng, shape, size / 16) > 0.9
    labels[nodata | unlabelled] = 255

    transform = Affine(30.0, 0.0, 450000.0, 0.0, -30.0, 5250000.0)
    stack_path = write_raster(
        root / "stack.tif",
        stack,
        crs=_utm(32632),
        transform=transform,
        nodata=-9999.0,
        band_names=names,
    )
    labels_path = write_raster(
        root / "labels.tif", labels[None], crs=_utm(32632), transform=transform, nodata=255,
        band_names=["risk"],
    )  # fmt: skip
    return stack_path, labels_path


# --------------------------------------------------------------------------------------------------
# GlacierHack
# --------------------------------------------------------------------------------------------------
def glacierhack_tile_ids(n: int) -> list[int]:
    """The tile ids :func:`make_fake_glacierhack` uses: 2, 5, 8, ... (gaps, like the real ids).

    Example:
        >>> glacierhack_tile_ids(4)
        [2, 5, 8, 11]
    """
    return [2 + 3 * k for k in range(n)]


def _glacier_classes(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) class indices 0..3 (background, glacier, debris, lake), all four present."""
    ice = _smooth_field(rng, (size, size), size / 8)
    glacier = ice > np.quantile(ice, 0.70)
    # debris: the lower rim of the glacier (a band just outside the clean ice)
    rim = ndimage.binary_dilation(glacier, iterations=max(1, size // 32)) & ~glacier
    lower = np.arange(size)[:, None] > size * 0.3
    debris = rim & lower
    classes = np.zeros((size, size), dtype=np.uint8)
    classes[glacier] = 1
    classes[debris] = 2
    # a small proglacial lake in the background, 2-3 px radius
    yy, xx = np.mgrid[:size, :size]
    candidates = np.argwhere(classes == 0)
    cy, cx = candidates[rng.integers(len(candidates))]
    radius = max(1.5, size / 24)
    classes[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (classes == 0)] = 3
    for value in (1, 2, 3):  # guarantee every class, even on tiny tiles
        if not (classes == value).any():
            classes[value, value] = value
    return classes


# DEPRECATED: glacier_seg's layout; its generator lives in packages/glacier_seg/tests/data/.
def make_fake_glacierhack(root: PathLike, n: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write fake GlacierHack 2025 tiles: ``Band1/`` .. ``Band5/`` and ``Label/``.

    Layout (``<id>`` two digits, the tile id, from :func:`glacierhack_tile_ids`)::

        root/Band1/B2_B2_masked_<id>.tif     Landsat-8 B2 (blue), float32 reflectance
        root/Band2/B3_B3_masked_<id>.tif     B3 (green)
        root/Band3/B4_B4_masked_<id>.tif     B4 (red)
        root/Band4/B6_B6_masked_<id>.tif     B6 (SWIR1)
        root/Band5/B10_B10_masked_<id>.tif   B10 (thermal), float32 brightness temperature in K
        root/Label/Y_output_resized_<id>.tif uint8 0 / 85 / 170 / 255 = background / glacier / debris / lake

    File names differ per folder; pair files by the trailing tile id, never by sorted order. Every
    label tile holds all four classes (no nodata value: 255 is the lake class). Clean ice is bright in
    the visible bands and dark in SWIR, debris is darker and warmer, the lake is dark and cool.
    CRS: UTM 44N (EPSG:32644), 30 m pixels; each tile at its own place.

    Args:
        root: output folder (created).
        n: number of tiles.
        size: tile side in pixels.
        seed: fixes all values.

    Returns:
        ``root``.
    """
    _check_size(size, 8)
    _check_size(n, 1, "n")
    root = Path(root)
    rng = _rng(seed)
    # per class: blue, green, red, SWIR1 reflectance; thermal K
    means = np.array(
        [
            [0.12, 0.13, 0.15, 0.25, 288.0],  # background: rock, soil, sparse vegetation
            [0.70, 0.68, 0.65, 0.06, 268.0],  # clean glacier ice and snow
            [0.16, 0.16, 0.17, 0.20, 280.0],  # debris-covered ice
            [0.10, 0.08, 0.05, 0.01, 276.0],  # glacial lake
        ]
    )
    noise = np.array([0.02, 0.02, 0.02, 0.02, 1.5])
    for k, tile_id in enumerate(glacierhack_tile_ids(n)):
        classes = _glacier_classes(rng, size)
        values = means[classes].transpose(2, 0, 1) + noise[:, None, None] * rng.standard_normal(
            (5, size, size)
        )
        values[:4] = np.clip(values[:4], 0.0, 1.0)
        transform = Affine(30.0, 0.0, 250000.0 + 30.0 * size * k, 0.0, -30.0, 3450000.0)
        tag = f"{tile_id:02d}"
        for b, (folder, prefix) in enumerate(GLACIERHACK_BAND_FILES.items()):
            write_raster(
                root / folder / f"{prefix}_{tag}.tif",
                values[b : b + 1].astype(np.float32),
                crs=_utm(32644),
                transform=transform,
            )
        labels = np.asarray(GLACIERHACK_CLASS_VALUES, dtype=np.uint8)[classes]
        write_raster(
            root / "Label" / f"{GLACIERHACK_LABEL_PREFIX}_{tag}.tif",
            labels[None],
            crs=_utm(32644),
            transform=transform,
        )
    return root


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
LAYOUTS: tuple[str, ...] = ("sen12mscr", "benv2", "risk_stack", "glacierhack")


@dataclass
class FakeDataConfig:
    """Flags of ``python -m eo_common.testing``."""

    layout: str
    dest: Path
    seed: int = 0
    size: int | None = None
    n: int | None = None


def write_fake(cfg: FakeDataConfig) -> list[Path]:
    """Write one fake set as configured; returns the files written (sorted)."""
    dest = Path(cfg.dest)
    if cfg.layout == "sen12mscr":
        n = cfg.n if cfg.n is not None else 4
        per_split = (max(1, n - 2 * (n // 4)), n // 4, n // 4)
        make_fake_sen12mscr(dest, n_per_split=per_split, size=cfg.size or 64, seed=cfg.seed)
    elif cfg.layout == "benv2":
        make_fake_benv2(dest, n=cfg.n or 6, seed=cfg.seed)
    elif cfg.layout == "risk_stack":
        make_fake_risk_stack(dest, size=cfg.size or 128, seed=cfg.seed)
    elif cfg.layout == "glacierhack":
        make_fake_glacierhack(dest, n=cfg.n or 4, size=cfg.size or 64, seed=cfg.seed)
    else:
        raise ValueError(f"unknown layout {cfg.layout!r}; choose one of {', '.join(LAYOUTS)}")
    return sorted(p for p in dest.rglob("*") if p.is_file())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eo_common.testing",
        description="Write a tiny fake data set in one of the real layouts, for manual tries of a "
        "package's reader, training or prediction.",
        epilog="layouts: sen12mscr (data.csv + ROIs folders), benv2 (BigEarthNet-S1/S2 + "
        "metadata.parquet), risk_stack (stack.tif + labels.tif), glacierhack (Band1..5 + Label)",
    )
    parser.add_argument("layout", choices=LAYOUTS, help="which real layout to imitate")
    parser.add_argument("dest", type=Path, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0, help="fixes every value (default 0)")
    parser.add_argument(
        "--size", type=int, default=None,
        help="tile side in pixels (sen12mscr 64, risk_stack 128, glacierhack 64; benv2 is always 120)",
    )  # fmt: skip
    parser.add_argument(
        "--n", type=int, default=None,
        help="number of samples/patches/tiles (sen12mscr 4, benv2 6, glacierhack 4)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = FakeDataConfig(
        layout=args.layout, dest=args.dest, seed=args.seed, size=args.size, n=args.n
    )
    try:
        files = write_fake(cfg)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} files of a fake {cfg.layout} set under {cfg.dest}")
    for path in files[:12]:
        print(f"  {path.relative_to(cfg.dest)}")
    if len(files) > 12:
        print(f"  ... and {len(files) - 12} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
