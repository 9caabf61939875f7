"""A tiny fake BigEarthNet v2 in the official GeoTIFF layout (torchgeo-style test-data generator).

Layout (the published BigEarthNet v2 folders, as in torchgeo's v2 test data)::

    root/metadata.parquet      patch_id, labels (list of str), split ('train'/'validation'/'test'),
                               country, s1_name, s2v1_name, contains_seasonal_snow, contains_cloud_or_shadow
    root/BigEarthNet-S2/<s2_product>/<patch_id>/<patch_id>_<band>.tif   12 bands, one file each, uint16
        reflectance x 1e4 at native size: B02 B03 B04 B08 120x120 (10 m), B05 B06 B07 B8A B11 B12 60x60
        (20 m), B01 B09 20x20 (60 m)
    root/BigEarthNet-S1/<s1_product>/<s1_name>/<s1_name>_VV.tif, _VH.tif  120x120 float32 dB

``patch_id = <s2_product>_<col>_<row>``, ``s1_name = <s1_product>_<tile>_<col>_<row>`` (no tile in the S1
product folder). Patches lie in their tile's 1200 m grid (UTM 33N for Austria, 35N for Finland); splits go
round robin (train, validation, test). Coarse bands are block means of a 10 m field. The values are those
of ``eo_common.testing.make_fake_benv2`` (same code, same seed -> same files), which this copy replaces.

Run ``python packages/gac_pipeline/tests/data/benv2.py OUT [N]`` to write one by hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from affine import Affine
from eo_common.raster import write_raster
from scipy import ndimage

S2_RESOLUTION: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20,
    "B07": 20, "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20,
}  # fmt: skip
_S13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
LABELS = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops", "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas", "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub", "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands",
    "Inland waters", "Marine waters",
)  # fmt: skip
# (country, S2 product, S1 product, MGRS tile, EPSG, tile origin x, y)
TILES = (
    ("Austria", "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP", "S1B_IW_GRDH_1SDV_20170612T165809",
     "33UUP", 32633, 300000.0, 5400000.0),
    ("Finland", "S2B_MSIL2A_20170924T093020_N9999_R136_T35VPK", "S1A_IW_GRDH_1SDV_20170925T043256",
     "35VPK", 32635, 600000.0, 7000020.0),
)  # fmt: skip
# surface reflectance (fraction) of the 13 bands B01..B12 incl. B8A and B10
_VEG = np.array([0.03, 0.04, 0.07, 0.04, 0.10, 0.30, 0.38, 0.40, 0.42, 0.14, 0.005, 0.20, 0.10])
_SOIL = np.array([0.08, 0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.10, 0.010, 0.33, 0.28])
_WATER = np.array(
    [0.07, 0.06, 0.05, 0.03, 0.02, 0.015, 0.012, 0.01, 0.01, 0.005, 0.002, 0.005, 0.003]
)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-12)


def _s2_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    veg = _smooth_field(rng, (size, size), size / 10)
    water = _smooth_field(rng, (size, size), size / 8) > 0.8
    refl = veg[None] * _VEG[:, None, None] + (1 - veg[None]) * _SOIL[:, None, None]
    refl = np.where(water[None], _WATER[:, None, None], refl)
    refl = refl * (1 + 0.03 * rng.standard_normal(refl.shape))
    return np.clip(refl, 0, 1), veg, water


def _s1_scene(rng: np.random.Generator, veg: np.ndarray, water: np.ndarray) -> np.ndarray:
    vv = -15.0 + 8.0 * veg + 1.5 * rng.standard_normal(veg.shape)
    vv = np.where(water, -22.0 + rng.standard_normal(veg.shape), vv)
    vh = vv - 6.5 + 1.5 * rng.standard_normal(veg.shape)
    return np.stack([np.clip(vv, -25.0, 0.0), np.clip(vh, -32.5, -2.0)]).astype(np.float32)


def make_fake_benv2(root: str | os.PathLike, n: int = 6, seed: int = 0) -> Path:
    """Write ``n`` fake patches (see the module docstring); returns ``root``."""
    import pandas as pd

    root = Path(root)
    rng = np.random.default_rng(seed)
    size = 120
    records = []
    for i in range(n):
        country, s2_product, s1_product, tile, epsg, x0, y0 = TILES[(i // 3) % len(TILES)]
        col, row = 37 + i, 88 - (i % 3)
        patch_id = f"{s2_product}_{col}_{row}"
        s1_name = f"{s1_product}_{tile}_{col}_{row}"
        left, top = x0 + 1200.0 * col, y0 - 1200.0 * row
        refl, veg, water = _s2_scene(rng, size)
        for band, res in S2_RESOLUTION.items():
            f = res // 10
            block = refl[_S13.index(band)].reshape(size // f, f, size // f, f).mean(axis=(1, 3))
            dn = np.clip(np.rint(block * 10000), 0, 65535).astype(np.uint16)
            write_raster(
                root / "BigEarthNet-S2" / s2_product / patch_id / f"{patch_id}_{band}.tif",
                dn[None], crs=f"EPSG:{epsg}", band_names=[band],
                transform=Affine(float(res), 0.0, left, 0.0, -float(res), top),
            )  # fmt: skip
        s1 = _s1_scene(rng, veg, water)
        for j, band in enumerate(("VV", "VH")):
            write_raster(
                root / "BigEarthNet-S1" / s1_product / s1_name / f"{s1_name}_{band}.tif",
                s1[j : j + 1], crs=f"EPSG:{epsg}", band_names=[band],
                transform=Affine(10.0, 0.0, left, 0.0, -10.0, top),
            )  # fmt: skip
        k = int(rng.integers(1, 5))
        labels = sorted(str(x) for x in rng.choice(LABELS, size=k, replace=False))
        if water.mean() > 0.05 and "Inland waters" not in labels:
            labels = sorted([*labels, "Inland waters"])
        records.append(
            {
                "patch_id": patch_id, "labels": labels, "split": ("train", "validation", "test")[i % 3],
                "country": country, "s1_name": s1_name,
                "s2v1_name": f"{s2_product.split('_N9999')[0]}_{col}_{row}",
                "contains_seasonal_snow": i % 5 == 4, "contains_cloud_or_shadow": i % 5 == 3,
            }
        )  # fmt: skip
    pd.DataFrame.from_records(records).to_parquet(root / "metadata.parquet", index=False)
    return root


if __name__ == "__main__":
    make_fake_benv2(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6)
