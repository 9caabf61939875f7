"""Cloud simulation, cloud masks (incl. the real s2cloudless model) and the loss terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cloud_removal.clouds import (
    S2_BANDS,
    CloudParams,
    S2CloudlessDetector,
    difference_cloud_mask,
    simulate_clouds,
)
from cloud_removal.config import LossConfig
from cloud_removal.losses import (
    CloudFocusedLoss,
    CloudRemovalLoss,
    cloud_focused_loss,
    confidence_bce,
)
from cloud_removal.model import CloudRemovalOutput
from eo_common.samples import require_samples, sample_path


def test_simulated_clouds_properties():
    clear = np.full((13, 64, 64), 0.08, np.float32)
    no_shadow = CloudParams(shadow_prob=0.0, haze=(0.0, 0.0))
    sim = simulate_clouds(clear, np.random.default_rng(0), no_shadow, coverage=0.4)
    assert sim.cloudy.shape == (13, 64, 64) and sim.intensity.shape == (64, 64)
    assert 0.0 <= sim.intensity.min() and sim.intensity.max() <= 1.0
    # opacity > 0 on the requested share of the image (threshold at the 1 - coverage quantile)
    assert abs(float((sim.opacity > 0).mean()) - 0.4) < 0.02
    # without haze and shadow the model is exactly (1 - a) x + a c
    c = sim.params["brightness"] * np.array(
        [0.70, 0.68, 0.66, 0.65, 0.66, 0.66, 0.66, 0.65, 0.64, 0.35, 0.25, 0.45, 0.32]
    )
    expected = (1 - sim.opacity) * clear + sim.opacity * c[:, None, None]
    np.testing.assert_allclose(sim.cloudy, expected, atol=1e-6)
    again = simulate_clouds(clear, np.random.default_rng(0), no_shadow, coverage=0.4)
    np.testing.assert_array_equal(again.cloudy, sim.cloudy)  # seeded


def test_haze_is_stronger_in_blue_than_swir():
    clear = np.full((13, 32, 32), 0.05, np.float32)
    p = CloudParams(coverage=(0.0, 0.0), haze=(0.3, 0.3), shadow_prob=0.0)
    sim = simulate_clouds(clear, np.random.default_rng(1), p, coverage=0.0)
    added = (sim.cloudy - clear).mean(axis=(1, 2))
    assert (
        added[S2_BANDS.index("B02")]
        > added[S2_BANDS.index("B08")]
        > added[S2_BANDS.index("B12")]
        > 0
    )


def test_difference_mask_hand_values():
    clear = np.zeros((2, 1, 3), np.float32)
    cloudy = np.array([[[0.0, 0.1, 0.4]], [[0.0, 0.0, 0.0]]], np.float32)
    np.testing.assert_allclose(difference_cloud_mask(cloudy, clear), [[[0.0, 0.5, 1.0]]])
    t = difference_cloud_mask(torch.from_numpy(cloudy), torch.from_numpy(clear))
    assert isinstance(t, torch.Tensor)
    with pytest.raises(ValueError, match="must be equal"):
        difference_cloud_mask(cloudy, clear[:1])


@pytest.fixture(scope="module")
def detector():
    require_samples("s2cloudless_model")
    return S2CloudlessDetector()


@pytest.mark.samples
def test_s2cloudless_model_file_has_ten_features_and_sees_simulated_clouds(detector):
    require_samples("s2cloudless_model", "s2_scene")
    model_file = next(sample_path("s2cloudless_model").glob("*.txt"))
    header = model_file.read_text()[:4000]
    assert "max_feature_idx=9" in header  # 10 features: B01 B02 B04 B05 B08 B8A B09 B10 B11 B12
    assert detector.booster.num_feature() == 10
    det = detector
    import rasterio

    root = sample_path("s2_scene")
    bands = []
    for b in S2_BANDS:  # a 60 x 60 px window at 60 m resolution, bands resampled by rasterio
        with rasterio.open(root / f"s2_{b}.tif") as src:
            scale = src.width / 322
            w = rasterio.windows.Window(100 * scale, 100 * scale, 60 * scale, 60 * scale)
            bands.append(src.read(1, window=w, out_shape=(60, 60)).astype(np.float32) / 1e4)
    clear = np.stack(bands)
    sim = simulate_clouds(clear, np.random.default_rng(0), coverage=0.5)
    p_clear, p_cloudy = det.probability(clear), det.probability(sim.cloudy)
    assert p_cloudy.shape == (60, 60)
    assert p_cloudy.mean() > p_clear.mean() + 0.2
    thick = sim.opacity > 0.5
    assert p_cloudy[thick].mean() > 0.6  # the real detector agrees with the simulated clouds
    assert det.mask(sim.cloudy).dtype == bool
    with pytest.raises(ValueError, match="s2cloudless needs bands"):
        det.probability(clear[:12], bands=S2_BANDS[:12])


def test_cloud_focused_loss_hand_values():
    pred = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    target = torch.zeros(1, 1, 1, 3)
    cloud = torch.tensor([[[[1.0, 0.5, 0.0]]]])
    # weights 3, 2, 1 -> (3*1 + 2*1 + 1*0) / 6
    torch.testing.assert_close(cloud_focused_loss(pred, target, cloud, 2.0), torch.tensor(5 / 6))
    torch.testing.assert_close(
        CloudFocusedLoss(0.0)(pred, target, cloud), (pred - target).abs().mean()
    )
    with pytest.raises(ValueError, match="cloud_weight_factor must be >= 0"):
        CloudFocusedLoss(-1.0)
    with pytest.raises(ValueError, match=r"cloud intensity must be \(B, 1, H, W\)"):
        cloud_focused_loss(pred, target, cloud[0])


def _fake_output(b=2, with_conf=True):
    torch.manual_seed(0)
    pred = torch.rand(b, 13, 16, 16, requires_grad=True)
    conf = torch.rand(b, 1, 16, 16) if with_conf else None
    return CloudRemovalOutput(pred, conf, pred, (torch.rand(b, 8), torch.rand(b, 8)))


def test_combined_loss_terms_and_weights():
    cfg = LossConfig(
        use_fft_loss=True,
        use_gradient_loss=True,
        use_contrastive_loss=True,
        use_texture_loss=True,
        use_cloud_focused_loss=True,
    )
    loss = CloudRemovalLoss(cfg)
    out = _fake_output()
    batch = {"target": torch.rand(2, 13, 16, 16), "cloud_mask": torch.rand(2, 1, 16, 16)}
    total, parts = loss(out, batch)
    assert set(parts) == {
        "l1",
        "fft",
        "gradient",
        "contrastive",
        "texture",
        "cloud_focused",
        "confidence",
    }
    expected = sum(loss.weights[k] * v for k, v in parts.items())
    torch.testing.assert_close(total.detach(), expected)
    torch.testing.assert_close(
        parts["l1"], (out.prediction - batch["target"]).abs().mean().detach()
    )
    bce = torch.nn.functional.binary_cross_entropy(out.confidence, batch["cloud_mask"])
    torch.testing.assert_close(parts["confidence"], bce, atol=1e-5, rtol=1e-5)
    total.backward()
    assert out.prediction.grad is not None


def test_confidence_bce_matches_torch_and_lets_nan_through():
    """Equal to F.binary_cross_entropy on valid input; NaN (a diverged network) gives NaN, where
    F.binary_cross_entropy raises 'all elements of input should be between 0 and 1'."""
    torch.manual_seed(0)
    conf, mask = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    ref = torch.nn.functional.binary_cross_entropy(conf, mask)
    torch.testing.assert_close(confidence_bce(conf, mask), ref, atol=1e-6, rtol=1e-5)
    bad = conf.clone()
    bad[0, 0, 0, 0] = float("nan")
    assert torch.isnan(confidence_bce(bad, mask))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        torch.nn.functional.binary_cross_entropy(bad.clamp(1e-6, 1 - 1e-6), mask)  # the old code
    out = _fake_output()
    out.confidence.data[0, 0, 0, 0] = float("nan")
    total, parts = CloudRemovalLoss(LossConfig())(
        out, {"target": torch.rand(2, 13, 16, 16), "cloud_mask": torch.rand(2, 1, 16, 16)}
    )
    assert torch.isnan(total) and torch.isnan(parts["confidence"])


def test_loss_skips_confidence_without_predictor_and_contrastive_for_batch_one():
    loss = CloudRemovalLoss(LossConfig(use_contrastive_loss=True))
    out = _fake_output(b=1, with_conf=False)
    batch = {"target": torch.rand(1, 13, 16, 16), "cloud_mask": torch.rand(1, 1, 16, 16)}
    _, parts = loss(out, batch)
    assert "confidence" not in parts and float(parts["contrastive"]) == 0.0
    with pytest.raises(ValueError, match="every loss term is switched off"):
        CloudRemovalLoss(LossConfig(use_l1_loss=False, use_confidence_loss=False))


@pytest.mark.samples
def test_dataset_cloud_mask_from_s2cloudless(fake_root, detector):
    from cloud_removal.data import SEN12MSCRDataset

    ds = SEN12MSCRDataset(
        fake_root,
        split="val",
        load_size=48,
        crop_size=32,
        cloud_mask="s2cloudless",
        detector=detector,
    )
    item = ds[0]
    cloudy = item["optical"].numpy().astype(np.float64)  # glf-cr: reflectance
    full = ds.read_row(0)[2]  # (13, 48, 48) reflectance after load_size
    expected = detector.probability(full)[8:40, 8:40]  # probability on the tile, then centre crop
    np.testing.assert_allclose(item["cloud_mask"].numpy()[0], expected, atol=1e-6)
    np.testing.assert_allclose(cloudy, full[:, 8:40, 8:40], atol=1e-6)
