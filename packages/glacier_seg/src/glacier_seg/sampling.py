"""Which tiles and which crops a training epoch sees, and batch mixing (MixUp, CutMix).

* :func:`image_sampling_weights` and :class:`WeightedTileSampler`: tiles with lake or debris drawn more
  often (the researchers' "15x lake, 8x debris" is ``lake_weight 14, debris_weight 7``);
* :class:`ClassBalancedCropSampler`: crops centred on debris or lake pixels with probability
  ``p_minority``; a crop always holds valid pixels;
* :func:`mixup_batch`, :func:`cutmix_batch`: batch mixing for segmentation (hard labels kept).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from glacier_seg.layout import IGNORE_INDEX

__all__ = [
    "image_sampling_weights",
    "ClassBalancedCropSampler",
    "WeightedTileSampler",
    "mixup_batch",
    "cutmix_batch",
]


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
    random crop. A uniform crop that would hold only invalid pixels (``ignore_index``: nodata input)
    is re-centred on a random valid pixel, so every crop contributes to the loss.

    Attributes:
        crop_size: crop side, pixels.
        p_minority: probability of a minority-centred crop.
        minority_classes: classes to centre on (default debris and lake).
        ignore_index: mask value of invalid pixels.
    """

    crop_size: int
    p_minority: float = 0.5
    minority_classes: tuple[int, ...] = (2, 3)
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_minority <= 1.0:
            raise ValueError(f"p_minority must be in [0, 1], got {self.p_minority}")

    def _centred(
        self, mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int
    ) -> tuple[int, int]:
        height, width = mask.shape
        size = self.crop_size
        r0 = int(np.clip(rows[k] - size // 2, 0, height - size))
        c0 = int(np.clip(cols[k] - size // 2, 0, width - size))
        return r0, c0

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
                r0, c0 = self._centred(mask, rows, cols, int(rng.integers(rows.size)))
                return r0, c0, int(cls)
        r0, c0 = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
        if (mask[r0 : r0 + size, c0 : c0 + size] == self.ignore_index).all():
            rows, cols = np.nonzero(mask != self.ignore_index)
            if rows.size:
                r0, c0 = self._centred(mask, rows, cols, int(rng.integers(rows.size)))
        return r0, c0, None


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
