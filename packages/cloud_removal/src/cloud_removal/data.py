"""SEN12MS-CR samples: the dataset, augmentations, cloud masks, hard-example sampling, data module.

Which files form a sample comes from a data list (:mod:`cloud_removal.datalist`: the official-tree,
GLF-CR and DSen2-CR styles, comma or tab separated); every row is checked when a dataset is built.
File contents (relative to ``--input_data_folder``): S1 2 bands VV, VH (float32 dB); S2 clear and
cloudy 13 bands B01..B12 with B8A and B10 (uint16 DN); the three on one grid (CRS, transform, size).

Per sample (``SEN12MSCRDataset[i]``), in this order:

1. read the three GeoTIFFs (errors name the file and the list row: missing or unreadable file, wrong
   band count, S1 and S2 on different grids, a band without any finite value), fill NaN/inf with the
   band mean (as GLF-CR does), S2 to reflectance (DN / 10000);
2. centre-crop to ``load_size``; then a random ``crop_size`` crop for training, a centre crop of
   ``eval_crop_size`` (default ``crop_size``) for evaluation;
3. synthetic cloud augmentation (training only, probability ``synthetic_cloud_prob``): the cloudy
   input is replaced by procedural clouds laid over the clear target (:mod:`cloud_removal.clouds`);
4. cloud mask (1, h, w) in [0, 1]: ``"difference"`` (mean |cloudy - clear| over bands / 0.1) or
   ``"s2cloudless"`` (probability of the real pretrained detector on the cloudy input);
5. normalisation (:mod:`eo_common.normalize`, default ``glf-cr``: S2 / 10000, VV [-25, 0] and
   VH [-32.5, 0] dB to [0, 1]);
6. geometric augmentation (training): horizontal/vertical flips and 90-degree rotations, identical for
   cloudy optical, SAR, target and mask;
7. photometric augmentation (training), optical only: brightness/contrast jitter applied identically
   to the cloudy input and its target (so the mapping stays consistent), Gaussian noise added to the
   cloudy input only.

Each item is a dict: ``optical`` (13, h, w) cloudy input, ``sar`` (2, h, w), ``target`` (13, h, w)
clear image, ``cloud_mask`` (1, h, w), ``index`` (int, position in the split) and ``name`` (the file
name column of the list).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from eo_common.loading import SeededSampler, loader_kwargs, sample_rng
from eo_common.normalize import fill_nan, normalize_s1, normalize_s2
from eo_common.raster import Raster, RasterError, read_raster
from torch.utils.data import DataLoader, Dataset, Sampler

from .clouds import (
    S2_BANDS,
    CloudParams,
    S2CloudlessDetector,
    difference_cloud_mask,
    simulate_clouds,
)
from .config import CRDataConfig, parse_progressive
from .datalist import (
    CloudRemovalDataError,
    CloudRemovalFileNotFoundError,
    DataListRow,
    Sample,
    read_data_list,
    resolve_rows,
    rows_of_split,
    split_code,
)

__all__ = [
    "CloudRemovalDataError",
    "CloudRemovalFileNotFoundError",
    "DataListRow",
    "read_data_list",
    "split_code",
    "AugmentConfig",
    "SEN12MSCRDataset",
    "HardExampleSampler",
    "CloudRemovalDataModule",
    "parse_progressive",
    "crop_for_epoch",
]


def _grid_difference(a: Raster, b: Raster) -> str:
    """What differs between the grids of two rasters ("" when none): CRS, size, transform."""
    out = []
    if (a.crs is None) != (b.crs is None) or (a.crs is not None and a.crs != b.crs):
        out.append(f"CRS {b.crs} vs {a.crs}")
    if a.array.shape[-2:] != b.array.shape[-2:]:
        out.append(f"size {b.height}x{b.width} vs {a.height}x{a.width} (rows x cols)")
    scale = max(abs(a.transform.a), abs(a.transform.e), 1e-12)
    if any(
        not math.isclose(x, y, rel_tol=0, abs_tol=1e-6 * scale)
        for x, y in zip(a.transform[:6], b.transform[:6])
    ):
        out.append(f"transform {tuple(b.transform)[:6]} vs {tuple(a.transform)[:6]}")
    return "; ".join(out)


@dataclass
class AugmentConfig:
    """Training augmentations (see the module docstring for the order).

    Attributes:
        flips: random horizontal and vertical flips.
        rot90: random 90-degree rotations.
        brightness: max additive brightness shift (normalised units), applied to input and target.
        contrast: max relative contrast change, applied to input and target.
        noise_std: std of Gaussian noise on the cloudy optical input (normalised units).
        synthetic_cloud_prob: probability of replacing the cloudy input by simulated clouds.
        cloud_params: ranges of the procedural cloud model.
    """

    flips: bool = True
    rot90: bool = True
    brightness: float = 0.02
    contrast: float = 0.1
    noise_std: float = 0.005
    synthetic_cloud_prob: float = 0.0
    cloud_params: CloudParams | None = None


class SEN12MSCRDataset(Dataset):
    """SEN12MS-CR samples of one split of a data list.

    Building the dataset reads the list and checks that the three files of every row of the split
    exist (:func:`cloud_removal.datalist.resolve_rows`), so a bad list fails here, naming the list,
    the row and the file, before any model is built.

    Args:
        root: ``--input_data_folder``.
        data_list: the list (default ``<root>/data.csv``).
        split: ``train``/``val``/``test`` or 1/2/3.
        load_size: tiles are centre-cropped to this size first (0: keep the file size); a tile smaller
            than ``load_size`` is an error.
        crop_size: training crop (random when ``train``), also the evaluation centre crop unless
            ``eval_crop_size`` is set. 0: no crop.
        train: random crop + augmentation (``augment``) vs centre crop (default: split is train).
        eval_crop_size: centre crop for evaluation (0: ``crop_size``).
        convention: normalisation convention of :mod:`eo_common.normalize`.
        augment: training augmentations (None: none).
        cloud_mask: ``"difference"`` or ``"s2cloudless"``.
        detector: an :class:`S2CloudlessDetector` (built on first use when None).
        val_fraction: for a list without validation rows, the share of training scenes held out as
            the validation split (see :func:`cloud_removal.datalist.rows_of_split`).

    Example:
        >>> ds = SEN12MSCRDataset("data/", split="val", load_size=256, crop_size=128)  # doctest: +SKIP
        >>> item = ds[0]; item["optical"].shape, item["sar"].shape  # doctest: +SKIP
        (torch.Size([13, 128, 128]), torch.Size([2, 128, 128]))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        data_list: str | os.PathLike | None = None,
        split: str | int = "train",
        *,
        load_size: int = 256,
        crop_size: int = 128,
        train: bool | None = None,
        eval_crop_size: int = 0,
        convention: str = "glf-cr",
        augment: AugmentConfig | None = None,
        cloud_mask: Literal["difference", "s2cloudless"] = "difference",
        detector: S2CloudlessDetector | None = None,
        val_fraction: float = 0.1,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CloudRemovalFileNotFoundError(f"{self.root}: --input_data_folder does not exist")
        self.data_list = Path(data_list) if data_list else self.root / "data.csv"
        self.split = split_code(split)
        rows = rows_of_split(
            read_data_list(self.data_list), self.split, val_fraction, self.data_list
        )
        self.samples: list[Sample] = resolve_rows(rows, self.root)
        self.load_size = int(load_size or 0)
        self.crop_size = int(crop_size or 0)
        self.eval_crop_size = int(eval_crop_size or 0)
        self.train = (self.split == 1) if train is None else bool(train)
        self.convention = convention
        normalize_s2(np.zeros((1, 1, 1), np.float32), convention)  # validates the name early
        self.augment = augment if self.train else None
        if cloud_mask not in ("difference", "s2cloudless"):
            raise ValueError(
                f"cloud_mask must be 'difference' or 's2cloudless', got {cloud_mask!r}"
            )
        self.cloud_mask = cloud_mask
        self._detector = detector
        self._prob_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def rows(self) -> list[DataListRow]:
        """The list rows of the split, in order."""
        return [s.row for s in self.samples]

    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def _read(self, path: Path, bands: int, sample: Sample) -> Raster:
        where = sample.row.where
        try:
            r = read_raster(path, expected_bands=bands, dtype=np.float32)
        except FileNotFoundError as exc:
            raise CloudRemovalFileNotFoundError(f"{where}: {exc}") from None
        except (RasterError, OSError) as exc:
            raise CloudRemovalDataError(f"{where}: {exc}") from None
        finite = np.isfinite(r.array).reshape(bands, -1).any(axis=1)
        if not finite.all():
            b = int(np.flatnonzero(~finite)[0])
            name = ("VV", "VH")[b] if bands == 2 else S2_BANDS[b] if bands == 13 else str(b + 1)
            raise CloudRemovalDataError(
                f"{where}: {path}: band {b + 1} ({name}) has no finite value (all NaN/inf)"
            )
        return r

    def read_row(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sar dB (2,H,W), clear reflectance (13,H,W), cloudy reflectance (13,H,W)), load_size cropped.

        Raises:
            CloudRemovalDataError: naming the list row and the file: unreadable, wrong band count,
                a band without a finite value, S2 on another grid (CRS, transform, size) than S1,
                or smaller than ``load_size``.
        """
        sample = self.samples[i]
        where = sample.row.where
        r1 = self._read(sample.s1, 2, sample)
        rasters = [(sample.s2_clear, self._read(sample.s2_clear, 13, sample))]
        rasters.append((sample.s2_cloudy, self._read(sample.s2_cloudy, 13, sample)))
        for path, r in rasters:
            what = _grid_difference(r1, r)
            if what:
                raise CloudRemovalDataError(
                    f"{where}: {path} and the S1 file {sample.s1} are on different grids ({what}); "
                    "S1 and S2 of a sample must share CRS, transform and size"
                )
        s1 = fill_nan(r1.array)
        clear = fill_nan(rasters[0][1].array) / 10000.0
        cloudy = fill_nan(rasters[1][1].array) / 10000.0
        h, w = s1.shape[-2:]
        if self.load_size:
            if h < self.load_size or w < self.load_size:
                raise CloudRemovalDataError(
                    f"{where}: {sample.s1} is {h}x{w}, smaller than --load_size {self.load_size}"
                )
            y0, x0 = (h - self.load_size) // 2, (w - self.load_size) // 2
            sl = (slice(None), slice(y0, y0 + self.load_size), slice(x0, x0 + self.load_size))
            s1, clear, cloudy = s1[sl], clear[sl], cloudy[sl]
        return s1, clear, cloudy

    def _crop_box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int]:
        size = self.crop_size if self.train else (self.eval_crop_size or self.crop_size)
        if not size:
            if h != w:
                return 0, 0, min(h, w)
            return 0, 0, h
        if size > min(h, w):
            raise CloudRemovalDataError(
                f"{self.data_list}: crop size {size} is larger than the tiles ({h}x{w} after --load_size)"
            )
        if self.train:
            return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)), size
        return (h - size) // 2, (w - size) // 2, size

    def _detector_prob(self, i: int, cloudy: np.ndarray) -> np.ndarray:
        if self._detector is None:
            self._detector = S2CloudlessDetector()
        return self._detector.probability(cloudy)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Sample ``key``: an index, or an ``(index, seed)`` key of
        :class:`eo_common.loading.SeededSampler` (crop and augmentation then come from that seed, so
        they do not depend on the loader workers)."""
        i, rng = sample_rng(key)
        if not 0 <= i < len(self.samples):
            raise IndexError(f"index {i} out of range for {len(self.samples)} samples")
        s1, clear, cloudy = self.read_row(i)
        y0, x0, size = self._crop_box(*s1.shape[-2:], rng)
        sl = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
        synthetic = False
        aug = self.augment
        if (
            aug is not None
            and aug.synthetic_cloud_prob > 0
            and rng.uniform() < aug.synthetic_cloud_prob
        ):
            s1, clear = s1[sl], clear[sl]
            cloudy = simulate_clouds(clear, rng, aug.cloud_params).cloudy
            synthetic = True
        if self.cloud_mask == "difference" or synthetic:
            if not synthetic:
                s1, clear, cloudy = s1[sl], clear[sl], cloudy[sl]
            mask = difference_cloud_mask(cloudy, clear)
        else:
            if i not in self._prob_cache:
                self._prob_cache[i] = self._detector_prob(i, cloudy)
            mask = self._prob_cache[i][None][sl]
            s1, clear, cloudy = s1[sl], clear[sl], cloudy[sl]
        sar = torch.from_numpy(np.ascontiguousarray(normalize_s1(s1, self.convention)))
        optical = torch.from_numpy(
            np.ascontiguousarray(normalize_s2(cloudy * 1e4, self.convention))
        )
        target = torch.from_numpy(np.ascontiguousarray(normalize_s2(clear * 1e4, self.convention)))
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
        if aug is not None:
            stack = [optical, sar, target, mask_t]
            if aug.flips:
                if rng.uniform() < 0.5:
                    stack = [t.flip(-1) for t in stack]
                if rng.uniform() < 0.5:
                    stack = [t.flip(-2) for t in stack]
            if aug.rot90:
                k = int(rng.integers(0, 4))
                if k:
                    stack = [torch.rot90(t, k, dims=(-2, -1)) for t in stack]
            optical, sar, target, mask_t = (t.contiguous() for t in stack)
            if aug.contrast or aug.brightness:
                c = 1.0 + float(rng.uniform(-aug.contrast, aug.contrast))
                b = float(rng.uniform(-aug.brightness, aug.brightness))
                mean = target.mean(dim=(-2, -1), keepdim=True)
                optical = (optical - mean) * c + mean + b
                target = (target - mean) * c + mean + b
            if aug.noise_std:
                noise = torch.from_numpy(rng.standard_normal(optical.shape).astype(np.float32))
                optical = optical + aug.noise_std * noise
        return {
            "optical": optical.float(),
            "sar": sar.float(),
            "target": target.float(),
            "cloud_mask": mask_t.float(),
            "index": i,
            "name": self.samples[i].name,
        }


