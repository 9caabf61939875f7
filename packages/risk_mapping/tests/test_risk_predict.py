"""Sliding-window inference: GeoTIFF products keep the georeference; TTA, MC dropout, ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import torch
from risk_mapping.config import InferenceConfig
from risk_mapping.predict import TilePredictor, load_models, predict_raster
from risk_mapping.task import RiskModule

TINY = {
    "encoder": "resnet18",
    "encoder_weights": None,
    "attention": True,
    "attention_reduction": 16,
    "dropout_prob": 0.3,
    "decoder_channels": [32, 16, 16, 8, 8],
    "coral_ordered_biases": True,
}


def _checkpoint(path, bands: int, seed: int, mean: float = 0.0):
    torch.manual_seed(seed)
    module = RiskModule(
        model_config=TINY, in_channels=bands, band_mean=[mean] * bands, band_std=[1.0] * bands
    )
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture
def stack_stats(risk_stack):
    stack, _ = risk_stack
    with rasterio.open(stack) as src:
        data = src.read().astype(np.float64)
        valid = data[0] != src.nodata
    return stack, [float(b[valid].mean()) for b in data], [float(b[valid].std()) for b in data]


def test_products_keep_georeference_and_nodata(risk_stack, tmp_path):
    stack, _ = risk_stack
    ckpt = _checkpoint(tmp_path / "a.ckpt", bands=6, seed=0)
    models = load_models([ckpt])
    paths = predict_raster(
        models, stack, tmp_path / "infer", InferenceConfig(tile_size=64, overlap=16), progress=False
    )
    with rasterio.open(stack) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        missing = (src.read() == src.nodata).any(0)
    arrays = {}
    for key, path in paths.items():
        with rasterio.open(path) as out:
            assert (
                out.crs == crs and out.transform == transform and (out.height, out.width) == shape
            ), key
            arrays[key] = out.read()
    probs = arrays["probabilities"]
    valid = ~missing
    assert np.allclose(probs[:, valid].sum(0), 1.0, atol=1e-4)
    assert (arrays["class_map"][0][missing] == 255).all() and set(
        np.unique(arrays["class_map"][0][valid])
    ) <= {0, 1, 2}
    assert np.array_equal(arrays["class_map"][0][valid], probs[:, valid].argmax(0))
    rank = arrays["susceptibility"][0]
    assert (
        np.allclose(rank[valid], probs[1, valid] + 2 * probs[2, valid], atol=1e-5)
        and (rank[missing] == -1).all()
    )
    unc = arrays["uncertainty"][0][valid]
    assert (unc >= -1e-6).all() and (unc <= math.log(3) + 1e-5).all()
    assert not (tmp_path / "infer" / "raw_prediction.tif").exists()


def test_tta_mc_dropout_and_ensemble_average(tmp_path):
    ckpts = [_checkpoint(tmp_path / f"m{s}.ckpt", bands=3, seed=s) for s in (0, 1)]
    models = load_models(ckpts)
    tile = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    single = [TilePredictor([m], InferenceConfig(), nodata=None)(tile) for m in models]
    both = TilePredictor(models, InferenceConfig(), nodata=None)(tile)
    assert np.allclose(
        both[:3], (single[0][:3] + single[1][:3]) / 2, atol=1e-5
    )  # probability average
    tta = TilePredictor(models[:1], InferenceConfig(tta=True), nodata=None)
    flipped = tta(tile[:, :, ::-1].copy())
    plain = tta(tile)
    assert np.allclose(
        flipped[:3], plain[:3, :, ::-1], atol=1e-5
    )  # TTA over flips is flip-equivariant
    mc = TilePredictor(
        models[:1], InferenceConfig(mc_dropout_samples=4, uncertainty="mc_variance"), nodata=None
    )
    out = mc(tile)
    assert out.shape == (4, 64, 64) and (out[3] >= 0).all() and out[3].max() > 0
    assert not any(m.training for m in models[0].net.modules() if isinstance(m, torch.nn.Dropout2d))


def test_load_models_errors(tmp_path):
    from eo_common.errors import CheckpointError

    with pytest.raises(CheckpointError, match="nope.ckpt: checkpoint not found"):
        load_models([tmp_path / "nope.ckpt"])
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="other.ckpt: not a risk_mapping checkpoint"):
        load_models([tmp_path / "other.ckpt"])
    good = _checkpoint(tmp_path / "good.ckpt", bands=3, seed=0)
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="cut.ckpt: not a readable torch checkpoint"):
        load_models([tmp_path / "cut.ckpt"])


def test_class_map_is_gis_ready(risk_stack, tmp_path):
    """The class map opens coloured and labelled (low / medium / high), with overviews, as a COG;
    the other products are COGs too."""
    from eo_common.raster import read_class_names
    from rio_cogeo.cogeo import cog_validate
    from risk_mapping.predict import RISK_CLASSES

    stack, _ = risk_stack
    models = load_models([_checkpoint(tmp_path / "a.ckpt", bands=6, seed=0)])
    paths = predict_raster(
        models, stack, tmp_path / "infer", InferenceConfig(tile_size=64, overlap=16), progress=False
    )
    class_map = paths["class_map"]
    assert read_class_names(class_map) == {0: "low", 1: "medium", 2: "high"}
    with rasterio.open(class_map) as src:
        colours = src.colormap(1)
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
        assert src.descriptions[0] == "risk class"
    for info in RISK_CLASSES:
        assert colours[info.value][:3] == info.color
    assert (
        "<Category>medium</Category>" in (tmp_path / "infer" / "class_map.tif.aux.xml").read_text()
    )
    assert 'label="high"' in (tmp_path / "infer" / "class_map.qml").read_text()
    for key, path in paths.items():
        assert cog_validate(str(path), quiet=True)[0], key


def test_band_count_mismatch_is_reported(risk_stack, tmp_path):
    stack, _ = risk_stack
    models = load_models([_checkpoint(tmp_path / "c.ckpt", bands=4, seed=0)])
    with pytest.raises(ValueError, match="expects 4 bands"):
        predict_raster(
            models, stack, tmp_path / "x", InferenceConfig(tile_size=64, overlap=16), progress=False
        )


def test_float_products_are_cogs_with_descriptions_nodata_and_overviews(tmp_path, helpers):
    """Probabilities, susceptibility and uncertainty open in QGIS with named bands, nodata and
    overviews, as valid COGs by default; ``inference.cog: false`` keeps the streamed strips (not a
    COG) with the same values, names and overviews."""
    from rio_cogeo.cogeo import cog_validate
    from risk_mapping.predict import PRODUCT_BANDS, RANK_NODATA

    stack, _ = helpers.load_generator("risk_stack").make_risk_stack(tmp_path, size=300, seed=1)
    models = load_models([_checkpoint(tmp_path / "a.ckpt", bands=6, seed=0)])
    with rasterio.open(stack) as src:
        stack_nodata = src.nodata
    names = {
        "probabilities": PRODUCT_BANDS["probabilities"],
        "susceptibility": PRODUCT_BANDS["susceptibility"],
        "uncertainty": PRODUCT_BANDS["uncertainty_mc_variance"],
    }
    nodata = {"probabilities": stack_nodata, "susceptibility": RANK_NODATA,
              "uncertainty": RANK_NODATA}  # fmt: skip
    values = {}
    for cog in (True, False):
        cfg = InferenceConfig(tile_size=64, overlap=16, cog=cog, uncertainty="mc_variance")
        paths = predict_raster(models, stack, tmp_path / f"cog_{cog}", cfg, progress=False)
        for key in names:
            valid, errors, _ = cog_validate(str(paths[key]), quiet=True)
            assert valid == cog, (key, errors)
            with rasterio.open(paths[key]) as src:
                assert src.descriptions == names[key], key
                assert src.nodata == nodata[key] and src.overviews(1) == [2], key
                assert src.compression.name.lower() == "deflate"
                assert src.block_shapes[0] == ((256, 256) if cog else (64, 300))
                values.setdefault(key, []).append(src.read())
    for key, (a, b) in values.items():
        np.testing.assert_array_equal(a, b, err_msg=key)
