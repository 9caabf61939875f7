"""Training data: the prepared tiles as a torch ``Dataset`` with augmentation, and the DataModule.

The prepare stage (:mod:`risk_mapping.prepare`) writes ``tiles_{train,val,test}.npz``;
:class:`RiskDataModule` serves them to Lightning. The training loader draws its order and each
tile's augmentation from :class:`eo_common.loading.SeededSampler` keys, whose seed is fixed by
:class:`eo_common.training.EpochSeed`'s re-seed from ``(seed, epoch)`` at the start of every epoch:
epoch ``e`` sees the same order and the same augmentation whether the run went straight through or
was killed and resumed before it, and whatever the number of (persistent) loader workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from eo_common.errors import InputError
from eo_common.loading import SeededSampler, loader_kwargs, sample_rng
from torch.utils.data import DataLoader, Dataset

from risk_mapping.config import AugmentationConfig, RiskConfig
from risk_mapping.tiles import TileSet

__all__ = ["TileDataset", "RiskDataModule"]


class TileDataset(Dataset):
    """Tiles as tensors, with optional augmentation.

    Geometric (all bands and the label): random horizontal/vertical flips and rotations by multiples of
    90 degrees. Photometric (only ``optical_bands``, in standardised units): brightness adds
    ``U(-b, b)``, contrast scales around the tile mean by ``U(1 - c, 1 + c)``, saturation scales the
    deviation of each optical band from the optical-band mean by ``U(1 - s, 1 + s)``. Random numbers
    come from the sample's key (:func:`eo_common.loading.sample_rng`): with the training loader's
    ``(index, seed)`` keys they depend on the run seed, the epoch and the tile only.

    Returns ``(x (C, t, t) float32, y (t, t) int64)``.
    """

    def __init__(
        self,
        tiles: TileSet,
        augmentation: AugmentationConfig | None = None,
        optical_bands: list[int] | None = None,
    ):
        self.tiles = tiles
        self.aug = augmentation
        self.optical = list(optical_bands or [])

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.aug is None:
            i = int(key[0] if isinstance(key, tuple | list) else key)
            return self._tile(i)
        i, rng = sample_rng(key)
        x, y = self._tile(i)
        a = self.aug
        if a.flips:
            if rng.uniform() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            if rng.uniform() < 0.5:
                x, y = x.flip(-2), y.flip(-2)
        if a.rotations and x.shape[-1] == x.shape[-2]:
            k = int(rng.integers(0, 4))
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        if self.optical:
            opt = x[self.optical]
            if a.brightness > 0:
                opt = opt + float(rng.uniform(-1, 1)) * a.brightness
            if a.contrast > 0:
                factor = 1 + float(rng.uniform(-1, 1)) * a.contrast
                opt = (opt - opt.mean()) * factor + opt.mean()
            if a.saturation > 0 and len(self.optical) > 1:
                factor = 1 + float(rng.uniform(-1, 1)) * a.saturation
                grey = opt.mean(0, keepdim=True)
                opt = grey + (opt - grey) * factor
            x = x.clone()
            x[self.optical] = opt
        return x.contiguous(), y.contiguous()

    def _tile(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.tiles.x[i], dtype=np.float32))
        return x, torch.from_numpy(self.tiles.y[i].astype(np.int64))


class RiskDataModule(L.LightningDataModule):
    """The prepared train/val tiles of one run.

    Args:
        cfg: the pipeline config (``training.batch_size``, ``training.num_workers``,
            ``training.augmentation``, ``dataset.optical_bands``).
        prepare_dir: the prepare stage folder (``tiles_train.npz``, ``tiles_val.npz``).
    """

    def __init__(self, cfg: RiskConfig, prepare_dir: str | os.PathLike):
        super().__init__()
        self.cfg = cfg
        self.prepare_dir = Path(prepare_dir)
        self.train_tiles: TileSet | None = None
        self.val_tiles: TileSet | None = None

    def check_inputs(self) -> None:
        """Both tile files exist and hold tiles (before the run folder is touched)."""
        for split in ("train", "val"):
            path = self.prepare_dir / f"tiles_{split}.npz"
            if not path.is_file():
                raise InputError("tile file not found (run the prepare stage)", path=path)
        self.setup("fit")
        if not len(self.val_tiles):
            raise InputError(
                "no validation tiles; early stopping on kappa needs some (raise "
                "dataset.val_fraction or lower dataset.block_size)",
                path=self.prepare_dir / "tiles_val.npz",
            )

    @property
    def in_channels(self) -> int:
        self.setup("fit")
        return int(self.train_tiles.x.shape[1])

    def setup(self, stage: str | None = None) -> None:
        if self.train_tiles is None:
            self.train_tiles = TileSet.load(self.prepare_dir / "tiles_train.npz")
            self.val_tiles = TileSet.load(self.prepare_dir / "tiles_val.npz")

    def _loader(self, tiles: TileSet, train: bool) -> DataLoader:
        t = self.cfg.training
        ds = TileDataset(
            tiles,
            t.augmentation if train else None,
            self.cfg.dataset.optical_bands if train else None,
        )
        # training: shuffled (index, seed) keys whose seed is fixed by EpochSeed's re-seed of the
        # epoch, so order and augmentation do not depend on the (persistent) workers
        keys = SeededSampler(len(ds), shuffle=True) if train else None
        return DataLoader(ds, sampler=keys, drop_last=False, **loader_kwargs(t))

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_tiles, True)

    def val_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.val_tiles, False)
