"""BigEarthNet v2 readers, the tile catalogue, and the dataset and data module of stages 2 and 3.

Layout read here (the official BigEarthNet v2 GeoTIFF layout, also written by
``eo_common.benv2.export_benv2_geotiff_layout`` and the tests' ``tests/data/benv2.py``)::

    <root>/metadata.parquet                       patch_id, s1_name, split, ... one row per patch
    <root>/BigEarthNet-S2/<s2_product>/<patch_id>/<patch_id>_B01.tif ... _B12.tif   (12 bands, uint16)
    <root>/BigEarthNet-S1/<s1_product>/<s1_name>/<s1_name>_VV.tif, _VH.tif         (float32 dB)

where ``<s2_product>`` is the patch id without its trailing ``_<col>_<row>`` (same for S1).

Conventions used everywhere in this package:

* S2 band order :data:`S2_BANDS` = B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12 (the order of
  TerraMind's ``S2L2A`` modality). 20 m and 60 m bands are resampled to the 10 m 120x120 grid with
  **bilinear** interpolation (GDAL RasterIO resampling, see :func:`read_tile`).
* S2 values stay L2A digital numbers (reflectance x 10000) on disk and for TerraMind; the networks of
  stages 2 and 3 see ``clip(DN, 0, 10000) / 10000`` (the GLF-CR optical convention of
  :mod:`eo_common.normalize`).
* S1 stays float32 dB (never cast to integers). Networks see the GLF-CR SAR convention (VV clipped to
  [-25, 0] dB, VH to [-32.5, 0] dB, scaled to [0, 1]); TerraMind gets raw dB and standardises itself.
* Missing values: NaN, +-inf and nodata are missing, one rule for the whole package (:func:`read_tile`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import rasterio
import torch
from affine import Affine
from eo_common.errors import InputError
from eo_common.io import atomic_write
from eo_common.loading import SeededSampler, loader_kwargs
from eo_common.normalize import normalize_s1, normalize_s2
from eo_common.raster import RasterError, read_raster
from rasterio.crs import CRS
from rasterio.enums import Resampling
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "S2_BANDS",
    "S1_BANDS",
    "PRITHVI_S2_BANDS",
    "PRITHVI_BAND_INDICES",
    "RGB_INDICES",
    "TILE_SIZE",
    "SPLITS",
    "BadTileError",
    "TileRecord",
    "Tile",
    "read_metadata",
    "build_catalogue",
    "save_catalogue",
    "load_catalogue",
    "read_tile",
    "tile_georef",
    "stage1_path",
    "read_stage1_output",
    "PairedTileDataset",
    "PairedDataModule",
    "split_records",
]

S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
)  # fmt: skip
"""The 12 BigEarthNet v2 S2 L2A bands (no B10) in TerraMind ``S2L2A`` order."""
S1_BANDS: tuple[str, ...] = ("VV", "VH")
PRITHVI_S2_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B8A", "B11", "B12")
"""S2 bands mapped onto Prithvi's 6 HLS bands: BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2."""
PRITHVI_BAND_INDICES: tuple[int, ...] = tuple(S2_BANDS.index(b) for b in PRITHVI_S2_BANDS)
RGB_INDICES: tuple[int, int, int] = (
    S2_BANDS.index("B04"),
    S2_BANDS.index("B03"),
    S2_BANDS.index("B02"),
)
TILE_SIZE = 120
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}


class BadTileError(ValueError):
    """A tile that cannot be used (missing band file, wrong size, all nodata).

    The message starts with the tile id and names the file; ``tile_id`` and ``path`` are kept.
    """

    def __init__(self, tile_id: str, message: str, path: str | os.PathLike | None = None):
        self.tile_id = tile_id
        self.path = None if path is None else Path(path)
        where = f" ({path})" if path is not None else ""
        super().__init__(f"tile {tile_id}: {message}{where}")


@dataclass(frozen=True)
class TileRecord:
    """One catalogue row: where the S1 and S2 files of a patch live.

    Attributes:
        patch_id: the S2 patch name (BigEarthNet v2 ``patch_id``), used as the tile id everywhere.
        s1_name: the matching S1 patch name.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        s2_dir: folder holding ``<patch_id>_<band>.tif`` (a string: a catalogue of 200,000 rows
            is read in about a second; building 400,000 ``Path`` objects would take several).
        s1_dir: folder holding ``<s1_name>_VV.tif`` and ``_VH.tif`` (a string).
    """

    patch_id: str
    s1_name: str
    split: str
    s2_dir: str
    s1_dir: str

    def s2_band_path(self, band: str) -> Path:
        return Path(self.s2_dir, f"{self.patch_id}_{band}.tif")

    def s1_band_path(self, band: str) -> Path:
        return Path(self.s1_dir, f"{self.s1_name}_{band}.tif")


