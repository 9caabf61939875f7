"""cr-predict: N tiles per forward pass give the one-tile output (to float32 rounding), and the
GeoTIFF is GIS-ready (COG, band descriptions, nodata, overviews)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from cloud_removal.cli import cr_predict
from cloud_removal.config import ModelConfig
from cloud_removal.task import CloudRemovalTask
from eo_common.config import config_to_dict
from eo_common.raster import padded_tile_size, tile_spans, write_raster
from rio_cogeo.cogeo import cog_validate

T = Affine(10.0, 0, 500000.0, 0, -10.0, 4400000.0)
S2_NAMES = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")  # fmt: skip


def _scene(folder, h, w, seed=0):
    rng = np.random.default_rng(seed)
    s2 = rng.integers(100, 5000, size=(13, h, w)).astype(np.uint16)
    s1 = rng.uniform(-25, -5, size=(2, h, w)).astype(np.float32)
    p2 = write_raster(folder / "s2.tif", s2, crs="EPSG:32633", transform=T)
    p1 = write_raster(folder / "s1.tif", s1, crs="EPSG:32633", transform=T)
    return p2, p1


@pytest.fixture
def random_checkpoint(tmp_path, save_checkpoint):
    """A tiny network with a far-from-identity head, so the output depends on every layer."""
    torch.manual_seed(3)
    cfg = ModelConfig(base_width=8, num_heads=2, num_cross_attn_blocks=1,
                      encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1), residual_init_std=0.3)  # fmt: skip
    task = CloudRemovalTask(model_config=config_to_dict(cfg))
    return save_checkpoint(task, tmp_path / "random" / "checkpoints" / "best.ckpt")


def _run(ckpt, p2, p1, out, *extra) -> np.ndarray:
    argv = ["--checkpoint", str(ckpt), "--s2", str(p2), "--s1", str(p1), "--output_dir", str(out)]
    assert cr_predict([*argv, "--tile_size", "32", "--overlap", "8", "--no_progress", *extra]) == 0
    with rasterio.open(out / "s2_cloudfree.tif") as dst:
        return dst.read()


def test_batched_forward_equals_one_tile_per_forward(random_checkpoint, tmp_path, monkeypatch):
    """104 x 104 px in 32 px tiles, 8 px overlap: the last tiles stretch to the border (56 px,
    padded to the network stride), 3 x 3 tiles of four shapes. --batch_size 1, 9 (every tile of a
    shape in one forward) and auto (2 on the CPU) blend to the same scene. Tolerance: float32
    convolutions of a batch sum in another order than those of one tile; the DN are reflectance x
    10000, so 1e-5 of that full scale (0.1 DN, a tenth of the uint16 output's step) bounds float32
    rounding through the network (measured: 0.018 DN, 1.8e-7 on the confidence), while a tile
    predicted with another tile's input or context is off by hundreds of DN. In the uint16 product a
    value whose float32 results differ by d DN lands on the other side of a rounding boundary with
    probability d, so about 0.1 % of the values move by one DN."""
    p2, p1 = _scene(tmp_path, 104, 104)
    stride = CloudRemovalTask.load_from_checkpoint(random_checkpoint).model_config.stride
    spans = tile_spans(104, 32, 8, stretch=stride)
    sides = [padded_tile_size(n, 32, stride) for _, n in spans]
    assert len(spans) == 3 and sides[-1] > 32  # fixed tiles would need 4 x 4
    shapes: list[tuple[int, int]] = []
    seen: list[int] = []
    forward = CloudRemovalTask.forward

    def counting(self, optical, sar):
        seen.append(optical.shape[0])
        shapes.append(tuple(optical.shape[2:]))
        return forward(self, optical, sar)

    monkeypatch.setattr(CloudRemovalTask, "forward", counting)
    extra = ("--out_dtype", "float32", "--with_confidence", "--pad", "16")
    one = _run(random_checkpoint, p2, p1, tmp_path / "b1", "--batch_size", "1", *extra)
    assert seen == [1] * 9
    per_shape = {s: shapes.count(s) for s in set(shapes)}  # tiles + 16 px of context each side
    assert set(per_shape) == {(a + 32, b + 32) for a in set(sides) for b in set(sides)}
    seen.clear()
    nine = _run(random_checkpoint, p2, p1, tmp_path / "b9", "--batch_size", "9", *extra)
    assert sorted(seen) == sorted(per_shape.values())  # one forward per tile shape
    seen.clear()
    auto = _run(random_checkpoint, p2, p1, tmp_path / "auto", *extra)  # default: auto
    assert max(seen) == 2 and sum(seen) == 9
    assert one.shape == (14, 104, 104) and np.isfinite(one).all()
    assert np.abs(one[:13] - np.median(one[:13])).max() > 100  # the network changes the scene
    for batched in (nine, auto):
        np.testing.assert_allclose(batched[:13], one[:13], rtol=0, atol=1e-5 * 10000)
        np.testing.assert_allclose(batched[13], one[13], rtol=0, atol=1e-5)  # confidence 0-1
    a = _run(random_checkpoint, p2, p1, tmp_path / "u1", "--batch_size", "1").astype(int)
    b = _run(random_checkpoint, p2, p1, tmp_path / "u9", "--batch_size", "9").astype(int)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99


def test_output_is_a_cog_with_band_names_nodata_and_overviews(identity_checkpoint, tmp_path):
    p2, p1 = _scene(tmp_path, 300, 280)
    argv = ["--checkpoint", str(identity_checkpoint), "--s2", str(p2), "--s1", str(p1),
            "--tile_size", "64", "--overlap", "16", "--no_progress"]  # fmt: skip
    assert cr_predict([*argv, "--output_dir", str(tmp_path / "cog")]) == 0
    out = tmp_path / "cog" / "s2_cloudfree.tif"
    valid, errors, _ = cog_validate(str(out), quiet=True)
    assert valid, errors
    with rasterio.open(out) as dst:
        assert dst.descriptions == S2_NAMES
        assert dst.nodata == 0 and dst.dtypes[0] == "uint16" and dst.crs.to_epsg() == 32633
        assert dst.block_shapes[0] == (256, 256) and dst.compression.name.lower() == "deflate"
        assert dst.overviews(1) == [2] and dst.overviews(13) == [2]
        cog_values = dst.read()
    with rasterio.open(p2) as src:
        np.testing.assert_array_equal(cog_values, src.read())  # identity network: input DN back
    # --no_cog: the streamed strips with overviews added in place (no second copy)
    assert cr_predict([*argv, "--output_dir", str(tmp_path / "plain"), "--no_cog",
                       "--with_confidence"]) == 0  # fmt: skip
    plain = tmp_path / "plain" / "s2_cloudfree.tif"
    assert not cog_validate(str(plain), quiet=True)[0]
    with rasterio.open(plain) as dst:
        assert dst.descriptions == (*S2_NAMES, "cloud confidence")
        assert dst.overviews(1) == [2] and np.isnan(dst.nodata)
