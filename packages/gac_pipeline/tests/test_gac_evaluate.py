"""SAR-edge agreement on hand-made cases, the Lee filter against a SciPy reference, and the stage losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gac_pipeline.data import S2_BANDS
from gac_pipeline.evaluate import (
    OPTICAL_EDGE_BANDS,
    SAREdgeAgreement,
    StageMetrics,
    edge_map_disagreement,
    lee_filter,
    markdown_table,
    sar_edge_disagreement,
)
from gac_pipeline.losses import (
    MSSSIM_BETAS,
    CycleLoss,
    LPIPSLoss,
    MSSSIMLoss,
    SAREdgeLoss,
    build_stage2_loss,
)
from gac_pipeline.model import CycleSARPredictor
from scipy import ndimage


def _lee_reference(img: np.ndarray, window: int = 5) -> np.ndarray:
    """Lee filter written with scipy.ndimage (mirror border = torch's reflect padding); missing
    (non-finite) pixels take no part: normalised box filter over the valid pixels."""
    valid = np.isfinite(img)
    x0 = np.where(valid, img, 0.0)
    count = ndimage.uniform_filter(valid.astype(float), window, mode="mirror")
    mean = ndimage.uniform_filter(x0, window, mode="mirror") / count
    mean_sq = ndimage.uniform_filter(x0 * x0, window, mode="mirror") / count
    var = np.clip(mean_sq - mean * mean, 0, None)
    weight = var / (var + var[valid].mean() + 1e-12)
    return np.where(valid, mean + weight * (x0 - mean), mean)


def _edge_score_reference(optical_mean: np.ndarray, sar_mean: np.ndarray, border: int = 2) -> float:
    """(1 - r) / 2 of Sobel magnitudes (scipy) over pixels whose 3x3 neighbourhood is valid."""
    valid = np.isfinite(sar_mean) & np.isfinite(optical_mean)
    sar = _lee_reference(sar_mean)
    opt = np.where(np.isfinite(optical_mean), optical_mean, 0.0)

    def edges(img):
        gx = ndimage.sobel(img, axis=1, mode="nearest")
        gy = ndimage.sobel(img, axis=0, mode="nearest")
        return np.sqrt(gx**2 + gy**2 + 1e-12)

    usable = ndimage.binary_erosion(valid, np.ones((3, 3)), border_value=1)
    usable[:border], usable[-border:], usable[:, :border], usable[:, -border:] = (False,) * 4
    r = np.corrcoef(edges(opt)[usable], edges(sar)[usable])[0, 1]
    return (1 - r) / 2


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


def test_one_missing_sar_pixel_is_left_out_not_a_score_of_half():
    """One NaN SAR pixel of 14,400 used to make the score exactly 0.5 (the Lee noise estimate went NaN)."""
    rng = np.random.default_rng(3)
    structure = np.kron(rng.random((12, 12)), np.ones((10, 10))).astype(np.float32)  # 120 x 120
    optical, sar = _optical(structure), _sar(structure, speckle=0.1)
    clean = float(sar_edge_disagreement(optical, sar))
    sar[0, :, 60, 61] = float("nan")  # one pixel of the tile (both polarisations)
    with_nan = float(sar_edge_disagreement(optical, sar))
    assert with_nan != 0.5 and abs(with_nan - clean) < 0.01
    expected = _edge_score_reference(
        optical[0, list(OPTICAL_EDGE_BANDS)].double().mean(0).numpy(),
        sar[0].double().mean(0).numpy(),
    )
    assert with_nan == pytest.approx(expected, abs=1e-5)  # the documented rule, by hand (SciPy)
    # +-inf counts as missing too, and so do missing optical pixels
    sar[0, :, 10, 10], optical[0, :, 30, 30] = float("inf"), float("-inf")
    both = float(sar_edge_disagreement(optical, sar))
    assert abs(both - clean) < 0.01
    # a tile with no usable pixel has no score: left out of the split mean and of the loss
    empty = torch.full_like(sar, float("nan"))
    assert torch.isnan(sar_edge_disagreement(optical, empty)).all()
    metric = SAREdgeAgreement()
    metric.update(torch.cat([optical, optical]), torch.cat([sar, empty]))
    assert float(metric.compute()) == pytest.approx(both, abs=1e-6) and int(metric.undefined) == 1
    assert float(SAREdgeLoss()(torch.cat([optical, optical]), torch.cat([sar, empty]))) == (
        pytest.approx(both, abs=1e-6)
    )


def test_lee_filter_with_missing_pixels_matches_reference():
    rng = np.random.default_rng(1)
    img = rng.gamma(4.0, 0.25, size=(30, 40))
    img[3, 4] = img[20, 21] = np.nan
    ours = lee_filter(torch.from_numpy(img)[None, None]).numpy()[0, 0]
    np.testing.assert_allclose(ours, _lee_reference(img), rtol=1e-6, atol=1e-9)


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
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    x = torch.rand(2, 12, 120, 120)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    loss = MSSSIMLoss()
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    betas = (0.0448 / 0.6305, 0.2856 / 0.6305, 0.3001 / 0.6305)  # renormalised: sum 1 (documented)
    assert sum(MSSSIM_BETAS) == pytest.approx(1.0) and MSSSIM_BETAS == pytest.approx(betas)
    expected = 1 - msssim(y, x, data_range=1.0, betas=betas, normalize="relu")
    assert float(loss(y, x)) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss(y, x)) > 0.01
    # by hand: two flat images differ only in luminance l (contrast-structure is 1 at every scale),
    # so MS-SSIM = l ** beta_3 with the last exponent, 0.3001 / 0.6305 once renormalised (not 0.3001)
    flat = torch.full((1, 1, 120, 120), 0.5)
    shifted = flat + 0.1
    lum = float(ssim(shifted, flat, data_range=1.0, gaussian_kernel=True, kernel_size=11))
    c1 = 0.01**2
    assert lum == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1), rel=1e-5)
    assert 1 - float(loss(shifted, flat)) == pytest.approx(lum ** (0.3001 / 0.6305), rel=1e-5)


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
