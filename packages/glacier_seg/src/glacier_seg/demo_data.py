"""The demo data: the real Landsat-8 sample scene cut into GlacierHack tiles with **derived** labels.

Data: the real Landsat-8 L1 scene of ``eo_common.samples`` (key ``landsat8_scene``; EPSG:32616,
30 m, 603 x 627 px, a cloudy summer scene without snow or glaciers). Bands B2, B3, B4, B6 are
converted to top-of-atmosphere reflectance with the OLI rescaling constants every Landsat-8 L1
metadata file carries (``rho = 2e-5 DN - 0.1``, no sun-angle correction) and B10 to brightness
temperature (``L = 3.342e-4 DN + 0.1``, ``T = 1321.0789 / ln(774.8853 / L + 1)`` K).

Labels are **derived from spectral indices**, not mapped by people, and the scene holds no real
glacier: the rules reproduce the *structure* of the GlacierHack task (four classes, one rare) on
real radiometry, so the pipeline can be run end to end on real pixels. With scene percentiles
``P_q`` (the scene has no pixel above the usual NDSI 0.4 snow threshold, so fixed thresholds would
leave the classes empty):

* glacier ("snow/ice-like"): bright and cold, ``green >= P85(green)`` and ``T <= P25(T)`` and
  ``NDSI >= P50(NDSI)`` with ``NDSI = (B3 - B6) / (B3 + B6)`` (here mostly cold bright cloud tops);
* debris ("thermal + index rule"): not glacier, ``P25(T) < T <= P40(T)`` and ``NDSI < P50(NDSI)``
  and ``green >= P50(green)`` (cool, moderately bright, low snow index);
* lake: ``NDWI >= P99(NDWI)`` with ``NDWI = (B3 - B5) / (B3 + B5)`` (B5, NIR, is *not* one of the
  five input bands, so the network must infer water from the others);
* background: everything else.

Tiles of 96 x 96 px (36 tiles) are written in the GlacierHack layout with their georeference; a
seeded quarter of the tiles is held out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from eo_common.io import atomic_save_json
from eo_common.raster import read_raster, write_raster
from rasterio.windows import Window

from glacier_seg.layout import BAND_FOLDERS, BAND_NAMES, CLASS_NAMES, classes_to_mask_values

__all__ = [
    "derive_labels",
    "landsat_to_glacierhack_bands",
    "build_demo_layout",
    "default_demo_root",
]

TILE = 96
_REFLECTANCE_MULT, _REFLECTANCE_ADD = 2.0e-5, -0.1
_B10_MULT, _B10_ADD, _B10_K1, _B10_K2 = 3.342e-4, 0.1, 774.8853, 1321.0789


def landsat_to_glacierhack_bands(dn: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Landsat-8 L1 DN -> TOA reflectance (B2..B7) and B10 brightness temperature (K), float32."""
    out = {}
    for band, values in dn.items():
        v = values.astype(np.float64)
        if band == "B10":
            radiance = _B10_MULT * v + _B10_ADD
            out[band] = (_B10_K2 / np.log(_B10_K1 / radiance + 1.0)).astype(np.float32)
        else:
            out[band] = (_REFLECTANCE_MULT * v + _REFLECTANCE_ADD).astype(np.float32)
    return out


def derive_labels(bands: dict[str, np.ndarray]) -> np.ndarray:
    """Class map (H, W) uint8 0..3 from B3, B5, B6 reflectance and B10 temperature (module rules)."""
    green, nir, swir, temp = (bands[k].astype(np.float64) for k in ("B3", "B5", "B6", "B10"))
    ndsi = (green - swir) / np.maximum(green + swir, 1e-6)
    ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
    p = np.percentile
    glacier = (green >= p(green, 85)) & (temp <= p(temp, 25)) & (ndsi >= p(ndsi, 50))
    debris = (
        ~glacier
        & (temp > p(temp, 25))
        & (temp <= p(temp, 40))
        & (ndsi < p(ndsi, 50))
        & (green >= p(green, 50))
    )
    lake = ndwi >= p(ndwi, 99)
    classes = np.zeros(green.shape, dtype=np.uint8)
    classes[glacier] = 1
    classes[debris] = 2
    classes[lake] = 3
    return classes


def build_demo_layout(dest: str | Path, seed: int = 0, tile: int = TILE) -> Path:
    """Write the derived-label Landsat-8 tiles in the GlacierHack layout (idempotent).

    Returns the root; ``root/split.json`` holds ``{"train": [...], "val": [...]}`` tile ids.
    """
    from eo_common.samples import sample_path

    root = Path(dest)
    done = root / "split.json"
    if done.is_file():
        return root
    scene = sample_path("landsat8_scene")
    needed = ("B2", "B3", "B4", "B5", "B6", "B10")
    rasters = {b: read_raster(scene / f"l8_{b}.tif", bands=[1]) for b in needed}
    ref = rasters["B2"]
    values = landsat_to_glacierhack_bands({b: r.array[0] for b, r in rasters.items()})
    classes = derive_labels(values)
    height, width = classes.shape
    ids = []
    k = 0
    for r0 in range(0, height - tile + 1, tile):
        for c0 in range(0, width - tile + 1, tile):
            k += 1
            tag = f"{k:02d}"
            window = Window(c0, r0, tile, tile)
            transform = rasterio_window_transform(ref.transform, window)
            for folder, band in zip(BAND_FOLDERS, BAND_NAMES):
                write_raster(
                    root / folder / f"{band}_{band}_masked_{tag}.tif",
                    values[band][None, r0 : r0 + tile, c0 : c0 + tile],
                    crs=ref.crs,
                    transform=transform,
                )
            write_raster(
                root / "Label" / f"Y_output_resized_{tag}.tif",
                classes_to_mask_values(classes[r0 : r0 + tile, c0 : c0 + tile])[None],
                crs=ref.crs,
                transform=transform,
            )
            ids.append(str(k))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = len(ids) // 4
    val = sorted((ids[i] for i in order[:n_val]), key=int)
    train = [i for i in ids if i not in set(val)]
    fractions = {name: float((classes == c).mean()) for c, name in enumerate(CLASS_NAMES)}
    atomic_save_json({"train": train, "val": val, "class_fractions": fractions, "tile": tile}, done)
    return root


def rasterio_window_transform(transform, window: Window):
    """Affine transform of a window (rasterio's ``windows.transform``)."""
    from rasterio.windows import transform as window_transform

    return window_transform(window, transform)


def default_demo_root(seed: int) -> Path:
    """Where ``glacier-train --demo`` writes the tiles when ``data.root`` is empty."""
    from eo_common.samples import data_root

    return Path(data_root()) / "glacier_demo" / f"seed{seed}"
