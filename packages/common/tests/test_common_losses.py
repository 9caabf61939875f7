"""eo_common.losses against independent references: hand computations, NumPy, SciPy, scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eo_common import losses as L
from scipy import ndimage
from sklearn.metrics import matthews_corrcoef


def _rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------- L1
def test_l1_matches_numpy_with_and_without_weight_map():
    g = _rng(1)
    pred, target = torch.rand(2, 3, 5, 4, generator=g), torch.rand(2, 3, 5, 4, generator=g)
    weight = (torch.rand(2, 1, 5, 4, generator=g) > 0.4).float() * 2.5
    p, t, w = pred.numpy(), target.numpy(), np.broadcast_to(weight.numpy(), p_shape := pred.shape)
    assert L.L1Loss()(pred, target).item() == pytest.approx(np.abs(p - t).mean(), rel=1e-6)
    expected = (w * np.abs(p - t)).sum() / w.sum()
    assert L.L1Loss()(pred, target, weight).item() == pytest.approx(expected, rel=1e-6)
    assert L.l1_loss(pred, target, weight, reduction="sum").item() == pytest.approx(
        (w * np.abs(p - t)).sum(), rel=1e-6
    )
    assert L.l1_loss(pred, target, weight, reduction="none").shape == p_shape
    # per-band weight map (B, C, H, W) is accepted too
    full = torch.rand(2, 3, 5, 4, generator=g)
    expected_full = (full.numpy() * np.abs(p - t)).sum() / full.numpy().sum()
    assert L.l1_loss(pred, target, full).item() == pytest.approx(expected_full, rel=1e-6)


def test_l1_all_zero_weight_is_zero_not_nan():
    pred, target = torch.ones(1, 2, 3, 3, requires_grad=True), torch.zeros(1, 2, 3, 3)
    loss = L.l1_loss(pred, target, torch.zeros(1, 1, 3, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


# ----------------------------------------------------------------------------------------- FFT
@pytest.mark.parametrize("norm", ["ortho", "backward", "forward"])
def test_fft_loss_matches_numpy_rfft2(norm):
    g = _rng(2)
    pred, target = torch.rand(2, 3, 6, 7, generator=g), torch.rand(2, 3, 6, 7, generator=g)
    fp = np.fft.rfft2(pred.double().numpy(), norm=norm)
    ft = np.fft.rfft2(target.double().numpy(), norm=norm)
    expected = np.concatenate(
        [np.abs(fp.real - ft.real).ravel(), np.abs(fp.imag - ft.imag).ravel()]
    ).mean()
    assert L.FFTLoss(norm=norm)(pred, target).item() == pytest.approx(expected, rel=1e-5)


def test_fft_loss_zero_on_identical_inputs():
    x = torch.rand(1, 4, 8, 8, generator=_rng(3))
    assert L.fft_loss(x, x.clone()).item() == 0.0


# ----------------------------------------------------------------------------------------- gradient
def test_gradient_loss_matches_scipy_sobel():
    g = _rng(4)
    pred, target = torch.rand(2, 2, 7, 9, generator=g), torch.rand(2, 2, 7, 9, generator=g)
    p, t = pred.double().numpy(), target.double().numpy()
    diffs = []
    for axis in (-1, -2):  # x (along W) then y (along H), each image and band separately
        sp = np.stack([[ndimage.sobel(im, axis=axis, mode="reflect") for im in b] for b in p])
        st = np.stack([[ndimage.sobel(im, axis=axis, mode="reflect") for im in b] for b in t])
        diffs.append(np.abs(sp - st))
    expected = np.mean(diffs)
    assert L.GradientLoss()(pred, target).item() == pytest.approx(expected, rel=1e-5)
    grads = L.image_gradients(pred)
    np.testing.assert_allclose(
        grads[:, :, 0].numpy(),
        np.stack([[ndimage.sobel(im, axis=-1) for im in b] for b in p]),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        grads[:, :, 1].numpy(),
        np.stack([[ndimage.sobel(im, axis=-2) for im in b] for b in p]),
        atol=1e-5,
    )


def test_gradient_loss_ignores_constant_offset():
    x = torch.rand(1, 1, 6, 6, generator=_rng(5))
    assert L.gradient_loss(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert L.gradient_loss(x, x.flip(-1)).item() > 0.1


# ----------------------------------------------------------------------------------------- contrastive
def _np_log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - m - np.log(np.exp(row - m).sum())


def _np_contrastive(a: np.ndarray, b: np.ndarray, tau: float, variant: str) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    n = len(a)
    if variant == "ntxent":
        z = np.concatenate([a, b])
        total = 0.0
        for k in range(2 * n):
            positive = (k + n) % (2 * n)
            others = [m for m in range(2 * n) if m != k]
            sims = np.array([z[k] @ z[m] / tau for m in others])
            total -= _np_log_softmax(sims)[others.index(positive)]
        return total / (2 * n)
    sim = a @ b.T / tau
    ab = -np.mean([_np_log_softmax(sim[i])[i] for i in range(n)])
    if variant == "infonce":
        return ab
    ba = -np.mean([_np_log_softmax(sim.T[i])[i] for i in range(n)])
    return 0.5 * (ab + ba)


@pytest.mark.parametrize("variant", ["ntxent", "infonce", "symmetric"])
def test_contrastive_loss_matches_numpy(variant):
    g = _rng(6)
    z_a, z_b = (
        torch.randn(5, 8, generator=g, dtype=torch.float64),
        torch.randn(5, 8, generator=g, dtype=torch.float64),
    )
    expected = _np_contrastive(z_a.numpy(), z_b.numpy(), 0.2, variant)
    got = L.ContrastiveLoss(temperature=0.2, variant=variant)(z_a, z_b).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_contrastive_loss_prefers_matched_pairs():
    z = torch.randn(6, 16, generator=_rng(7))
    matched = L.contrastive_loss(z, z + 0.01 * torch.randn(6, 16, generator=_rng(8)))
    shuffled = L.contrastive_loss(z, z.roll(1, dims=0))
    assert matched < shuffled


# ----------------------------------------------------------------------------------------- focal
def test_focal_gamma0_without_alpha_equals_cross_entropy():
    g = _rng(9)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    got = L.FocalLoss(gamma=0.0)(logits, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_matches_hand_computation_with_per_class_gamma_and_alpha():
    # pixel 1: logits (1, 0, -1), true class 0; pixel 2: logits (0, 2, 0), true class 1
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]])  # (B=1, K=3, N=2)
    target = torch.tensor([[0, 1]])
    alpha, gamma = [0.25, 0.5, 0.25], [1.0, 2.0, 0.5]
    p0 = math.exp(1) / (math.exp(1) + 1 + math.exp(-1))
    p1 = math.exp(2) / (1 + math.exp(2) + 1)
    hand = [-0.25 * (1 - p0) ** 1.0 * math.log(p0), -0.5 * (1 - p1) ** 2.0 * math.log(p1)]
    got = L.focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="none")
    np.testing.assert_allclose(got.numpy(), [hand], rtol=1e-6)
    assert L.FocalLoss(alpha, gamma)(logits, target).item() == pytest.approx(
        sum(hand) / 2, rel=1e-6
    )
    assert L.FocalLoss(alpha, gamma, reduction="sum")(logits, target).item() == pytest.approx(
        sum(hand), rel=1e-6
    )


def test_focal_all_pixels_ignored_is_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = L.focal_loss(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


# ----------------------------------------------------------------------------------------- Dice
def test_dice_matches_hand_computation():
    # 2 classes, 4 pixels (1 ignored); p(class 1) = sigmoid(z1 - z0)
    z1 = torch.tensor([2.0, -1.0, 0.5, 3.0])
    logits = torch.stack([torch.zeros(4), z1]).view(1, 2, 1, 4)
    target = torch.tensor([[[1, 0, 1, 255]]])
    q = [1 / (1 + math.exp(-v)) for v in z1.tolist()[:3]]  # valid pixels only
    p1, p0 = q, [1 - v for v in q]
    t1, t0 = [1, 0, 1], [0, 1, 0]
    s = 1.0

    def dice(p, t):
        inter = sum(a * b for a, b in zip(p, t))
        return (2 * inter + 2 * s) / (sum(p) + sum(t) + 2 * s)

    expected = ((1 - dice(p0, t0)) + (1 - dice(p1, t1))) / 2
    assert L.DiceLoss(num_classes=2, smooth=1.0)(logits, target).item() == pytest.approx(
        expected, rel=1e-6
    )
    only_1 = L.DiceLoss(num_classes=2, smooth=1.0, classes=[1])(logits, target).item()
    assert only_1 == pytest.approx(1 - dice(p1, t1), rel=1e-6)
    assert L.dice_loss(logits, target, smooth=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_dice_absent_class_contributes_zero():
    logits = torch.randn(1, 3, 4, 4, generator=_rng(10))
    target = torch.randint(0, 2, (1, 4, 4), generator=_rng(11))  # class 2 absent
    full = L.DiceLoss(3, smooth=0.0)(logits, target)
    two = L.DiceLoss(3, smooth=0.0, classes=[0, 1])(logits, target)
    assert full.item() == pytest.approx(two.item() * 2 / 3, rel=1e-6)


# ----------------------------------------------------------------------------------------- MCC
def test_soft_mcc_on_hard_predictions_equals_sklearn():
    g = _rng(12)
    target = torch.randint(0, 4, (3, 8, 8), generator=g)
    target[0, :3] = 255
    pred = torch.where(
        torch.rand(3, 8, 8, generator=g) < 0.6, target, torch.randint(0, 4, (3, 8, 8), generator=g)
    )
    pred = pred.clamp(0, 3)
    probs = F.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    valid = target != 255
    expected = matthews_corrcoef(target[valid].numpy(), pred[valid].numpy())
    assert L.soft_mcc(probs, target).item() == pytest.approx(expected, abs=1e-6)
    logits = 40.0 * probs  # saturated softmax = the hard prediction
    assert 1 - L.MCCLoss(4)(logits, target).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_mcc_degenerate_single_class_is_zero_like_sklearn():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    probs = F.one_hot(torch.zeros(1, 4, 4, dtype=torch.long), 3).permute(0, 3, 1, 2).float()
    assert matthews_corrcoef(np.zeros(16), np.zeros(16)) == 0.0
    assert L.soft_mcc(probs, target).item() == 0.0


def test_mcc_loss_perfect_is_zero_and_worst_is_two():
    target = torch.tensor([[[0, 1, 1, 0]]])
    onehot = F.one_hot(target, 2).permute(0, 3, 1, 2).float()
    assert L.mcc_loss(30.0 * (2 * onehot - 1), target).item() == pytest.approx(0.0, abs=1e-5)
    assert L.mcc_loss(-30.0 * (2 * onehot - 1), target).item() == pytest.approx(2.0, abs=1e-5)


# ----------------------------------------------------------------------------------------- boundary
def test_signed_distance_map_hand_case():
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :2, :2] = 1  # 2x2 block of class 1 in the top-left corner
    dist = L.signed_distance_map(mask, num_classes=3)
    r2, r5, r8 = math.sqrt(2), math.sqrt(5), math.sqrt(8)
    # inside: -(distance to the nearest non-class pixel - 1); the tile border is no boundary,
    # so the corner pixel (0, 0) lies 2 px from class 0 and gets -1
    expected_1 = [[-1, 0, 1, 2], [0, 0, 1, 2], [1, 1, r2, r5], [2, 2, r5, r8]]
    np.testing.assert_allclose(dist[0, 1].numpy(), expected_1, rtol=1e-6)
    # class 0 (the rest): outside = the block (distance to the nearest class-0 pixel);
    # inside = -(distance to the nearest class-1 pixel - 1)
    expected_0 = [
        [2, 1, 0, -1],
        [1, 1, 0, -1],
        [0, 0, -(r2 - 1), -(r5 - 1)],
        [-1, -1, -(r5 - 1), -(r8 - 1)],
    ]
    np.testing.assert_allclose(dist[0, 0].numpy(), expected_0, rtol=1e-6)
    assert torch.equal(dist[0, 2], torch.zeros(4, 4))  # absent class: all zero
    assert dist.dtype == torch.float32 and dist.shape == (1, 3, 4, 4)


def test_signed_distance_map_matches_scipy_and_handles_ignore_spacing_numpy():
    rng = np.random.default_rng(13)
    mask = ndimage.zoom(rng.integers(0, 3, (2, 4, 5)), (1, 3, 3), order=0).astype(
        np.int64
    )  # (2, 12, 15)
    mask[1, 0, :4] = 255
    got = L.signed_distance_map(mask, num_classes=4, spacing=(2.0, 0.5))
    assert isinstance(got, np.ndarray) and got.shape == (2, 4, 12, 15)
    for b in range(2):
        valid = mask[b] != 255
        for k in range(4):
            inside = mask[b] == k
            if not inside.any():
                assert (got[b, k] == 0).all()
                continue
            outside = ~inside
            depth = np.maximum(ndimage.distance_transform_edt(inside, sampling=(2.0, 0.5)) - 0.5, 0)
            ref = (
                ndimage.distance_transform_edt(outside, sampling=(2.0, 0.5)) * outside
                - depth * inside
            )
            np.testing.assert_allclose(got[b, k], np.where(valid, ref, 0.0), rtol=1e-6, atol=1e-6)
            assert (got[b, k][inside & valid] <= 0).all() and (got[b, k][outside & valid] > 0).all()
    # isotropic spacing s: exactly s times the pixel-unit map (Kervadec's one_hot2dist)
    pixel_units = L.signed_distance_map(mask, num_classes=4)
    np.testing.assert_allclose(
        L.signed_distance_map(mask, 4, spacing=30.0), 30.0 * pixel_units, rtol=1e-6
    )
    for b in range(2):
        for k in range(3):
            inside = mask[b] == k
            outside = ~inside
            ref = (
                ndimage.distance_transform_edt(outside) * outside
                - (ndimage.distance_transform_edt(inside) - 1) * inside
            )
            np.testing.assert_allclose(
                pixel_units[b, k], np.where(mask[b] != 255, ref, 0), atol=1e-6
            )
    # a class covering the whole tile has no boundary: zero map; single 2-D masks work too
    whole = L.signed_distance_map(np.ones((3, 3), dtype=np.int64), num_classes=2)
    assert whole.shape == (2, 3, 3) and (whole == 0).all()


def test_boundary_loss_hand_case():
    # one row: class 1 in the middle; phi_1 = (1, 0, -1, 0, 1); p(class 1) = 0.75 everywhere
    mask = torch.tensor([[[0, 1, 1, 1, 0]]])
    dist = L.signed_distance_map(mask, num_classes=2)
    np.testing.assert_allclose(dist[0, 1, 0].numpy(), [1, 0, -1, 0, 1])
    np.testing.assert_allclose(dist[0, 0, 0].numpy(), [0, 1, 2, 1, 0])
    logits = torch.zeros(1, 2, 1, 5)
    logits[:, 1] = math.log(3.0)
    assert L.BoundaryLoss()(logits, dist).item() == pytest.approx(
        0.75 * (1 + 0 - 1 + 0 + 1) / 5, rel=1e-6
    )
    both = L.boundary_loss(logits, dist, classes=(0, 1)).item()
    assert both == pytest.approx((0.25 * (0 + 1 + 2 + 1 + 0) + 0.75 * 1) / 10, rel=1e-6)


# ----------------------------------------------------------------------------------------- CORAL
CORAL_LOGITS = torch.tensor([[2.1, 1.8, -2.1, -1.8], [1.9, -1.0, -1.5, -1.3], [1.9, 1.8, 1.7, 1.6]])
CORAL_LEVELS = torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])


def test_coral_published_case():
    per_row = L.coral_loss(CORAL_LOGITS, CORAL_LEVELS, reduction="none")
    np.testing.assert_allclose(per_row.numpy(), [0.5370, 0.8951, 0.6441], atol=5e-5)
    assert L.coral_loss(CORAL_LOGITS, CORAL_LEVELS).item() == pytest.approx(0.6920, abs=5e-5)
    labels = torch.tensor([2, 1, 4])
    assert torch.equal(L.label_to_levels(labels, 5), CORAL_LEVELS)
    assert L.CoralLoss(5)(CORAL_LOGITS, labels).item() == pytest.approx(0.6920, abs=5e-5)


def test_coral_dense_layout_and_ignore_index():
    # the 3 published rows as 3 pixels of a (1, 4, 1, 3) map, plus an ignored pixel
    dense = torch.cat([CORAL_LOGITS.T, torch.randn(4, 1)], dim=1).view(1, 4, 1, 4)
    target = torch.tensor([[[2, 1, 4, 255]]])
    assert L.CoralLoss(5)(dense, target).item() == pytest.approx(0.6920, abs=5e-5)
    none = L.CoralLoss(5, reduction="none")(dense, target)
    assert none.shape == (1, 1, 4) and none[0, 0, 3] == 0


def test_levels_to_label_and_roundtrip():
    assert L.levels_to_label(CORAL_LOGITS).tolist() == [2, 1, 4]
    y = torch.randint(0, 5, (2, 3, 4), generator=_rng(14))
    levels = L.label_to_levels(y, 5)
    assert levels.shape == (2, 3, 4, 4)
    assert torch.equal(L.levels_to_label(levels, from_logits=False, dim=-1), y)


@pytest.mark.parametrize("ordered_biases", [False, True])
def test_coral_layer_rank_consistency(ordered_biases):
    torch.manual_seed(15)
    layer = L.CoralLayer(in_features=6, num_classes=5, ordered_biases=ordered_biases)
    if ordered_biases:  # any parameter values stay ordered
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0, 3)
    for x in (torch.randn(64, 6) * 5, torch.randn(3, 6, 7, 5) * 5):
        probs = torch.sigmoid(layer(x))
        assert (probs[:, 1:] <= probs[:, :-1]).all()
        class_probs = L.coral_class_probabilities(layer(x))
        torch.testing.assert_close(class_probs.sum(1), torch.ones_like(class_probs[:, 0]))
        # expected rank = sum of level probabilities when biases are ordered
        expected_rank = (class_probs * torch.arange(5).view(1, -1, *([1] * (x.ndim - 2)))).sum(1)
        torch.testing.assert_close(expected_rank, probs.sum(1), rtol=1e-5, atol=1e-5)


def test_coral_layer_shares_one_weight_and_dense_is_1x1_conv():
    layer = L.CoralLayer(4, num_classes=3, preinit_bias=True)
    assert layer.weight.shape == (4,) and layer.bias.shape == (2,)
    assert sum(p.numel() for p in layer.parameters()) == 4 + 2
    torch.testing.assert_close(layer.bias, torch.tensor([1.0, 0.5]))
    x = torch.randn(2, 4, 3, 5, generator=_rng(16))
    conv = F.conv2d(x, layer.weight.view(1, 4, 1, 1).expand(2, 4, 1, 1), layer.bias)
    torch.testing.assert_close(layer(x), conv)
    vec = torch.randn(7, 4, generator=_rng(17))
    torch.testing.assert_close(layer(vec), vec @ layer.weight[:, None] + layer.bias)


# ----------------------------------------------------------------------------------------- WeightedSum
class _Boom(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("a term with weight 0 must not be computed")


def test_weighted_sum_total_parts_and_skipped_terms():
    g = _rng(18)
    pred = torch.rand(2, 3, 8, 8, generator=g, requires_grad=True)
    target = torch.rand(2, 3, 8, 8, generator=g)
    loss = L.WeightedSum(
        {"l1": (L.L1Loss(), 2.0), "fft": (L.FFTLoss(), 0.5), "off": (_Boom(), 0.0)}
    )
    total, parts = loss(pred, target)
    l1, fft = L.l1_loss(pred, target), L.fft_loss(pred, target)
    assert set(parts) == {"l1", "fft"}
    assert parts["l1"].item() == pytest.approx(l1.item()) and parts["fft"].item() == pytest.approx(
        fft.item()
    )
    assert total.item() == pytest.approx(2.0 * l1.item() + 0.5 * fft.item(), rel=1e-6)
    assert not parts["l1"].requires_grad and total.requires_grad
    total.backward()
    assert torch.isfinite(pred.grad).all()
    loss.set_weight("fft", 0.0)
    total2, parts2 = loss(pred, target)
    assert set(parts2) == {"l1"} and total2.item() == pytest.approx(2.0 * l1.item(), rel=1e-6)


def test_weighted_sum_per_term_inputs():
    logits = torch.randn(1, 2, 1, 5, generator=_rng(19))
    target = torch.tensor([[[0, 1, 1, 1, 0]]])
    dist = L.signed_distance_map(target, 2)
    loss = L.WeightedSum({"focal": (L.FocalLoss(), 1.0), "boundary": (L.BoundaryLoss(), 0.1)})
    total, parts = loss(logits, target, boundary=(logits, dist))
    expected = L.focal_loss(logits, target) + 0.1 * L.boundary_loss(logits, dist)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["boundary"].item() == pytest.approx(L.boundary_loss(logits, dist).item(), rel=1e-6)
    total_kw, _ = loss(logits, target, boundary={"logits": logits, "dist_maps": dist})
    assert total_kw.item() == pytest.approx(total.item())


def test_weighted_sum_rejects_bad_specs():
    with pytest.raises(ValueError, match="identifier"):
        L.WeightedSum({"a.b": (L.L1Loss(), 1.0)})
    with pytest.raises(ValueError, match="finite"):
        L.WeightedSum({"l1": (L.L1Loss(), float("nan"))})
    with pytest.raises(ValueError, match="weight 0"):
        L.WeightedSum({"l1": (L.L1Loss(), 0.0)})(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_smp_losses_are_reexported():
    import segmentation_models_pytorch as smp

    assert L.LovaszLoss is smp.losses.LovaszLoss and L.TverskyLoss is smp.losses.TverskyLoss


# ----------------------------------------------------------------------------------------- input checks
IMG = torch.zeros(1, 2, 4, 4)
LOGITS = torch.zeros(1, 3, 4, 4)
LABELS = torch.zeros(1, 4, 4, dtype=torch.long)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: L.l1_loss(IMG, torch.zeros(1, 2, 4, 5)), "same shape"),
        (lambda: L.l1_loss(IMG, IMG, torch.zeros(1, 3, 4, 4)), "weight must have shape"),
        (lambda: L.l1_loss(IMG, IMG, -torch.ones(1, 1, 4, 4)), ">= 0"),
        (lambda: L.fft_loss(IMG.long(), IMG.long()), "floating-point"),
        (lambda: L.gradient_loss(IMG[0], IMG[0]), r"\(B, C, H, W\)"),
        (lambda: L.FFTLoss(norm="bad"), "norm"),
        (lambda: L.contrastive_loss(torch.zeros(1, 4), torch.zeros(1, 4)), "at least 2"),
        (lambda: L.contrastive_loss(torch.zeros(3, 4), torch.zeros(3, 5)), "same shape"),
        (lambda: L.focal_loss(LOGITS, LABELS.float()), "integer"),
        (lambda: L.focal_loss(LOGITS, LABELS[:, :3]), "target must have shape"),
        (lambda: L.focal_loss(LOGITS, LABELS + 3), "outside"),
        (lambda: L.FocalLoss(alpha=[1.0, 1.0])(LOGITS, LABELS), "one value per class"),
        (lambda: L.FocalLoss(gamma=-1.0), "gamma"),
        (lambda: L.DiceLoss(num_classes=4)(LOGITS, LABELS), "channels"),
        (lambda: L.MCCLoss(num_classes=3)(LOGITS, LABELS + 7), "outside"),
        (lambda: L.boundary_loss(LOGITS, torch.zeros(1, 2, 4, 4)), "dist_maps"),
        (lambda: L.signed_distance_map(LABELS.float(), 3), "integer"),
        (lambda: L.signed_distance_map(LABELS + 5, 3), "outside"),
        (lambda: L.CoralLoss(5)(LOGITS, LABELS), "channels"),
        (lambda: L.CoralLayer(3, 4)(torch.zeros(2, 5)), "shape"),
        (lambda: L.label_to_levels(torch.tensor([0, 5]), 5), r"\[0, 5\)"),
        (lambda: L.coral_loss(CORAL_LOGITS, CORAL_LEVELS[:, :3]), "shape"),
    ],
)
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------------------- ignore_index
def _ignore_cases():
    dist_target = torch.tensor([[[0, 1, 1, 2, 255, 255], [0, 0, 1, 2, 2, 255]]])
    return {
        "focal": (L.FocalLoss(alpha=[1.0, 2.0, 0.5], gamma=[2.0, 0.5, 1.0]), 3),
        "dice": (L.DiceLoss(3), 3),
        "mcc": (L.MCCLoss(3), 3),
        "coral": (L.CoralLoss(4), 3),  # K-1 = 3 logit channels, labels 0..3
        "boundary": (lambda z, t: L.boundary_loss(z, L.signed_distance_map(t, 3)), 3),
        "_target": dist_target,
    }


@pytest.mark.parametrize("name", ["focal", "dice", "mcc", "coral", "boundary"])
def test_ignored_pixels_change_neither_loss_nor_gradients(name):
    cases = _ignore_cases()
    loss_fn, channels = cases[name]
    target = cases["_target"]
    ignored = (target == 255).unsqueeze(1).expand(1, channels, *target.shape[1:])
    g = _rng(20)
    logits_a = torch.randn(1, channels, 2, 6, generator=g)
    logits_b = torch.where(ignored, 50 * torch.randn(1, channels, 2, 6, generator=g), logits_a)
    logits_nan = torch.where(ignored, float("nan"), logits_a)  # NaN where ignored: no effect either
    results = []
    for logits in (logits_a, logits_b, logits_nan):
        logits = logits.clone().requires_grad_(True)
        loss = loss_fn(logits, target)
        loss.backward()
        results.append((loss.detach(), logits.grad))
    for other in results[1:]:
        assert results[0][0].item() == pytest.approx(other[0].item(), rel=1e-6, abs=1e-7)
        torch.testing.assert_close(results[0][1], other[1])
    assert (results[0][1][ignored] == 0).all()


@pytest.mark.parametrize("name", ["focal", "dice", "mcc", "coral", "boundary"])
def test_a_nan_logit_that_counts_makes_the_loss_nan(name):
    """Issue 12: soft MCC read a NaN confusion matrix as the degenerate case (loss 1.0, gradient
    NaN). Every segmentation loss gives NaN for a NaN logit at a pixel that takes part, so the
    training logs show it and the NaN guard skips the step."""
    cases = _ignore_cases()
    loss_fn, channels = cases[name]
    target = cases["_target"]
    logits = torch.randn(1, channels, 2, 6, generator=_rng(22))
    logits[0, 0, 0, 1] = float("nan")  # target 1 there: a pixel that counts
    assert torch.isnan(loss_fn(logits, target))
    if name == "mcc":
        probs = F.softmax(logits, dim=1)
        assert torch.isnan(L.soft_mcc(probs, target)) and torch.isnan(L.mcc_loss(logits, target))


def test_l1_weight_zero_excludes_a_nan_pixel():
    g = _rng(23)
    pred, target = torch.rand(1, 2, 4, 4, generator=g), torch.rand(1, 2, 4, 4, generator=g)
    weight = torch.ones(1, 1, 4, 4)
    weight[0, 0, 1, 2] = 0
    expected = L.l1_loss(pred, target, weight)
    broken = pred.clone()
    broken[0, 1, 1, 2] = float("nan")
    broken.requires_grad_(True)
    loss = L.l1_loss(broken, target, weight)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(broken.grad).all() and broken.grad[0, 1, 1, 2] == 0
    assert torch.isnan(L.l1_loss(broken.detach(), target))  # weight 1 everywhere: it counts


def test_mcc_under_bf16_autocast_keeps_float32_accuracy():
    g = _rng(21)
    logits = torch.randn(2, 4, 16, 16, generator=g)
    target = torch.randint(0, 4, (2, 16, 16), generator=g)
    reference = L.mcc_loss(logits, target)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = L.mcc_loss(logits, target)
    assert got.item() == pytest.approx(reference.item(), abs=1e-5)


def test_focal_scalar_gamma_types_and_contract_names():
    logits = torch.randn(1, 3, 2, 2, generator=_rng(22))
    target = torch.randint(0, 3, (1, 2, 2), generator=_rng(23))
    reference = L.focal_loss(logits, target, gamma=2.0)
    for gamma in (2, np.float32(2.0), torch.tensor(2.0), [2.0, 2.0, 2.0]):
        assert L.FocalLoss(gamma=gamma)(logits, target).item() == pytest.approx(
            reference.item(), rel=1e-6
        )
    contract = """L1Loss VGGPerceptualLoss FFTLoss GradientLoss GramTextureLoss ContrastiveLoss FocalLoss
        DiceLoss MCCLoss BoundaryLoss signed_distance_map CoralLayer label_to_levels levels_to_label
        CoralLoss WeightedSum LovaszLoss TverskyLoss""".split()
    assert all(name in L.__all__ and hasattr(L, name) for name in contract)
