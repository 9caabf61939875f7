"""Stage-2/3 networks over every switch: shapes, gradients only where they belong, LoRA counts, int8, merge."""

from __future__ import annotations

import itertools

import pytest
import torch
from gac_pipeline.config import DEFAULT_STAGE2_LORA_TARGETS
from gac_pipeline.lora import apply_lora, lora_parameter_count, merge_lora
from gac_pipeline.model import GrounderConfig, RefinerConfig, Stage2Refiner, Stage3Grounder

H = W = 120


def _trainable_ok(name: str) -> bool:
    return "lora_" in name or name.startswith("head.")


def _check_gradients(model: torch.nn.Module, out: torch.Tensor) -> None:
    assert torch.isfinite(out).all()
    # the zero-initialised output conv makes the head start as identity; perturb it so every gradient is nonzero
    loss = (out - 0.3).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert _trainable_ok(name), f"{name} should be frozen"
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, f"frozen {name} received a gradient"


def _nonzero_head(model):
    torch.nn.init.normal_(model.head.out.weight, std=0.01)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)


@pytest.mark.parametrize(
    "use_lora,load_in_8bit,use_s1",
    list(itertools.product([True, False], [False, True], [False, True])),
)
def test_stage2_switches(use_lora, load_in_8bit, use_s1):
    torch.manual_seed(0)
    model = Stage2Refiner(
        RefinerConfig(
            backbone="prithvi_eo_tiny",
            lora_rank=2,
            use_lora=use_lora,
            load_in_8bit=load_in_8bit,
            use_s1=use_s1,
        )  # fmt: skip
    )
    _nonzero_head(model)
    opt_v1 = torch.rand(2, 12, H, W)
    out = model(opt_v1, torch.rand(2, 2, H, W) if use_s1 else None)
    assert out.shape == (2, 12, H, W)
    _check_gradients(model, out)
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    assert all(p.grad.abs().sum() > 0 for p in lora_params)
    # gradients reach the adapters, not the frozen Prithvi weights
    assert all(
        not p.requires_grad for n, p in model.backbone.named_parameters() if "lora_" not in n
    )


def test_stage2_lora_counts_and_patch_embed_untouched():
    model = Stage2Refiner(RefinerConfig(backbone="prithvi_eo_tiny", lora_rank=4))
    # prithvi_eo_tiny: 4 blocks, width 256; LoRA adds r*(in+out) per layer: qkv 256->768, proj 256->256
    assert lora_parameter_count(model) == 4 * 4 * ((256 + 768) + (256 + 256))
    assert not any("lora_" in n for n, _ in model.backbone.patch_embed.named_parameters())
    head = sum(p.numel() for p in model.head.parameters())
    assert sum(
        p.numel() for p in model.parameters() if p.requires_grad
    ) == head + lora_parameter_count(model)


