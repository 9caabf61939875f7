"""glacier-predict / glacier-eval: N tiles (or sliding windows) per forward pass give the one-per-
forward probabilities to float32 rounding, through the functions and through the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eo_common.raster import read_raster, tile_spans
from glacier_fake_data import make_organisers_train, make_platform_test
from glacier_seg.cli import glacier_eval, glacier_predict
from glacier_seg.inference import iter_tiles, load_model, predict_tile_probabilities
from glacier_seg.layout import find_tiles

RELEASE_CKPT = Path(__file__).parent / "data" / "release_0_1_0" / "glacier_train.ckpt"


def _logit_scale(model, arrays) -> float:
    x = torch.from_numpy(np.stack([model.normalizer(a.image) for a in arrays]))
    with torch.no_grad():
        return float(model.module.net(x).abs().max())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The release-0.1.0 checkpoint with freshly initialised weights. (The trained release network
    is saturated on these tiles, |logits| up to 3e5, and so ill-conditioned that float32 rounding
    of a batched convolution moves its rescaled probabilities by 1e-3: no test of batching.)"""
    data = torch.load(RELEASE_CKPT, weights_only=False)
    model = load_model(RELEASE_CKPT)
    torch.manual_seed(0)
    for m in model.module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    data["state_dict"] = model.module.state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "random.ckpt"
    torch.save(data, path)
    return path


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, glcm_cache, ckpt):
    """Three 80 x 96 px tiles (bands + GLCM) and the network."""
    root = make_platform_test(tmp_path_factory.mktemp("gh"), n=3, size=96, seed=4)
    model = load_model(ckpt)
    found = find_tiles(root, require_labels=False)
    arrays = list(iter_tiles(found, glcm=model.texture, cache_dir=glcm_cache))
    for a in arrays:  # 80 rows: windows do not divide the tile evenly
        a.image, a.valid = a.image[:, :80], a.valid[:80]
    return model, arrays


def _counting(monkeypatch, model) -> list[int]:
    seen: list[int] = []
    net = model.module.net
    forward = net.forward

    def counted(x):
        seen.append(x.shape[0])
        return forward(x)

    monkeypatch.setattr(net, "forward", counted)
    return seen


def test_batched_tiles_and_windows_equal_one_per_forward(tiles, monkeypatch):
    """Tolerance: a softmax probability moves by at most half the change of the logits (its
    derivative is p(1 - p) <= 1/4 per logit, two logits change), and float32 convolutions of a batch
    sum in another order than those of one tile, a relative change of a few float32 ulps (1.2e-7)
    of the logits' scale per layer. So 1e-5 x the largest |logit| (about 100 ulps) bounds the
    rounding with room, while a window predicted from another window's pixels moves probabilities
    by O(0.1)."""
    model, arrays = tiles
    scale = _logit_scale(model, arrays)
    assert 1 < scale < 1e3
    tol = 1e-5 * scale
    seen = _counting(monkeypatch, model)
    one = predict_tile_probabilities([model], arrays, batch_size=1)
    assert seen == [1, 1, 1]
    seen.clear()
    three = predict_tile_probabilities([model], arrays, batch_size=3)
    auto = predict_tile_probabilities([model], arrays, batch_size="auto")  # 2 on the CPU
    assert seen == [3, 2, 1]
    for a, b, c in zip(one, three, auto):
        assert a.shape == (4, 80, 96) and np.allclose(a.sum(0), 1, atol=1e-5)
        np.testing.assert_allclose(b, a, rtol=0, atol=tol)
        np.testing.assert_allclose(c, a, rtol=0, atol=tol)
    # sliding windows of 32 px, 8 px overlap: 2 x 3 windows per 80 x 96 tile (the last ones
    # stretched to the border, 56 and 48 px; square windows would need 3 x 4)
    n = 3 * len(tile_spans(80, 32, 8, stretch=32)) * len(tile_spans(96, 32, 8, stretch=32))
    assert n == 18
    seen.clear()
    w1 = predict_tile_probabilities([model], arrays, batch_size=1, window=32, overlap=8)
    assert seen == [1] * n
    seen.clear()
    w7 = predict_tile_probabilities([model], arrays, batch_size=7, window=32, overlap=8)
    assert max(seen) > 1 and sum(seen) == n
    for a, b, whole in zip(w1, w7, one):
        np.testing.assert_allclose(b, a, rtol=0, atol=tol)
        assert np.abs(a - whole).max() > 10 * tol  # windows are not the whole tile: a real check
        assert (a.argmax(0) == whole.argmax(0)).mean() > 0.8


def test_commands_take_batch_size_and_window(ckpt, glcm_cache, tmp_path):
    """glacier-predict and glacier-eval give the same masks and metrics for any --batch_size, whole
    tiles or windows (a pixel may flip only where two classes tie within float32 rounding)."""
    root = make_organisers_train(tmp_path / "gh", n=3, size=64, seed=2)
    base = ["--checkpoint", str(ckpt), "--glcm_cache", str(glcm_cache), "--no_progress"]
    masks = {}
    for name, extra in {"b1": ["--batch_size", "1"], "auto": [],
                        "w1": ["--window", "32", "--window_overlap", "8", "--batch_size", "1"],
                        "w5": ["--window", "32", "--window_overlap", "8", "--batch_size", "5"]}.items():  # fmt: skip
        out = tmp_path / name
        assert glacier_predict([*base, "--input", str(root), "--output_dir", str(out),
                                "--no_class_maps", *extra]) == 0  # fmt: skip
        masks[name] = {p.name: read_raster(p).array for p in sorted((out / "masks").iterdir())}
    assert len(masks["b1"]) == 3
    for a, b in (("b1", "auto"), ("w1", "w5")):
        for key in masks[a]:
            assert (masks[a][key] == masks[b][key]).mean() > 0.999, (a, b, key)
    scores = []
    for extra in (["--batch_size", "1"], ["--batch_size", "4"]):
        out = tmp_path / f"eval{extra[-1]}"
        assert glacier_eval([*base, "--data_root", str(root), "--split", "all", "--window", "32",
                             "--window_overlap", "8", "--max_panels", "0", "--output_dir", str(out),
                             *extra]) == 0  # fmt: skip
        scores.append(json.loads((out / "metrics.json").read_text())["mcc"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)
    assert glacier_eval([*base, "--data_root", str(root), "--window", "32", "--window_overlap",
                         "32", "--output_dir", str(tmp_path / "bad")]) == 2  # fmt: skip
