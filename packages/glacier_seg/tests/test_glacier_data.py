"""Reader (pairing by tile id), label mapping, normalisation, samplers, MixUp/CutMix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from eo_common.normalize import percentile_stretch
from eo_common.raster import read_raster, write_raster
from glacier_seg.data import (
    BAND_FOLDERS,
    ClassBalancedCropSampler,
    GlacierTileDataset,
    LabelValueError,
    Normalizer,
    PairingError,
    WeightedTileSampler,
    classes_to_mask_values,
    cutmix_batch,
    find_tiles,
    image_sampling_weights,
    load_tiles,
    mask_values_to_classes,
    read_label,
    scan_layout,
    split_tiles,
    tile_id_from_name,
)
from glacier_seg.texture import GLCMConfig


def _copy(root, tmp_path):
    dest = tmp_path / "gh"
    shutil.copytree(root, dest)
    return dest


def test_pairs_by_id_not_by_sorted_order(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    # rename labels so that sorted file order no longer matches tile order: "a_11" < "b_02" ...
    prefixes = {"2": "z", "5": "y", "8": "x", "11": "a"}
    for f in sorted((root / "Label").iterdir()):
        tid = tile_id_from_name(f.name)
        f.rename(f.with_name(f"{prefixes[tid]}_mask_{int(tid):03d}.tif"))
    sorted_labels = sorted(p.name for p in (root / "Label").iterdir())
    assert [tile_id_from_name(n) for n in sorted_labels] != ["2", "5", "8", "11"]
    tiles = find_tiles(root)
    assert [t.tile_id for t in tiles] == ["2", "5", "8", "11"]
    for t in tiles:
        assert {tile_id_from_name(p.name) for p in (*t.band_paths, t.label_path)} == {t.tile_id}
        # the label of each tile is the original file's content for that id
        original = read_raster(
            glacier_root / "Label" / f"Y_output_resized_{int(t.tile_id):02d}.tif"
        ).array[0]
        assert np.array_equal(read_label(t.label_path), mask_values_to_classes(original))


def test_missing_mask_is_named(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    (root / "Label" / "Y_output_resized_08.tif").unlink()
    (root / "Band3" / "B4_B4_masked_05.tif").unlink()
    with pytest.raises(PairingError) as err:
        find_tiles(root)
    message = str(err.value)
    assert "tile 8: no file in Label" in message and "tile 5: no file in Band3" in message
    report = scan_layout(root)
    assert report.paired_ids == ["2", "11"] and not report.ok
    # without labels only the band folders take part: tile 8 pairs again
    assert scan_layout(root, require_labels=False).paired_ids == ["2", "8", "11"]


def test_duplicate_ids_and_missing_folder_are_errors(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    shutil.copy(root / "Band1" / "B2_B2_masked_02.tif", root / "Band1" / "other_2.tif")
    with pytest.raises(PairingError, match="Band1: tile id"):
        find_tiles(root)
    shutil.rmtree(root / "Band5")
    with pytest.raises(PairingError, match="missing folder"):
        find_tiles(root)
    with pytest.raises(FileNotFoundError):
        find_tiles(tmp_path / "nowhere")


def test_label_mapping_and_back():
    stored = np.array([[0, 85], [170, 255]], dtype=np.uint8)
    classes = mask_values_to_classes(stored)
    assert classes.tolist() == [[0, 1], [2, 3]]
    assert classes_to_mask_values(classes).tolist() == stored.tolist()
    assert mask_values_to_classes(np.array([[0, 3]])).tolist() == [[0, 3]]  # already classes
    with pytest.raises(LabelValueError, match=r"lbl\.tif.*\[7\]"):
        mask_values_to_classes(np.array([[0, 85, 7]]), "lbl.tif")
    with pytest.raises(ValueError):
        classes_to_mask_values(np.array([4]))


def test_unexpected_label_value_in_file_names_the_file(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    path = root / "Label" / "Y_output_resized_05.tif"
    r = read_raster(path)
    bad = r.array.copy()
    bad[0, 0, 0] = 128
    write_raster(path, bad, crs=r.crs, transform=r.transform)
    with pytest.raises(LabelValueError, match="Y_output_resized_05.tif"):
        load_tiles(find_tiles(root))


def test_load_tiles_bands_glcm_and_normalisation(glacier_root, tmp_path):
    tiles = find_tiles(glacier_root)
    arrays = load_tiles(tiles, glcm=GLCMConfig(window=5, levels=16), cache_dir=tmp_path)
    assert arrays[0].image.shape == (7, 64, 64) and arrays[0].mask.shape == (64, 64)
    assert set(np.unique(arrays[0].mask)) <= {0, 1, 2, 3}
    band1 = read_raster(tiles[0].band_paths[0]).array[0]
    assert np.array_equal(arrays[0].image[0], band1)
    assert arrays[0].crs is not None
    norm = Normalizer("percentile")
    np.testing.assert_array_equal(norm(arrays[0].image), percentile_stretch(arrays[0].image, 2, 98))
    ds_norm = Normalizer("dataset").fit([a.image for a in arrays])
    z = np.concatenate([ds_norm(a.image).reshape(7, -1) for a in arrays], axis=1)
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(1), 1, atol=1e-3)
    assert (
        Normalizer.from_dict(ds_norm.to_dict()).stats.mean.tolist() == ds_norm.stats.mean.tolist()
    )
    with pytest.raises(ValueError, match="statistics"):
        Normalizer("dataset")(arrays[0].image)
    with pytest.raises(ValueError, match="normalization"):
        Normalizer("minmax")


def test_split_is_deterministic_and_respects_val_ids():
    ids = [str(i) for i in range(10)]
    assert split_tiles(ids, 0.2, seed=3) == split_tiles(ids, 0.2, seed=3)
    train, val = split_tiles(ids, 0.2, seed=3)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val, key=int) == ids
    assert split_tiles(ids, val_ids=["4"])[1] == ["4"]
    with pytest.raises(ValueError, match="99"):
        split_tiles(ids, val_ids=["99"])


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
    from glacier_seg.data import mixup_batch

    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 8, 8)
    masks = torch.randint(0, 4, (3, 8, 8))
    mixed, ma, mb, lam = mixup_batch(images, masks, alpha=0.4, generator=g)
    assert 0.0 <= lam <= 1.0 and torch.equal(ma, masks)
    perm = [int(torch.nonzero((masks == m).all(-1).all(-1))[0]) for m in mb]
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[perm], atol=1e-6)


def test_band_shape_mismatch_is_named(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    path = root / BAND_FOLDERS[2] / "B4_B4_masked_11.tif"
    r = read_raster(path)
    write_raster(path, r.array[:, :32, :32], crs=r.crs, transform=r.transform)
    with pytest.raises(ValueError, match="B4_B4_masked_11.tif"):
        load_tiles(find_tiles(root))
