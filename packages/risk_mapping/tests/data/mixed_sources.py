"""A risk stack from different sources, as researchers assemble it (issue: "data as users have it").

* ``dem.tif``: 30 m int16 elevation (m), nodata -32768 (SRTM/Copernicus DEM style), UTM 32N;
* ``slope.tif``: 30 m float32 slope (degrees) on the DEM grid, nodata -9999;
* ``landcover.tif``: 10 m uint8 ESA WorldCover codes (10 tree, 20 shrub, 30 grass, 40 crop,
  50 built-up, 60 bare, 80 water, 90 wetland), nodata 0, in another CRS (ETRS89 / LAEA, EPSG:3035),
  covering the DEM's extent with a margin;
* ``labels.tif``: 10 m uint8 risk labels 0/1/2, 255 = ignore, UTM 32N (digitised on a finer grid).

The DEM, slope and labels have nodata holes; the land cover has a few nodata pixels. Labels follow
slope and land cover (bare and built-up riskier, trees safer), so a model can learn them.

Run ``python mixed_sources.py OUT`` to write one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio.warp
from affine import Affine
from eo_common.raster import write_raster
from rasterio.enums import Resampling

WORLDCOVER_CODES = (10, 20, 30, 40, 50, 60, 80, 90)
UTM, LAEA = "EPSG:32632", "EPSG:3035"


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    return (field - field.min()) / (field.max() - field.min() + 1e-12)


def make_mixed_sources(root: str | Path, size: int = 96, seed: int = 0) -> dict[str, Path]:
    """Write the four files (DEM grid ``size`` x ``size`` at 30 m); return ``{name: path}``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    dem_transform = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 5200000.0)
    shape = (size, size)
    elevation = 800.0 + 1500.0 * _smooth(rng, shape, size / 8)
    dz_dy, dz_dx = np.gradient(elevation, 30.0)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy))).astype(np.float32)
    dem = np.round(elevation).astype(np.int16)
    hole = np.zeros(shape, bool)
    hole[size // 3 : size // 3 + 4, size // 2 : size // 2 + 5] = True
    dem[hole] = -32768
    slope[hole] = -9999.0
    slope[-3:, :7] = -9999.0  # slope's own gap (edge of its computation)

    # land cover: 10 m classes in LAEA, made on a 10 m UTM grid and warped to LAEA with nearest
    fine = (size * 3, size * 3)
    fine_transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
    field = _smooth(rng, fine, size / 6)
    codes = np.array(WORLDCOVER_CODES, np.uint8)
    landcover_utm = codes[np.minimum((field * len(codes)).astype(int), len(codes) - 1)]
    west, south, east, north = rasterio.transform.array_bounds(*fine, fine_transform)
    lc_transform, lc_w, lc_h = rasterio.warp.calculate_default_transform(
        UTM, LAEA, fine[1], fine[0], west - 300, south - 300, east + 300, north + 300,
        resolution=10.0,
    )  # fmt: skip
    landcover = np.zeros((lc_h, lc_w), np.uint8)
    rasterio.warp.reproject(
        landcover_utm, landcover, src_transform=fine_transform, src_crs=UTM,
        dst_transform=lc_transform, dst_crs=LAEA, src_nodata=0, dst_nodata=0,
        resampling=Resampling.nearest,
    )  # fmt: skip
    ys, xs = np.nonzero(landcover)
    landcover[ys[::97], xs[::97]] = 0  # scattered nodata inside

    # labels at 10 m on the UTM grid: slope (upsampled) and land cover decide the risk
    slope_fine = np.repeat(np.repeat(np.where(hole, 0, slope), 3, 0), 3, 1)
    lc_score = np.select(
        [landcover_utm == 10, landcover_utm == 60, landcover_utm == 50], [-1.0, 1.0, 0.7], 0.0
    )
    score = (slope_fine - slope_fine.mean()) / (slope_fine.std() + 1e-9) + lc_score
    score += 0.3 * rng.standard_normal(fine)
    labels = np.digitize(score, np.quantile(score, [0.5, 0.8])).astype(np.uint8)
    labels[np.repeat(np.repeat(hole, 3, 0), 3, 1)] = 255
    labels[:6, :] = 255

    return {
        "dem": write_raster(root / "dem.tif", dem, crs=UTM, transform=dem_transform,
                            nodata=-32768, band_names=["elevation_m"]),
        "slope": write_raster(root / "slope.tif", slope, crs=UTM, transform=dem_transform,
                              nodata=-9999.0, band_names=["slope_deg"]),
        "landcover": write_raster(root / "landcover.tif", landcover, crs=LAEA,
                                  transform=lc_transform, nodata=0, band_names=["worldcover"]),
        "labels": write_raster(root / "labels.tif", labels, crs=UTM, transform=fine_transform,
                               nodata=255, band_names=["risk"]),
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    for name, path in make_mixed_sources(args.out, args.size).items():
        print(name, path)
