"""Dataset tests on fake SEN12MS-CR GeoTIFFs (tests/data/sen12mscr.py): values, augmentation,
sampling, and bad inputs that must name the file and the list row."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from cloud_removal.config import CRDataConfig
from cloud_removal.data import (
    AugmentConfig,
    CloudRemovalDataError,
    CloudRemovalFileNotFoundError,
    HardExampleSampler,
    SEN12MSCRDataset,
    crop_for_epoch,
    parse_progressive,
    read_data_list,
)
from eo_common.raster import write_raster


def test_reader_values_match_rasterio_and_glfcr_convention(fake_root):
    ds = SEN12MSCRDataset(fake_root, split="val", load_size=48, crop_size=32)
    assert len(ds) == 2
    item = ds[0]
    assert item["optical"].shape == (13, 32, 32) and item["sar"].shape == (2, 32, 32)
    assert item["target"].shape == (13, 32, 32) and item["cloud_mask"].shape == (1, 32, 32)
    row = ds.rows[0]
    s1_path, clear_path, cloudy_path = row.paths(fake_root)
    with rasterio.open(s1_path) as src:
        s1 = src.read().astype(np.float64)[:, 8:40, 8:40]  # centre crop 32 of 48
    vv = (np.clip(s1[0], -25, 0) + 25) / 25
    vh = (np.clip(s1[1], -32.5, 0) + 32.5) / 32.5
    np.testing.assert_allclose(item["sar"].numpy(), np.stack([vv, vh]), atol=1e-6)
    with rasterio.open(cloudy_path) as src:
        cloudy = src.read().astype(np.float64)[:, 8:40, 8:40]
    np.testing.assert_allclose(
        item["optical"].numpy(), np.clip(cloudy, 0, 10000) / 10000, atol=1e-6
    )
    with rasterio.open(clear_path) as src:
        clear = src.read().astype(np.float64)[:, 8:40, 8:40]
    mask = np.clip(np.abs(cloudy - clear).mean(0) / 10000 / 0.1, 0, 1)
    np.testing.assert_allclose(item["cloud_mask"].numpy()[0], mask, atol=1e-5)


def test_other_conventions(fake_root):
    glf = SEN12MSCRDataset(fake_root, split="test", load_size=48, crop_size=32)[0]
    dsen = SEN12MSCRDataset(
        fake_root, split="test", load_size=48, crop_size=32, convention="dsen2-cr"
    )[0]
    torch.testing.assert_close(dsen["optical"], glf["optical"] * 5)
    torch.testing.assert_close(dsen["sar"], glf["sar"] * 2)


def test_training_crops_are_random_and_in_range(fake_root):
    ds = SEN12MSCRDataset(fake_root, split="train", load_size=48, crop_size=16)
    torch.manual_seed(0)
    a, b = ds[0]["optical"], ds[0]["optical"]
    assert a.shape == (13, 16, 16)
    assert not torch.equal(a, b)  # two random crops of the same tile


def test_augmentation_is_identical_for_all_inputs(fake_root):
    """Flips/rotations move optical, target and mask together: the mask recomputed from the
    augmented optical and target equals the returned mask."""
    aug = AugmentConfig(brightness=0.0, contrast=0.0, noise_std=0.0)
    ds = SEN12MSCRDataset(fake_root, split="train", load_size=48, crop_size=32, augment=aug)
    torch.manual_seed(3)
    for i in range(4):
        item = ds[i]
        recomputed = ((item["optical"] - item["target"]).abs().mean(0, keepdim=True) / 0.1).clamp(
            0, 1
        )
        torch.testing.assert_close(item["cloud_mask"], recomputed, atol=1e-5, rtol=0)


def test_photometric_jitter_keeps_the_mapping(fake_root):
    """Brightness/contrast hit input and target alike, so their difference only scales by contrast."""
    aug = AugmentConfig(flips=False, rot90=False, brightness=0.05, contrast=0.2, noise_std=0.0)
    plain = SEN12MSCRDataset(fake_root, split="train", load_size=48, crop_size=0)
    jit = SEN12MSCRDataset(fake_root, split="train", load_size=48, crop_size=0, augment=aug)
    torch.manual_seed(0)
    p, j = plain[1], jit[1]
    d0, d1 = p["optical"] - p["target"], j["optical"] - j["target"]
    ratio = (d1.flatten() @ d0.flatten()) / (d0.flatten() @ d0.flatten())
    torch.testing.assert_close(d1, ratio * d0, atol=1e-5, rtol=1e-4)
    assert 0.8 - 1e-6 <= float(ratio) <= 1.2 + 1e-6


def test_synthetic_clouds_replace_the_input(fake_root):
    aug = AugmentConfig(
        flips=False, rot90=False, brightness=0, contrast=0, noise_std=0, synthetic_cloud_prob=1.0
    )
    plain = SEN12MSCRDataset(fake_root, split="train", load_size=48, crop_size=0)
    syn = SEN12MSCRDataset(fake_root, split="train", load_size=48, crop_size=0, augment=aug)
    torch.manual_seed(0)
    s, p = syn[0], plain[0]
    torch.testing.assert_close(s["target"], p["target"])
    assert not torch.allclose(s["optical"], p["optical"])
    assert float(s["optical"].mean()) > float(s["target"].mean())  # clouds brighten


def test_bad_csv_names_file_and_row(copied_root):
    csv_path = copied_root / "data.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:2] + ["1,a,b,c"] + lines[2:]) + "\n")
    with pytest.raises(CloudRemovalDataError, match=rf"{csv_path} row 3: expected 5 columns"):
        read_data_list(csv_path)
    csv_path.write_text("\n".join(["7" + lines[0][1:]] + lines[1:]) + "\n")
    with pytest.raises(CloudRemovalDataError, match=r"row 1: split must be 1 \(train\)"):
        read_data_list(csv_path)
    with pytest.raises(CloudRemovalFileNotFoundError, match="nope.csv: data list not found"):
        read_data_list(copied_root / "nope.csv")


def test_missing_file_is_found_when_the_dataset_is_built(copied_root):
    """Every row is checked when the dataset is built (before any model exists)."""
    ds = SEN12MSCRDataset(copied_root, split="val", load_size=48, crop_size=32)
    row = ds.rows[1]
    s1_path = ds.samples[1].s1
    s1_path.unlink()
    with pytest.raises(
        CloudRemovalFileNotFoundError, match=rf"data.csv row {row.line}: missing .*{s1_path.name}$"
    ) as err:
        SEN12MSCRDataset(copied_root, split="val", load_size=48, crop_size=32)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(CloudRemovalFileNotFoundError, match=rf"row {row.line}: .*{s1_path.name}"):
        ds[1]  # a file that vanished after the check: read errors name the row too


def test_wrong_band_count_grid_mismatch_and_all_nan_band(copied_root):
    ds = SEN12MSCRDataset(copied_root, split="test", load_size=0, crop_size=32)
    sample = ds.samples[0]
    line = sample.row.line
    t = Affine(10, 0, 300000 + 2560 * 6, 0, -10, 5000000)
    write_raster(sample.s2_clear, np.zeros((12, 48, 48), np.uint16), crs="EPSG:32650", transform=t)
    with pytest.raises(
        CloudRemovalDataError, match=rf"row {line}: .*expected 13 band\(s\), found 12"
    ):
        ds[0]
    write_raster(sample.s2_clear, np.zeros((13, 40, 40), np.uint16), crs="EPSG:32650", transform=t)
    with pytest.raises(CloudRemovalDataError, match=r"different grids \(size 40x40 vs 48x48"):
        ds[0]
    write_raster(sample.s2_clear, np.zeros((13, 48, 48), np.uint16), crs="EPSG:32633", transform=t)
    with pytest.raises(
        CloudRemovalDataError,
        match=rf"row {line}: .*{sample.s2_clear.name} and the S1 file .*{sample.s1.name} are on "
        r"different grids \(CRS EPSG:32633 vs EPSG:32650\)",
    ):
        ds[0]
    write_raster(
        sample.s2_clear,
        np.zeros((13, 48, 48), np.uint16),
        crs="EPSG:32650",
        transform=t @ Affine.translation(3, 0),
    )
    with pytest.raises(CloudRemovalDataError, match=r"different grids \(transform"):
        ds[0]
    s1 = np.full((2, 48, 48), -12.0, np.float32)
    s1[1] = np.nan
    write_raster(sample.s1, s1, crs="EPSG:32650", transform=t)
    with pytest.raises(
        CloudRemovalDataError,
        match=rf"row {line}: .*{sample.s1.name}: band 2 \(VH\) has no finite value \(all NaN/inf\)",
    ):
        ds[0]


def test_missing_file_in_a_dataloader_worker_is_one_line(copied_root):
    """A file that fails inside a DataLoader worker: the error the main process gets names the list
    row and the file, and the command layer prints it as one line."""
    from eo_common.errors import format_user_error
    from torch.utils.data import DataLoader

    ds = SEN12MSCRDataset(copied_root, split="train", load_size=48, crop_size=16)
    bad = ds.samples[3].s2_cloudy
    bad.write_bytes(b"II*\x00truncated")
    with pytest.raises(CloudRemovalDataError) as err:
        for _ in DataLoader(ds, batch_size=2, num_workers=2):
            pass
    line = format_user_error("cr-train", err.value)
    assert "\n" not in line and "Traceback" not in line
    assert (
        f"row {ds.rows[3].line}:" in line and bad.name in line and "not a readable raster" in line
    )


def test_load_size_larger_than_tile_is_an_error(fake_root):
    ds = SEN12MSCRDataset(fake_root, split="val", load_size=256, crop_size=128)
    with pytest.raises(CloudRemovalDataError, match=r"is 48x48, smaller than --load_size 256"):
        ds[0]


def test_hard_example_sampler_oversamples_worst():
    s = HardExampleSampler(8, factor=5.0, fraction=0.25, seed=1)
    uniform = list(s)
    assert len(uniform) == 8 and all(0 <= i < 8 for i in uniform)
    s.update({i: 30.0 + i for i in range(8)})  # samples 0 and 1 have the lowest PSNR
    assert s.weights.tolist() == [5.0, 5.0, 1, 1, 1, 1, 1, 1]
    draws = []
    for _ in range(200):
        draws += list(s)
    frac = np.mean(np.isin(draws, [0, 1]))
    assert abs(frac - 10 / 16) < 0.03  # expected share 2*5 / (2*5 + 6)


def test_progressive_schedule():
    sched = parse_progressive("128:30,192:30,256:30")
    assert sched == [(128, 30), (192, 30), (256, 30)]
    assert [crop_for_epoch(sched, e, 64) for e in (0, 29, 30, 59, 60, 200)] == [
        128,
        128,
        192,
        192,
        256,
        256,
    ]
    assert crop_for_epoch([], 5, 64) == 64
    with pytest.raises(ValueError, match="expected .size:epochs"):
        parse_progressive("128-30")


def test_datamodule_follows_progressive_crops_per_epoch(fake_root):
    from types import SimpleNamespace

    from cloud_removal.data import CloudRemovalDataModule

    cfg = CRDataConfig(
        root=fake_root,
        load_size=48,
        crop_size=48,
        batch_size=2,
        progressive="16:1,32:1",
        hard_example_mining=True,
    )
    dm = CloudRemovalDataModule(cfg)
    dm.check_inputs()
    sizes, draws = [], []
    for epoch in (0, 1, 5):
        dm.trainer = SimpleNamespace(current_epoch=epoch)
        loader = dm.train_dataloader()
        draws.append(list(loader.sampler))
        sizes.append(next(iter(loader))["optical"].shape[-1])
    assert sizes == [16, 32, 32]
    assert next(iter(dm.val_dataloader()))["optical"].shape[-1] == 48
    # the sampler's draws depend on the epoch only (so a resumed run draws as an uninterrupted one)
    dm.trainer = SimpleNamespace(current_epoch=1)
    assert list(dm.train_dataloader().sampler) == draws[1]
