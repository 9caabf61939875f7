"""Model tests (timm style): every switch through forward, backward, gradients and finiteness."""

from __future__ import annotations

import pytest
import torch
from cloud_removal.model import (
    CloudRemovalCrossAttention,
    CrossAttentionBlock,
    ModelConfig,
    SpectralAttentionSAR,
    build_model,
    count_parameters,
)

SWITCHES = [
    {},
    {"use_spectral_attention": False},
    {"use_cross_attn": False},
    {"num_cross_attn_blocks": 2},
    {"num_cross_attn_blocks": 3},
    {"use_sar_gating": False},
    {"use_confidence": False},
    {"use_global_residual": False},
    {"use_confidence": False, "use_global_residual": False},
    {"multi_scale": False},
    {"multi_scale_weights": "fixed"},
    {"norm": "batch"},
    {"norm": "none"},
    {
        "use_spectral_attention": False,
        "use_cross_attn": False,
        "use_sar_gating": False,
        "use_confidence": False,
        "multi_scale": False,
        "norm": "none",
    },
]


@pytest.mark.parametrize(
    "overrides", SWITCHES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "full"
)
def test_forward_backward_every_switch(overrides, tiny_config):
    torch.manual_seed(0)
    cfg = tiny_config(residual_init_std=0.1, **overrides)
    model = CloudRemovalCrossAttention(cfg)
    if (
        model.trunk.sar_attention is not None
    ):  # zero-initialised (identity) last layer: perturb it so
        torch.nn.init.normal_(
            model.trunk.sar_attention.mlp[-1].weight, std=0.1
        )  # its inputs get grads
    size = cfg.stride * 2
    optical, sar = torch.rand(2, 13, size, size), torch.rand(2, 2, size, size)
    out = model(optical, sar)
    assert out.prediction.shape == (2, 13, size, size)
    assert out.residual.shape == (2, 13, size, size)
    assert torch.isfinite(out.prediction).all()
    if cfg.use_confidence:
        assert out.confidence.shape == (2, 1, size, size)
        assert (
            0 <= float(out.confidence.detach().min()) <= float(out.confidence.detach().max()) <= 1
        )
    else:
        assert out.confidence is None
    z_opt, z_sar = out.embeddings
    assert z_opt.shape == z_sar.shape == (2, cfg.widths[-1])
    loss = out.prediction.square().mean() + (
        out.confidence.mean() if out.confidence is not None else 0
    )
    loss = loss + z_opt.square().mean() + z_sar.square().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    zero = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0.0]
    assert not zero, f"parameters with an all-zero gradient: {zero}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_default_parameter_count_near_6m(capsys):
    model = CloudRemovalCrossAttention()
    n = count_parameters(model)
    assert 5.9e6 <= n <= 6.3e6, n
    from cloud_removal.cli import model_info

    assert model_info([]) == 0  # python -m cloud_removal.model
    printed = capsys.readouterr().out
    assert f"{n:,} trainable parameters" in printed
    assert "SpectralAttentionSAR" in printed and "multi-scale" in printed


def test_switches_change_the_architecture(tiny_config):
    full = count_parameters(CloudRemovalCrossAttention(tiny_config()))
    assert count_parameters(CloudRemovalCrossAttention(tiny_config(use_cross_attn=False))) < full
    assert count_parameters(CloudRemovalCrossAttention(tiny_config(use_sar_gating=False))) < full
    assert count_parameters(CloudRemovalCrossAttention(tiny_config(use_confidence=False))) < full
    # learned multi-scale weights are exactly 3 extra parameters over fixed weights
    fixed = count_parameters(CloudRemovalCrossAttention(tiny_config(multi_scale_weights="fixed")))
    assert full - fixed == 3


def test_stride_error_is_clear(tiny_config):
    model = CloudRemovalCrossAttention(tiny_config())
    assert model.stride == 16
    with pytest.raises(ValueError, match=r"H=40, W=40 must be divisible by the network stride 16"):
        model(torch.rand(1, 13, 40, 40), torch.rand(1, 2, 40, 40))
    no_ms = CloudRemovalCrossAttention(tiny_config(multi_scale=False))
    assert no_ms.stride == 4
    no_ms(torch.rand(1, 13, 20, 20), torch.rand(1, 2, 20, 20))  # 20 is fine without multi-scale


