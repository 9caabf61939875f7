"""Inputs as researchers have them: per-file kinds, resampling and nodata, other grids and CRSs,
labels on another grid, +-inf, Landslide4Sense HDF5 patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from eo_common.errors import InputError
from eo_common.raster import write_raster
from risk_mapping.sources import build_inputs, check_inputs

CODES = (10, 20, 30, 40, 50, 60, 80, 90)


def _mixed_config(helpers, mixed, out, **dataset):
    base = {
        "kinds": ["continuous", "continuous", "categorical"],
        "align_rasters": True,
        "reproject": True,
        "resampling": "bilinear",  # the release's example setting, now for continuous rasters only
        "optical_bands": [],
    }
    base.update(dataset)
    raw = helpers.make_raw_config(
        [mixed["dem"], mixed["slope"], mixed["landcover"]],
        mixed["labels"],
        out,
        dataset=base,
        inference={"crf": {"image_bands": [0, 1, 2]}},
    )
    return helpers.build_config(raw)


def test_categorical_raster_never_gets_fractional_codes(mixed_sources, tmp_path, helpers):
    """Regression: the release resampled every raster with dataset.resampling (bilinear), so a 10 m
    land-cover map on a 30 m grid held codes that do not exist (10.12, 10.55, ...)."""
    cfg = _mixed_config(helpers, mixed_sources, tmp_path / "run")
    assert check_inputs(cfg, encoder=False) == []
    inputs = build_inputs(cfg, tmp_path / "prep")
    with rasterio.open(inputs.stack) as src:
        landcover = src.read(3)
        assert src.descriptions[2] == "landcover" and inputs.band_kinds[2] == "categorical"
    valid = landcover[np.isfinite(landcover)]
    assert valid.size > 0.9 * landcover.size
    assert set(np.unique(valid)) <= set(CODES)  # zero invalid land-cover codes
    # the control: the same raster declared continuous is interpolated (what the release did)
    control = _mixed_config(helpers, mixed_sources, tmp_path / "run2", kinds=["continuous"] * 3)
    with rasterio.open(build_inputs(control, tmp_path / "prep2").stack) as src:
        interpolated = src.read(3)
    interpolated = interpolated[np.isfinite(interpolated)]
    assert np.mean(~np.isin(interpolated, CODES)) > 0.1


def test_per_file_nodata_and_labels_on_another_grid(mixed_sources, tmp_path, helpers):
    """A DEM with -32768 and a slope with -9999 stack together (the release refused: "files
    disagree on nodata"); 10 m labels are put on the 30 m grid with mode, never interpolated."""
    m = mixed_sources
    cfg = _mixed_config(helpers, m, tmp_path / "run")
    inputs = build_inputs(cfg, tmp_path / "prep")
    with rasterio.open(m["dem"]) as dem_src, rasterio.open(m["slope"]) as slope_src:
        dem, slope = dem_src.read(1), slope_src.read(1)
    with rasterio.open(inputs.stack) as src:
        stack = src.read()
        assert np.isnan(src.nodata)
    assert np.array_equal(np.isnan(stack[0]), dem == -32768)
    assert np.array_equal(np.isnan(stack[1]), slope == -9999)
    assert np.array_equal(stack[0][dem != -32768], dem[dem != -32768].astype(np.float32))
    with rasterio.open(inputs.labels) as src, rasterio.open(m["labels"]) as fine_src:
        coarse, fine = src.read(1), fine_src.read(1)
        assert src.shape == dem.shape and src.transform == dem_src.transform
    assert set(np.unique(coarse)) <= {0, 1, 2, 255}
    # each 30 m cell covers exactly 3 x 3 labels of the 10 m grid (same origin): where one class
    # holds a strict majority of the 9, mode must give it
    blocks = (
        fine.reshape(dem.shape[0], 3, dem.shape[1], 3).transpose(0, 2, 1, 3).reshape(*dem.shape, 9)
    )
    checked = 0
    for r in range(dem.shape[0]):
        for c in range(dem.shape[1]):
            values = blocks[r, c][blocks[r, c] != 255]
            if values.size == 9:
                counts = np.bincount(values, minlength=3)
                if counts.max() >= 5:
                    assert coarse[r, c] == counts.argmax()
                    checked += 1
    assert checked > 0.5 * dem.size


def test_reprojection_needs_its_config_key(mixed_sources, tmp_path, helpers):
    cfg = _mixed_config(helpers, mixed_sources, tmp_path / "run", reproject=False)
    problems = check_inputs(cfg, encoder=False)
    assert any(
        "landcover.tif: CRS EPSG:3035" in p and "dataset.reproject: true" in p for p in problems
    )
    with pytest.raises(InputError):
        build_inputs(cfg, tmp_path / "prep")


def test_infinity_is_missing_in_prepare_smote_and_inference(risk_stack, tmp_path, helpers):
    """Regression: +-inf in a stack ended the pipeline in scikit-learn's SMOTE ("Input X contains
    infinity", no file named). +-inf is missing like NaN and nodata everywhere."""
    from risk_mapping.predict import TilePredictor, load_models
    from risk_mapping.prepare import prepare_dataset
    from risk_mapping.task import RiskModule
    from risk_mapping.tiles import TileSet

    stack, labels = risk_stack
    with rasterio.open(stack) as src:
        data, profile = src.read(), dict(crs=src.crs, transform=src.transform, nodata=src.nodata)
    data[1, 20:30, 20:30] = np.inf
    data[3, 60:64, 70:90] = -np.inf
    inf_stack = write_raster(tmp_path / "inf_stack.tif", data, **profile)
    raw = helpers.make_raw_config(
        inf_stack,
        labels,
        tmp_path / "run",
        dataset={"smote_ratio": 1.0, "medium_rich_threshold": 0.2},
    )
    summary = prepare_dataset(helpers.build_config(raw), tmp_path / "prep")
    assert summary["train"]["n_synthetic"] > 0
    for split in ("train", "val", "test"):
        tiles = TileSet.load(tmp_path / "prep" / f"tiles_{split}.npz")
        assert np.isfinite(tiles.x).all()
        for (r, c, h, w), y in zip(tiles.windows, tiles.y):
            if r >= 0:
                bad = ~np.isfinite(data[:, r : r + h, c : c + w]).all(0)
                assert (y[bad] == 255).all()
    module = RiskModule(
        model_config={"encoder": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]},
        in_channels=6,
        band_mean=[0.0] * 6,
        band_std=[1.0] * 6,
    )
    import torch

    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
        tmp_path / "m.ckpt",
    )
    from risk_mapping.config import InferenceConfig

    out = TilePredictor(load_models([tmp_path / "m.ckpt"]), InferenceConfig(), -9999.0)(
        data[:, :64, :64]
    )
    assert np.isfinite(out).all()


