"""BigEarthNet v2 readers: the LMDB of safetensors blobs -> arrays, and -> the official GeoTIFF layout.

S1 is read as float32 dB (never cast to integers); S2 L2A bands keep their native sizes (10 m 120 px,
20 m 60 px, 60 m 20 px). The patch grid is ``(x0 + 1200 col, y0 - 1200 row)`` from the tile origin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eo_common.samples import SamplesMissingError, sample_path

__all__ = [
    "BENv2Patch",
    "read_benv2_lmdb",
    "benv1_tile_origins",
    "export_benv2_geotiff_layout",
    "BENV2_S2_BANDS",
    "BENV2_S1_BANDS",
]

BENV2_S2_BANDS: tuple[str, ...] = (
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
    "B11",
    "B12",
)
"""The 12 Sentinel-2 L2A bands of BigEarthNet v2 (no B10), in the order eolab stacks them."""
BENV2_S1_BANDS: tuple[str, ...] = ("VV", "VH")
_PATCH_SIZE_M = 1200.0  # BigEarthNet patches: 120 px x 10 m


# --------------------------------------------------------------------------------------------------
# BigEarthNet v2 readers


@dataclass
class BENv2Patch:
    """One BigEarthNet v2 S1/S2 pair as plain arrays.

    Attributes:
        patch_id: the S2 patch name, e.g. ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88``.
        s1_name: the matching S1 patch name.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        labels: the 19-class CORINE labels.
        country: ``"Austria"``, ``"Finland"``, ...
        s1: (2, 120, 120) float32, VV and VH backscatter in dB (never cast to integers).
        s2: band name -> uint16 array at native size: 10 m bands (120, 120), 20 m (60, 60), 60 m (20, 20).
        snow, cloud_or_shadow: flags from the metadata.
    """

    patch_id: str
    s1_name: str
    split: str
    labels: list[str]
    country: str
    s1: np.ndarray
    s2: dict[str, np.ndarray]
    snow: bool = False
    cloud_or_shadow: bool = False

    @property
    def s2_product(self) -> str:
        """The S2 product folder name (patch id without the trailing ``_col_row``)."""
        return self.patch_id.rsplit("_", 2)[0]

    @property
    def s1_product(self) -> str:
        """The S1 product folder name of the official v2 layout (S1 name without ``_tile_col_row``).

        E.g. ``S1B_IW_GRDH_1SDV_20170612T165809_33UUP_37_88`` -> ``S1B_IW_GRDH_1SDV_20170612T165809``.
        """
        return self.s1_name.rsplit("_", 3)[0]

    @property
    def mgrs_tile(self) -> str | None:
        """The MGRS tile of the patch, e.g. ``"33UUP"`` (from the ``_T33UUP_`` part of the id)."""
        m = re.search(r"_T(\d{2}[A-Z]{3})_", self.patch_id)
        return m.group(1) if m else None

    def grid_index(self) -> tuple[int, int]:
        """(column, row) of the patch in its tile's 1200 m grid (the id's last two numbers)."""
        col, row = self.patch_id.rsplit("_", 2)[1:]
        return int(col), int(row)


def _benv2_metadata(root: Path):
    import pandas as pd

    frames = []
    for name in ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet"):
        path = root / name
        if path.exists():
            frames.append(pd.read_parquet(path))
    if not frames:
        raise FileNotFoundError(f"{root}: no metadata.parquet found")
    md = pd.concat(frames, ignore_index=True).drop_duplicates("patch_id")
    return md.sort_values("patch_id").reset_index(drop=True)


def read_benv2_lmdb(
    root: str | os.PathLike | None = None, split: str | None = None
) -> Iterator[BENv2Patch]:
    """Iterate the BigEarthNet v2 pairs stored in the official LMDB (values are safetensors blobs).

    Args:
        root: folder holding ``BigEarthNet-V2-LMDB/`` and the metadata parquet files; default the
            fetched ``benv2_mock`` sample.
        split: only this split (``"train"``, ``"validation"``, ``"test"``).

    Yields:
        :class:`BENv2Patch` in patch-id order. S1 stays float32 dB.
    """
    import lmdb
    from safetensors.numpy import load as load_safetensors

    root = Path(root) if root is not None else sample_path("benv2_mock")
    lmdb_dir = root / "BigEarthNet-V2-LMDB"
    if not (lmdb_dir / "data.mdb").exists():
        raise FileNotFoundError(f"{lmdb_dir / 'data.mdb'}: BigEarthNet v2 LMDB not found")
    md = _benv2_metadata(root)
    if split is not None:
        md = md[md["split"] == split]
    env = lmdb.open(str(lmdb_dir), readonly=True, lock=False, readahead=False, subdir=True)
    try:
        with env.begin() as txn:
            for row in md.itertuples(index=False):
                s1_blob = txn.get(row.s1_name.encode())
                s2_blob = txn.get(row.patch_id.encode())
                if s1_blob is None or s2_blob is None:
                    missing = row.s1_name if s1_blob is None else row.patch_id
                    raise KeyError(
                        f"{lmdb_dir}: key {missing} listed in metadata is not in the LMDB"
                    )
                s1 = load_safetensors(s1_blob)
                s2 = load_safetensors(s2_blob)
                yield BENv2Patch(
                    patch_id=row.patch_id,
                    s1_name=row.s1_name,
                    split=row.split,
                    labels=list(row.labels),
                    country=row.country,
                    s1=np.stack([s1[b].astype(np.float32) for b in BENV2_S1_BANDS]),
                    s2={b: s2[b] for b in BENV2_S2_BANDS},
                    snow=bool(getattr(row, "contains_seasonal_snow", False)),
                    cloud_or_shadow=bool(getattr(row, "contains_cloud_or_shadow", False)),
                )
    finally:
        env.close()


def benv1_tile_origins(
    benv1_root: str | os.PathLike | None = None,
) -> dict[str, tuple[int, float, float]]:
    """UTM origins of BigEarthNet tiles, measured on the georeferenced BigEarthNet v1 example patches.

    A BigEarthNet patch named ``..._<col>_<row>`` has its upper-left corner at
    ``(x0 + 1200 col, y0 - 1200 row)`` in its tile's UTM zone (checked on the v1 examples: two patches
    of tile 29UPU agree to the metre). Returns ``{tile: (epsg, x0, y0)}`` for every tile present in the
    v1 example, e.g. ``{"33UUP": (32633, 300000.0, 5400000.0), ...}``.
    """
    import rasterio

    root = Path(benv1_root) if benv1_root is not None else sample_path("benv1_example")
    origins: dict[str, tuple[int, float, float]] = {}
    for vv in sorted(root.glob("BigEarthNet-S1-Example/*/*_VV.tif")):
        m = re.search(r"_(\d{2}[A-Z]{3})_(\d+)_(\d+)_VV\.tif$", vv.name)
        if not m:
            continue
        tile, col, row = m.group(1), int(m.group(2)), int(m.group(3))
        with rasterio.open(vv) as ds:
            epsg = ds.crs.to_epsg()
            x0 = ds.transform.c - _PATCH_SIZE_M * col
            y0 = ds.transform.f + _PATCH_SIZE_M * row
        origins[tile] = (int(epsg), float(x0), float(y0))
    return origins


def export_benv2_geotiff_layout(
    dest: str | os.PathLike,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    max_patches: int | None = None,
) -> Path:
    """Write the LMDB pairs in the official BigEarthNet v2 GeoTIFF folder layout.

    Layout (one GeoTIFF per band, native resolution)::

        dest/BigEarthNet-S2/<s2_product>/<patch_id>/<patch_id>_B02.tif ...   (12 bands, uint16)
        dest/BigEarthNet-S1/<s1_product>/<s1_name>/<s1_name>_VV.tif, _VH.tif (float32 dB)
        dest/metadata.parquet

    Georeference: the LMDB stores none. For tiles whose origin is known from a georeferenced
    BigEarthNet v1 example patch (:func:`benv1_tile_origins`; the Austrian tile 33UUP), the exact
    UTM CRS and transform are written; the other patches get no CRS and a 10 m pixel grid at (0, 0),
    and ``metadata.parquet`` says which (``georeferenced`` column).

    Returns:
        ``dest``.
    """
    from affine import Affine

    from eo_common.raster import write_raster

    dest = Path(dest)
    root = Path(root) if root is not None else sample_path("benv2_mock")
    try:
        origins = benv1_tile_origins()
    except SamplesMissingError:
        origins = {}
    md = _benv2_metadata(root)
    rows = []
    for i, patch in enumerate(read_benv2_lmdb(root, split=split)):
        if max_patches is not None and i >= max_patches:
            break
        tile = patch.mgrs_tile
        crs = None
        x0 = y0 = 0.0
        if tile in origins:
            epsg, tx0, ty0 = origins[tile]
            col, row = patch.grid_index()
            crs = f"EPSG:{epsg}"
            x0, y0 = tx0 + _PATCH_SIZE_M * col, ty0 - _PATCH_SIZE_M * row
        s2_dir = dest / "BigEarthNet-S2" / patch.s2_product / patch.patch_id
        for band, arr in patch.s2.items():
            pixel = _PATCH_SIZE_M / arr.shape[-1]
            write_raster(
                s2_dir / f"{patch.patch_id}_{band}.tif",
                arr[None],
                crs=crs,
                transform=Affine(pixel, 0, x0, 0, -pixel, y0),
                band_names=[band],
            )
        s1_dir = dest / "BigEarthNet-S1" / patch.s1_product / patch.s1_name
        for j, band in enumerate(BENV2_S1_BANDS):
            write_raster(
                s1_dir / f"{patch.s1_name}_{band}.tif",
                patch.s1[j : j + 1],
                crs=crs,
                transform=Affine(10.0, 0, x0, 0, -10.0, y0),
                band_names=[band],
            )
        rows.append((patch.patch_id, crs is not None))
    done = dict(rows)
    out_md = md[md["patch_id"].isin(done)].copy()
    out_md["georeferenced"] = out_md["patch_id"].map(done)
    tmp = dest / ".metadata.parquet.tmp"
    dest.mkdir(parents=True, exist_ok=True)
    out_md.to_parquet(tmp, index=False)
    os.replace(tmp, dest / "metadata.parquet")
    return dest