class HardExampleSampler(Sampler[int]):
    """Each epoch, draw ``len(dataset)`` indices with replacement, oversampling the worst-PSNR samples.

    Weights: 1 for every sample, ``factor`` for the ``fraction`` of samples with the lowest recorded
    training PSNR (samples never seen keep weight 1). Call :meth:`update` with ``{index: psnr}`` at the
    end of each epoch. Deterministic for a given ``seed`` and epoch.
    """

    def __init__(
        self, num_samples: int, factor: float = 3.0, fraction: float = 0.25, seed: int = 0
    ):
        self.num_samples = int(num_samples)
        self.factor = float(factor)
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.epoch = 0
        self.weights = torch.ones(self.num_samples, dtype=torch.float64)

    def update(self, psnr_by_index: dict[int, float]) -> None:
        """Recompute the weights from the latest per-sample training PSNR."""
        self.weights = torch.ones(self.num_samples, dtype=torch.float64)
        if not psnr_by_index:
            return
        idx = sorted(psnr_by_index, key=lambda k: psnr_by_index[k])
        n_hard = max(1, int(round(self.fraction * len(idx))))
        for k in idx[:n_hard]:
            if 0 <= k < self.num_samples:
                self.weights[k] = self.factor

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1  # the data module sets it from the trainer's epoch each epoch
        return iter(torch.multinomial(self.weights, self.num_samples, True, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


def crop_for_epoch(schedule: Sequence[tuple[int, int]], epoch: int, default: int) -> int:
    """Crop size of ``epoch`` (0-based) under a progressive schedule; the last stage persists."""
    if not schedule:
        return default
    start = 0
    for size, n in schedule:
        if epoch < start + n:
            return size
        start += n
    return schedule[-1][0]


class CloudRemovalDataModule(L.LightningDataModule):
    """Train/val/test :class:`SEN12MSCRDataset` loaders, progressive crops and hard-example mining.

    Building it reads the data list and checks every train and validation row (the test split is
    checked when first used); :meth:`check_inputs` (called by :func:`eo_common.training.fit_run`
    before the run folder is touched) also reads the first sample of each split, so a wrong band
    count or grid fails before any training. The training loader is rebuilt every epoch (the
    trainer reloads it), so the crop size follows ``progressive`` and the
    :class:`HardExampleSampler` sees the latest weights.

    Args:
        cfg: the ``data`` group of cr-train (``cfg.root`` must be set).
        seed: the run's seed (shuffling and the hard-example sampler).
    """

    def __init__(self, cfg: CRDataConfig, seed: int = 0):
        super().__init__()
        if cfg.root is None:
            raise CloudRemovalDataError("data.root: no data folder given (--input_data_folder)")
        self.cfg = cfg
        self.crop_size = cfg.crop_size
        self.progressive = parse_progressive(cfg.progressive)
        self.seed = seed
        self._common = dict(
            load_size=cfg.load_size,
            convention=cfg.normalization,
            cloud_mask=cfg.cloud_mask,
            val_fraction=cfg.val_fraction,
            crop_size=cfg.crop_size,
        )
        augment = (
            AugmentConfig(synthetic_cloud_prob=cfg.synthetic_cloud_prob) if cfg.augment else None
        )
        self.train_set = SEN12MSCRDataset(
            cfg.root, cfg.data_list, "train", augment=augment, **self._common
        )
        self.val_set = self._eval_set("val")
        self._test_set: SEN12MSCRDataset | None = None
        for ds, what in (
            (self.train_set, "training rows (split 1)"),
            (self.val_set, "validation rows"),
        ):
            if not len(ds):
                raise CloudRemovalDataError(f"{ds.data_list}: no {what}")
        self.sampler = (
            HardExampleSampler(len(self.train_set), factor=cfg.hard_example_factor, seed=seed)
            if cfg.hard_example_mining
            else None
        )

    def _eval_set(self, split: str) -> SEN12MSCRDataset:
        return SEN12MSCRDataset(
            self.cfg.root,
            self.cfg.data_list,
            split,
            eval_crop_size=self.cfg.eval_crop_size,
            **self._common,
        )

    @property
    def test_set(self) -> SEN12MSCRDataset:
        if self._test_set is None:
            self._test_set = self._eval_set("test")
        return self._test_set

    def check_inputs(self) -> None:
        """Read the first sample of the training and validation splits (errors name file and row)."""
        for ds in (self.train_set, self.val_set):
            ds.read_row(0)

    def _loader(self, ds: Dataset, sampler: SeededSampler | None = None) -> DataLoader:
        return DataLoader(ds, sampler=sampler, drop_last=False, **loader_kwargs(self.cfg))

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or hard-example) ``(index, seed)`` keys of :class:`SeededSampler`: order, crops
        and augmentation of an epoch depend on the run seed and the epoch only, so a resumed run
        and any number of (persistent) workers see the same samples."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.crop_size = crop_for_epoch(self.progressive, epoch, self.crop_size)
        if self.sampler is not None:
            self.sampler.epoch = epoch  # the same draws after a --resume as without interruption
            keys = SeededSampler(self.sampler)
        else:
            keys = SeededSampler(len(self.train_set), shuffle=True)
        keys.set_epoch(epoch)
        return self._loader(self.train_set, keys)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)