def test_building_a_model_keeps_the_float32_matmul_precision_of_the_process():
    """terratorch sets ``torch.set_float32_matmul_precision("medium")`` when imported; a process that
    built a gac model must keep computing other runs' matmuls as before (checked in a fresh process,
    where terratorch is not imported yet)."""
    import subprocess
    import sys

    code = (
        "import torch; before = torch.get_float32_matmul_precision();"
        "from gac_pipeline.model import RefinerConfig, Stage2Refiner;"
        "Stage2Refiner(RefinerConfig(backbone='prithvi_eo_tiny', lora_rank=2, img_size=64));"
        "import terratorch, sys;"
        "print(before, torch.get_float32_matmul_precision())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["highest", "highest"], out.stderr[-2000:]


def test_bare_proj_target_would_hit_the_patch_embedding():
    from gac_pipeline.model import import_terratorch

    import_terratorch()
    from terratorch.registry import BACKBONE_REGISTRY

    backbone = BACKBONE_REGISTRY.build(
        "prithvi_eo_tiny", pretrained=False, img_size=64, num_frames=1
    )
    apply_lora(backbone, rank=2, alpha=4, target_regex=r".*proj")
    assert any(
        "lora_" in n for n, _ in backbone.patch_embed.named_parameters()
    )  # the trap the default avoids
    with pytest.raises(ValueError, match="matches no layer"):
        apply_lora(backbone, rank=2, alpha=4, target_regex=r".*nothing_like_this")
    assert DEFAULT_STAGE2_LORA_TARGETS.endswith(r"attn\.(qkv|proj)")


def test_int8_layers_run_on_cpu_and_stay_close_to_float():
    import bitsandbytes as bnb

    float_model = Stage2Refiner(
        RefinerConfig(backbone="prithvi_eo_tiny", use_lora=False, init_seed=3)
    ).eval()
    int8_model = Stage2Refiner(
        RefinerConfig(backbone="prithvi_eo_tiny", use_lora=False, init_seed=3, load_in_8bit=True)
    ).eval()
    n_int8 = sum(isinstance(m, bnb.nn.Linear8bitLt) for m in int8_model.backbone.modules())
    assert n_int8 == 4 * 4  # qkv, proj, fc1, fc2 in each of the 4 blocks
    x = torch.rand(1, 12, 64, 64)
    with torch.no_grad():
        a = float_model.backbone(
            ((x[:, [1, 2, 3, 8, 10, 11]] * 1e4) - float_model.mean) / float_model.std
        )[-1]
        b = int8_model.backbone(
            ((x[:, [1, 2, 3, 8, 10, 11]] * 1e4) - int8_model.mean) / int8_model.std
        )[-1]
    rel = (a - b).norm() / a.norm()
    assert 0 < rel < 0.05  # quantised (not identical) but close


@pytest.mark.parametrize("cross_only", [False, True])
def test_stage3_gradients_flow_and_lora_placement(cross_only):
    torch.manual_seed(0)
    model = Stage3Grounder(
        GrounderConfig(model_size="tiny", lora_rank=2, lora_cross_attention_only=cross_only)
    )
    _nonzero_head(model)
    out = model(torch.rand(2, 12, H, W), torch.randn(2, 2, H, W) * 4 - 14, torch.rand(2, 2, H, W))
    assert out.shape == (2, 12, H, W)
    _check_gradients(model, out)
    names = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert all(".attn." in n for n in names) == cross_only
    # terramind_v1_tiny: 12 blocks, width 192; attention qkv 192->576 + proj 192->192; MLP fc1/fc2 192<->768
    per_block = (192 + 576) + (192 + 192) + (0 if cross_only else 2 * (192 + 768))
    assert lora_parameter_count(model) == 12 * 2 * per_block


def test_merge_lora_keeps_outputs():
    """Merging is exact algebra (W + s B A); checked in float64, where rounding is ~1e-16, so the bound
    holds on any CPU. In float32 the two paths differ by rounding through the whole backbone (2.5e-4
    on some CPUs), which says nothing about the merge."""
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(0)
    model = Stage2Refiner(RefinerConfig(backbone="prithvi_eo_tiny", lora_rank=2)).eval()
    _nonzero_head(model)
    model = model.double()
    x = torch.rand(1, 12, 64, 64, dtype=torch.float64)
    layers = [m for m in model.backbone.modules() if isinstance(m, LoraLayer)]
    with torch.no_grad():
        before = model(x)
        for layer in layers:  # the adapters' own contribution to the output
            layer.enable_adapters(False)
        plain = model(x)
        for layer in layers:
            layer.enable_adapters(True)
        assert merge_lora(model) == 8
        after = model(x)
    assert lora_parameter_count(model) == 0
    effect = (before - plain).abs().max()
    assert effect > 1e-6  # the adapters change the output ...
    torch.testing.assert_close(after, before, rtol=0, atol=1e-9 * float(effect) + 1e-12)


def test_generate_model_gives_no_gradient(tiny_generator):
    """Why stage 3 uses the encoder: sampled tokens cut the graph, so a loss on generated images has no grad."""
    from gac_pipeline.generator import generate_optical

    with torch.enable_grad():
        for p in tiny_generator.sampler.parameters():
            p.requires_grad_(True)
        try:
            out = tiny_generator({"S1GRD": torch.randn(1, 2, 64, 64) * 4 - 14}, timesteps=1)[
                "S2L2A"
            ]
        finally:
            tiny_generator.requires_grad_(False)
    assert not out.requires_grad
    # 40 px is padded to 64 (the diffusion U-Net needs multiples of 32) and cropped back
    assert generate_optical(
        tiny_generator, torch.zeros(1, 2, 40, 40), timesteps=1, seed=0
    ).shape == (1, 12, 40, 40)
