"""RiskNet: every switch through forward/backward (timm style), CORAL rank consistency, losses."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eo_common.losses import coral_loss, label_to_levels
from risk_mapping.losses import RiskLoss
from risk_mapping.model import RiskNet, SpatialAttention, class_probabilities, expected_rank

SMALL = dict(encoder="resnet18", encoder_weights=None, decoder_channels=(32, 16, 16, 8, 8))
SWITCHES = list(itertools.product([True, False], [True, False], [0.0, 0.3]))


@pytest.mark.parametrize(("attention", "ordered", "dropout"), SWITCHES)
def test_forward_backward_every_switch(attention, ordered, dropout):
    torch.manual_seed(0)
    net = RiskNet(
        in_channels=5,
        attention=attention,
        coral_ordered_biases=ordered,
        dropout_prob=dropout,
        **SMALL,
    )
    net.train()
    x = torch.randn(2, 5, 64, 64)
    y = torch.randint(0, 3, (2, 64, 64))
    y[0, :4] = 255
    out = net(x)
    assert out["logits"].shape == (2, 3, 64, 64) and out["coral_logits"].shape == (2, 2, 64, 64)
    total, parts = RiskLoss(
        gamma=2.0, class_weights=[1, 2, 1], label_smoothing=0.1, coral_weight=0.5
    )(out, y)
    assert torch.isfinite(total) and set(parts) == {"focal", "smoothing", "coral"}
    total.backward()
    missing = [
        n
        for n, p in net.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"
    assert any(isinstance(m, SpatialAttention) for m in net.modules()) == attention


def test_efficientnet_b4_builds_and_runs():
    net = RiskNet(
        in_channels=7, encoder="efficientnet-b4", encoder_weights=None, attention=True
    ).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 7, 64, 64))
    assert out["logits"].shape == (1, 3, 64, 64) and torch.isfinite(out["logits"]).all()


def test_bad_input_shapes_raise():
    net = RiskNet(in_channels=3, **SMALL)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.randn(1, 3, 48, 40))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(1, 4, 64, 64))


def test_coral_head_is_rank_consistent():
    torch.manual_seed(1)
    net = RiskNet(in_channels=4, coral_ordered_biases=True, **SMALL).eval()
    with torch.no_grad():
        net.coral_head.bias_first.fill_(-3.0)  # any bias values keep the order
        z = net(torch.randn(3, 4, 64, 64) * 5)["coral_logits"]
    # one shared weight: the two levels differ by a constant (b_0 - b_1 > 0) at every pixel
    diff = z[:, 0] - z[:, 1]
    assert (
        torch.allclose(diff, diff.flatten()[0].expand_as(diff), atol=1e-5)
        and float(diff.flatten()[0]) > 0
    )
    q = torch.sigmoid(z)
    assert bool((q[:, 0] >= q[:, 1]).all())
    probs = class_probabilities({"logits": torch.zeros(3, 3, 64, 64), "coral_logits": z}, "coral")
    assert bool((probs >= 0).all()) and torch.allclose(probs.sum(1), torch.ones(3, 64, 64))
    # expected rank from class probabilities equals the sum of level probabilities (CORAL identity)
    assert torch.allclose(expected_rank(probs), q.sum(1), atol=1e-5)


def test_expected_rank_and_head_mixing():
    logits = torch.randn(2, 3, 4, 4)
    coral = torch.randn(2, 2, 4, 4)
    soft = class_probabilities({"logits": logits, "coral_logits": coral}, "softmax")
    avg = class_probabilities({"logits": logits, "coral_logits": coral}, "average")
    assert torch.allclose(soft, torch.softmax(logits, 1))
    assert torch.allclose(avg.sum(1), torch.ones(2, 4, 4), atol=1e-6)
    p = torch.tensor([0.2, 0.3, 0.5]).view(1, 3, 1, 1)
    assert float(expected_rank(p)) == pytest.approx(1.3)
    assert np.allclose(expected_rank(p[0].numpy()), 1.3)


def test_loss_ignores_255():
    torch.manual_seed(0)
    loss = RiskLoss(gamma=2.0, class_weights=[1.0, 3.0, 2.0], label_smoothing=0.1, coral_weight=0.7)
    out = {"logits": torch.randn(1, 3, 4, 4), "coral_logits": torch.randn(1, 2, 4, 4)}
    y = torch.randint(0, 3, (1, 4, 4))
    y[0, 0] = 255
    base, _ = loss(out, y)
    changed = {k: v.clone() for k, v in out.items()}
    changed["logits"][..., 0, :] = 100.0  # garbage only where the label is 255
    changed["coral_logits"][..., 0, :] = -100.0
    again, _ = loss(changed, y)
    assert torch.allclose(base, again)
    all_ignored, _ = loss(out, torch.full((1, 4, 4), 255))
    assert float(all_ignored) == 0.0


def test_loss_equals_torch_cross_entropy_with_label_smoothing():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    y = torch.randint(0, 3, (2, 5, 5))
    y[1, 2] = 255
    ours, parts = RiskLoss(gamma=0.0, label_smoothing=0.2, use_ordinal=False)(
        {"logits": logits, "coral_logits": None}, y
    )
    ref = F.cross_entropy(logits, y, ignore_index=255, label_smoothing=0.2)
    assert torch.allclose(ours, ref, atol=1e-6) and "ce" in parts


def test_coral_part_matches_published_formula():
    torch.manual_seed(0)
    coral = torch.randn(1, 2, 3, 3)
    y = torch.randint(0, 3, (1, 3, 3))
    y[0, 1, 1] = 255
    out = {"logits": torch.zeros(1, 3, 3, 3), "coral_logits": coral}
    _, parts = RiskLoss(gamma=0.0, coral_weight=1.0)(out, y)
    valid = y.flatten() != 255
    z = coral.permute(0, 2, 3, 1).reshape(-1, 2)[valid]
    levels = label_to_levels(y.flatten()[valid], 3)
    manual = []
    for zk, lk in zip(z.tolist(), levels.tolist()):
        manual.append(
            -sum(
                math.log(1 / (1 + math.exp(-a))) * b
                + (math.log(1 / (1 + math.exp(-a))) - a) * (1 - b)
                for a, b in zip(zk, lk)
            )
        )
    assert float(parts["coral"]) == pytest.approx(float(np.mean(manual)), abs=1e-5)
    assert float(parts["coral"]) == pytest.approx(float(coral_loss(z, levels)), abs=1e-6)


def test_smp_export_loads_in_smp_with_the_same_outputs(tmp_path):
    """The network without the attention block is a plain smp U-Net: smp.from_pretrained loads the
    export and returns the softmax-head logits; with attention there is no export."""
    import json

    import segmentation_models_pytorch as smp
    from risk_mapping.model import export_smp

    torch.manual_seed(0)
    net = RiskNet(in_channels=4, attention=False, dropout_prob=0.3, **SMALL).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the initial weights
    out = export_smp(net, tmp_path / "smp", band_mean=[1, 2, 3, 4], band_std=[1, 1, 1, 2],
                     band_names=["a", "b", "c", "d"])  # fmt: skip
    loaded = smp.from_pretrained(out).eval()
    assert type(loaded) is smp.Unet
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x)["logits"], atol=1e-6)
    info = json.loads((out / "preprocessing.json").read_text())
    assert info["std"] == [1, 1, 1, 2] and info["classes"] == ["low", "medium", "high"]
    with_attention = RiskNet(in_channels=4, attention=True, **SMALL)
    assert export_smp(with_attention, tmp_path / "no", band_mean=[0] * 4, band_std=[1] * 4) is None
    assert not (tmp_path / "no").exists()
