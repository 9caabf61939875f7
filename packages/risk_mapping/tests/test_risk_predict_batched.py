"""inference.batch_size tiles per forward: the same maps as one tile per forward."""

from __future__ import annotations

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


def _models(tmp_path, n: int = 2):
    paths = []
    for seed in range(n):
        torch.manual_seed(seed)
        module = RiskModule(
            model_config=TINY, in_channels=6, band_mean=[0.5] * 6, band_std=[2.0] * 6
        )
        path = tmp_path / f"m{seed}.ckpt"
        torch.save(
            {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path
        )
        paths.append(path)
    return load_models(paths)


@pytest.mark.parametrize(("tta", "uncertainty"), [(True, "variance"), (False, "entropy")])
def test_tile_predictor_batch_equals_one_tile_at_a_time(tmp_path, tta, uncertainty):
    models = _models(tmp_path)
    cfg = InferenceConfig(tile_size=32, overlap=8, tta=tta, uncertainty=uncertainty)
    predictor = TilePredictor(models, cfg, nodata=-9999.0)
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(3, 6, 32, 32)).astype(np.float32)
    tiles[1, 2, 5:9, 5:9] = -9999.0  # missing pixels in one tile
    batch = predictor(tiles)
    assert batch.shape == (3, 4, 32, 32)
    for i in range(3):
        np.testing.assert_allclose(batch[i], predictor(tiles[i]), rtol=1e-5, atol=1e-6)


def test_predict_raster_reads_inference_batch_size(risk_stack, tmp_path, monkeypatch):
    stack, _ = risk_stack
    models = _models(tmp_path, 1)
    calls = []
    original = TilePredictor._predict

    def spy(self, tiles):
        calls.append(len(tiles))
        return original(self, tiles)

    monkeypatch.setattr(TilePredictor, "_predict", spy)
    outs = {}
    for bs in (1, 5):
        calls.clear()
        cfg = InferenceConfig(tile_size=32, overlap=8, batch_size=bs)
        paths = predict_raster(models, stack, tmp_path / f"bs{bs}", cfg, progress=False)
        with rasterio.open(paths["probabilities"]) as src:
            outs[bs] = src.read()
        assert max(calls) == bs and (bs == 1 or len(calls) < sum(calls))
    np.testing.assert_allclose(outs[5], outs[1], rtol=1e-5, atol=1e-6)
