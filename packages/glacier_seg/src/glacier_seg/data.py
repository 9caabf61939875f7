"""Tiles in memory, normalisation, the dataset and the LightningDataModule of ``glacier-train``.

Files and pairing are :mod:`glacier_seg.layout`; samplers and batch mixing :mod:`glacier_seg.sampling`.

Nodata (NaN, +-inf or a file's nodata value in any band) is carried as a validity mask: the raw image
keeps NaN there (so statistics skip it), the normalised image holds 0 there (never NaN: the network
never sees a non-finite value), and the mask holds :data:`~glacier_seg.layout.IGNORE_INDEX` (255) there,
which every loss term and metric leaves out.

Example:
    >>> tiles = find_tiles("GlacierHack/train")  # doctest: +SKIP
    >>> arrays = load_tiles(tiles, glcm=GLCMConfig(), cache_dir="cache/glcm")  # doctest: +SKIP
    >>> ds = GlacierTileDataset(arrays, Normalizer("percentile"), crop_size=256)  # doctest: +SKIP
    >>> ds[0]["image"].shape, ds[0]["mask"].shape  # doctest: +SKIP
    (torch.Size([7, 256, 256]), torch.Size([256, 256]))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from eo_common.errors import InputError
from eo_common.loading import loader_kwargs
from eo_common.normalize import BandStats, percentile_stretch
from torch.utils.data import DataLoader, Dataset

from glacier_seg.config import GlacierData, GLCMOptions, split_keys
from glacier_seg.layout import (
    IGNORE_INDEX,
    GlacierTile,
    LabelValueError,
    binary_mask_problem,
    canonical_key,
    check_tile_files,
    find_tiles,
    mask_values_to_classes,
    read_bands,
    read_mask_values,
)
from glacier_seg.sampling import (
    ClassBalancedCropSampler,
    WeightedTileSampler,
    image_sampling_weights,
)
from glacier_seg.texture import GLCMConfig, cached_texture_channels

__all__ = [
    "TileArrays",
    "default_glcm_cache",
    "load_tiles",
    "split_tiles",
    "Normalizer",
    "GlacierTileDataset",
    "collate",
    "GlacierDataModule",
]


def default_glcm_cache() -> Path:
    """``<eolab data dir>/glcm_cache`` (``$EOLAB_DATA`` or the user cache dir): texture channels are
    keyed by tile, file size and mtime and by the texture parameters, so one cache serves every run."""
    from eo_common.samples import data_root

    return Path(data_root()) / "glcm_cache"


@dataclass
class TileArrays:
    """A tile in memory.

    Attributes:
        tile_id: canonical tile key (``"2_7"``).
        image: (C, H, W) float32 raw channels (5 bands, then GLCM), NaN at invalid pixels.
        mask: (H, W) uint8 classes 0..3 with 255 at invalid pixels, or None for unlabelled tiles.
        valid: (H, W) bool, True where every band holds a value.
        crs, transform: georeference of the Band1 file (crs None when it has none).
        tile: the files it was read from.
    """

    tile_id: str
    image: np.ndarray
    mask: np.ndarray | None
    valid: np.ndarray
    crs: Any = None
    transform: Any = None
    tile: GlacierTile | None = None


def _file_key(tile: GlacierTile, band_index: int) -> str:
    path = tile.band_paths[band_index]
    stat = path.stat()
    return f"tile{tile.tile_id}_{path.stem}_{stat.st_size}_{int(stat.st_mtime_ns)}"


def load_tiles(
    tiles: Sequence[GlacierTile],
    glcm: GLCMConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    masks: dict[str, np.ndarray] | None = None,
    binary: str = "four_class",
) -> list[TileArrays]:
    """Read tiles into memory, appending GLCM channels (cached per tile and parameter set).

    The texture band is filled at invalid pixels with the median of its valid pixels before the
    GLCM is computed (so the texture is finite) and the texture channels are NaN there afterwards.

    Args:
        tiles: from :func:`glacier_seg.layout.find_tiles`.
        glcm: texture parameters, or None for the 5 bands only.
        cache_dir: folder for the GLCM cache (None: no cache).
        progress: show a tqdm bar.
        masks: stored mask values already read, by tile id (read from the files otherwise).
        binary: how 0/255 masks are read (:func:`~glacier_seg.layout.mask_values_to_classes`).
    """
    from tqdm.auto import tqdm

    out = []
    for tile in tqdm(tiles, desc="read tiles", disable=not progress):
        bands, valid, crs, transform = read_bands(tile)
        image = bands
        if glcm is not None:
            band = bands[glcm.band - 1]
            if not valid.all():
                band = np.where(valid, band, np.nanmedian(band) if valid.any() else 0.0)
            texture = cached_texture_channels(
                band.astype(np.float32), glcm, cache_dir, _file_key(tile, glcm.band - 1)
            )
            texture = np.where(valid, texture, np.nan).astype(np.float32)
            image = np.concatenate([bands, texture]).astype(np.float32)
        mask = None
        if tile.label_path is not None:
            raw = masks[tile.tile_id] if masks and tile.tile_id in masks else None
            raw = read_mask_values(tile.label_path) if raw is None else raw
            mask = mask_values_to_classes(raw, tile.label_path, binary).copy()
            mask[~valid] = IGNORE_INDEX
        out.append(TileArrays(tile.tile_id, image, mask, valid, crs, transform, tile))
    return out


def split_tiles(
    tile_ids: Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    val_ids: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of tile ids (explicit ``val_ids`` win; compared by
    :func:`~glacier_seg.layout.canonical_key`, so ``"07"`` names tile ``"7"``).

    Example:
        >>> split_tiles(["1", "2", "3", "4", "5"], val_ids=["02"])
        (['1', '3', '4', '5'], ['2'])
    """
    ids = list(tile_ids)
    if val_ids:
        wanted = [canonical_key(v) for v in val_ids]
        unknown = [v for v, c in zip(val_ids, wanted) if c not in set(ids)]
        if unknown:
            raise InputError(f"data.val_ids: tile keys {unknown} are not among the tiles {ids}")
        val = [t for t in ids if t in set(wanted)]
    else:
        n_val = max(1, round(val_fraction * len(ids))) if len(ids) > 1 else 0
        order = np.random.default_rng(seed).permutation(len(ids))
        chosen = {ids[i] for i in order[:n_val]}
        val = [t for t in ids if t in chosen]
    train = [t for t in ids if t not in set(val)]
    return train, val


