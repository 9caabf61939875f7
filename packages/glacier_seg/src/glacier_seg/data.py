"""GlacierHack tiles: reading and pairing by tile id, label mapping, normalisation, datasets, samplers.

Layout (docs/eo_common_api.md "Real layouts")::

    <root>/Band1/B2_B2_masked_07.tif   ... <root>/Band5/B10_B10_masked_07.tif   (float32, one band)
    <root>/Label/Y_output_resized_07.tif                                         (uint8 0/85/170/255)

File names differ per folder; the tile id is the trailing number of the file stem. Image and mask
are paired **by that id**, never by sorted order (pairing by order is what turns a good model into
MCC ~0.03, see DOMAIN_FACTS). Band1..Band5 are Landsat-8 B2, B3, B4, B6 (SWIR1), B10 (thermal).

Example:
    >>> tiles = find_tiles("GlacierHack/train")  # doctest: +SKIP
    >>> arrays = load_tiles(tiles, glcm=GLCMConfig(), cache_dir="cache/glcm")  # doctest: +SKIP
    >>> ds = GlacierTileDataset(arrays, Normalizer("percentile"), crop_size=256)  # doctest: +SKIP
    >>> ds[0]["image"].shape, ds[0]["mask"].shape  # doctest: +SKIP
    (torch.Size([7, 256, 256]), torch.Size([256, 256]))
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from eo_common.normalize import BandStats, percentile_stretch
from eo_common.raster import RasterError, read_raster
from torch.utils.data import Dataset, Sampler

from glacier_seg.texture import GLCMConfig, cached_texture_channels

__all__ = [
    "CLASS_NAMES",
    "MASK_VALUES",
    "BAND_FOLDERS",
    "BAND_NAMES",
    "LABEL_FOLDER",
    "PairingError",
    "LabelValueError",
    "GlacierTile",
    "PairingReport",
    "tile_id_from_name",
    "scan_layout",
    "find_tiles",
    "mask_values_to_classes",
    "classes_to_mask_values",
    "read_label",
    "read_bands",
    "TileArrays",
    "load_tiles",
    "split_tiles",
    "Normalizer",
    "image_sampling_weights",
    "ClassBalancedCropSampler",
    "WeightedTileSampler",
    "GlacierTileDataset",
    "mixup_batch",
    "cutmix_batch",
]

CLASS_NAMES: tuple[str, ...] = ("background", "glacier", "debris", "lake")
MASK_VALUES: tuple[int, ...] = (0, 85, 170, 255)
BAND_FOLDERS: tuple[str, ...] = ("Band1", "Band2", "Band3", "Band4", "Band5")
BAND_NAMES: tuple[str, ...] = ("B2", "B3", "B4", "B6", "B10")
LABEL_FOLDER = "Label"
_RASTER_SUFFIXES = (".tif", ".tiff")
_TRAILING_ID = re.compile(r"(\d+)$")


class PairingError(ValueError):
    """Band and label files that cannot be paired by tile id (message lists the ids)."""


class LabelValueError(ValueError):
    """A label mask holds values other than 0/85/170/255 (or 0..3); message names the file."""


@dataclass(frozen=True)
class GlacierTile:
    """One tile: its id, its five band files (Band1..Band5 order) and its label file (or None)."""

    tile_id: str
    band_paths: tuple[Path, ...]
    label_path: Path | None


def tile_id_from_name(name: str) -> str | None:
    """The tile id of a file name: its stem's trailing number without leading zeros.

    Example:
        >>> tile_id_from_name("B2_B2_masked_07.tif"), tile_id_from_name("Y_output_resized_7.tif")
        ('7', '7')
        >>> tile_id_from_name("readme.tif") is None
        True
    """
    match = _TRAILING_ID.search(Path(name).stem)
    return str(int(match.group(1))) if match else None


@dataclass
class PairingReport:
    """Which tile ids each folder holds, and what cannot be paired.

    Attributes:
        root: the dataset root.
        files: folder name -> {tile id -> path}.
        missing_folders: expected folders that do not exist.
        unparsed: files whose name carries no trailing id.
        duplicates: folder -> ids that occur in more than one file.
        paired_ids: ids present in every required folder (sorted numerically).
        unpaired: id -> folders that lack it.
    """

    root: Path
    files: dict[str, dict[str, Path]]
    missing_folders: list[str]
    unparsed: list[Path]
    duplicates: dict[str, list[str]]
    paired_ids: list[str]
    unpaired: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not (self.missing_folders or self.unparsed or self.duplicates or self.unpaired)

    def problems(self) -> list[str]:
        """One human-readable line per problem (empty when :attr:`ok`)."""
        lines = [f"missing folder {self.root / f}" for f in self.missing_folders]
        lines += [f"no tile id (trailing number) in file name {p}" for p in self.unparsed]
        lines += [
            f"{folder}: tile id(s) {', '.join(ids)} occur in several files"
            for folder, ids in self.duplicates.items()
        ]
        lines += [
            f"tile {tid}: no file in {', '.join(folders)}" for tid, folders in self.unpaired.items()
        ]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "n_paired": len(self.paired_ids),
            "paired_ids": self.paired_ids,
            "files_per_folder": {k: len(v) for k, v in self.files.items()},
            "problems": self.problems(),
        }


def _id_sort_key(tile_id: str) -> tuple[int, str]:
    return (int(tile_id), tile_id) if tile_id.isdigit() else (math.inf, tile_id)  # type: ignore[return-value]


def scan_layout(root: str | Path, require_labels: bool = True) -> PairingReport:
    """Index every folder of a GlacierHack root by tile id; never raises on pairing problems.

    Args:
        root: folder holding Band1..Band5 (and Label when ``require_labels``).
        require_labels: whether the Label folder takes part in the pairing.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"GlacierHack root not found: {root}")
    folders = list(BAND_FOLDERS) + ([LABEL_FOLDER] if require_labels else [])
    files: dict[str, dict[str, Path]] = {}
    missing, unparsed, duplicates = [], [], {}
    for folder in folders:
        path = root / folder
        if not path.is_dir():
            missing.append(folder)
            files[folder] = {}
            continue
        index: dict[str, Path] = {}
        dup: set[str] = set()
        for f in sorted(path.iterdir()):
            if f.suffix.lower() not in _RASTER_SUFFIXES or f.name.startswith("."):
                continue
            tid = tile_id_from_name(f.name)
            if tid is None:
                unparsed.append(f)
                continue
            if tid in index:
                dup.add(tid)
            index[tid] = f
        if dup:
            duplicates[folder] = sorted(dup, key=_id_sort_key)
        files[folder] = index
    all_ids = set().union(*(set(v) for v in files.values())) if files else set()
    unpaired = {
        tid: [f for f in folders if tid not in files[f]]
        for tid in sorted(all_ids, key=_id_sort_key)
        if any(tid not in files[f] for f in folders)
    }
    paired = sorted((tid for tid in all_ids if tid not in unpaired), key=_id_sort_key)
    return PairingReport(root, files, missing, unparsed, duplicates, paired, unpaired)


