"""Every loss is differentiable and finite at perfect and at worst predictions (timm-style sweep)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from eo_common import losses as L

K = 4  # glacier-like: background, glacier, debris, lake
SATURATION = 100.0  # log p rounds to exactly 0 in float32


def _labels() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, K - 1, (2, 8, 8), generator=g)  # class 3 ("lake") absent
    target[0, 0, :3] = 255
    return target


def _class_logits(target: torch.Tensor, worst: bool) -> torch.Tensor:
    """Saturated logits: the true class (perfect) or the class furthest from it (worst)."""
    labels = target.clamp(max=K - 1)
    if worst:
        labels = (K - 1) - labels
    onehot = F.one_hot(labels, K).permute(0, 3, 1, 2).float()
    return SATURATION * (2 * onehot - 1)


def _coral_logits(target: torch.Tensor, worst: bool) -> torch.Tensor:
    labels = target.clamp(max=K - 1)
    if worst:
        labels = (K - 1) - labels
    levels = L.label_to_levels(labels, K).permute(0, 3, 1, 2)
    return SATURATION * (2 * levels - 1)


def _image_pair(worst: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 4, 32, 32, generator=g)
    return (1.0 - target if worst else target.clone()), target


def _embeddings(worst: bool) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.eye(4, 8)
    return (-z if worst else z.clone()), z


def _random_vgg(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return L.VGGPerceptualLoss(layers=("relu1_2", "relu2_2"), **kwargs)


def _segmentation_case(loss: Callable, coral: bool = False):
    def make(worst: bool):
        target = _labels()
        logits = (_coral_logits if coral else _class_logits)(target, worst)
        return loss, (logits, target)

    return make


def _image_case(loss_factory: Callable):
    def make(worst: bool):
        return loss_factory(), _image_pair(worst)

    return make


def _boundary_case(worst: bool):
    target = _labels()
    dist = L.signed_distance_map(target, K)
    return L.BoundaryLoss(classes=(1, 2, 3)), (_class_logits(target, worst), dist)


def _weighted_sum_case(worst: bool):
    target = _labels()
    logits = _class_logits(target, worst)
    dist = L.signed_distance_map(target, K)
    loss = L.WeightedSum(
        {
            "focal": (L.FocalLoss(gamma=[0.0, 2.0, 2.0, 0.5]), 1.0),
            "dice": (L.DiceLoss(K), 1.0),
            "mcc": (L.MCCLoss(K), 0.5),
            "boundary": (L.BoundaryLoss(), 0.01),
        }
    )
    return (lambda z, t: loss(z, t, boundary=(z, dist))[0]), (logits, target)


CASES = {
    "l1": _image_case(L.L1Loss),
    "l1_weighted": _image_case(lambda: lambda p, t: L.l1_loss(p, t, torch.ones(2, 1, 32, 32))),
    "fft": _image_case(L.FFTLoss),
    "gradient": _image_case(L.GradientLoss),
    "perceptual": _image_case(lambda: _random_vgg(rgb_bands=(3, 2, 1))),
    "gram_vgg": _image_case(
        lambda: L.GramTextureLoss(feature_extractor=_random_vgg(rgb_bands=(0, 1, 2)).features)
    ),
    "gram_raw": _image_case(lambda: L.GramTextureLoss(feature_extractor=None)),
    "contrastive_ntxent": lambda worst: (L.ContrastiveLoss(), _embeddings(worst)),
    "contrastive_symmetric": lambda worst: (
        L.ContrastiveLoss(variant="symmetric"),
        _embeddings(worst),
    ),
    "focal": _segmentation_case(L.FocalLoss(alpha=[0.5, 1.0, 2.0, 4.0], gamma=2.0)),
    "focal_per_class_gamma": _segmentation_case(L.FocalLoss(gamma=[0.0, 0.5, 1.0, 2.0])),
    "dice": _segmentation_case(L.DiceLoss(K)),
    "mcc": _segmentation_case(L.MCCLoss(K)),
    "boundary": _boundary_case,
    "coral": _segmentation_case(L.CoralLoss(K), coral=True),
    "lovasz": _segmentation_case(L.LovaszLoss("multiclass", ignore_index=255)),
    "tversky": _segmentation_case(
        L.TverskyLoss("multiclass", ignore_index=255, alpha=0.3, beta=0.7)
    ),
    "weighted_sum": _weighted_sum_case,
}


@pytest.mark.parametrize("worst", [False, True], ids=["perfect", "worst"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_is_finite_and_differentiable(name, worst):
    loss_fn, inputs = CASES[name](worst)
    first = inputs[0].clone().requires_grad_(True)
    value = loss_fn(first, *inputs[1:])
    assert value.ndim == 0 and torch.isfinite(value), f"{name}: {value}"
    value.backward()
    assert first.grad is not None and torch.isfinite(first.grad).all(), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_perfect_prediction_scores_no_worse_than_worst(name):
    loss_fn, perfect = CASES[name](False)
    _, worst = CASES[name](True)
    assert loss_fn(*perfect).item() <= loss_fn(*worst).item() + 1e-6


def test_absent_class_everywhere_stays_finite():
    """No lake pixels anywhere, uniform logits: every class-wise loss stays finite with finite grads."""
    target = _labels()
    target[target == 2] = 0  # now classes 2 and 3 are both absent
    dist = L.signed_distance_map(target, K)
    assert torch.equal(dist[:, 3], torch.zeros_like(dist[:, 3]))
    for loss_fn, args in [
        (L.FocalLoss(alpha=[1, 1, 1, 10], gamma=[2, 2, 2, 0.5]), ()),
        (L.DiceLoss(K, smooth=0.0), ()),
        (L.MCCLoss(K), ()),
        (lambda z, t: L.boundary_loss(z, dist), ()),
    ]:
        logits = torch.zeros(2, K, 8, 8, requires_grad=True)
        value = loss_fn(logits, target, *args)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