@dataclass
class Normalizer:
    """Per-tile percentile stretch (2-98 %, to [0, 1]) or dataset standardisation, by name.

    Invalid pixels (NaN/inf in the raw image) are left out of the percentiles and statistics and
    set to 0 in the output: the result is always finite.

    Attributes:
        mode: ``"percentile"`` (each tile and channel on its own) or ``"dataset"`` (mean/std of the
            training tiles, :class:`eo_common.normalize.BandStats`).
        low, high: percentiles for ``"percentile"``.
        stats: required for ``"dataset"`` (see :meth:`fit`).
    """

    mode: Literal["percentile", "dataset"] = "percentile"
    low: float = 2.0
    high: float = 98.0
    stats: BandStats | None = field(default=None)

    def __post_init__(self) -> None:
        if self.mode not in ("percentile", "dataset"):
            raise ValueError(f"normalization must be 'percentile' or 'dataset', got {self.mode!r}")

    def fit(self, images: Sequence[np.ndarray]) -> Normalizer:
        """Compute dataset statistics over the finite values (no-op for percentile mode)."""
        if self.mode == "dataset":
            self.stats = BandStats.from_arrays(images)
        return self

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(C, H, W) raw -> (C, H, W) float32 normalised, 0 where the input is not finite."""
        if self.mode == "percentile":
            out = percentile_stretch(image, self.low, self.high, per_band=True)
        else:
            if self.stats is None:
                raise ValueError(
                    "dataset normalisation needs statistics: call Normalizer.fit(train images)"
                )
            if self.stats.num_bands != image.shape[0]:
                raise ValueError(
                    f"statistics have {self.stats.num_bands} channels, image has {image.shape[0]}"
                )
            out = np.asarray(self.stats.standardize(image), dtype=np.float32)
        return np.where(np.isfinite(out), out, np.float32(0.0)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "low": self.low, "high": self.high}
        if self.stats is not None:
            d["mean"], d["std"] = self.stats.mean.tolist(), self.stats.std.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        stats = BandStats(mean=d["mean"], std=d["std"]) if "mean" in d else None
        return cls(mode=d["mode"], low=d["low"], high=d["high"], stats=stats)


class GlacierTileDataset(Dataset):
    """Tiles (or random crops of them) as tensors, normalised, with optional flips/rotations.

    Args:
        tiles: in-memory tiles from :func:`load_tiles`.
        normalizer: applied once per tile at construction.
        crop_size: None: item ``i`` is the whole tile ``i`` (validation: every pixel counts for
            MCC). An int: item ``key`` is a crop of tile ``key % n_tiles`` drawn with a generator
            seeded by ``(seed, key)`` (use with :class:`~glacier_seg.sampling.WeightedTileSampler`).
        crop_sampler: :class:`~glacier_seg.sampling.ClassBalancedCropSampler` (None: uniform crops).
        augment: random horizontal flips and 90-degree rotations.
        seed: base seed of the crop/augmentation generators.

    Items: ``{"image": (C, h, w) float32, "mask": (h, w) int64 (255 = invalid), "tile_id": str}``;
    unlabelled tiles have no ``"mask"``.
    """

    def __init__(
        self,
        tiles: Sequence[TileArrays],
        normalizer: Normalizer,
        crop_size: int | None = None,
        crop_sampler: ClassBalancedCropSampler | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        if not tiles:
            raise ValueError("GlacierTileDataset needs at least one tile")
        self.tile_ids = [t.tile_id for t in tiles]
        self.images = [normalizer(t.image) for t in tiles]
        self.masks = [t.mask for t in tiles]
        self.crop_size = crop_size
        if crop_size is not None:
            self.crop_sampler = crop_sampler or ClassBalancedCropSampler(crop_size, p_minority=0.0)
            if self.crop_sampler.crop_size != crop_size:
                raise ValueError("crop_sampler.crop_size differs from crop_size")
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(index)])
        t = int(index) % len(self.images)
        image, mask = self.images[t], self.masks[t]
        if self.crop_size is not None:
            if mask is None:
                raise ValueError(
                    f"tile {self.tile_ids[t]}: crops need labels (the crop sampler reads the mask)"
                )
            r0, c0, _ = self.crop_sampler(mask, rng)
            s = self.crop_size
            image, mask = image[:, r0 : r0 + s, c0 : c0 + s], mask[r0 : r0 + s, c0 : c0 + s]
        if self.augment:
            k = int(rng.integers(4))
            image = np.rot90(image, k, axes=(1, 2))
            mask = np.rot90(mask, k) if mask is not None else None
            if rng.integers(2):
                image = image[:, :, ::-1]
                mask = mask[:, ::-1] if mask is not None else None
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "tile_id": self.tile_ids[t],
        }
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``image`` (and ``mask``) of equally sized items; keep the ``tile_id`` list."""
    out: dict[str, Any] = {"image": torch.stack([i["image"] for i in items])}
    if "mask" in items[0]:
        out["mask"] = torch.stack([i["mask"] for i in items])
    out["tile_id"] = [i["tile_id"] for i in items]
    return out