def find_tiles(root: str | Path, require_labels: bool = True) -> list[GlacierTile]:
    """All tiles of a GlacierHack root, bands and label paired by tile id.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        PairingError: a folder is missing, a name carries no id, an id occurs twice in a folder,
            or some ids lack a file in some folder; the message lists every problem.

    Example:
        >>> [t.tile_id for t in find_tiles(make_fake_glacierhack(tmp, n=3))]  # doctest: +SKIP
        ['0', '1', '2']
    """
    report = scan_layout(root, require_labels)
    if not report.ok:
        raise PairingError(
            f"{report.root}: cannot pair tiles by id:\n  " + "\n  ".join(report.problems())
        )
    if not report.paired_ids:
        raise PairingError(f"{report.root}: no tiles found in {', '.join(BAND_FOLDERS)}")
    return [
        GlacierTile(
            tile_id=tid,
            band_paths=tuple(report.files[f][tid] for f in BAND_FOLDERS),
            label_path=report.files[LABEL_FOLDER][tid] if require_labels else None,
        )
        for tid in report.paired_ids
    ]


def mask_values_to_classes(mask: np.ndarray, source: str | Path = "mask") -> np.ndarray:
    """Map stored mask values 0/85/170/255 to classes 0..3 (background, glacier, debris, lake).

    A mask already holding only 0..3 is accepted as classes. Anything else raises.

    Raises:
        LabelValueError: values outside both conventions; the message names ``source`` and the
            offending values.

    Example:
        >>> mask_values_to_classes(np.array([[0, 85], [170, 255]])).tolist()
        [[0, 1], [2, 3]]
    """
    values = np.unique(mask)
    if np.isin(values, MASK_VALUES).all():
        lut = np.zeros(256, dtype=np.uint8)
        lut[list(MASK_VALUES)] = np.arange(len(MASK_VALUES), dtype=np.uint8)
        return lut[mask.astype(np.int64)]
    if np.isin(values, np.arange(len(CLASS_NAMES))).all():
        return mask.astype(np.uint8)
    unexpected = [v.item() for v in values if v not in MASK_VALUES]
    raise LabelValueError(
        f"{source}: unexpected label values {unexpected[:10]} (expected 0/85/170/255 or 0..3)"
    )


