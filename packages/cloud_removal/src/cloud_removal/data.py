"""SEN12MS-CR reader on the GLF-CR data list, augmentations, cloud masks and the Lightning data module.

The data list (``data.csv``, no header) has one row per sample::

    split, s1_folder, s2_cloudfree_folder, s2_cloudy_folder, s1_filename

with split 1 = train, 2 = val, 3 = test. Files (relative to ``--input_data_folder``)::

    <s1_folder>/<s1_filename>                                         2 bands VV, VH (float32 dB)
    <s2_cloudfree_folder>/<s1_filename with "_s1_" -> "_s2_">         13 bands (uint16 DN)
    <s2_cloudy_folder>/<s1_filename with "_s1_" -> "_s2_cloudy_">     13 bands (uint16 DN)

Per sample (``SEN12MSCRDataset[i]``), in this order:

1. read the three GeoTIFFs (errors name the file and the CSV row), fill NaN/inf with the band mean
   (as GLF-CR does), S2 to reflectance (DN / 10000);
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
clear image, ``cloud_mask`` (1, h, w), ``index`` (int, row in the split) and ``name`` (s1 filename).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from eo_common.normalize import fill_nan, normalize_s1, normalize_s2
from eo_common.raster import RasterError, read_raster
from torch.utils.data import DataLoader, Dataset, Sampler

from .clouds import CloudParams, S2CloudlessDetector, difference_cloud_mask, simulate_clouds

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
]

SPLITS = {"train": 1, "val": 2, "validation": 2, "test": 3}


class CloudRemovalDataError(ValueError):
    """Bad data list or sample file; the message names the file and the CSV row."""


class CloudRemovalFileNotFoundError(CloudRemovalDataError, FileNotFoundError):
    """A file named by the data list does not exist."""


def split_code(split: str | int) -> int:
    """``"train"``/1, ``"val"``/``"validation"``/2, ``"test"``/3 -> 1, 2, 3."""
    if isinstance(split, int | np.integer) and int(split) in (1, 2, 3):
        return int(split)
    key = str(split).strip().lower()
    if key in SPLITS:
        return SPLITS[key]
    if key in ("1", "2", "3"):
        return int(key)
    raise ValueError(f"unknown split {split!r}; use train/val/test or 1/2/3")


@dataclass(frozen=True)
class DataListRow:
    """One row of the GLF-CR data list; ``line`` is the 1-based line number in the CSV."""

    line: int
    split: int
    s1_folder: str
    s2_cloudfree_folder: str
    s2_cloudy_folder: str
    s1_filename: str

    def paths(self, root: Path) -> tuple[Path, Path, Path]:
        """(s1, s2 clear, s2 cloudy) file paths under ``root``."""
        if "_s1_" not in self.s1_filename:
            raise CloudRemovalDataError(
                f"row {self.line}: filename {self.s1_filename!r} has no '_s1_' part to derive the "
                "S2 file names from"
            )
        return (
            root / self.s1_folder / self.s1_filename,
            root / self.s2_cloudfree_folder / self.s1_filename.replace("_s1_", "_s2_"),
            root / self.s2_cloudy_folder / self.s1_filename.replace("_s1_", "_s2_cloudy_"),
        )


def read_data_list(path: str | os.PathLike, split: str | int | None = None) -> list[DataListRow]:
    """Parse a GLF-CR data list CSV (no header); optionally keep one split.

    Raises:
        CloudRemovalFileNotFoundError: the CSV does not exist.
        CloudRemovalDataError: a row without 5 columns or with a split other than 1/2/3
            (the message names the file and the line).

    Example:
        >>> rows = read_data_list("data.csv", split="train")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise CloudRemovalFileNotFoundError(f"{path}: data list CSV not found")
    want = split_code(split) if split is not None else None
    rows: list[DataListRow] = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, rec in enumerate(csv.reader(f), start=1):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != 5:
                raise CloudRemovalDataError(
                    f"{path} row {line}: expected 5 columns (split, s1_folder, s2_cloudfree_folder, "
                    f"s2_cloudy_folder, filename), got {len(rec)}: {rec}"
                )
            try:
                code = int(rec[0].strip())
            except ValueError:
                code = -1
            if code not in (1, 2, 3):
                raise CloudRemovalDataError(
                    f"{path} row {line}: split must be 1 (train), 2 (val) or 3 (test), got {rec[0]!r}"
                )
            row = DataListRow(line, code, *(c.strip() for c in rec[1:]))
            if want is None or code == want:
                rows.append(row)
    return rows


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
    """SEN12MS-CR samples listed in a GLF-CR data list.

    Args:
        root: ``--input_data_folder``.
        data_list: the CSV (default ``<root>/data.csv``).
        split: ``train``/``val``/``test`` or 1/2/3.
        load_size: tiles are centre-cropped to this size first (0: keep the file size); a tile smaller
            than ``load_size`` is an error.
        crop_size: training crop (random when ``train``), also the evaluation centre crop unless
            ``eval_crop_size`` is set. 0: no crop.
        train: random crop + augmentation (``augment``) vs centre crop.
        eval_crop_size: centre crop for evaluation (0: ``crop_size``).
        convention: normalisation convention of :mod:`eo_common.normalize`.
        augment: training augmentations (None: none).
        cloud_mask: ``"difference"`` or ``"s2cloudless"``.
        detector: an :class:`S2CloudlessDetector` (built on first use when None).

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
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CloudRemovalFileNotFoundError(f"{self.root}: --input_data_folder does not exist")
        self.data_list = Path(data_list) if data_list else self.root / "data.csv"
        self.split = split_code(split)
        self.rows = read_data_list(self.data_list, self.split)
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
        return len(self.rows)

    def names(self) -> list[str]:
        return [r.s1_filename for r in self.rows]

    def _where(self, row: DataListRow) -> str:
        return f"{self.data_list} row {row.line}"

    def _read(self, path: Path, bands: int, row: DataListRow) -> np.ndarray:
        try:
            r = read_raster(path, expected_bands=bands, dtype=np.float32)
        except FileNotFoundError as exc:
            raise CloudRemovalFileNotFoundError(f"{self._where(row)}: {exc}") from exc
        except (RasterError, OSError) as exc:
            raise CloudRemovalDataError(f"{self._where(row)}: {exc}") from exc
        return r.array

    def read_row(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sar dB (2,H,W), clear reflectance (13,H,W), cloudy reflectance (13,H,W)), load_size cropped."""
        row = self.rows[i]
        p1, p2, p3 = row.paths(self.root)
        s1 = self._read(p1, 2, row)
        clear = self._read(p2, 13, row)
        cloudy = self._read(p3, 13, row)
        for p, a in ((p2, clear), (p3, cloudy)):
            if a.shape[-2:] != s1.shape[-2:]:
                raise CloudRemovalDataError(
                    f"{self._where(row)}: {p} is {a.shape[-2]}x{a.shape[-1]} but the S1 file {p1} is "
                    f"{s1.shape[-2]}x{s1.shape[-1]} (S1/S2 shape mismatch)"
                )
        s1 = fill_nan(s1)
        clear = fill_nan(clear) / 10000.0
        cloudy = fill_nan(cloudy) / 10000.0
        h, w = s1.shape[-2:]
        if self.load_size:
            if h < self.load_size or w < self.load_size:
                raise CloudRemovalDataError(
                    f"{self._where(row)}: {p1} is {h}x{w}, smaller than --load_size {self.load_size}"
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

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self.rows):
            raise IndexError(f"index {i} out of range for {len(self.rows)} samples")
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
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
            "name": self.rows[i].s1_filename,
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
        self.epoch += 1
        return iter(torch.multinomial(self.weights, self.num_samples, True, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


def parse_progressive(spec: str | None) -> list[tuple[int, int]]:
    """Parse ``"128:30,192:30,256:30"`` into ``[(128, 30), (192, 30), (256, 30)]`` (crop, epochs).

    Example:
        >>> parse_progressive("64:2,96:1")
        [(64, 2), (96, 1)]
    """
    if not spec:
        return []
    out = []
    for part in str(spec).split(","):
        try:
            size, epochs = (int(v) for v in part.strip().split(":"))
        except ValueError:
            raise ValueError(
                f"--progressive: expected 'size:epochs,...' like 128:30,192:30, got {part!r}"
            ) from None
        if size <= 0 or epochs <= 0:
            raise ValueError(f"--progressive: size and epochs must be positive, got {part!r}")
        out.append((size, epochs))
    return out


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

    The training loader is rebuilt every epoch (the trainer reloads it), so the crop size follows
    ``progressive`` and the :class:`HardExampleSampler` sees the latest weights.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        data_list: str | os.PathLike | None = None,
        *,
        batch_size: int = 4,
        num_workers: int = 0,
        load_size: int = 256,
        crop_size: int = 128,
        eval_crop_size: int = 0,
        convention: str = "glf-cr",
        augment: AugmentConfig | None = None,
        cloud_mask: str = "difference",
        progressive: Sequence[tuple[int, int]] = (),
        hard_example_mining: bool = False,
        hard_example_factor: float = 3.0,
        seed: int = 0,
        max_train_samples: int = 0,
    ):
        super().__init__()
        self.root, self.data_list = root, data_list
        self.batch_size, self.num_workers = batch_size, num_workers
        self.crop_size = crop_size
        self.progressive = list(progressive)
        common = dict(load_size=load_size, convention=convention, cloud_mask=cloud_mask)
        self.train_set = SEN12MSCRDataset(
            root, data_list, "train", crop_size=crop_size, augment=augment, **common
        )
        self.val_set = SEN12MSCRDataset(
            root, data_list, "val", crop_size=crop_size, eval_crop_size=eval_crop_size, **common
        )
        self.test_set = SEN12MSCRDataset(
            root, data_list, "test", crop_size=crop_size, eval_crop_size=eval_crop_size, **common
        )
        if max_train_samples:
            self.train_set.rows = self.train_set.rows[:max_train_samples]
        if not len(self.train_set):
            raise CloudRemovalDataError(f"{self.train_set.data_list}: no training rows (split 1)")
        if not len(self.val_set):
            raise CloudRemovalDataError(
                f"{self.val_set.data_list}: no validation rows (split 2); the best checkpoint is "
                "chosen by validation PSNR"
            )
        self.sampler = (
            HardExampleSampler(len(self.train_set), factor=hard_example_factor, seed=seed)
            if hard_example_mining
            else None
        )
        self.seed = seed

    def _loader(
        self, ds: Dataset, shuffle: bool, sampler: Sampler | None = None, epoch: int = 0
    ) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=False,
            generator=g if shuffle else None,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.crop_size = crop_for_epoch(self.progressive, epoch, self.crop_size)
        return self._loader(self.train_set, True, self.sampler, epoch)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