class GlacierDataModule(L.LightningDataModule):
    """The tiles of one GlacierHack root, split, read, normalised and served as crops / whole tiles.

    Call :meth:`check_inputs` first (it reads no pixel of the bands: layout, pairing, one band per
    file, one grid per tile, mask values, split), then :meth:`load` (bands, GLCM, normaliser fitted
    on the training tiles); Lightning's ``setup`` does both when needed.

    Args:
        data: the ``data`` group. glcm: the ``glcm`` group. seed: split, crops and sampler seed.
    """

    def __init__(self, data: GlacierData, glcm: GLCMOptions, seed: int = 0) -> None:
        super().__init__()
        if data.root is None:
            raise InputError("data.root: required (give --data_root or --demo)")
        self.cfg = data
        self.glcm_options = glcm
        self.seed = seed
        self.tiles: list[GlacierTile] = []
        self.train_ids: list[str] = []
        self.val_ids: list[str] = []
        self.raw_masks: dict[str, np.ndarray] = {}
        self.normalizer: Normalizer | None = None
        self.train_tiles: list[TileArrays] = []
        self.val_tiles: list[TileArrays] = []
        self._checked = False

    @property
    def texture(self) -> GLCMConfig | None:
        """The texture parameters, or None without GLCM channels."""
        return self.glcm_options.texture() if self.cfg.include_glcm else None

    def check_inputs(self) -> None:
        """Validate every file and the split before any run folder is touched (idempotent).

        Raises:
            InputError: a missing or ambiguous folder, unpaired keys, a band file with several
                bands or another grid, unexpected or binary mask values, an empty split or a tile
                without one valid pixel; the message names the file or key.
        """
        if self._checked:
            return
        root = Path(self.cfg.root)
        tiles = find_tiles(root)
        for tile in tiles:
            check_tile_files(tile)
        masks = {t.tile_id: read_mask_values(t.label_path) for t in tiles if t.label_path}
        if self.cfg.binary_masks == "refuse":
            problem = binary_mask_problem(
                {t.label_path: set(np.unique(masks[t.tile_id]).tolist()) for t in tiles}, root
            )
            if problem:
                raise LabelValueError(problem)
        binary = "glacier" if self.cfg.binary_masks == "glacier" else "four_class"
        for tile in tiles:
            mask_values_to_classes(masks[tile.tile_id], tile.label_path, binary)
        self.texture  # noqa: B018 - builds GLCMConfig, which checks the texture parameters
        train_ids, val_ids = split_tiles(
            [t.tile_id for t in tiles],
            self.cfg.val_fraction,
            self.seed,
            split_keys(self.cfg.val_ids),
        )
        if not train_ids or not val_ids:
            raise InputError(
                f"need at least one training and one validation tile, got {len(train_ids)} and "
                f"{len(val_ids)} of {len(tiles)} (data.val_ids / data.val_fraction)",
                path=root,
            )
        self.tiles, self.train_ids, self.val_ids, self.raw_masks = tiles, train_ids, val_ids, masks
        self._checked = True

    def load(self) -> None:
        """Read bands and GLCM channels, refuse tiles without a valid pixel, fit the normaliser."""
        if self.normalizer is not None:
            return
        self.check_inputs()
        binary = "glacier" if self.cfg.binary_masks == "glacier" else "four_class"
        cache = self.cfg.glcm_cache or default_glcm_cache()
        arrays = load_tiles(
            self.tiles, self.texture, cache, progress=False, masks=self.raw_masks, binary=binary
        )
        for a in arrays:
            if not a.valid.any():
                raise InputError(
                    "no valid pixel in this tile (every pixel is NaN, inf or nodata in some band)",
                    path=a.tile.band_paths[0] if a.tile else None,
                )
        by_id = {a.tile_id: a for a in arrays}
        self.train_tiles = [by_id[t] for t in self.train_ids]
        self.val_tiles = [by_id[t] for t in self.val_ids]
        self.normalizer = Normalizer(self.cfg.normalization).fit(
            [a.image for a in self.train_tiles]
        )

    def hparams_data(self) -> dict[str, Any]:
        """What a checkpoint must carry to rebuild the inputs: GLCM setting, normaliser, split."""
        from dataclasses import asdict

        self.load()
        assert self.normalizer is not None
        texture = self.glcm_options.texture()
        glcm = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(texture).items()}
        return {
            "root": str(self.cfg.root),
            "include_glcm": self.cfg.include_glcm,
            "glcm": glcm,
            "normalization": self.cfg.normalization,
            "normalizer": self.normalizer.to_dict(),
            "train_tiles": list(self.train_ids),
            "val_tiles": list(self.val_ids),
        }

    def setup(self, stage: str | None = None) -> None:
        self.load()
        assert self.normalizer is not None
        c = self.cfg
        min_side = min(min(t.image.shape[1:]) for t in self.train_tiles)
        crop = min(c.crop_size, min_side)
        sampler = ClassBalancedCropSampler(crop, p_minority=c.p_minority)
        self.train_set = GlacierTileDataset(
            self.train_tiles, self.normalizer, crop, sampler, c.augment, self.seed
        )
        self.val_set = GlacierTileDataset(self.val_tiles, self.normalizer, crop_size=None)

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        weights = image_sampling_weights(
            [t.mask for t in self.train_tiles], c.lake_weight, c.debris_weight
        )
        n_samples = c.samples_per_epoch or 8 * len(self.train_tiles)
        # crops and augmentation come from per-draw keys (WeightedTileSampler), not from the
        # workers' generators: persistent workers keep a resume exact
        return DataLoader(
            self.train_set,
            sampler=WeightedTileSampler(weights, n_samples, seed=self.seed),
            collate_fn=collate,
            drop_last=n_samples >= c.batch_size,
            **loader_kwargs(c),
        )

    def val_dataloader(self) -> DataLoader:
        same_size = len({t.image.shape for t in self.val_tiles}) == 1
        # whole validation tiles already in memory: read in this process
        kwargs = loader_kwargs(self.cfg, num_workers=0)
        if not same_size:
            kwargs["batch_size"] = 1
        return DataLoader(self.val_set, shuffle=False, collate_fn=collate, **kwargs)
