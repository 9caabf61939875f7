"""Layouts as people have them: pairing by the whole tile key, folder names in any case, PNG and
binary masks, band files that do not belong together, nodata (NaN, inf) carried as a validity mask."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from eo_common.errors import InputError
from glacier_fake_data import make_organisers_train, make_participants_train, make_platform_test
from glacier_seg.data import Normalizer, load_tiles, split_tiles
from glacier_seg.layout import (
    IGNORE_INDEX,
    LabelValueError,
    PairingError,
    check_tile_files,
    classes_to_mask_values,
    find_tiles,
    mask_values_to_classes,
    read_bands,
    read_label,
    read_mask_values,
    scan_layout,
    tile_id_from_name,
)
from glacier_seg.texture import GLCMConfig


def _copy(root, tmp_path):
    dest = tmp_path / "gh"
    shutil.copytree(root, dest)
    return dest


def _rewrite(path, array, **changes):
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(count=array.shape[0], dtype=array.dtype.name, **changes)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def test_participants_layout_pairs_by_the_whole_key(tmp_path):
    """Train/Band1..5 + lower-case label/, keys 02_07 and 07_07: the first release refused this
    ("missing folder Label", "tile id(s) 7 occur in several files")."""
    train = make_participants_train(tmp_path)
    tiles = find_tiles(train)
    assert [t.key for t in tiles] == ["02_07", "02_13", "07_07", "13_02"]
    assert [t.tile_id for t in tiles] == ["2_7", "2_13", "7_7", "13_2"]
    for t in tiles:
        names = [p.name for p in (*t.band_paths, t.label_path)]
        assert all(n.rsplit(".", 1)[0].endswith(t.key) for n in names), names
    assert tiles[0].label_path.parent.name == "label"
    # the parent folder is not a layout, and the error says where the layout is
    with pytest.raises(PairingError, match=r"found Train/ inside"):
        find_tiles(tmp_path)


def test_folder_names_in_any_case_and_ambiguous_folders(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    (root / "Label").rename(root / "LABELS")
    (root / "Band3").rename(root / "band3")
    assert [t.tile_id for t in find_tiles(root)] == ["2", "5", "8", "11"]
    shutil.copytree(root / "LABELS", root / "label")
    with pytest.raises(PairingError, match="ambiguous folders LABELS, label"):
        find_tiles(root)


def test_pairs_by_key_not_by_sorted_order(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    prefixes = {"2": "z", "5": "y", "8": "x", "11": "a"}  # sorted order no longer tile order
    for f in sorted((root / "Label").iterdir()):
        tid = tile_id_from_name(f.name)
        f.rename(f.with_name(f"{prefixes[tid]}_mask_{int(tid):03d}.tif"))
    tiles = find_tiles(root)
    assert [t.tile_id for t in tiles] == ["2", "5", "8", "11"]
    for t in tiles:
        original = glacier_root / "Label" / f"Y_output_resized_{t.key}.tif"
        assert np.array_equal(read_label(t.label_path), read_label(original))


def test_missing_files_duplicates_and_missing_folders_are_named(glacier_root, tmp_path):
    root = _copy(glacier_root, tmp_path)
    (root / "Label" / "Y_output_resized_08.tif").unlink()
    (root / "Band3" / "B4_B4_masked_05.tif").unlink()
    with pytest.raises(PairingError) as err:
        find_tiles(root)
    assert "tile 8: no file in Label" in str(err.value) and "tile 5: no file in Band3" in str(
        err.value
    )
    assert scan_layout(root).paired_ids == ["2", "11"]
    assert scan_layout(root, require_labels=False).paired_ids == ["2", "8", "11"]
    shutil.copy(root / "Band1" / "B2_B2_masked_02.tif", root / "Band1" / "other_2.tif")
    with pytest.raises(PairingError, match="same tile key 2"):
        find_tiles(root)
    shutil.rmtree(root / "Band5")
    with pytest.raises(PairingError, match="missing folder"):
        find_tiles(root)
    with pytest.raises(InputError, match="not found"):
        find_tiles(tmp_path / "nowhere")


def test_platform_test_layout_has_one_name_per_tile(tmp_path):
    root = make_platform_test(tmp_path, n=3, size=32)
    tiles = find_tiles(root, require_labels=False)
    assert [(t.key, t.band1_name) for t in tiles] == [
        ("001", "img001.tif"),
        ("002", "img002.tif"),
        ("003", "img003.tif"),
    ]


def test_png_masks_read_like_geotiff_masks(tmp_path):
    tif = find_tiles(make_participants_train(tmp_path / "a", size=32))
    png = find_tiles(make_participants_train(tmp_path / "b", size=32, mask_format="png"))
    assert all(t.label_path.suffix == ".png" for t in png)
    for a, b in zip(tif, png):
        assert np.array_equal(read_label(a.label_path), read_label(b.label_path))
        check_tile_files(b)  # a PNG mask has no georeference: only its size is checked


def test_binary_masks_are_refused_unless_asked_for(tmp_path):
    """0/255 glacier masks were read as background/lake by the first release."""
    from glacier_seg.config import GlacierData, GLCMOptions
    from glacier_seg.data import GlacierDataModule

    train = make_participants_train(tmp_path, size=32, binary=True)
    dm = GlacierDataModule(GlacierData(root=train, val_ids="02_07"), GLCMOptions())
    with pytest.raises(LabelValueError, match="only 0 and 255: binary masks"):
        dm.check_inputs()
    dm = GlacierDataModule(
        GlacierData(root=train, val_ids="02_07", binary_masks="glacier", include_glcm=False),
        GLCMOptions(),
    )
    dm.load()
    raw = read_mask_values(find_tiles(train)[1].label_path)
    assert np.array_equal(dm.train_tiles[0].mask, (raw == 255).astype(np.uint8))


def test_mask_value_mapping():
    stored = np.array([[0, 85], [170, 255]], dtype=np.uint8)
    classes = mask_values_to_classes(stored)
    assert classes.tolist() == [[0, 1], [2, 3]]
    assert classes_to_mask_values(classes).tolist() == stored.tolist()
    assert mask_values_to_classes(np.array([[0, 3]])).tolist() == [[0, 3]]  # already classes
    with pytest.raises(LabelValueError, match=r"lbl\.tif.*\[7\]"):
        mask_values_to_classes(np.array([[0, 85, 7]]), "lbl.tif")
    with pytest.raises(ValueError):
        classes_to_mask_values(np.array([4]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("extra_band", "holds 2 bands"),
        ("crs", "CRS EPSG:32645 differs"),
        ("transform", "transform .* differs"),
        ("size", "size 32x32 differs"),
    ],
)
def test_band_files_that_do_not_belong_together_are_named(glacier_root, tmp_path, change, message):
    """The first release read band 1 of a multi-band file and ignored CRS and transform."""
    root = _copy(glacier_root, tmp_path)
    path = root / "Band3" / "B4_B4_masked_11.tif"
    with rasterio.open(path) as src:
        band = src.read()
        transform = src.transform
    if change == "extra_band":
        _rewrite(path, np.concatenate([band, band]))
    elif change == "crs":
        _rewrite(path, band, crs="EPSG:32645")
    elif change == "transform":
        _rewrite(path, band, transform=transform @ Affine.translation(3, 0))
    else:
        _rewrite(path, band[:, :32, :32], height=32, width=32)
    tile = find_tiles(root)[-1]
    with pytest.raises(InputError, match=message) as err:
        check_tile_files(tile)
    assert str(err.value).startswith(str(path))


def test_nan_inf_and_nodata_are_invalid_pixels_never_network_inputs(tmp_path, glcm_cache):
    root = make_organisers_train(tmp_path, n=2, size=32, nodata="nan")
    tile = find_tiles(root)[0]
    bands, valid, _, _ = read_bands(tile)
    with rasterio.open(tile.band_paths[1]) as src:
        raw = src.read(1)
    assert np.isinf(raw).any() and np.isnan(raw).any()
    assert np.array_equal(valid, np.isfinite(bands).all(0)) and 0.1 < (~valid).mean() < 0.5
    (arrays,) = load_tiles([tile], GLCMConfig(window=5, levels=16), glcm_cache)
    assert arrays.image.shape == (7, 32, 32)
    assert np.isfinite(arrays.image[:, valid]).all() and np.isnan(arrays.image[:, ~valid]).all()
    assert (arrays.mask[~valid] == IGNORE_INDEX).all() and (arrays.mask[valid] < 4).all()
    stats = Normalizer("dataset").fit([arrays.image])
    np.testing.assert_allclose(stats.stats.mean, arrays.image[:, valid].mean(1), rtol=1e-6)
    for mode in ("dataset", "percentile"):
        out = (stats if mode == "dataset" else Normalizer(mode))(arrays.image)
        assert np.isfinite(out).all() and (out[:, ~valid] == 0).all()
    # a uint16 band with a nodata value: those pixels are invalid as well
    path = tile.band_paths[0]
    with rasterio.open(path) as src:
        band = np.nan_to_num(src.read(), nan=0).astype(np.uint16)
    _rewrite(path, band, nodata=0)
    assert np.array_equal(read_bands(tile)[1], valid)


def test_split_is_deterministic_and_val_keys_ignore_leading_zeros():
    ids = [str(i) for i in range(10)]
    assert split_tiles(ids, 0.2, seed=3) == split_tiles(ids, 0.2, seed=3)
    train, val = split_tiles(ids, 0.2, seed=3)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val, key=int) == ids
    assert split_tiles(ids, val_ids=["04"])[1] == ["4"]
    assert split_tiles(["2_7", "7_7"], val_ids=["02_07"]) == (["7_7"], ["2_7"])
    with pytest.raises(InputError, match="99"):
        split_tiles(ids, val_ids=["99"])
