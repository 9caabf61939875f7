"""Fake GlacierHack data in the layouts people have on disk (torchgeo style: run it to write them).

Each layout is built from its published description, with the real dtypes, band counts and names:

* organisers' training layout::

      <root>/Band1/B2_B2_masked_07.tif ... <root>/Band5/B10_B10_masked_07.tif
      <root>/Label/Y_output_resized_07.tif

* participants' copy (``Train/`` with a lower-case ``label/``, two-number tile keys)::

      <root>/Train/Band1/B2_B2_masked_02_07.tif ... <root>/Train/Band5/B10_B10_masked_02_07.tif
      <root>/Train/label/Y_output_resized_02_07.tif      (or .png)

* the platform's test data (no masks; outputs must be named like the Band1 file)::

      <root>/Band1/img001.tif ... <root>/Band5/img001.tif

Bands: single-band uint16 Landsat-8 L1 digital numbers of B2, B3, B4, B6 (SWIR1) and B10 (thermal),
from per-class reflectances (``DN = (rho + 0.1) / 2e-5``) and brightness temperatures (inverse of
``T = K2 / ln(K1 / L + 1)``, ``L = 3.342e-4 DN + 0.1``). Masks: uint8 0/85/170/255 = background,
glacier, debris, lake, every class present in every tile. ``nodata="nan"`` writes float32 bands with
NaN (and a few +-inf) pixels, the way masked pixels are stored in some copies.

    python packages/glacier_seg/tests/data/glacierhack.py /tmp/glacierhack
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from scipy import ndimage

__all__ = [
    "BAND_FILES",
    "LABEL_PREFIX",
    "CLASS_VALUES",
    "glacier_classes",
    "landsat_bands",
    "write_tile",
    "make_organisers_train",
    "make_participants_train",
    "make_platform_test",
]

BAND_FILES: dict[str, str] = {
    "Band1": "B2_B2_masked",
    "Band2": "B3_B3_masked",
    "Band3": "B4_B4_masked",
    "Band4": "B6_B6_masked",
    "Band5": "B10_B10_masked",
}
LABEL_PREFIX = "Y_output_resized"
CLASS_VALUES: tuple[int, ...] = (0, 85, 170, 255)
UTM44N = CRS.from_epsg(32644)
# per class: blue, green, red, SWIR1 TOA reflectance; thermal brightness temperature (K)
_MEANS = np.array(
    [
        [0.12, 0.13, 0.15, 0.25, 288.0],  # background: rock, soil, sparse vegetation
        [0.70, 0.68, 0.65, 0.06, 268.0],  # clean glacier ice and snow
        [0.16, 0.16, 0.17, 0.20, 280.0],  # debris-covered ice
        [0.10, 0.08, 0.05, 0.01, 276.0],  # glacial lake
    ]
)
_NOISE = np.array([0.02, 0.02, 0.02, 0.02, 1.5])
_K1, _K2 = 774.8853, 1321.0789


def glacier_classes(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) uint8 classes 0..3: a smooth glacier, debris on its lower rim, a small lake."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 8, mode="wrap")
    glacier = field > np.quantile(field, 0.70)
    rim = ndimage.binary_dilation(glacier, iterations=max(1, size // 32)) & ~glacier
    debris = rim & (np.arange(size)[:, None] > size * 0.3)
    classes = np.zeros((size, size), dtype=np.uint8)
    classes[glacier] = 1
    classes[debris] = 2
    yy, xx = np.mgrid[:size, :size]
    cy, cx = np.argwhere(classes == 0)[rng.integers(int((classes == 0).sum()))]
    radius = max(1.5, size / 24)
    classes[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (classes == 0)] = 3
    for value in (1, 2, 3):  # every class, even on tiny tiles
        if not (classes == value).any():
            classes[value, value] = value
    return classes


def landsat_bands(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(5, H, W) uint16 Landsat-8 L1 DN of B2, B3, B4, B6, B10 for a class map."""
    values = _MEANS[classes].transpose(2, 0, 1) + _NOISE[:, None, None] * rng.standard_normal(
        (5, *classes.shape)
    )
    reflectance = np.clip(values[:4], 0.0, 1.0)
    dn = np.empty(values.shape, dtype=np.float64)
    dn[:4] = (reflectance + 0.1) / 2e-5
    radiance = _K1 / (np.exp(_K2 / values[4]) - 1.0)
    dn[4] = (radiance - 0.1) / 3.342e-4
    return np.clip(np.round(dn), 1, 65535).astype(np.uint16)