def classes_to_mask_values(classes: np.ndarray) -> np.ndarray:
    """Classes 0..3 -> uint8 0/85/170/255, the values the competition reads.

    Example:
        >>> classes_to_mask_values(np.array([0, 1, 2, 3])).tolist()
        [0, 85, 170, 255]
    """
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= len(MASK_VALUES)):
        raise ValueError(f"classes must lie in 0..3, got [{classes.min()}, {classes.max()}]")
    return np.asarray(MASK_VALUES, dtype=np.uint8)[classes.astype(np.int64)]


def read_label(path: str | Path) -> np.ndarray:
    """Read a label GeoTIFF as classes 0..3, (H, W) uint8."""
    raster = read_raster(path, bands=[1])
    return mask_values_to_classes(raster.array[0], path)


def read_bands(tile: GlacierTile) -> tuple[np.ndarray, Any, Any]:
    """The five bands of a tile stacked as (5, H, W) float32, plus its CRS and transform.

    Raises:
        RasterError: a band file is unreadable or has a different shape than Band1 (file named).
    """
    arrays = []
    first = None
    for path in tile.band_paths:
        raster = read_raster(path, bands=[1], dtype=np.float32)
        if first is None:
            first = raster
        elif raster.array.shape != first.array.shape:
            raise RasterError(
                f"shape {raster.array.shape[1:]} differs from {tile.band_paths[0].name} "
                f"{first.array.shape[1:]} in tile {tile.tile_id}",
                path,
            )
        arrays.append(raster.array[0])
    assert first is not None
    return np.stack(arrays).astype(np.float32), first.crs, first.transform


@dataclass
class TileArrays:
    """A tile in memory: raw channels (5 bands [+ GLCM]) and classes.

    Attributes:
        tile_id: the id.
        image: (C, H, W) float32, raw band values then raw GLCM channels (not normalised).
        mask: (H, W) uint8 classes 0..3, or None for unlabelled tiles.
        crs, transform: georeference of Band1 (crs None when the file has none).
    """

    tile_id: str
    image: np.ndarray
    mask: np.ndarray | None
    crs: Any = None
    transform: Any = None


def _file_key(tile: GlacierTile, band_index: int) -> str:
    path = tile.band_paths[band_index]
    stat = path.stat()
    return f"tile{tile.tile_id}_{path.stem}_{stat.st_size}_{int(stat.st_mtime_ns)}"