@pytest.mark.slow
def test_mixed_sources_validate_prepare_and_train(mixed_sources, tmp_path, helpers, capsys):
    """Issue 11 done-when: a risk run on mixed sources validates, prepares and trains with zero
    invalid land-cover codes (in the stack, the tiles and the SMOTE tiles)."""
    import yaml
    from eo_common.normalize import BandStats
    from risk_mapping.cli import risk_pipeline, risk_validate_config
    from risk_mapping.tiles import TileSet

    cfg = _mixed_config(
        helpers, mixed_sources, tmp_path / "run", smote_ratio=2.0, medium_rich_threshold=0.2
    )
    raw = helpers.make_raw_config(
        [str(p) for p in (mixed_sources[k] for k in ("dem", "slope", "landcover"))],
        mixed_sources["labels"],
        tmp_path / "run",
        dataset={
            "kinds": cfg.dataset.kinds,
            "align_rasters": True,
            "reproject": True,
            "optical_bands": [],
            "smote_ratio": 2.0,
            "medium_rich_threshold": 0.2,
        },
        training={"epochs": 1, "limit_train_batches": 2},
        inference={"crf": {"image_bands": [0, 1, 2]}},
    )
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert risk_validate_config([str(path)]) == 0
    assert risk_pipeline(["--config", str(path), "--stages", "prepare,train"]) == 0
    prep = tmp_path / "run" / "prepare"
    with rasterio.open(prep / "stack.tif") as src:
        landcover = src.read(3)
    assert set(np.unique(landcover[np.isfinite(landcover)])) <= set(CODES)
    stats = BandStats.load(prep / "band_stats.json")
    tiles = TileSet.load(prep / "tiles_train.npz")
    synthetic = np.array([i.startswith("smote_") for i in tiles.ids])
    assert synthetic.any()
    standardised = {float(np.float32((code - stats.mean[2]) / stats.std[2])) for code in CODES}
    assert set(np.unique(tiles.x[:, 2]).tolist()) <= standardised | {0.0}
    summary = json.loads((tmp_path / "run" / "train" / "seed0" / "summary.json").read_text())
    assert summary["status"] == "finished" and "val/kappa" in summary["metrics"]