def _write_tif(
    path: Path, array: np.ndarray, transform: Affine, nodata: float | None = None
) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "count": 1,
        "height": array.shape[0],
        "width": array.shape[1],
        "dtype": array.dtype.name,
        "crs": UTM44N,
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def write_tile(
    root: Path,
    key: str,
    bands: np.ndarray,
    mask: np.ndarray | None,
    transform: Affine,
    *,
    band_names: dict[str, str] | None = None,
    label_folder: str = "Label",
    label_name: str | None = None,
    mask_format: str = "tif",
) -> None:
    """Write one tile: ``Band<i>/<prefix>_<key>.tif`` and the mask (GeoTIFF or PNG)."""
    for b, (folder, prefix) in enumerate((band_names or BAND_FILES).items()):
        name = f"{prefix}_{key}.tif" if prefix else f"{key}.tif"
        _write_tif(root / folder / name, bands[b], transform)
    if mask is None:
        return
    name = label_name or f"{LABEL_PREFIX}_{key}"
    path = root / label_folder / f"{name}.{mask_format}"
    if mask_format == "png":
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, mode="L").save(path)
    else:
        _write_tif(path, mask, transform)


def _with_nodata(bands: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 copy with a NaN block (a fifth of the tile, one corner) and two +-inf pixels."""
    out = bands.astype(np.float32)
    size = out.shape[-1]
    side = max(2, int(size * 0.45))
    out[:, :side, :side] = np.nan
    r, c = rng.integers(side, size, 2)
    out[1, r, c] = np.inf
    out[4, c, r] = -np.inf
    return out


def make_organisers_train(
    root: str | Path, n: int = 4, size: int = 64, seed: int = 0, nodata: str | None = None
) -> Path:
    """The organisers' training layout with tiles ``02, 05, 08, ...`` (ids with gaps, like theirs)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in range(n):
        classes = glacier_classes(rng, size)
        bands = landsat_bands(classes, rng)
        if nodata == "nan":
            bands = _with_nodata(bands, rng)
        transform = Affine(30.0, 0.0, 250000.0 + 30.0 * size * k, 0.0, -30.0, 3450000.0)
        mask = np.asarray(CLASS_VALUES, dtype=np.uint8)[classes]
        write_tile(root, f"{2 + 3 * k:02d}", bands, mask, transform)
    return root


def make_participants_train(
    root: str | Path,
    keys: tuple[str, ...] = ("02_07", "02_13", "07_07", "13_02"),
    size: int = 64,
    seed: int = 0,
    mask_format: str = "tif",
    binary: bool = False,
) -> Path:
    """``<root>/Train`` with ``Band1..Band5`` and a lower-case ``label`` folder; keys of two numbers
    whose second numbers repeat (``02_07`` and ``07_07``). ``binary``: masks 0/255 (glacier or not)."""
    train = Path(root) / "Train"
    rng = np.random.default_rng(seed)
    for key in keys:
        classes = glacier_classes(rng, size)
        bands = landsat_bands(classes, rng)
        row, col = (int(p) for p in key.split("_"))
        transform = Affine(
            30.0, 0.0, 300000.0 + 30.0 * size * col, 0.0, -30.0, 3400000.0 - 30.0 * size * row
        )
        if binary:
            mask = np.where(classes == 1, 255, 0).astype(np.uint8)
        else:
            mask = np.asarray(CLASS_VALUES, dtype=np.uint8)[classes]
        write_tile(
            train, key, bands, mask, transform, label_folder="label", mask_format=mask_format
        )
    return train


def make_platform_test(root: str | Path, n: int = 3, size: int = 64, seed: int = 1) -> Path:
    """The platform's test data: ``Band1..Band5/img001.tif ...`` (same name in every folder, no masks)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = {folder: "" for folder in BAND_FILES}
    for k in range(n):
        classes = glacier_classes(rng, size)
        transform = Affine(30.0, 0.0, 400000.0 + 30.0 * size * k, 0.0, -30.0, 3300000.0)
        write_tile(
            root, f"img{k + 1:03d}", landsat_bands(classes, rng), None, transform, band_names=names
        )
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "glacierhack_fake")
    make_organisers_train(out / "organisers")
    make_participants_train(out / "participants")
    make_platform_test(out / "platform_test")
    print(f"wrote {out}")