def test_bad_band_counts(tiny_config):
    model = CloudRemovalCrossAttention(tiny_config(multi_scale=False))
    with pytest.raises(ValueError, match=r"optical must be \(B, 13, H, W\)"):
        model(torch.rand(1, 12, 16, 16), torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"sar must be \(B, 2, H, W\)"):
        model(torch.rand(1, 13, 16, 16), torch.rand(1, 3, 16, 16))


def test_zero_head_is_exact_identity(tiny_config):
    """With a zero output head the global residual returns the cloudy input exactly."""
    model = CloudRemovalCrossAttention(tiny_config(residual_init_std=0.0)).eval()
    optical = torch.rand(1, 13, 32, 32)
    out = model(optical, torch.rand(1, 2, 32, 32))
    assert torch.equal(out.prediction, optical)


def test_confidence_weights_residual(tiny_config):
    """prediction = optical + confidence * residual, checked against the returned parts."""
    torch.manual_seed(1)
    model = CloudRemovalCrossAttention(tiny_config(residual_init_std=0.5)).eval()
    optical = torch.rand(2, 13, 32, 32)
    out = model(optical, torch.rand(2, 2, 32, 32))
    torch.testing.assert_close(out.prediction, optical + out.confidence * out.residual)


def test_scale_weights_sum_to_one_and_start_at_fixed(tiny_config):
    model = CloudRemovalCrossAttention(tiny_config())
    w = model.scale_weights()
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    torch.testing.assert_close(w, torch.tensor(ModelConfig().fixed_scale_weights))


def test_spectral_attention_identity_at_init_and_range():
    att = SpectralAttentionSAR(2)
    x = torch.rand(3, 2, 8, 8)
    torch.testing.assert_close(att(x), x)
    torch.nn.init.normal_(att.mlp[-1].weight)
    w = att.weights(x)
    assert w.shape == (3, 2) and bool(((w > 0) & (w < 2)).all())


def test_cross_attention_matches_reference_attention():
    """The block's attention equals torch.nn.functional softmax(QK^T/sqrt(d))V computed by hand."""
    torch.manual_seed(0)
    blk = CrossAttentionBlock(8, num_heads=2).eval()
    opt, sar = torch.rand(1, 8, 2, 3), torch.rand(1, 8, 2, 3)
    q_tok = opt.flatten(2).transpose(1, 2)
    kv_tok = sar.flatten(2).transpose(1, 2)
    q = blk.q(blk.norm_q(q_tok)).view(1, 6, 2, 4).transpose(1, 2)
    k, v = blk.kv(blk.norm_kv(kv_tok)).view(1, 6, 2, 2, 4).permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    x = q_tok + blk.proj(att.transpose(1, 2).reshape(1, 6, 8))
    x = x + blk.mlp(blk.norm_mlp(x))
    torch.testing.assert_close(blk(opt, sar), x.transpose(1, 2).reshape(1, 8, 2, 3))


def test_config_validation_names_the_field(capsys):
    from cloud_removal.cli import model_info
    from eo_common.config import config_problems

    bad = ModelConfig(num_cross_attn_blocks=4, encoder_blocks=(1, 1))
    assert config_problems(bad, "model.") == [
        "model.num_cross_attn_blocks: must be <= 3, got 4",
        "model.encoder_blocks: needs 3 entries (one per level), got [1, 1]",
    ]
    with pytest.raises(ValueError, match="encoder_blocks: needs 3 entries"):
        CloudRemovalCrossAttention(ModelConfig(encoder_blocks=(1, 1)))
    with pytest.raises(ValueError, match="unknown --model_name"):
        build_model("Nope")
    # the command names every bad field at once, exit 2
    assert (
        model_info(["--num_cross_attn_blocks", "4", "--base_width", "6", "--num_heads", "5"]) == 2
    )
    err = capsys.readouterr().err
    assert "model.num_cross_attn_blocks: must be <= 3, got 4" in err
    assert "model.num_heads: the bottleneck width 24" in err
