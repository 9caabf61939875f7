"""LPIPS in eo_common.metrics: public APIs only, the same numbers as torchmetrics and as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from eo_common.metrics import LPIPS_WEIGHTS_HELP, ImageQualityMetrics, build_lpips

# ------------------------------------------------------------------------------------------ LPIPS


def test_lpips_without_local_weights_raises_a_helpful_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet-owt") as info:
        ImageQualityMetrics(rgb_bands=(3, 2, 1), lpips_weights=tmp_path / "missing.pth")
    assert "missing.pth" in str(info.value)
    bad = tmp_path / "bad.pth"
    torch.save({"something.else": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        ImageQualityMetrics(lpips_weights=bad, lpips_net="squeeze")
    assert "lpips_weights" in LPIPS_WEIGHTS_HELP


def _random_backbone(net: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    import torchvision

    builder = {"squeeze": "squeezenet1_1", "alex": "alexnet"}[net]
    torch.manual_seed(0)
    backbone = getattr(torchvision.models, builder)(weights=None)
    weights = folder / f"{builder}_random.pth"
    torch.save(backbone.state_dict(), weights)  # torchvision layout: features.N.*, classifier.*
    return backbone, weights


def _lpips_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(3, 5, 64, 64, generator=g)
    pred = (target + 0.1 * torch.randn(3, 5, 64, 64, generator=g)).clamp(0, 1)
    return pred, target


# LPIPS of _lpips_inputs() with _random_backbone() as computed by the first release (which built the
# network from torchmetrics' private _NoTrainLpips); the public-API network must give the same.
PREVIOUS_LPIPS = {"squeeze": 0.020075229307015736, "alex": 0.0106875104829669}


@pytest.mark.parametrize("net", ["squeeze", "alex"])
def test_lpips_matches_torchmetrics_and_the_previous_numbers(tmp_path, monkeypatch, net):
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity

    backbone, weights = _random_backbone(net, tmp_path)
    pred, target = _lpips_inputs()
    metric = ImageQualityMetrics(rgb_bands=(3, 2, 1), lpips_weights=weights, lpips_net=net)
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    value = metric.compute()["lpips"]
    assert value == pytest.approx(PREVIOUS_LPIPS[net], rel=1e-5)

    # reference: torchmetrics' public LPIPS class, which loads torchvision's pretrained backbone
    # from the torch hub cache; the cache holds our random weights under torchvision's file name
    import torchvision

    builder = {"squeeze": "SqueezeNet1_1_Weights", "alex": "AlexNet_Weights"}[net]
    url = getattr(torchvision.models, builder).DEFAULT.url
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(backbone.state_dict(), cache / url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    reference = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
    expected = reference(pred[:, [3, 2, 1]], target[:, [3, 2, 1]])
    assert value == pytest.approx(float(expected), rel=1e-5)
    assert value > 0


def test_lpips_reads_the_lpips_package_layout_and_refuses_bad_inputs(tmp_path):
    _, weights = _random_backbone("squeeze", tmp_path)
    pred, target = _lpips_inputs()
    model = build_lpips(weights, "squeeze")
    # the layout the lpips package writes: net.sliceK.N.* plus the heads linK.model.1.weight
    state = {}
    for k, block in enumerate(model.slices):
        for pos, index in enumerate(model.index[k]):
            for name, value in block[pos].state_dict().items():
                state[f"net.slice{k + 1}.{index}.{name}"] = value
    for k, lin in enumerate(model.lins):
        state[f"lin{k}.model.1.weight"] = lin.weight * 2  # heads from the file replace the shipped
    full = tmp_path / "lpips_full.pth"
    torch.save(state, full)
    x, y = pred[:, [3, 2, 1]], target[:, [3, 2, 1]]
    doubled = build_lpips(full, "squeeze")(x, y, normalize=True)
    torch.testing.assert_close(doubled, 2 * model(x, y, normalize=True))

    same = ImageQualityMetrics(rgb_bands=(3, 2, 1), lpips_weights=weights, lpips_net="squeeze")
    same.update(target, target)
    assert same.compute()["lpips"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="no masked form"):
        same.update(target, target, mask=torch.ones(3, 1, 64, 64, dtype=torch.bool))
    no_bands = ImageQualityMetrics(lpips_weights=weights, lpips_net="squeeze")
    with pytest.raises(ValueError, match="rgb_bands"):
        no_bands.update(target, target)
    with pytest.raises(ValueError, match="alex"):
        build_lpips(weights, "squeeze_v2")
    # the LPIPS network stays out of the trainable parameters and in eval mode
    metric_module = torch.nn.ModuleDict({"m": same})
    metric_module.train()
    assert not same.lpips.training and not any(p.requires_grad for p in same.lpips.parameters())
