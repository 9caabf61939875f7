"""GLCM texture: equal to scikit-image per window for every property, angle and symmetry."""

from __future__ import annotations

import numpy as np
import pytest
from glacier_seg.texture import (
    GLCM_PROPERTIES,
    GLCMConfig,
    cached_texture_channels,
    glcm_features,
    glcm_offsets,
    quantize,
    texture_channels,
)
from skimage.feature import graycomatrix, graycoprops

ANGLES = np.deg2rad([0, 30, 45, 90, 135, 200])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("window", "levels", "distances"), [(5, 6, (1, 2)), (7, 16, (1, 3))])
def test_glcm_equals_skimage_per_window(symmetric, window, levels, distances):
    rng = np.random.default_rng(window + levels)
    q = rng.integers(0, levels, size=(18, 21)).astype(np.uint8)
    q[:7, :7] = 3  # a constant patch: correlation's special case (std 0 -> 1.0)
    feats = glcm_features(
        q, window=window, levels=levels, distances=distances, angles=ANGLES, symmetric=symmetric
    )
    assert feats.shape == (len(GLCM_PROPERTIES), len(distances), len(ANGLES), 18, 21)
    half = window // 2
    padded = np.pad(q, half, mode="reflect")
    for r, c in [(0, 0), (3, 3), (9, 10), (17, 20), (half, 20 - half)]:
        glcm = graycomatrix(
            padded[r : r + window, c : c + window],
            distances,
            ANGLES,
            levels=levels,
            symmetric=symmetric,
            normed=True,
        )
        for p, prop in enumerate(GLCM_PROPERTIES):
            np.testing.assert_allclose(
                feats[p, :, :, r, c],
                graycoprops(glcm, prop),
                atol=1e-10,
                rtol=0,
                err_msg=f"{prop} at ({r}, {c})",
            )


def test_interior_pixels_equal_skimage_on_the_unpadded_image():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 8, size=(15, 15)).astype(np.uint8)
    feats = glcm_features(
        q, window=5, levels=8, angles=np.deg2rad([0, 90]), properties=("ASM", "correlation")
    )
    glcm = graycomatrix(
        q[4:9, 6:11], [1], np.deg2rad([0, 90]), levels=8, symmetric=True, normed=True
    )
    np.testing.assert_allclose(feats[0, :, :, 6, 8], graycoprops(glcm, "ASM"), atol=1e-12)
    np.testing.assert_allclose(feats[1, :, :, 6, 8], graycoprops(glcm, "correlation"), atol=1e-12)


def test_offsets_follow_skimage_rounding():
    # sin(30 deg) = 0.49999999999999994: scikit-image still pairs with the next row
    assert glcm_offsets([1], np.deg2rad([0, 30, 45, 90, 135])) == [
        (0, 1),
        (1, 1),
        (1, 1),
        (1, 0),
        (1, -1),
    ]
    img = np.arange(25, dtype=np.uint8).reshape(5, 5)
    g = graycomatrix(img, [1], [np.deg2rad(30)], levels=25, symmetric=False)[:, :, 0, 0]
    i, j = np.argwhere(g > 0)[0]
    assert (j // 5 - i // 5, j % 5 - i % 5) == (1, 1)


def test_quantize_maps_percentiles_to_levels():
    band = np.linspace(0.0, 1.0, 101).reshape(1, 101)
    q = quantize(band, levels=5, low=0, high=100)
    assert q.min() == 0 and q.max() == 4 and q.dtype == np.uint8
    assert np.all(np.diff(q[0].astype(int)) >= 0)
    assert quantize(np.full((3, 3), np.nan), 4).sum() == 0


def test_texture_channels_and_cache(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    band = rng.normal(size=(20, 20)).astype(np.float32)
    cfg = GLCMConfig(window=5, levels=8, properties=("contrast", "energy"))
    direct = texture_channels(band, cfg)
    assert direct.shape == (2, 20, 20) and cfg.num_channels == 2
    first = cached_texture_channels(band, cfg, tmp_path, "tile7")
    files = list(tmp_path.glob("tile7__*.npy"))
    assert len(files) == 1 and np.array_equal(first, direct)
    # a second call reads the file: make recomputation impossible to prove it
    import glacier_seg.texture as texture

    monkeypatch.setattr(texture, "texture_channels", lambda *a, **k: pytest.fail("cache not used"))
    assert np.array_equal(cached_texture_channels(band, cfg, tmp_path, "tile7"), direct)
    # another parameter set gets its own file
    monkeypatch.undo()
    cached_texture_channels(band, GLCMConfig(window=5, levels=16), tmp_path, "tile7")
    assert len(list(tmp_path.glob("tile7__*.npy"))) == 2
    per_angle = GLCMConfig(window=5, levels=8, properties=("contrast",), average_angles=False)
    assert texture_channels(band, per_angle).shape == (4, 20, 20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 4}, "odd"),
        ({"levels": 1}, "levels"),
        ({"properties": ("entropy",)}, "properties"),
        ({"window": 3, "distances": (3,)}, "does not fit"),
    ],
)
def test_glcm_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GLCMConfig(**kwargs)