def load_tiles(
    tiles: Sequence[GlacierTile],
    glcm: GLCMConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[TileArrays]:
    """Read tiles into memory, appending GLCM channels (cached per tile and parameter set).

    Args:
        tiles: from :func:`find_tiles`.
        glcm: texture parameters, or None for the 5 bands only.
        cache_dir: folder for the GLCM cache (None: no cache).
        progress: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    out = []
    for tile in tqdm(tiles, desc="read tiles", disable=not progress):
        bands, crs, transform = read_bands(tile)
        image = bands
        if glcm is not None:
            if not 1 <= glcm.band <= len(BAND_FOLDERS):
                raise ValueError(f"glcm band must be 1..{len(BAND_FOLDERS)}, got {glcm.band}")
            texture = cached_texture_channels(
                bands[glcm.band - 1], glcm, cache_dir, _file_key(tile, glcm.band - 1)
            )
            image = np.concatenate([bands, texture]).astype(np.float32)
        mask = read_label(tile.label_path) if tile.label_path is not None else None
        if mask is not None and mask.shape != bands.shape[1:]:
            raise RasterError(
                f"label shape {mask.shape} differs from band shape {bands.shape[1:]} (tile {tile.tile_id})",
                tile.label_path,
            )
        out.append(TileArrays(tile.tile_id, image, mask, crs, transform))
    return out


def split_tiles(
    tile_ids: Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    val_ids: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of tile ids (explicit ``val_ids`` win).

    Example:
        >>> split_tiles(["1", "2", "3", "4", "5"], val_ids=["2"])
        (['1', '3', '4', '5'], ['2'])
    """
    ids = list(tile_ids)
    if val_ids:
        unknown = sorted(set(val_ids) - set(ids), key=_id_sort_key)
        if unknown:
            raise ValueError(f"val_ids not among the tiles: {unknown}")
        val = [t for t in ids if t in set(val_ids)]
    else:
        n_val = max(1, round(val_fraction * len(ids))) if len(ids) > 1 else 0
        order = np.random.default_rng(seed).permutation(len(ids))
        val = sorted((ids[i] for i in order[:n_val]), key=_id_sort_key)
    train = [t for t in ids if t not in set(val)]
    return train, val


@dataclass
class Normalizer:
    """Per-tile percentile stretch (2-98 %, to [0, 1]) or dataset standardisation, by name.

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
        """Compute dataset statistics (no-op for percentile mode)."""
        if self.mode == "dataset":
            self.stats = BandStats.from_arrays(images)
        return self

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(C, H, W) raw -> (C, H, W) float32 normalised."""
        if self.mode == "percentile":
            return percentile_stretch(image, self.low, self.high, per_band=True)
        if self.stats is None:
            raise ValueError(
                "dataset normalisation needs statistics: call Normalizer.fit(train images)"
            )
        if self.stats.num_bands != image.shape[0]:
            raise ValueError(
                f"statistics have {self.stats.num_bands} channels, image has {image.shape[0]}"
            )
        return np.asarray(self.stats.standardize(image), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "low": self.low, "high": self.high}
        if self.stats is not None:
            d["mean"], d["std"] = self.stats.mean.tolist(), self.stats.std.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        stats = BandStats(mean=d["mean"], std=d["std"]) if "mean" in d else None
        return cls(mode=d["mode"], low=d["low"], high=d["high"], stats=stats)


def image_sampling_weights(
    masks: Sequence[np.ndarray], lake_weight: float = 0.0, debris_weight: float = 0.0
) -> np.ndarray:
    """Image-level sampling weights: ``1 + lake_weight [lake present] + debris_weight [debris present]``.

    Use with :class:`torch.utils.data.WeightedRandomSampler`; the probability of drawing tile i
    is ``w_i / sum(w)``.

    Example:
        >>> m0, m1 = np.zeros((2, 2), np.uint8), np.array([[0, 3], [2, 0]], np.uint8)
        >>> image_sampling_weights([m0, m1], lake_weight=2.0, debris_weight=1.0).tolist()
        [1.0, 4.0]
    """
    if lake_weight < 0 or debris_weight < 0:
        raise ValueError("lake_weight and debris_weight must be >= 0")
    return np.array(
        [
            1.0 + lake_weight * bool((m == 3).any()) + debris_weight * bool((m == 2).any())
            for m in masks
        ]
    )


@dataclass
class ClassBalancedCropSampler:
    """Pixel-level class-balanced crops: with probability ``p_minority`` centre the crop on a
    random pixel of a minority class present in the tile (class chosen uniformly), else a uniform
    random crop.

    Attributes:
        crop_size: crop side, pixels.
        p_minority: probability of a minority-centred crop.
        minority_classes: classes to centre on (default debris and lake).
    """

    crop_size: int
    p_minority: float = 0.5
    minority_classes: tuple[int, ...] = (2, 3)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_minority <= 1.0:
            raise ValueError(f"p_minority must be in [0, 1], got {self.p_minority}")

    def __call__(self, mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int | None]:
        """Top-left (row, col) of a crop inside ``mask`` and the class it was centred on (or None)."""
        height, width = mask.shape
        size = self.crop_size
        if size > height or size > width:
            raise ValueError(f"crop_size {size} exceeds tile size {height}x{width}")
        if rng.random() < self.p_minority:
            present = [c for c in self.minority_classes if (mask == c).any()]
            if present:
                cls = present[rng.integers(len(present))]
                rows, cols = np.nonzero(mask == cls)
                k = rng.integers(rows.size)
                r0 = int(np.clip(rows[k] - size // 2, 0, height - size))
                c0 = int(np.clip(cols[k] - size // 2, 0, width - size))
                return r0, c0, int(cls)
        return int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1)), None


class WeightedTileSampler(Sampler[int]):
    """Draws ``num_samples`` tiles per epoch with probability ``weights / sum(weights)``.

    Yields *keys* ``draw * n_tiles + tile`` (``draw`` unique over the whole run), which
    :class:`GlacierTileDataset` in crop mode turns into the tile index and a per-draw random
    generator: crops are reproducible from the seed and differ between draws of the same tile.
    The epoch counter advances at every ``__iter__`` (or set it with :meth:`set_epoch`).

    Example:
        >>> sampler = WeightedTileSampler(np.array([1.0, 3.0]), num_samples=4, seed=0)
        >>> [k % 2 for k in sampler]  # tile indices of the 4 draws
        [1, 1, 0, 0]
    """

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int = 0) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                "weights must be a non-empty vector of non-negative numbers, not all 0"
            )
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.probabilities = weights / weights.sum()
        self.num_samples = int(num_samples)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        tiles = rng.choice(self.probabilities.size, size=self.num_samples, p=self.probabilities)
        first_draw = self.epoch * self.num_samples
        self.epoch += 1
        n = self.probabilities.size
        return iter(int((first_draw + j) * n + t) for j, t in enumerate(tiles))


class GlacierTileDataset(Dataset):
    """Tiles (or random crops of them) as tensors, normalised, with optional flips/rotations.

    Args:
        tiles: in-memory tiles from :func:`load_tiles`.
        normalizer: applied once per tile at construction.
        crop_size: None: item ``i`` is the whole tile ``i`` (validation: every pixel counts for
            MCC). An int: item ``key`` is a crop of tile ``key % n_tiles`` drawn with a generator
            seeded by ``(seed, key)`` (use with :class:`WeightedTileSampler`).
        crop_sampler: :class:`ClassBalancedCropSampler` (None: uniform random crops).
        augment: random horizontal flips and 90-degree rotations (crop mode and tile mode).
        seed: base seed of the crop/augmentation generators.

    Items: ``{"image": (C, h, w) float32, "mask": (h, w) int64, "tile_id": str}``; unlabelled
    tiles have no ``"mask"``.
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


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(alpha, alpha), reproducible through the torch ``generator``."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    alpha: float = 0.4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """MixUp for segmentation: ``x = lam x_a + (1 - lam) x_b`` with ``lam ~ Beta(alpha, alpha)``.

    Masks cannot be averaged into classes, so both are returned; the loss is
    ``lam * L(pred, masks_a) + (1 - lam) * L(pred, masks_b)``.

    Args:
        images: (B, C, H, W). masks: (B, H, W) long.

    Returns:
        mixed images (B, C, H, W), masks_a (B, H, W), masks_b (B, H, W) (a permutation), lam.
    """
    lam = _beta(alpha, generator)
    perm = torch.randperm(images.shape[0], generator=generator)
    return lam * images + (1.0 - lam) * images[perm], masks, masks[perm], lam


def cutmix_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix for segmentation: paste one random box (area fraction ``1 - lam``) of a permuted
    batch into images **and** masks, so labels stay hard classes.

    Returns:
        images (B, C, H, W), masks (B, H, W) long (new tensors).
    """
    lam = _beta(alpha, generator)
    _, _, height, width = images.shape
    cut_h, cut_w = int(height * math.sqrt(1.0 - lam)), int(width * math.sqrt(1.0 - lam))
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    r0, r1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    c0, c1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    perm = torch.randperm(images.shape[0], generator=generator)
    images, masks = images.clone(), masks.clone()
    images[:, :, r0:r1, c0:c1] = images[perm][:, :, r0:r1, c0:c1]
    masks[:, r0:r1, c0:c1] = masks[perm][:, r0:r1, c0:c1]
    return images, masks