@dataclass
class Tile:
    """One loaded patch.

    Attributes:
        patch_id: tile id.
        s1: (2, 120, 120) float32 dB (VV, VH).
        s2: (12, 120, 120) float32 L2A digital numbers (reflectance x 10000), band order :data:`S2_BANDS`.
        crs: CRS of the 10 m grid, or None when the source files carry none.
        transform: affine transform of the 10 m grid.
    """

    patch_id: str
    s1: np.ndarray
    s2: np.ndarray
    crs: CRS | None
    transform: Affine


def _normalise_split(split: str | None) -> str | None:
    if split is None or split == "all":
        return None
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}, val or all")
    return split


def read_metadata(data_dir: str | os.PathLike):
    """Read ``<data_dir>/metadata.parquet`` (a pandas DataFrame) and check its columns.

    Raises:
        FileNotFoundError: the parquet file is missing (the message names it).
        ValueError: a required column (patch_id, s1_name, split) is missing.
    """
    import pandas as pd

    path = Path(data_dir) / "metadata.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: BigEarthNet v2 metadata file not found")
    md = pd.read_parquet(path)
    missing = [c for c in ("patch_id", "s1_name", "split") if c not in md.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return md


def build_catalogue(
    data_dir: str | os.PathLike, split: str | None = None, max_tiles: int | None = None
) -> list[TileRecord]:
    """List the tiles of one split, sorted by patch id (a stable order for sharding and batching).

    File existence is not checked here (that is :func:`read_tile`'s job, so a 200k-tile catalogue is
    built in about a second and a missing band only spoils its own tile).

    Args:
        data_dir: BigEarthNet v2 root (holding ``metadata.parquet``, ``BigEarthNet-S1``, ``BigEarthNet-S2``).
        split: ``"train"``, ``"validation"`` (or ``"val"``), ``"test"``; None or ``"all"`` for every split.
        max_tiles: keep only the first N tiles (after sorting).

    Example:
        >>> cat = build_catalogue("BigEarthNet", split="test", max_tiles=2)  # doctest: +SKIP
        >>> [r.patch_id for r in cat]  # doctest: +SKIP
        ['S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57', 'S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_58']
    """
    root = Path(data_dir)
    md = read_metadata(root)
    split = _normalise_split(split)
    if split is not None:
        md = md[md["split"] == split]
    md = md.sort_values("patch_id")
    if max_tiles is not None:
        if max_tiles <= 0:
            raise ValueError(f"max_tiles must be positive, got {max_tiles}")
        md = md.iloc[:max_tiles]
    out = []
    s2_root = str(root / "BigEarthNet-S2")
    s1_product_dir: dict[str, Path] = {}
    for pid, s1_name, sp in zip(md["patch_id"], md["s1_name"], md["split"], strict=True):
        pid, s1_name = str(pid), str(s1_name)
        out.append(
            TileRecord(
                patch_id=pid,
                s1_name=s1_name,
                split=str(sp),
                s2_dir=os.path.join(s2_root, pid.rsplit("_", 2)[0], pid),
                s1_dir=os.path.join(_s1_product_dir(root, s1_name, s1_product_dir), s1_name),
            )
        )
    return out


def _s1_product_dir(root: Path, s1_name: str, cache: dict[str, Path]) -> Path:
    """The S1 product folder of a patch: the S1 name without ``_<tile>_<col>_<row>`` (official layout).

    Some exporters keep the tile in the folder name (``..._<tile>``); that folder is used when only it
    exists. One ``stat`` per distinct product, so 200k tiles cost a few hundred stats.
    """
    with_tile = s1_name.rsplit("_", 2)[0]
    if with_tile not in cache:
        official = s1_name.rsplit("_", 3)[0]
        base = root / "BigEarthNet-S1"
        use = (
            with_tile
            if not (base / official).is_dir() and (base / with_tile).is_dir()
            else official
        )
        cache[with_tile] = base / use
    return cache[with_tile]


_CATALOGUE_FIELDS = ("patch_id", "s1_name", "split", "s2_dir", "s1_dir")


def save_catalogue(records: Sequence[TileRecord], path: str | os.PathLike) -> Path:
    """Write the catalogue as CSV (one row per tile, columns patch_id, s1_name, split, s2_dir, s1_dir)."""
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(_CATALOGUE_FIELDS)
        for r in records:
            writer.writerow([r.patch_id, r.s1_name, r.split, r.s2_dir, r.s1_dir])
    return Path(path)


def load_catalogue(path: str | os.PathLike) -> list[TileRecord]:
    """Read a catalogue CSV written by :func:`save_catalogue`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: catalogue file not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CATALOGUE_FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: catalogue lacks column(s) {', '.join(missing)}")
        return [
            TileRecord(
                patch_id=row["patch_id"],
                s1_name=row["s1_name"],
                split=row["split"],
                s2_dir=row["s2_dir"],
                s1_dir=row["s1_dir"],
            )
            for row in reader
        ]


def _read_s2_stack(
    tid: str, paths: Sequence[Path], resampling: str, size: int
) -> tuple[np.ndarray, CRS | None, Affine, float | None]:
    """Read 12 band files onto the 10 m grid of B02 (GDAL RasterIO resampling, works without a CRS).

    On a real georeferenced BENv2 patch this agrees with :func:`eo_common.raster.stack_bands` (GDAL's
    warper) to within 1 DN; it is used because ``stack_bands`` refuses files without a CRS, and part of the
    real sample (the Finnish patches) carries none.
    """
    try:
        method = Resampling[resampling]
    except KeyError:
        raise ValueError(
            f"unknown resampling {resampling!r} (use a rasterio Resampling name)"
        ) from None
    ref = paths[S2_BANDS.index("B02")]
    with rasterio.open(ref) as src:
        if (src.height, src.width) != (size, size):
            raise BadTileError(
                tid,
                f"S2 10 m grid is {(src.height, src.width)} pixels, expected ({size}, {size})",
                ref,
            )
        crs, transform, nodata = src.crs, src.transform, src.nodata
    bands = []
    for p in paths:
        try:
            with rasterio.open(p) as src:
                if src.count != 1:
                    raise BadTileError(tid, f"expected 1 band, found {src.count}", p)
                if size % src.height or size % src.width:
                    raise BadTileError(
                        tid, f"band is {(src.height, src.width)} pixels, not a divisor of {size}", p
                    )
                bands.append(
                    src.read(1, out_shape=(size, size), resampling=method).astype(np.float32)
                )
        except rasterio.errors.RasterioIOError as exc:
            raise BadTileError(tid, f"unreadable band file ({exc})", p) from exc
    return np.stack(bands), crs, transform, nodata


def _fill_missing_s1(tid: str, band: np.ndarray, path: Path) -> np.ndarray:
    """NaN, +inf and -inf are missing SAR pixels: filled with the mean of the band's finite pixels."""
    finite = np.isfinite(band)
    if finite.all():
        return band
    if not finite.any():
        raise BadTileError(tid, "S1 band has no finite pixel (all NaN/inf/nodata)", path)
    return np.where(finite, band, np.float32(band[finite].mean())).astype(np.float32)


def read_tile(record: TileRecord, resampling: str = "bilinear", size: int = TILE_SIZE) -> Tile:
    """Load one patch: S1 (2, 120, 120) float32 dB and S2 (12, 120, 120) float32 DN.

    20 m and 60 m bands are resampled onto the 10 m grid of B02 with ``resampling``.

    Missing values, one rule: an S1 pixel that is NaN, +inf, -inf or the file's nodata value is
    missing and is filled with the mean of that band's finite pixels (the networks never see a
    non-finite value); an S2 pixel that is non-finite or nodata becomes 0, the BigEarthNet S2 nodata.

    Raises:
        BadTileError: a band file is missing or unreadable, the 10 m grid is not ``size`` x ``size``, S1
            and S2 disagree in size or CRS, an S1 band has no finite pixel, or the S2 stack is all
            nodata.

    Example:
        >>> tile = read_tile(build_catalogue("BigEarthNet", max_tiles=1)[0])  # doctest: +SKIP
        >>> tile.s1.dtype, tile.s1.shape, tile.s2.shape  # doctest: +SKIP
        (dtype('float32'), (2, 120, 120), (12, 120, 120))
    """
    tid = record.patch_id
    s2_paths = [record.s2_band_path(b) for b in S2_BANDS]
    s1_paths = [record.s1_band_path(b) for b in S1_BANDS]
    for p in (*s2_paths, *s1_paths):
        if not p.exists():
            raise BadTileError(tid, "band file missing", p)
    s2, crs, transform, s2_nodata = _read_s2_stack(tid, s2_paths, resampling, size)
    s1_bands = []
    for p in s1_paths:
        try:
            r = read_raster(p, expected_bands=1)
        except RasterError as exc:
            raise BadTileError(tid, str(exc), p) from exc
        if r.array.shape[1:] != (size, size):
            raise BadTileError(
                tid, f"S1 band is {r.array.shape[1:]} pixels, expected ({size}, {size})", p
            )
        if crs is not None and r.crs is not None and r.crs != crs:
            raise BadTileError(
                tid,
                f"S1 is in {r.crs.to_string()} but S2 in {crs.to_string()} (same grid needed)",
                p,
            )
        band = r.array[0].astype(np.float32)  # dB stays float: never cast to integers
        if r.nodata is not None and not math.isnan(r.nodata):
            band = np.where(band == r.nodata, np.nan, band)
        s1_bands.append(_fill_missing_s1(tid, band, p))
    nodata = 0.0 if s2_nodata is None or not math.isfinite(s2_nodata) else float(s2_nodata)
    missing = ~np.isfinite(s2) | (s2 == nodata)
    if missing.all():
        raise BadTileError(tid, f"all S2 pixels are nodata (nodata={nodata:g})", record.s2_dir)
    s2 = np.where(missing, np.float32(0.0), s2).astype(np.float32)
    return Tile(patch_id=tid, s1=np.stack(s1_bands), s2=s2, crs=crs, transform=transform)


def tile_georef(record: TileRecord) -> tuple[CRS | None, Affine]:
    """The 10 m grid of a tile (CRS, transform of B02), read from the file header only."""
    with rasterio.open(record.s2_band_path("B02")) as src:
        return src.crs, src.transform


def stage1_path(stage1_dir: str | os.PathLike, patch_id: str) -> Path:
    """Where stage 1 writes opt_v1 of one tile: ``<stage1_dir>/opt_v1/<patch_id>.tif``."""
    return Path(stage1_dir) / "opt_v1" / f"{patch_id}.tif"


def read_stage1_output(stage1_dir: str | os.PathLike, patch_id: str) -> np.ndarray:
    """Read opt_v1 of one tile: (12, H, W) float32 DN.

    Raises:
        FileNotFoundError: stage 1 has not produced this tile (the message names the file).
    """
    path = stage1_path(stage1_dir, patch_id)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no stage-1 output for tile {patch_id} (run gac-stage1 first)"
        )
    return read_raster(path, expected_bands=len(S2_BANDS), dtype=np.float32).array


