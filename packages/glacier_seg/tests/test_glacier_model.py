"""U-Net variants (timm-style forward/backward over every switch), encoder weights, losses."""

from __future__ import annotations

import dataclasses

import pytest
import segmentation_models_pytorch as smp
import torch
from glacier_seg.config import LossConfig, ModelConfig
from glacier_seg.model import (
    EncoderWeightsError,
    build_loss,
    build_model,
    expand_first_conv,
    padded_forward,
)

SMALL = [64, 32, 32, 16, 16]  # narrow decoder (scSE needs >= 16 channels) keeps the tests fast


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory):
    """A 3-channel resnet18 encoder state dict saved like a downloaded checkpoint."""
    torch.manual_seed(0)
    encoder = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None)
    state = {f"module.{k}": v for k, v in encoder.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(10, 512)  # a classifier head is dropped
    path = tmp_path_factory.mktemp("weights") / "resnet18_rgb.pth"
    torch.save({"state_dict": state}, path)
    return path, encoder.state_dict()


VARIANTS = [
    {"in_channels": 5},
    {"in_channels": 7},
    {"in_channels": 7, "decoder_attention_type": "none"},
    {"in_channels": 7, "encoder_weights": "PATH", "extra_channel_init": "rgb_matched"},
    {"in_channels": 5, "encoder_weights": "PATH", "extra_channel_init": "smp"},
    {"in_channels": 7, "encoder_weights": "PATH", "extra_channel_init": "zero"},
]


@pytest.mark.parametrize(
    "switches", VARIANTS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items())
)
def test_every_variant_forward_backward(switches, rgb_weights):
    switches = dict(switches)
    in_channels = switches.pop("in_channels")
    if switches.get("encoder_weights") == "PATH":
        switches["encoder_weights"] = str(rgb_weights[0])
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(encoder_name="resnet18", decoder_channels=SMALL, **switches), in_channels
    )
    x = torch.randn(2, in_channels, 40, 48)  # not multiples of 32: padded_forward pads
    logits = padded_forward(model, x)
    assert logits.shape == (2, 4, 40, 48) and torch.isfinite(logits).all()
    target = torch.randint(0, 4, (2, 40, 48))
    loss, _ = build_loss(LossConfig(boundary_weight=0.0))(logits, target)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name
    has_scse = any("SCSE" in type(m).__name__ for m in model.modules())
    assert has_scse == (switches.get("decoder_attention_type", "scse") == "scse")


def test_pretrained_weights_are_loaded_and_first_conv_expanded(rgb_weights):
    path, reference = rgb_weights
    model = build_model(ModelConfig(encoder_name="resnet18", encoder_weights=str(path)), 7)
    state = model.encoder.state_dict()
    assert torch.equal(state["layer1.0.conv1.weight"], reference["layer1.0.conv1.weight"])
    w_rgb = reference["conv1.weight"]  # ImageNet order R, G, B
    w = state["conv1.weight"]
    scale = 3 / 7
    torch.testing.assert_close(w[:, 0], w_rgb[:, 2] * scale)  # B2 (blue) <- blue filter
    torch.testing.assert_close(w[:, 2], w_rgb[:, 0] * scale)  # B4 (red) <- red filter
    for extra in range(3, 7):
        torch.testing.assert_close(w[:, extra], w_rgb.mean(1) * scale)
    smp_like = build_model(
        ModelConfig(encoder_name="resnet18", encoder_weights=str(path), extra_channel_init="smp"),
        7,
    )
    w_smp = smp_like.encoder.state_dict()["conv1.weight"]
    for i in range(7):  # smp's own rule, cyclic
        torch.testing.assert_close(w_smp[:, i], w_rgb[:, i % 3] * scale)


def test_expand_first_conv_zero_mode_keeps_rgb_response():
    w = torch.randn(8, 3, 3, 3)
    new = expand_first_conv(w, 7, "zero")
    x_rgb = torch.randn(1, 3, 9, 9)
    x = torch.cat([x_rgb[:, [2, 1, 0]], torch.randn(1, 4, 9, 9)], 1)  # blue, green, red, extras
    torch.testing.assert_close(
        torch.nn.functional.conv2d(x, new),
        torch.nn.functional.conv2d(x_rgb, w),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="extra_channel_init"):
        expand_first_conv(w, 4, "random")


def test_bad_encoder_weights_are_named(tmp_path):
    with pytest.raises(EncoderWeightsError, match="not found: .*missing.pth"):
        build_model(
            ModelConfig(encoder_name="resnet18", encoder_weights=str(tmp_path / "missing.pth")), 7
        )
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "bogus": torch.zeros(1)}, wrong)
    with pytest.raises(EncoderWeightsError, match="wrong.pth.*missing"):
        build_model(ModelConfig(encoder_name="resnet18", encoder_weights=str(wrong)), 7)


TERMS = ["focal", "dice", "mcc", "boundary", "lovasz", "tversky"]


@pytest.mark.parametrize("term", TERMS)
def test_each_loss_finite_and_differentiable_without_lake(term):
    from eo_common.losses import signed_distance_map

    weights = {f"{t}_weight": 1.0 if t == term else 0.0 for t in TERMS}
    loss = build_loss(LossConfig(**weights, focal_gamma=[1.0, 2.0, 3.0, 3.0]))
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    target = torch.randint(0, 3, (2, 16, 16))  # classes 0..2: a tile without lake
    kwargs = {}
    if term == "boundary":
        kwargs["boundary"] = (logits, signed_distance_map(target, 4))
    total, parts = loss(logits, target, **kwargs)
    assert set(parts) == {term}
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_loss_config_is_checked():
    with pytest.raises(ValueError, match="every loss weight is 0"):
        build_loss(LossConfig(focal_weight=0, dice_weight=0, mcc_weight=0))
    with pytest.raises(ValueError, match="focal_gamma"):
        build_loss(LossConfig(focal_gamma=[1.0, 2.0]))
    assert dataclasses.asdict(LossConfig())["mcc_weight"] == 0.5


def test_imagenet_weights_offline_are_one_line(
    glacier_root, glcm_cache, tmp_path, capsys, monkeypatch
):
    """Encoder weights that cannot be had (no network, no local file): one line, exit 2, nothing
    written (a traceback in the first release)."""
    from glacier_seg.cli import glacier_train
    from glacier_tiny import tiny_train_args

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    code = glacier_train(
        tiny_train_args(
            glacier_root, out, glcm_cache, "--encoder_name", "resnet18", "--pretrained", "imagenet"
        )
    )
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert (
        "ImageNet weights for encoder 'resnet18'" in errors[0]
        and "--encoder_weights PATH" in errors[0]
    )
    assert not out.exists()
