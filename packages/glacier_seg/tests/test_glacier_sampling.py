"""Samplers (tile weights, class-balanced crops that always hold valid pixels), the dataset's crops
and augmentations, MixUp and CutMix."""

from __future__ import annotations

import numpy as np
import torch
from glacier_seg.data import GlacierTileDataset, Normalizer, load_tiles
from glacier_seg.layout import find_tiles
from glacier_seg.sampling import (
    ClassBalancedCropSampler,
    WeightedTileSampler,
    cutmix_batch,
    image_sampling_weights,
    mixup_batch,
)


def test_image_level_sampling_frequencies():
    masks = [np.zeros((4, 4), np.uint8) for _ in range(3)]
    masks[1][0, 0] = 3  # lake
    masks[2][0, 0] = 2  # debris
    weights = image_sampling_weights(masks, lake_weight=3.0, debris_weight=1.0)
    assert weights.tolist() == [1.0, 4.0, 2.0]
    sampler = WeightedTileSampler(weights, num_samples=7000, seed=0)
    keys = list(sampler)
    freq = np.bincount(np.array(keys) % 3, minlength=3) / len(keys)
    np.testing.assert_allclose(freq, np.array([1, 4, 2]) / 7, atol=0.02)
    assert len(set(keys)) == len(keys)  # every draw has its own key (own crop)
    assert list(sampler) != keys  # next epoch, new draws


def test_class_balanced_crops_centre_on_minority_pixels():
    mask = np.zeros((64, 64), np.uint8)
    mask[50:52, 10:12] = 3  # a 4-pixel lake
    sampler = ClassBalancedCropSampler(16, p_minority=0.7)
    rng = np.random.default_rng(0)
    draws = [sampler(mask, rng) for _ in range(2000)]
    centred = [d for d in draws if d[2] == 3]
    assert abs(len(centred) / len(draws) - 0.7) < 0.03
    for r0, c0, _ in centred:
        assert (mask[r0 : r0 + 16, c0 : c0 + 16] == 3).any()
    uniform = [d for d in draws if d[2] is None]
    hit = np.mean([(mask[r : r + 16, c : c + 16] == 3).any() for r, c, _ in uniform])
    assert hit < 0.2  # uniform crops rarely contain the lake
    assert ClassBalancedCropSampler(16, 1.0)(np.zeros((32, 32), np.uint8), rng)[2] is None


def test_dataset_crops_are_reproducible_and_augment_consistently(glacier_root):
    arrays = load_tiles(find_tiles(glacier_root))
    ds = GlacierTileDataset(arrays, Normalizer(), crop_size=32, augment=True, seed=1)
    a, b = ds[13], ds[13]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["image"].shape == (5, 32, 32) and a["mask"].dtype == torch.int64
    # image and mask go through the same flips: find the crop in the tile
    tile = arrays[13 % 4]
    full = GlacierTileDataset([tile], Normalizer())[0]
    found = False
    for k in range(4):
        for flip in (False, True):
            img = torch.rot90(a["image"].flip(-1) if flip else a["image"], -k, (1, 2))
            msk = torch.rot90(a["mask"].flip(-1) if flip else a["mask"], -k, (0, 1))
            for r in range(33):
                for c in range(33):
                    if torch.equal(full["image"][:, r : r + 32, c : c + 32], img):
                        found = torch.equal(full["mask"][r : r + 32, c : c + 32], msk)
    assert found
    whole = GlacierTileDataset(arrays, Normalizer())
    assert len(whole) == 4 and whole[2]["image"].shape == (5, 64, 64) and whole[2]["tile_id"] == "8"


def test_cutmix_keeps_hard_labels_and_pastes_image_and_mask_together():
    g = torch.Generator().manual_seed(0)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 16, 16).clone()
    masks = torch.arange(4).view(4, 1, 1).expand(4, 16, 16).clone()
    out_img, out_mask = cutmix_batch(images, masks, alpha=1.0, generator=g)
    assert out_mask.dtype == torch.int64
    # wherever a pixel came from sample j, both image value and mask equal j
    assert torch.equal(out_img[:, 0].long(), out_mask)
    assert torch.equal(images[:, 0, 0, 0], torch.arange(4.0))  # input untouched


def test_mixup_mixes_images_with_one_lambda():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 8, 8)
    masks = torch.randint(0, 4, (3, 8, 8))
    mixed, ma, mb, lam = mixup_batch(images, masks, alpha=0.4, generator=g)
    assert 0.0 <= lam <= 1.0 and torch.equal(ma, masks)
    perm = [int(torch.nonzero((masks == m).all(-1).all(-1))[0]) for m in mb]
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[perm], atol=1e-6)


def test_uniform_crops_never_fall_entirely_on_invalid_pixels():
    mask = np.full((64, 64), 255, np.uint8)  # nodata everywhere but a 3 x 3 patch
    mask[40:43, 50:53] = 1
    sampler = ClassBalancedCropSampler(16, p_minority=0.0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        r0, c0, _ = sampler(mask, rng)
        assert (mask[r0 : r0 + 16, c0 : c0 + 16] != 255).any()
