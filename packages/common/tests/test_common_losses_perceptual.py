"""VGG perceptual and Gram texture losses: random weights offline, local weight files, band mapping."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from eo_common import losses as L

LAYERS = ("relu1_2", "relu2_2")  # shallow: fast on 32x32 inputs


def _random_vgg_loss(**kwargs) -> L.VGGPerceptualLoss:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return L.VGGPerceptualLoss(layers=kwargs.pop("layers", LAYERS), **kwargs)


def _images(channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, 32, 32, generator=g), torch.rand(
        2, channels, 32, 32, generator=g
    )


def test_random_weights_warn_that_they_are_for_tests_only():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        L.VGGPerceptualLoss(layers=("relu1_1",), rgb_bands=(0, 1, 2))


def test_perceptual_zero_on_identical_and_positive_otherwise():
    loss = _random_vgg_loss(rgb_bands=(0, 1, 2))
    pred, target = _images(3)
    assert loss(pred, pred.clone()).item() == 0.0
    assert loss(pred, target).item() > 0.0


def test_vgg_is_frozen_and_stays_in_eval_mode():
    loss = _random_vgg_loss(rgb_bands=(0, 1, 2))
    loss.train()
    assert not loss.features.trunk.training
    assert all(not p.requires_grad for p in loss.parameters())
    pred, target = _images(3, seed=1)
    pred.requires_grad_(True)
    loss(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_band_mapping_uses_only_the_named_bands():
    loss = _random_vgg_loss(rgb_bands=(4, 2, 0))
    pred, target = _images(6, seed=2)
    base = loss(pred, target)
    changed = pred.clone()
    changed[:, [1, 3, 5]] = torch.rand(2, 3, 32, 32)  # bands not mapped to RGB
    assert loss(changed, target).item() == pytest.approx(base.item(), rel=1e-6)
    changed[:, 4] += 0.5  # the band fed to VGG's red input
    assert abs(loss(changed, target).item() - base.item()) > 1e-4
    # explicit mapping == selecting the bands by hand and feeding an RGB image
    rgb = _random_vgg_loss(rgb_bands=(0, 1, 2))
    rgb.features.trunk.load_state_dict(loss.features.trunk.state_dict())
    assert rgb(pred[:, [4, 2, 0]], target[:, [4, 2, 0]]).item() == pytest.approx(
        base.item(), rel=1e-6
    )


@pytest.mark.filterwarnings("ignore:VGG16 perceptual")
def test_imagenet_normalisation_and_input_range():
    features = L.VGG16Features(layers=("relu1_1",), rgb_bands=(2, 1, 0), input_range=(0.0, 10000.0))
    x = torch.rand(1, 4, 8, 8) * 10000
    vgg_in = features.to_vgg_input(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(vgg_in, (x[:, [2, 1, 0]] / 10000 - mean) / std)


def _vgg_features_state(seed: int) -> dict[str, torch.Tensor]:
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(seed)
    return make_layers(cfgs["D"]).state_dict()


def test_weights_from_local_torchvision_vgg16_state_dict(tmp_path):
    state = _vgg_features_state(seed=3)
    full = {f"features.{k}": v for k, v in state.items()}
    full["classifier.6.bias"] = torch.zeros(1000)  # a torchvision vgg16 state_dict also has these
    path = tmp_path / "vgg16.pth"
    torch.save(full, path)
    loss = L.VGGPerceptualLoss(weights_path=path, layers=LAYERS, rgb_bands=(0, 1, 2))
    loaded = loss.features.trunk.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    # the loss is the feature L1 computed with those weights by hand
    pred, target = _images(3, seed=4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def relu_features(x):
        h = (x - mean) / std
        h = F.relu(F.conv2d(h, state["0.weight"], state["0.bias"], padding=1))
        r12 = F.relu(F.conv2d(h, state["2.weight"], state["2.bias"], padding=1))
        h = F.max_pool2d(r12, 2)
        h = F.relu(F.conv2d(h, state["5.weight"], state["5.bias"], padding=1))
        r22 = F.relu(F.conv2d(h, state["7.weight"], state["7.bias"], padding=1))
        return r12, r22

    (p1, p2), (t1, t2) = relu_features(pred), relu_features(target)
    expected = (p1 - t1).abs().mean() + 0.5 * (p2 - t2).abs().mean()
    weighted = L.VGGPerceptualLoss(
        weights_path=path, layers=LAYERS, layer_weights=(1.0, 0.5), rgb_bands=(0, 1, 2)
    )
    assert weighted(pred, target).item() == pytest.approx(expected.item(), rel=1e-4)


def test_weights_from_features_only_state_dict_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = {k: v for k, v in _vgg_features_state(seed=5).items() if int(k.split(".")[0]) <= 3}
    pth, st = tmp_path / "features.pt", tmp_path / "features.safetensors"
    torch.save(state, pth)
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    for path in (pth, st):
        features = L.VGG16Features(layers=("relu1_2",), weights_path=path, rgb_bands=(0, 1, 2))
        assert torch.equal(features.trunk[2].weight, state["2.weight"])
    # deeper layers requested than the file holds: a clear error naming the file
    with pytest.raises(ValueError, match="features.pt"):
        L.VGG16Features(layers=("relu2_2",), weights_path=pth)


def test_weights_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        L.VGGPerceptualLoss(weights_path=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        L.VGGPerceptualLoss(weights_path=bad)
    with pytest.raises(ValueError, match="either"):
        L.VGGPerceptualLoss(weights_path=bad, pretrained=True)
    with pytest.raises(ValueError, match="unknown VGG16 layer"):
        L.VGG16Features(layers=("relu9_9",))
    loss = _random_vgg_loss()  # default rgb_bands (3, 2, 1) needs 4 channels
    with pytest.raises(ValueError, match="rgb_bands"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_gram_texture_raw_bands_matches_hand_gram():
    g = torch.Generator().manual_seed(6)
    pred, target = torch.rand(2, 5, 6, 7, generator=g), torch.rand(2, 5, 6, 7, generator=g)
    loss = L.GramTextureLoss(feature_extractor=None)

    def gram(x):
        b, c, h, w = x.shape
        f = x.double().reshape(b, c, h * w)
        return torch.einsum("bip,bjp->bij", f, f) / (c * h * w)

    expected = ((gram(pred) - gram(target)) ** 2).mean()
    assert loss(pred, target).item() == pytest.approx(expected.item(), rel=1e-5)
    # Gram matrices ignore where things are: a spatially shuffled image has the same texture statistics
    perm = torch.randperm(42, generator=g)
    shuffled = pred.reshape(2, 5, 42)[:, :, perm].reshape(2, 5, 6, 7)
    assert loss(shuffled, pred).item() == pytest.approx(0.0, abs=1e-10)


def test_gram_texture_on_vgg_features_shares_an_extractor():
    perceptual = _random_vgg_loss(rgb_bands=(0, 1, 2))
    texture = L.GramTextureLoss(feature_extractor=perceptual.features)
    pred, target = _images(3, seed=7)
    assert texture(pred, pred.clone()).item() == 0.0
    value = texture(pred, target)
    feats = perceptual.features(torch.cat([pred, target]))
    expected = sum(
        F.mse_loss(L.gram_matrix(feats[name][:2]), L.gram_matrix(feats[name][2:]))
        for name in LAYERS
    )
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_vgg_weights_stay_out_of_checkpoints(tmp_path):
    state = _vgg_features_state(seed=8)
    path = tmp_path / "vgg16_features.pth"
    torch.save(state, path)
    model = torch.nn.ModuleDict(
        {
            "head": torch.nn.Conv2d(3, 3, 1),
            "loss": L.VGGPerceptualLoss(weights_path=path, layers=LAYERS),
        }
    )
    checkpoint = model.state_dict()
    assert not [k for k in checkpoint if "trunk" in k] and "head.weight" in checkpoint
    # an old checkpoint with (random) VGG weights in it must not overwrite the loaded ones
    stale = dict(checkpoint)
    stale["loss.features.trunk.0.weight"] = torch.zeros_like(state["0.weight"])
    model.load_state_dict(stale, strict=True)
    assert torch.equal(model["loss"].features.trunk[0].weight, state["0.weight"])
