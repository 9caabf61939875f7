"""SAR-edge agreement on hand-made cases, the Lee filter against a SciPy reference, and the stage losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gac_pipeline.data import S2_BANDS
from gac_pipeline.evaluate import (
    StageMetrics,
    edge_map_disagreement,
    lee_filter,
    markdown_table,
    sar_edge_disagreement,
)
from gac_pipeline.losses import CycleLoss, LPIPSLoss, MSSSIMLoss, build_stage2_loss
from gac_pipeline.model import CycleSARPredictor
from scipy import ndimage


def _lee_reference(img: np.ndarray, window: int = 5) -> np.ndarray:
    """Lee filter written with scipy.ndimage (mirror border = torch's reflect padding)."""
    mean = ndimage.uniform_filter(img, window, mode="mirror")
    mean_sq = ndimage.uniform_filter(img * img, window, mode="mirror")
    var = np.clip(mean_sq - mean * mean, 0, None)
    weight = var / (var + var.mean() + 1e-12)
    return mean + weight * (img - mean)


def test_lee_filter_matches_scipy_reference():
    rng = np.random.default_rng(0)
    img = (rng.gamma(4.0, 0.25, size=(40, 50)) * np.linspace(0.5, 1.5, 50)).astype(np.float64)
    ours = lee_filter(torch.from_numpy(img)[None, None]).numpy()[0, 0]
    np.testing.assert_allclose(ours, _lee_reference(img), rtol=1e-6, atol=1e-9)
    assert ours.std() < img.std()  # speckle reduced


def _scene(shift: int = 0, size: int = 64) -> np.ndarray:
    """A bright square with a road across it: the structure both sensors see."""
    x = np.zeros((size, size), np.float32)
    x[16 + shift : 44 + shift, 20:48] = 1.0
    x[:, 8 + shift : 11 + shift] = 0.6
    return x


def _optical(structure: np.ndarray) -> torch.Tensor:
    opt = np.repeat(structure[None], len(S2_BANDS), axis=0) * 0.3 + 0.05
    return torch.from_numpy(opt)[None]


def _sar(structure: np.ndarray, speckle: float = 0.0, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    sar = 0.3 + 0.5 * structure + speckle * rng.standard_normal(structure.shape)
    return torch.from_numpy(np.stack([sar, sar]).astype(np.float32))[None]


def test_identical_edges_score_best():
    edges = torch.rand(3, 1, 32, 32)
    assert (
        edge_map_disagreement(edges, edges).abs().max() < 1e-6
    )  # identical: exactly the best score
    assert edge_map_disagreement(edges, 2.5 * edges).abs().max() < 1e-6  # scale-free
    assert torch.allclose(
        edge_map_disagreement(edges, -edges), torch.ones(3), atol=1e-6
    )  # anti-correlated
    same = float(sar_edge_disagreement(_optical(_scene()), _sar(_scene())))
    shifted = float(sar_edge_disagreement(_optical(_scene(shift=6)), _sar(_scene())))
    rng = np.random.default_rng(1)
    unrelated = float(
        sar_edge_disagreement(_optical(rng.random((64, 64)).astype(np.float32)), _sar(_scene()))
    )
    flat = float(sar_edge_disagreement(_optical(np.zeros((64, 64), np.float32)), _sar(_scene())))
    assert same < 0.1 < shifted < unrelated
    assert abs(unrelated - 0.5) < 0.1 and flat == pytest.approx(0.5)


def test_edge_score_survives_speckle_and_has_gradients():
    clean = float(sar_edge_disagreement(_optical(_scene()), _sar(_scene())))
    speckled = float(sar_edge_disagreement(_optical(_scene()), _sar(_scene(), speckle=0.15)))
    assert speckled < 0.3 and speckled >= clean - 1e-6
    opt = _optical(_scene(shift=4)).requires_grad_(True)
    sar_edge_disagreement(opt, _sar(_scene())).sum().backward()
    assert opt.grad is not None and opt.grad.abs().sum() > 0


def test_stage_metrics_perfect_and_table():
    m = StageMetrics()
    x = torch.rand(2, 12, 48, 48)
    m.update(x, x, torch.rand(2, 2, 48, 48))
    out = m.compute()
    assert out["ssim"] == pytest.approx(1.0) and out["sam_deg"] == pytest.approx(0.0, abs=1e-2)
    assert out["psnr"] > 60 and 0 <= out["sar_edge"] <= 1
    table = markdown_table({"a": {"psnr": 20.0, "lpips": float("nan")}}, ["psnr", "lpips"])
    assert "| a | 20.0000 | n/a |" in table


def test_msssim_loss_zero_for_identical_and_grows_with_noise():
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure as msssim,
    )

    x = torch.rand(2, 12, 120, 120)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    loss = MSSSIMLoss()
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    expected = 1 - msssim(y, x, data_range=1.0, betas=(0.0448, 0.2856, 0.3001), normalize="relu")
    assert float(loss(y, x)) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss(y, x)) > 0.01


def test_lpips_from_local_file_and_off_without(tmp_path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights)
    lpips = LPIPSLoss(weights)
    x = torch.rand(1, 12, 64, 64, requires_grad=True)
    y = torch.rand(1, 12, 64, 64)
    assert float(lpips(y, y)) == pytest.approx(0.0, abs=1e-6)
    value = lpips(x, y)
    value.backward()
    assert float(value.detach()) > 0 and x.grad.abs().sum() > 0
    messages = []
    loss = build_stage2_loss(lpips_weight=0.5, lpips_weights=None, log=messages.append)
    assert set(loss.terms) == {"l1", "msssim"}  # LPIPS off without a weights file
    assert messages and "OFF" in messages[0]
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        LPIPSLoss(tmp_path / "missing.pth")


def test_cycle_loss_trains_predictor_only_on_real_pairs():
    torch.manual_seed(0)
    predictor = CycleSARPredictor(width=8)
    loss = CycleLoss(predictor)
    pred = torch.rand(1, 12, 16, 16, requires_grad=True)
    target, s1 = torch.rand(1, 12, 16, 16), torch.rand(1, 2, 16, 16)
    loss(pred, target, s1).backward()
    got = [p.grad.clone() for p in predictor.parameters()]
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    predictor.zero_grad()
    (predictor(target) - s1).abs().mean().backward()  # the fit term alone
    for a, b in zip(got, [p.grad for p in predictor.parameters()], strict=True):
        torch.testing.assert_close(a, b)