def test_landslide4sense_patches_as_a_training_source(tmp_path, helpers):
    """HDF5 patches (GDAL reads them as 128 bands of 128 x 14 px) become one mosaic raster, each
    patch a block of its official split."""
    import h5py
    from risk_mapping.prepare import prepare_dataset
    from risk_mapping.tiles import TileSet

    root = helpers.load_generator("landslide4sense").make_landslide4sense(
        tmp_path / "l4s", splits={"train": 3, "validation": 2, "test": 1}
    )
    raw = helpers.make_raw_config(
        "unused", "unused", tmp_path / "run",
        dataset={"layout": "landslide4sense", "root": str(root), "label_map": [0, 2],
                 "tile_size": 64, "overlap": 0, "optical_bands": [1, 2, 3]},
        inference={"tile_size": 128, "overlap": 0, "crf": {"tile_size": 128, "overlap": 0}},
    )  # fmt: skip
    raw["dataset"].pop("stack")
    raw["dataset"].pop("labels")
    cfg = helpers.build_config(raw)
    assert check_inputs(cfg, encoder=False) == []
    summary = prepare_dataset(cfg, tmp_path / "prep")
    assert summary["n_blocks"] == {"train": 3, "val": 2, "test": 1}
    assert summary["train"]["n_tiles"] == 3 * 4 and summary["val"]["n_tiles"] == 2 * 4
    with (
        rasterio.open(tmp_path / "prep" / "stack.tif") as src,
        rasterio.open(tmp_path / "prep" / "labels.tif") as lab,
    ):
        assert src.count == 14 and src.descriptions[12:] == ("slope", "dem")
        mosaic, labels = src.read(), lab.read(1)
    with h5py.File(root / "images" / "validation" / "image_4.h5") as f:
        img = f["img"][()]
    with h5py.File(root / "annotations" / "validation" / "mask_4.h5") as f:
        mask = f["mask"][()]
    cell = (slice(128, 256), slice(0, 128))  # patch 4 = fourth cell of a 3-column mosaic
    assert np.array_equal(mosaic[:, cell[0], cell[1]], np.moveaxis(img, -1, 0))
    assert np.array_equal(labels[cell], np.where(mask == 1, 2, 0))  # label_map [0, 2]
    tiles = TileSet.load(tmp_path / "prep" / "tiles_val.npz")
    assert set(np.unique(tiles.y)) <= {0, 2}
    # settings that would mix patches in one prediction are refused up front
    raw["inference"]["overlap"] = 16
    problems = check_inputs(helpers.build_config(raw), encoder=False)
    assert any("inference.tile_size: set it to the patch size 128" in p for p in problems)
    (root / "annotations" / "test" / "mask_6.h5").unlink()
    problems = check_inputs(helpers.build_config(raw), encoder=False)
    assert any("image_6.h5: its mask" in p for p in problems)