class PairedTileDataset(Dataset):
    """Training/evaluation samples for stages 2 and 3: S1, opt_v1 (stage 1) and the S2 target.

    Each item is a dict of float32 tensors (H = W = 120):

    * ``"s1"``: (2, H, W) SAR in [0, 1] (GLF-CR convention), ``"s1_db"``: (2, H, W) raw dB;
    * ``"opt_v1"``: (12, H, W) stage-1 estimate in [0, 1] (DN / 10000, clipped);
    * ``"target"``: (12, H, W) real S2 L2A in [0, 1];
    * ``"patch_id"``: the tile id (str).

    Tiles that fail to load (:class:`BadTileError`) or lack a stage-1 output are dropped at construction
    and listed in ``skipped`` as ``(patch_id, reason)``.

    Example:
        >>> ds = PairedTileDataset(build_catalogue(root, "train"), "runs/stage1")  # doctest: +SKIP
        >>> ds[0]["opt_v1"].shape  # doctest: +SKIP
        torch.Size([12, 120, 120])
    """

    def __init__(
        self,
        records: Sequence[TileRecord],
        stage1_dir: str | os.PathLike | None,
        resampling: str = "bilinear",
        cache: bool = False,
    ):
        self.stage1_dir = None if stage1_dir is None else Path(stage1_dir)
        self.resampling = resampling
        self.cache = cache
        self._cache: dict[int, dict] = {}
        self.records: list[TileRecord] = []
        self.skipped: list[tuple[str, str]] = []
        for r in records:
            if (
                self.stage1_dir is not None
                and not stage1_path(self.stage1_dir, r.patch_id).exists()
            ):
                self.skipped.append(
                    (r.patch_id, f"no stage-1 output {stage1_path(self.stage1_dir, r.patch_id)}")
                )
                continue
            self.records.append(r)
        if not self.records:
            first = f" (first: {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ""
            raise InputError(f"no usable tiles: {len(self.skipped)} skipped{first}")

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> dict:
        record = self.records[index]
        tile = read_tile(record, resampling=self.resampling)
        if self.stage1_dir is not None:
            opt_v1 = read_stage1_output(self.stage1_dir, record.patch_id)
        else:
            opt_v1 = np.zeros_like(tile.s2)
        return {
            "patch_id": record.patch_id,
            "s1": torch.from_numpy(normalize_s1(tile.s1, "glf-cr")),
            "s1_db": torch.from_numpy(tile.s1),
            "opt_v1": torch.from_numpy(normalize_s2(opt_v1, "glf-cr")),
            "target": torch.from_numpy(normalize_s2(tile.s2, "glf-cr")),
        }

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        if isinstance(index, tuple | list):  # an (index, seed) key: nothing here is random
            index = int(index[0])
        if index in self._cache:
            return self._cache[index]
        item = self.load(index)
        if self.cache:
            self._cache[index] = item
        return item


