"""Fake Landslide4Sense folder in the published layout (HDF5 patches).

    <root>/images/<split>/image_<N>.h5        "img":  (128, 128, 14) float32, channels last
    <root>/annotations/<split>/mask_<N>.h5    "mask": (128, 128) uint8, 1 = landslide

The 14 bands are Sentinel-2 B1-B12 (reflectance, about 0-1.5 after the benchmark's scaling), slope
(degrees) and DEM (m). Landslides sit on steep slopes with bright, vegetation-free pixels (high B4,
low B8). Splits: ``train``, ``validation``, ``test``.

Run ``python landslide4sense.py OUT`` to write one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

SPLITS = {"train": 4, "validation": 2, "test": 2}


def make_landslide4sense(
    root: str | Path, size: int = 128, seed: int = 0, splits: dict[str, int] | None = None
) -> Path:
    """Write the folder; ``splits`` maps the split folder name to its number of patches."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    number = 1
    for split, count in (splits or SPLITS).items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            field = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 10)
            field = (field - field.min()) / (field.max() - field.min() + 1e-9)
            slide = field > 0.7
            img = np.empty((size, size, 14), np.float32)
            for b in range(12):
                img[..., b] = 0.1 + 0.2 * rng.random((size, size)) + 0.05 * b / 12
            img[..., 3] += 0.4 * slide  # B4 (red) brighter on bare landslide scars
            img[..., 7] -= 0.1 * slide  # B8 (NIR) lower: no vegetation
            img[..., 12] = 10 + 30 * field  # slope (deg)
            img[..., 13] = 1000 + 800 * ndimage.gaussian_filter(field, 3)  # DEM (m)
            with h5py.File(root / "images" / split / f"image_{number}.h5", "w") as f:
                f.create_dataset("img", data=img)
            with h5py.File(root / "annotations" / split / f"mask_{number}.h5", "w") as f:
                f.create_dataset("mask", data=slide.astype(np.uint8))
            number += 1
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    print(make_landslide4sense(parser.parse_args().out))