def test_glcm_features_rejects_bad_grey_levels():
    with pytest.raises(ValueError, match="grey levels"):
        glcm_features(np.full((5, 5), 9, dtype=np.uint8), window=3, levels=8)
    with pytest.raises(ValueError, match="integer"):
        glcm_features(np.zeros((5, 5)), window=3, levels=8)


@pytest.mark.parametrize("symmetric", [True, False])
def test_blocks_equal_skimage_across_a_block_boundary(symmetric):
    """Row blocks of 4: windows that straddle a block boundary still equal scikit-image."""
    rng = np.random.default_rng(5)
    q = rng.integers(0, 8, size=(14, 12)).astype(np.uint8)
    kw = dict(window=5, levels=8, distances=(1, 2), angles=ANGLES, symmetric=symmetric)
    blocked = glcm_features(q, block_rows=4, **kw)
    whole = glcm_features(q, block_rows=14, **kw)
    np.testing.assert_allclose(blocked, whole, atol=1e-12, rtol=0)
    padded = np.pad(q, 2, mode="reflect")
    for r, c in [(3, 5), (4, 5), (7, 0), (8, 11), (12, 6), (13, 11)]:  # rows 3|4, 7|8, 11|12 split
        glcm = graycomatrix(
            padded[r : r + 5, c : c + 5], (1, 2), ANGLES, levels=8, symmetric=symmetric, normed=True
        )
        for p, prop in enumerate(GLCM_PROPERTIES):
            np.testing.assert_allclose(
                blocked[p, :, :, r, c], graycoprops(glcm, prop), atol=1e-10, rtol=0, err_msg=prop
            )


def test_texture_channels_average_blocks_like_the_full_features():
    rng = np.random.default_rng(2)
    band = rng.normal(size=(40, 33)).astype(np.float32)
    cfg = GLCMConfig(window=5, levels=16, properties=GLCM_PROPERTIES)
    q = quantize(band, cfg.levels, *cfg.clip_percentiles)
    full = glcm_features(
        q, window=5, levels=16, angles=np.deg2rad(cfg.angles_deg), properties=GLCM_PROPERTIES
    )
    np.testing.assert_allclose(
        texture_channels(band, cfg), full.mean(axis=(1, 2)).astype(np.float32), rtol=1e-6
    )


def test_256_levels_on_a_large_block_stay_exact():
    """Prefix sums of x*x + y*y (about 1e5 per pixel over 226^2 pixels) pass 2**32 in this block."""
    rng = np.random.default_rng(7)
    q = rng.integers(200, 256, size=(220, 220)).astype(np.uint8)
    q[:, :20] = rng.integers(0, 256, size=(220, 20))
    q[100:110, 100:110] = 255  # top codes (255 * 256 + 255 = 65535: the ASM codes need 32 bits)
    props = ("correlation", "ASM", "contrast")
    feats = glcm_features(q, window=7, levels=256, angles=np.deg2rad([0, 45]), properties=props)
    for r, c in [(3, 3), (104, 104), (216, 216), (150, 40)]:
        glcm = graycomatrix(
            q[r - 3 : r + 4, c - 3 : c + 4], [1], np.deg2rad([0, 45]), levels=256,
            symmetric=True, normed=True,
        )  # fmt: skip
        for p, prop in enumerate(props):
            np.testing.assert_allclose(feats[p, 0, :, r, c], graycoprops(glcm, prop)[0], atol=1e-10)


@pytest.mark.parametrize("symmetric", [True, False])
def test_wide_window_asm_equals_skimage(symmetric):
    """A 35 px window: one row of displacements sums past 127 (int16 row buffer), still exact."""
    rng = np.random.default_rng(35)
    q = rng.integers(0, 3, size=(50, 60)).astype(np.uint8)  # 3 levels: many equal codes
    q[10:40, 10:40] = 1  # large uniform area: row sums near their bound
    window = 35
    feats = glcm_features(
        q, window=window, levels=3, angles=np.deg2rad([0, 90]), properties=("ASM",),
        symmetric=symmetric,
    )  # fmt: skip
    padded = np.pad(q, window // 2, mode="reflect")
    for r, c in [(0, 0), (25, 25), (17, 42), (49, 59)]:
        glcm = graycomatrix(
            padded[r : r + window, c : c + window], [1], np.deg2rad([0, 90]), levels=3,
            symmetric=symmetric, normed=True,
        )  # fmt: skip
        np.testing.assert_allclose(feats[0, 0, :, r, c], graycoprops(glcm, "ASM")[0], atol=1e-12)
