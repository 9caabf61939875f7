"""Procedural cloud + haze simulation, and per-sample cloud masks (difference or s2cloudless).

Simulated clouds are used twice: by :mod:`cloud_removal.samples` to build the demo dataset from real
clear Sentinel-2 tiles, and by the synthetic-cloud augmentation of :mod:`cloud_removal.data`. They are
**simulated**, never real clouds; every number below is a modelling choice, documented here.

Cloud model (all in top-of-atmosphere reflectance, i.e. DN / 10000), for a clear image ``x`` (13, H, W):

1. *Thickness field* ``t`` (H, W): fractal noise, i.e. the sum of 6 octaves of Gaussian white noise,
   octave ``k`` drawn on a ``2**k + 1`` grid, bilinearly upsampled, weighted by ``0.55**k``, then
   min-max scaled to [0, 1]. The threshold ``q`` is the ``1 - coverage`` quantile of ``t`` so that
   about ``coverage`` of the image is cloudy; opacity ``a = clip((t - q) / softness, 0, 1) ** 0.8``
   times a peak opacity in [``min_peak``, 1].
2. *Thick cloud*: ``y = (1 - a) * x + a * c`` per band, with cloud reflectance
   ``c = brightness * CLOUD_REFLECTANCE`` (bright and flat in the visible/NIR, darker in the water
   vapour band B09 and in the SWIR, as thick water clouds are; cirrus band B10 moderate),
   ``brightness`` uniform in [0.8, 1.1].
3. *Haze*: a smooth field ``h`` (the first 3 octaves only) scaled to [0, ``haze``] and applied as
   ``y = (1 - h w_b) y + h w_b A``, with airlight ``A = 0.35`` and a wavelength weight
   ``w_b = (490 nm / lambda_b) ** 1.3`` (stronger in the blue, Angstrom-like).
4. *Shadow* (optional): the opacity field shifted by (``dy``, ``dx``) pixels darkens the surface by
   ``1 - shadow * a_shifted`` where no cloud lies on top.

The per-pixel *cloud intensity* returned with the image is ``max(a, h w_B02 / haze_max_ref)``
clipped to [0, 1] (0 = clear, 1 = opaque cloud).

Cloud masks for real data:

* :func:`difference_cloud_mask`: mean absolute difference between the cloudy and the clear image over
  all bands (reflectance), divided by ``scale`` (0.1) and clipped to [0, 1]. On SEN12MS-CR the two
  images are days apart, so surface changes count too; that is the accepted approximation.
* :class:`S2CloudlessDetector`: the real pretrained s2cloudless LightGBM pixel classifier
  (``pixel_s2_cloud_detector_lightGBM_v0.1.txt``, 10 input features, ``max_feature_idx=9`` in the file).
  Its features are the TOA reflectances (DN / 10000) of the bands B01, B02, B04, B05, B08, B8A, B09,
  B10, B11, B12, in this order (s2cloudless ``MODEL_BAND_IDS``); the model's ``feature_infos`` agree:
  feature 7 (B10, cirrus) spans [0, 0.81] while the others reach 2-2.8. Post-processing as s2cloudless:
  probabilities averaged over a disk of radius ``average_over`` pixels, thresholded at 0.4, dilated by
  a disk of radius ``dilation_size``.

Example:
    >>> import numpy as np
    >>> clear = np.full((13, 64, 64), 0.1, dtype=np.float32)
    >>> sim = simulate_clouds(clear, np.random.default_rng(0), coverage=0.5)
    >>> sim.cloudy.shape, sim.intensity.shape, bool(sim.cloudy.mean() > clear.mean())
    ((13, 64, 64), (64, 64), True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "S2_BANDS",
    "S2_WAVELENGTHS_NM",
    "CLOUD_REFLECTANCE",
    "CloudParams",
    "SimulatedClouds",
    "fractal_noise",
    "simulate_clouds",
    "difference_cloud_mask",
    "S2CloudlessDetector",
    "S2CLOUDLESS_BANDS",
]

S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
"""The 13 Sentinel-2 L1C bands in SEN12MS-CR file order."""

S2_WAVELENGTHS_NM: tuple[float, ...] = (
    443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190,
)  # fmt: skip
"""Central wavelengths (nm) of :data:`S2_BANDS`."""

CLOUD_REFLECTANCE: tuple[float, ...] = (
    0.70, 0.68, 0.66, 0.65, 0.66, 0.66, 0.66, 0.65, 0.64, 0.35, 0.25, 0.45, 0.32,
)  # fmt: skip
"""Reflectance of an opaque water cloud per band of :data:`S2_BANDS` (a modelling choice)."""

S2CLOUDLESS_BANDS: tuple[str, ...] = (
    "B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
"""Input features of the s2cloudless classifier, in order (reflectance = DN / 10000)."""


@dataclass
class CloudParams:
    """Random ranges of the procedural cloud model (see the module docstring).

    Attributes:
        coverage: (min, max) cloudy fraction of the image.
        softness: (min, max) width of the cloud edge ramp on the [0, 1] thickness scale.
        min_peak: lowest peak opacity (1 = opaque centre).
        haze: (min, max) haze strength in the blue (0 = none).
        shadow_prob: probability of adding a cloud shadow.
        shadow_strength: darkening of the surface under a full shadow.
        max_shift: largest shadow displacement in pixels (fraction of the image side).
    """

    coverage: tuple[float, float] = (0.2, 0.7)
    softness: tuple[float, float] = (0.05, 0.25)
    min_peak: float = 0.6
    haze: tuple[float, float] = (0.0, 0.3)
    shadow_prob: float = 0.5
    shadow_strength: float = 0.5
    max_shift: float = 0.1


@dataclass
class SimulatedClouds:
    """Result of :func:`simulate_clouds`.

    Attributes:
        cloudy: (C, H, W) float32 reflectance with clouds, haze and shadow.
        intensity: (H, W) float32 cloud intensity in [0, 1].
        opacity: (H, W) thick-cloud opacity ``a``.
        haze: (H, W) haze field ``h`` (blue-band strength).
        params: the drawn values (coverage, peak, brightness, haze, shadow shift).
    """

    cloudy: np.ndarray
    intensity: np.ndarray
    opacity: np.ndarray
    haze: np.ndarray
    params: dict[str, float]


def fractal_noise(
    height: int, width: int, rng: np.random.Generator, octaves: int = 6, persistence: float = 0.55
) -> np.ndarray:
    """Multi-octave value noise (H, W) scaled to [0, 1].

    Octave ``k`` is white noise on a ``(2**k + 1)`` square grid, bilinearly upsampled to (H, W) and
    weighted by ``persistence**k``.
    """
    total = torch.zeros(1, 1, height, width)
    for k in range(octaves):
        n = 2**k + 1
        grid = torch.from_numpy(rng.standard_normal((1, 1, n, n)).astype(np.float32))
        total += persistence**k * F.interpolate(
            grid, size=(height, width), mode="bilinear", align_corners=True
        )
    out = total[0, 0].numpy()
    lo, hi = float(out.min()), float(out.max())
    return ((out - lo) / max(hi - lo, 1e-12)).astype(np.float32)


def simulate_clouds(
    clear: np.ndarray,
    rng: np.random.Generator,
    params: CloudParams | None = None,
    coverage: float | None = None,
    bands: tuple[str, ...] = S2_BANDS,
) -> SimulatedClouds:
    """Lay procedural clouds, haze and (optionally) a shadow over a clear image.

    Args:
        clear: (C, H, W) TOA reflectance (DN / 10000), bands named by ``bands``.
        rng: NumPy generator (all randomness comes from it).
        params: ranges to draw from (default :class:`CloudParams`).
        coverage: fix the cloudy fraction instead of drawing it.
        bands: band names of ``clear`` (subset/order of :data:`S2_BANDS`).

    Returns:
        :class:`SimulatedClouds`; ``cloudy`` is clipped to [0, 1.2].
    """
    p = params or CloudParams()
    clear = np.asarray(clear, dtype=np.float32)
    if clear.ndim != 3 or clear.shape[0] != len(bands):
        raise ValueError(f"clear must be ({len(bands)}, H, W) for bands {bands}, got {clear.shape}")
    unknown = [b for b in bands if b not in S2_BANDS]
    if unknown:
        raise ValueError(f"unknown band names {unknown}; expected names from {S2_BANDS}")
    idx = [S2_BANDS.index(b) for b in bands]
    _, h, w = clear.shape
    cov = float(rng.uniform(*p.coverage)) if coverage is None else float(coverage)
    thickness = fractal_noise(h, w, rng)
    q = float(np.quantile(thickness, 1.0 - np.clip(cov, 0.0, 1.0))) if cov > 0 else 2.0
    softness = float(rng.uniform(*p.softness))
    peak = float(rng.uniform(p.min_peak, 1.0))
    opacity = (np.clip((thickness - q) / softness, 0.0, 1.0) ** 0.8 * peak).astype(np.float32)
    brightness = float(rng.uniform(0.8, 1.1))
    cloud = brightness * np.asarray(CLOUD_REFLECTANCE, dtype=np.float32)[idx][:, None, None]
    out = (1.0 - opacity) * clear + opacity * cloud

    shift = (0, 0)
    if rng.uniform() < p.shadow_prob and p.shadow_strength > 0:
        m = max(1, int(p.max_shift * min(h, w)))
        shift = (int(rng.integers(-m, m + 1)), int(rng.integers(-m, m + 1)))
        shadow = ndimage.shift(opacity, shift, order=0, mode="constant", cval=0.0)
        darken = 1.0 - p.shadow_strength * shadow * (1.0 - opacity)
        out = out * darken[None]

    haze_max = float(rng.uniform(*p.haze))
    haze = fractal_noise(h, w, rng, octaves=3) * haze_max
    wl = np.asarray(S2_WAVELENGTHS_NM, dtype=np.float32)[idx]
    weight = ((490.0 / wl) ** 1.3)[:, None, None]
    hw = np.clip(haze[None] * weight, 0.0, 1.0)
    out = (1.0 - hw) * out + hw * 0.35
    intensity = np.clip(np.maximum(opacity, haze / 0.3), 0.0, 1.0).astype(np.float32)
    return SimulatedClouds(
        cloudy=np.clip(out, 0.0, 1.2).astype(np.float32),
        intensity=intensity,
        opacity=opacity,
        haze=haze.astype(np.float32),
        params={
            "coverage": cov,
            "softness": softness,
            "peak_opacity": peak,
            "brightness": brightness,
            "haze": haze_max,
            "shadow_dy": float(shift[0]),
            "shadow_dx": float(shift[1]),
        },
    )


def difference_cloud_mask(
    cloudy: np.ndarray | torch.Tensor, clear: np.ndarray | torch.Tensor, scale: float = 0.1
) -> np.ndarray | torch.Tensor:
    """Cloud intensity (1, H, W) in [0, 1] = clip(mean_b |cloudy_b - clear_b| / scale, 0, 1).

    Inputs (C, H, W) in reflectance (DN / 10000). Same array type as the input.

    Example:
        >>> import numpy as np
        >>> clear = np.zeros((2, 1, 2), np.float32)
        >>> cloudy = np.array([[[0.0, 0.2]], [[0.0, 0.0]]], np.float32)
        >>> difference_cloud_mask(cloudy, clear).tolist()
        [[[0.0, 1.0]]]
    """
    if cloudy.shape != clear.shape or cloudy.ndim != 3:
        raise ValueError(
            f"cloudy {tuple(cloudy.shape)} and clear {tuple(clear.shape)} must be equal (C,H,W)"
        )
    diff = abs(cloudy - clear).mean(0, keepdims=True) / scale
    if isinstance(diff, torch.Tensor):
        return diff.clamp(0.0, 1.0)
    return np.clip(diff, 0.0, 1.0).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.float32)


class S2CloudlessDetector:
    """The pretrained s2cloudless pixel classifier (LightGBM), run offline.

    Args:
        model_file: the LightGBM text model; default: the ``s2cloudless_model`` sample.
        threshold: cloud probability threshold (s2cloudless default 0.4).
        average_over: radius (pixels) of the disk the probabilities are averaged over (0: none).
        dilation_size: radius (pixels) of the disk used to dilate the binary mask (0: none).

    Example:
        >>> det = S2CloudlessDetector()  # doctest: +SKIP
        >>> prob = det.probability(s2_dn / 10000.0, bands=S2_BANDS)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_file: str | os.PathLike | None = None,
        threshold: float = 0.4,
        average_over: int = 4,
        dilation_size: int = 2,
    ):
        import lightgbm

        if model_file is None:
            from eo_common.samples import sample_path

            folder = sample_path("s2cloudless_model")
            found = sorted(folder.glob("*.txt"))
            if not found:
                raise FileNotFoundError(f"{folder}: no s2cloudless LightGBM .txt model file")
            model_file = found[0]
        path = Path(model_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: s2cloudless model file not found")
        self.model_file = path
        self.booster = lightgbm.Booster(model_file=str(path))
        n = self.booster.num_feature()
        if n != len(S2CLOUDLESS_BANDS):
            raise ValueError(
                f"{path}: expected a model with {len(S2CLOUDLESS_BANDS)} features "
                f"({', '.join(S2CLOUDLESS_BANDS)}), the file has {n}"
            )
        self.threshold = threshold
        self.average_over = average_over
        self.dilation_size = dilation_size

    def probability(self, reflectance: np.ndarray, bands: tuple[str, ...] = S2_BANDS) -> np.ndarray:
        """Per-pixel cloud probability (H, W) in [0, 1] from (C, H, W) reflectance (DN / 10000)."""
        reflectance = np.asarray(reflectance, dtype=np.float32)
        missing = [b for b in S2CLOUDLESS_BANDS if b not in bands]
        if reflectance.ndim != 3 or reflectance.shape[0] != len(bands) or missing:
            raise ValueError(
                f"s2cloudless needs bands {S2CLOUDLESS_BANDS}; got shape {reflectance.shape} "
                f"with bands {bands} (missing {missing})"
            )
        feats = np.stack([reflectance[bands.index(b)] for b in S2CLOUDLESS_BANDS], axis=-1)
        h, w = feats.shape[:2]
        prob = self.booster.predict(feats.reshape(-1, len(S2CLOUDLESS_BANDS)))
        return np.asarray(prob, dtype=np.float32).reshape(h, w)

    def mask(self, reflectance: np.ndarray, bands: tuple[str, ...] = S2_BANDS) -> np.ndarray:
        """Binary cloud mask (H, W) bool after averaging, thresholding and dilation."""
        prob = self.probability(reflectance, bands)
        if self.average_over > 0:
            disk = _disk(self.average_over)
            prob = ndimage.convolve(prob, disk / disk.sum(), mode="reflect")
        mask = prob > self.threshold
        if self.dilation_size > 0:
            mask = ndimage.binary_dilation(mask, structure=_disk(self.dilation_size).astype(bool))
        return mask
