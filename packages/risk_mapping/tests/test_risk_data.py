"""Prepare stage: tiling coverage, block split without leakage, oversampling, SMOTE labels, dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from eo_common.raster import write_raster
from risk_mapping.config import AugmentationConfig
from risk_mapping.data import TileDataset
from risk_mapping.oversample import (
    class_fractions,
    oversample_by_duplication,
    rich_mask,
    smote_tiles,
    synthetic_labels_from_onehot,
)
from risk_mapping.prepare import LabelError, prepare_dataset
from risk_mapping.tiles import TileSet, assign_blocks, block_layout, layout_tiles


def _coverage(height, width, windows):
    count = np.zeros((height, width), np.int32)
    for w in windows:
        count[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    return count


@pytest.mark.parametrize(
    ("height", "width", "block", "tile", "overlap"),
    [(128, 128, 48, 32, 8), (100, 163, 64, 32, 0), (77, 90, 40, 32, 16), (64, 64, 256, 64, 16)],
)
def test_blocks_partition_and_tiles_cover_every_pixel(height, width, block, tile, overlap):
    blocks = block_layout(height, width, block, tile)
    assert (_coverage(height, width, blocks) == 1).all()  # blocks partition the raster
    assert all(b.height >= min(tile, height) and b.width >= min(tile, width) for b in blocks)
    tiles = layout_tiles(blocks, tile, overlap)
    assert (_coverage(height, width, [w for _, w in tiles]) >= 1).all()  # every pixel in a tile
    for b, w in tiles:  # every tile inside its block
        blk = blocks[b]
        assert blk.row_off <= w.row_off and w.row_off + w.height <= blk.row_off + blk.height
        assert blk.col_off <= w.col_off and w.col_off + w.width <= blk.col_off + blk.width


def test_block_split_has_no_leakage():
    blocks = block_layout(200, 200, 48, 32)
    names = assign_blocks(len(blocks), 0.2, 0.2, seed=3)
    owner = np.full((200, 200), -1)
    codes = {"train": 0, "val": 1, "test": 2}
    for b, w in layout_tiles(blocks, 32, 16):
        region = owner[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
        code = codes[names[b]]
        assert np.isin(region, [-1, code]).all(), "a pixel belongs to tiles of two splits"
        region[...] = code
    counts = {s: names.count(s) for s in codes}
    assert counts["val"] == round(0.2 * len(blocks)) and counts["test"] == round(0.2 * len(blocks))
    assert assign_blocks(len(blocks), 0.2, 0.2, seed=3) == names  # seeded
    assert sorted(assign_blocks(3, 0.01, 0.01, seed=0)) == ["test", "train", "val"]


def _tiles(labels: np.ndarray) -> TileSet:
    n = len(labels)
    x = np.random.default_rng(0).standard_normal((n, 2, *labels.shape[1:])).astype(np.float32)
    return TileSet(
        x, labels.astype(np.uint8), [f"t{i}" for i in range(n)], np.zeros((n, 4), np.int64)
    )


def test_oversampling_reaches_target_with_fewest_copies():
    rng = np.random.default_rng(1)
    labels = rng.choice([0, 1, 2], size=(30, 8, 8), p=[0.75, 0.1, 0.15])
    labels[:4, :4] = 1  # four medium-rich tiles
    labels[5, 0, :] = 255
    tiles = _tiles(labels)
    target = 0.3
    out, info = oversample_by_duplication(tiles, cls=1, target_fraction=target, threshold=0.3)
    frac = class_fractions(out.y)["fractions"][1]
    assert info["reached"] and frac >= target and info["fraction_after"] == pytest.approx(frac)
    # one copy fewer would not reach the target
    fewer = class_fractions(out.y[:-1])["fractions"][1]
    assert fewer < target
    # only rich tiles were copied, with unique ids
    copies = out.y[len(tiles) :]
    assert rich_mask(copies, 1, 0.3).all()
    assert len(set(out.ids)) == len(out.ids) and all("_dup" in i for i in out.ids[len(tiles) :])
    # already above the target: nothing happens
    same, info2 = oversample_by_duplication(tiles, cls=1, target_fraction=0.01, threshold=0.3)
    assert len(same) == len(tiles) and info2["n_duplicated"] == 0


def test_smote_labels_valid_and_taken_from_a_parent():
    a = np.zeros((1, 8, 8), np.uint8)
    a[0, :, :5] = 1
    a[0, 0, 0] = 255
    b = np.full((1, 8, 8), 1, np.uint8)
    b[0, :, 6:] = 2
    others = np.zeros((3, 8, 8), np.uint8)
    tiles = _tiles(np.concatenate([a, b, others]))
    result = smote_tiles(tiles, cls=1, threshold=0.3, k_neighbors=1, ratio=3.0, seed=0)
    synth = result.tiles
    assert len(synth) == 6 and result.k_used == 1
    assert "Generated 6 synthetic tiles via SMOTE" in result.message
    assert set(np.unique(synth.y)) <= {0, 1, 2, 255}
    assert all(i.startswith("smote_") for i in synth.ids) and len(set(synth.ids)) == 6
    xa, xb = tiles.x[0], tiles.x[1]
    for x, y in zip(synth.x, synth.y):
        # the image is a + lam (b - a) (or b + lam (a - b)); recover lam from the image
        lam = float(((x - xa) * (xb - xa)).sum() / ((xb - xa) ** 2).sum())
        assert np.allclose(x, xa + lam * (xb - xa), atol=1e-4)
        assert y[0, 0] == 255  # ignore in a parent stays ignore
        nearer = a[0] if lam < 0.5 else b[0]
        keep = np.ones_like(y, bool)
        keep[0, 0] = False
        assert (y[keep] == nearer[keep]).all()


@pytest.mark.parametrize(
    ("too_few", "expect_k", "expect_n"), [("lower_k", 1, 2), ("skip", None, 0)]
)
def test_smote_with_too_few_rich_tiles(too_few, expect_k, expect_n):
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[:2] = 1  # two rich tiles, k=5 needs six
    result = smote_tiles(
        _tiles(labels), cls=1, threshold=0.3, k_neighbors=5, ratio=1.0, too_few=too_few
    )
    assert result.k_used == expect_k and len(result.tiles) == expect_n
    if too_few == "skip":
        assert "smote_k_neighbors + 1 = 6" in result.message and "skipped" in result.message


def test_smote_too_few_error_names_the_field():
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[:2] = 1
    with pytest.raises(ValueError, match="dataset.smote_k_neighbors"):
        smote_tiles(_tiles(labels), cls=1, threshold=0.3, k_neighbors=5, ratio=1.0, too_few="error")


def test_synthetic_label_rule_hand_case():
    oh = np.zeros((1, 4, 1, 4), np.float32)
    oh[0, :, 0, 0] = [0.5, 0.5, 0, 0]  # tie -> lower class
    oh[0, :, 0, 1] = [0, 0.4, 0.6, 0]
    oh[0, :, 0, 2] = [0, 0.9, 0, 0.1]  # any ignore weight -> ignore
    oh[0, :, 0, 3] = [1, 0, 0, 0]
    assert synthetic_labels_from_onehot(oh).tolist() == [[[0, 2, 255, 0]]]


def test_smote_keeps_categorical_bands_categorical():
    """A categorical band (standardised land-cover codes) of a synthetic tile holds only values of
    its parents, taken from the nearer parent, like the labels."""
    rng = np.random.default_rng(0)
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[:4, :, :4] = 1  # four rich tiles
    tiles = _tiles(labels)
    codes = np.array([-1.3, -0.2, 0.4, 2.1], np.float32)
    tiles.x[:, 1] = codes[rng.integers(0, 4, (6, 8, 8))]
    result = smote_tiles(
        tiles, cls=1, threshold=0.3, k_neighbors=2, ratio=2.0, seed=0, categorical_bands=[1]
    )
    synth = result.tiles
    assert len(synth) == 8
    assert set(np.unique(synth.x[:, 1])) <= set(codes.tolist())
    plain = smote_tiles(tiles, cls=1, threshold=0.3, k_neighbors=2, ratio=2.0, seed=0)
    assert not set(np.unique(plain.tiles.x[:, 1])) <= set(codes.tolist())  # interpolated
    rich = tiles.x[:4, 1].reshape(4, -1)
    for x in synth.x:
        # every pixel of the categorical band comes from a rich parent tile at that position
        assert np.isin(x[1].ravel(), rich).all()
        assert (np.any(rich == x[1].ravel(), axis=0)).all()


def test_prepare_dataset_end_to_end(config_factory, tmp_path, helpers):
    cfg = helpers.build_config(config_factory(dataset={"oversample_target_fraction": 0.4}))
    out = tmp_path / "prepare"
    summary = prepare_dataset(cfg, out)
    assert json.loads((out / "dataset_summary.json").read_text()) == json.loads(json.dumps(summary))
    splits = {s: TileSet.load(out / f"tiles_{s}.npz") for s in ("train", "val", "test")}
    for name, ts in splits.items():
        assert summary[name]["n_tiles"] == sum(
            not i.startswith("smote_") and "_dup" not in i for i in ts.ids
        )
        assert ts.x.dtype == np.float32 and np.isfinite(ts.x).all()
        assert set(np.unique(ts.y)) <= {0, 1, 2, 255}
    train = splits["train"]
    assert summary["train"]["n_synthetic"] == sum(i.startswith("smote_") for i in train.ids) > 0
    assert summary["train"]["duplication"]["fraction_after"] >= 0.4
    assert len(set(train.ids)) == len(train.ids)
    # split mask agrees with the tile windows: no tile of one split touches another split's block
    from eo_common.raster import read_class_names

    assert read_class_names(out / "split_mask.tif") == {0: "train", 1: "val", 2: "test"}
    with rasterio.open(out / "split_mask.tif") as src:
        mask = src.read(1)
        with rasterio.open(cfg.dataset.labels) as lab:
            assert src.crs == lab.crs and src.transform == lab.transform
    for code, name in enumerate(("train", "val", "test")):
        for r, c, h, w in splits[name].windows:
            if r < 0:
                continue
            assert (mask[r : r + h, c : c + w] == code).all()
    # band statistics come from train blocks only and standardise them to mean 0
    originals = np.array([not (i.startswith("smote_") or "_dup" in i) for i in train.ids])
    assert abs(float(train.x[originals].mean())) < 0.35


def test_prepare_rejects_bad_label_values(config_factory, tmp_path, helpers):
    raw = config_factory()
    with rasterio.open(raw["dataset"]["labels"]) as src:
        labels, crs, transform = src.read(1), src.crs, src.transform
    labels = labels.copy()
    labels[10, 10] = 7
    bad = tmp_path / "bad_labels.tif"
    write_raster(bad, labels, crs=crs, transform=transform, nodata=255)
    raw["dataset"]["labels"] = str(bad)
    with pytest.raises(LabelError, match="bad_labels.tif"):
        prepare_dataset(helpers.build_config(raw), tmp_path / "prep")


def test_tile_dataset_augmentation_keeps_image_and_label_aligned():
    y = np.random.default_rng(0).integers(0, 3, (4, 16, 16)).astype(np.uint8)
    x = np.stack(
        [y.astype(np.float32), np.ones_like(y, np.float32) * 5.0], axis=1
    )  # band 0 encodes y
    ds = TileDataset(
        TileSet(x, y, ["a", "b", "c", "d"], np.zeros((4, 4), np.int64)),
        AugmentationConfig(brightness=0.5, contrast=0.5, saturation=0.5),
        optical_bands=[1],
    )
    torch.manual_seed(0)
    changed = 0
    for i in range(len(ds)):
        for _ in range(4):
            xi, yi = ds[i]
            assert xi.shape == (2, 16, 16) and yi.dtype == torch.int64
            assert torch.equal(xi[0], yi.float())  # non-optical band untouched, geometry shared
            changed += int(not torch.allclose(xi[1], torch.full_like(xi[1], 5.0)))
    assert changed > 0  # the optical band got jitter
    plain = TileDataset(ds.tiles, None)
    assert torch.equal(plain[0][0], torch.from_numpy(x[0]))


def test_list_of_single_band_rasters_checked_or_aligned(risk_stack, tmp_path, helpers):
    from affine import Affine
    from eo_common.errors import InputError
    from risk_mapping.sources import build_inputs

    stack, labels = risk_stack
    with rasterio.open(stack) as src:
        data, crs, transform, nodata = src.read(), src.crs, src.transform, src.nodata
    paths = []
    for b in range(2):
        paths.append(
            write_raster(
                tmp_path / f"band{b}.tif", data[b], crs=crs, transform=transform, nodata=nodata
            )
        )
    coarse = data[2, ::2, ::2]
    coarse_transform = transform @ Affine.scale(2)
    paths.append(
        write_raster(
            tmp_path / "coarse.tif", coarse, crs=crs, transform=coarse_transform, nodata=nodata
        )
    )

    def cfg(files, **dataset):
        raw = helpers.make_raw_config(files, labels, tmp_path / "run", dataset=dataset)
        return helpers.build_config(raw)

    with pytest.raises(InputError, match="coarse.tif"):
        build_inputs(cfg(paths), tmp_path / "out")
    out = build_inputs(cfg(paths, align_rasters=True, resampling="nearest"), tmp_path / "out")
    with rasterio.open(out.stack) as src, rasterio.open(labels) as lab:
        assert src.count == 3 and src.transform == lab.transform and src.crs == lab.crs
        aligned = src.read()
    valid = data[0] != nodata
    assert np.array_equal(aligned[0][valid], data[0][valid])
    assert np.isnan(aligned[0][~valid]).all()  # the file's nodata is NaN in the built stack
    fine = np.where(coarse == nodata, np.nan, coarse)
    assert np.array_equal(aligned[2][::2, ::2], fine, equal_nan=True)  # nearest: each coarse
    # pixel fills its 2 x 2
    same = build_inputs(cfg(paths[:2]), tmp_path / "out2")
    with rasterio.open(same.stack) as src:
        two = src.read()
    assert np.array_equal(two, np.where(data[:2] == nodata, np.nan, data[:2]), equal_nan=True)