def split_records(
    root: str | os.PathLike, split: str, max_tiles: int | None, what: str = "data.root"
) -> list[TileRecord]:
    """The catalogue of one split, or :class:`InputError` naming the metadata file when it is empty."""
    records = build_catalogue(root, split, max_tiles)
    if not records:
        raise InputError(
            f"no tiles of split {split!r} ({what})", path=Path(root) / "metadata.parquet"
        )
    return records


class PairedDataModule(L.LightningDataModule):
    """Train and validation loaders of :class:`PairedTileDataset` for stages 2 and 3.

    Shuffling uses :class:`eo_common.loading.SeededSampler`, whose permutation is fixed by
    :class:`eo_common.training.EpochSeed`'s re-seed from ``(seed, epoch)`` every epoch, so a resumed run
    sees the same batches as an uninterrupted one, with any number of (persistent) workers.

    Args:
        root: BigEarthNet v2 root.
        stage1_dir: the gac-stage1 run folder (opt_v1).
        train_split, val_split: split names of ``metadata.parquet``.
        max_tiles: at most this many tiles per split (first by patch id).
        batch_size: tiles per batch.
        num_workers: loader processes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        stage1_dir: str | os.PathLike,
        train_split: str = "train",
        val_split: str = "validation",
        max_tiles: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
    ):
        super().__init__()
        self.root, self.stage1_dir = Path(root), Path(stage1_dir)
        self.splits = (train_split, val_split)
        self.max_tiles, self.batch_size, self.num_workers = max_tiles, batch_size, num_workers
        self.train_set: PairedTileDataset | None = None
        self.val_set: PairedTileDataset | None = None

    def check_inputs(self) -> None:
        """Build both datasets now (catalogue, stage-1 files): a bad input fails before any run.
        Once built, later calls do nothing."""
        if self.train_set is not None:
            return
        if not (self.stage1_dir / "opt_v1").is_dir():
            raise InputError(
                "no opt_v1/ folder here: give the gac-stage1 run folder", path=self.stage1_dir
            )
        sets = []
        for split in self.splits:
            records = split_records(self.root, split, self.max_tiles)
            try:
                sets.append(PairedTileDataset(records, self.stage1_dir))
            except InputError as exc:
                raise InputError(f"split {split!r}: {exc}", path=self.stage1_dir) from None
        self.train_set, self.val_set = sets

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.check_inputs()

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # the order comes from SeededSampler (fixed by EpochSeed's re-seed of the epoch), not from
        # a draw of the global generator, whose position differs with (persistent) workers
        kw = loader_kwargs(batch_size=self.batch_size, num_workers=self.num_workers)
        return DataLoader(
            dataset,
            sampler=SeededSampler(len(dataset), shuffle=True) if shuffle else None,
            drop_last=shuffle and len(dataset) > self.batch_size,
            **kw,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
