"""Normalisation of Sentinel-1 / Sentinel-2 inputs, NaN filling, percentile stretch, band statistics.

Three published conventions are implemented exactly; metrics computed on normalised images are only
comparable within one convention, so every run should record which one it used.

==============  ===========================================  ==============================================
convention      Sentinel-1 (VV, VH in dB)                    Sentinel-2 (reflectance x 1e4, any band count)
==============  ===========================================  ==============================================
``glf-cr``      VV clip [-25, 0], VH clip [-32.5, 0],        clip [0, 10000], / 10000  -> [0, 1]
                ``(x - lo) / (hi - lo)``  -> [0, 1]
``dsen2-cr``    VV clip [-25, 0], VH clip [-32.5, 0],        clip [0, 10000], / 2000   -> [0, 5]
                ``2 (x - lo) / (hi - lo)`` -> [0, 2]
``uncrtaints``  VV and VH clip [-25, 0],                     clip [0, 10000], / 10000  -> [0, 1]
                ``(x - lo) / (hi - lo)``  -> [0, 1]
==============  ===========================================  ==============================================

All functions take NumPy arrays or torch tensors shaped ``(..., C, H, W)`` (the band axis is the third
from last, so a batch ``(B, C, H, W)`` works too) and return the same type, as ``float32``. NaNs pass
through the scaling unchanged: fill them first with :func:`fill_nan` (GLF-CR fills holes with a mean).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "S1_CONVENTIONS",
    "S2_CONVENTIONS",
    "SARConvention",
    "OpticalConvention",
    "normalize_s1",
    "denormalize_s1",
    "normalize_s2",
    "denormalize_s2",
    "fill_nan",
    "percentile_stretch",
    "BandStats",
    "RunningBandStats",
]

ArrayLike = TypeVar("ArrayLike", np.ndarray, Tensor)


@dataclass(frozen=True)
class SARConvention:
    """Clip-and-scale rule for the two Sentinel-1 bands (VV, VH) in dB.

    ``out = scale * (clip(x, lo, hi) - lo) / (hi - lo)`` per band, so the output lies in ``[0, scale]``.
    """

    name: str
    clip_min: tuple[float, float]  # (VV, VH) in dB
    clip_max: tuple[float, float]
    scale: float


@dataclass(frozen=True)
class OpticalConvention:
    """Clip-and-divide rule for Sentinel-2 reflectance stored as DN = reflectance x 10000.

    ``out = clip(x, clip_min, clip_max) / divisor``.
    """

    name: str
    clip_min: float
    clip_max: float
    divisor: float


S1_CONVENTIONS: dict[str, SARConvention] = {
    "glf-cr": SARConvention("glf-cr", (-25.0, -32.5), (0.0, 0.0), 1.0),
    "dsen2-cr": SARConvention("dsen2-cr", (-25.0, -32.5), (0.0, 0.0), 2.0),
    "uncrtaints": SARConvention("uncrtaints", (-25.0, -25.0), (0.0, 0.0), 1.0),
}
"""Sentinel-1 conventions by name (see the module docstring for the table)."""

S2_CONVENTIONS: dict[str, OpticalConvention] = {
    "glf-cr": OpticalConvention("glf-cr", 0.0, 10000.0, 10000.0),
    "dsen2-cr": OpticalConvention("dsen2-cr", 0.0, 10000.0, 2000.0),
    "uncrtaints": OpticalConvention("uncrtaints", 0.0, 10000.0, 10000.0),
}
"""Sentinel-2 conventions by name (see the module docstring for the table)."""


def _convention_key(convention: str, table: dict) -> str:
    key = str(convention).strip().lower().replace("_", "-")
    if key not in table:
        raise ValueError(
            f"unknown normalisation convention {convention!r}; choose one of {sorted(table)}"
        )
    return key


def _check_bands(x: np.ndarray | Tensor, what: str, expected: int | None = None) -> int:
    if x.ndim < 3:
        raise ValueError(
            f"{what}: expected an array shaped (..., C, H, W), got shape {tuple(x.shape)}"
        )
    bands = int(x.shape[-3])
    if expected is not None and bands != expected:
        raise ValueError(
            f"{what}: expected {expected} bands on axis -3, got shape {tuple(x.shape)} ({bands} bands)"
        )
    return bands


def _as_float32(x: ArrayLike) -> ArrayLike:
    if isinstance(x, Tensor):
        return x.to(torch.float32)
    if isinstance(x, np.ndarray):
        return x.astype(np.float32, copy=False)
    raise TypeError(f"expected a numpy.ndarray or torch.Tensor, got {type(x).__name__}")


def _per_band(values: Iterable[float], like: ArrayLike) -> ArrayLike:
    """Per-band constants shaped (C, 1, 1) in the type, dtype and device of ``like``."""
    values = np.asarray(list(values), dtype=np.float32).reshape(-1, 1, 1)
    if isinstance(like, Tensor):
        return torch.as_tensor(values, dtype=torch.float32, device=like.device)
    return values


def _clip(x: ArrayLike, lo: ArrayLike | float, hi: ArrayLike | float) -> ArrayLike:
    if isinstance(x, Tensor):
        return torch.clamp(x, lo, hi)  # NaN stays NaN
    return np.clip(x, lo, hi)


def normalize_s1(x: ArrayLike, convention: str = "glf-cr") -> ArrayLike:
    """Clip Sentinel-1 backscatter in dB and scale it linearly.

    Args:
        x: ``(..., 2, H, W)`` VV then VH in dB, NumPy or torch.
        convention: ``"glf-cr"`` (-> [0, 1], VH range [-32.5, 0]), ``"dsen2-cr"`` (-> [0, 2]) or
            ``"uncrtaints"`` (both bands [-25, 0] -> [0, 1]).

    Returns:
        Same type and shape, float32.

    Example:
        >>> x = np.array([[[-30.0, -12.5, 3.0]], [[-40.0, -16.25, 0.0]]])  # (2, 1, 3)
        >>> normalize_s1(x, "glf-cr")[:, 0]
        array([[0. , 0.5, 1. ],
               [0. , 0.5, 1. ]], dtype=float32)
        >>> normalize_s1(x, "dsen2-cr")[:, 0]
        array([[0., 1., 2.],
               [0., 1., 2.]], dtype=float32)
    """
    conv = S1_CONVENTIONS[_convention_key(convention, S1_CONVENTIONS)]
    _check_bands(x, "normalize_s1 (VV, VH)", expected=2)
    x = _as_float32(x)
    lo, hi = _per_band(conv.clip_min, x), _per_band(conv.clip_max, x)
    return (_clip(x, lo, hi) - lo) * (conv.scale / (hi - lo))


def denormalize_s1(x: ArrayLike, convention: str = "glf-cr") -> ArrayLike:
    """Inverse of :func:`normalize_s1` on the unclipped range: back to dB.

    Example:
        >>> y = np.array([[[0.5]], [[0.5]]])
        >>> denormalize_s1(y, "glf-cr").ravel()
        array([-12.5 , -16.25], dtype=float32)
    """
    conv = S1_CONVENTIONS[_convention_key(convention, S1_CONVENTIONS)]
    _check_bands(x, "denormalize_s1 (VV, VH)", expected=2)
    x = _as_float32(x)
    lo, hi = _per_band(conv.clip_min, x), _per_band(conv.clip_max, x)
    return x * ((hi - lo) / conv.scale) + lo


def normalize_s2(x: ArrayLike, convention: str = "glf-cr") -> ArrayLike:
    """Clip Sentinel-2 DN (reflectance x 1e4) to [0, 10000] and divide (10000, or 2000 for DSen2-CR).

    Args:
        x: ``(..., C, H, W)``, any band count (13 for L1C, 12 for L2A).
        convention: ``"glf-cr"``, ``"dsen2-cr"`` or ``"uncrtaints"``.

    Returns:
        Same type and shape, float32 (``[0, 1]``; ``[0, 5]`` for DSen2-CR).

    Example:
        >>> normalize_s2(np.array([[[-5.0, 2500.0, 12000.0]]]), "glf-cr")
        array([[[0.  , 0.25, 1.  ]]], dtype=float32)
        >>> normalize_s2(np.array([[[-5.0, 2500.0, 12000.0]]]), "dsen2-cr")
        array([[[0.  , 1.25, 5.  ]]], dtype=float32)
    """
    conv = S2_CONVENTIONS[_convention_key(convention, S2_CONVENTIONS)]
    _check_bands(x, "normalize_s2")
    x = _as_float32(x)
    return _clip(x, conv.clip_min, conv.clip_max) / conv.divisor


def denormalize_s2(x: ArrayLike, convention: str = "glf-cr") -> ArrayLike:
    """Inverse of :func:`normalize_s2` on the unclipped range: back to reflectance x 1e4 (float32).

    Example:
        >>> denormalize_s2(np.array([[[0.25]]]), "glf-cr")
        array([[[2500.]]], dtype=float32)
    """
    conv = S2_CONVENTIONS[_convention_key(convention, S2_CONVENTIONS)]
    _check_bands(x, "denormalize_s2")
    return _as_float32(x) * conv.divisor


def _invalid_mask(x: ArrayLike, nodata: float | None) -> ArrayLike:
    if isinstance(x, Tensor):
        bad = ~torch.isfinite(x)
        if nodata is not None and not math.isnan(nodata):
            bad |= x == nodata
        return bad
    bad = ~np.isfinite(x)
    if nodata is not None and not math.isnan(nodata):
        bad |= x == nodata
    return bad


def fill_nan(
    x: ArrayLike,
    value: float | Literal["band_mean"] = "band_mean",
    nodata: float | None = None,
) -> ArrayLike:
    """Replace NaN/inf (and ``nodata`` pixels) by the band mean of the valid pixels or by a constant.

    The band mean is taken per band (and per sample for a batch) over the pixels that are finite and
    differ from ``nodata``. Note that the GLF-CR reference code fills SAR holes with the mean of the whole
    image (all bands together); the per-band mean used here keeps VV and VH apart.

    Args:
        x: ``(..., C, H, W)`` NumPy or torch; not modified (a filled copy is returned).
        value: ``"band_mean"`` or a number.
        nodata: a pixel value that also counts as missing (e.g. ``-9999``), or ``None``.

    Returns:
        Same type, shape and dtype as ``x`` (float), with no invalid pixels left.

    Raises:
        ValueError: a band is entirely invalid and ``value="band_mean"`` (there is no mean to use).

    Example:
        >>> fill_nan(np.array([[[1.0, np.nan, 3.0]], [[-9999.0, 4.0, 6.0]]]), nodata=-9999)
        array([[[1., 2., 3.]],
        <BLANKLINE>
               [[5., 4., 6.]]])
    """
    if x.ndim < 2:
        raise ValueError(
            f"fill_nan: expected an array shaped (..., H, W), got shape {tuple(x.shape)}"
        )
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if isinstance(x, Tensor) and not x.is_floating_point():
        x = x.to(torch.float32)
    bad = _invalid_mask(x, nodata)
    if isinstance(x, Tensor):
        if value == "band_mean":
            good = (~bad).to(torch.float64)
            counts = good.sum(dim=(-2, -1), keepdim=True)
            if bool((counts == 0).any()):
                raise ValueError(
                    "fill_nan: a band has no valid pixel, so it has no mean to fill with"
                )
            sums = torch.where(bad, 0.0, x.to(torch.float64)).sum(dim=(-2, -1), keepdim=True)
            fill = (sums / counts).to(x.dtype)
        else:
            fill = torch.as_tensor(float(value), dtype=x.dtype, device=x.device)
        return torch.where(bad, fill, x)
    if value == "band_mean":
        counts = (~bad).sum(axis=(-2, -1), keepdims=True)
        if np.any(counts == 0):
            raise ValueError("fill_nan: a band has no valid pixel, so it has no mean to fill with")
        sums = np.where(bad, 0.0, x).sum(axis=(-2, -1), keepdims=True, dtype=np.float64)
        fill = (sums / counts).astype(x.dtype)
    else:
        fill = np.asarray(float(value), dtype=x.dtype)
    return np.where(bad, fill, x)


def percentile_stretch(
    x: ArrayLike,
    low: float = 2.0,
    high: float = 98.0,
    per_band: bool = True,
    nodata: float | None = None,
) -> ArrayLike:
    """Linear contrast stretch between two percentiles, clipped to [0, 1] (for display).

    ``out = clip((x - p_low) / (p_high - p_low), 0, 1)`` with the percentiles (linear interpolation,
    as ``numpy.percentile``) of the valid pixels, per band or over all bands together. Invalid pixels
    (NaN, inf, ``nodata``) become 0; a band whose two percentiles coincide becomes 0.

    Args:
        x: ``(C, H, W)`` NumPy or torch.
        low, high: percentiles in [0, 100], ``low < high``.
        per_band: stretch each band separately (``True``) or all bands with one pair of bounds.
        nodata: value treated as missing.

    Returns:
        float32 of the same type and shape, values in [0, 1].

    Example:
        >>> percentile_stretch(np.arange(5.0).reshape(1, 1, 5), low=0, high=100)
        array([[[0.  , 0.25, 0.5 , 0.75, 1.  ]]], dtype=float32)
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(
            f"percentile_stretch: need 0 <= low < high <= 100, got low={low}, high={high}"
        )
    if x.ndim != 3:
        raise ValueError(f"percentile_stretch: expected (C, H, W), got shape {tuple(x.shape)}")
    is_tensor = isinstance(x, Tensor)
    arr = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
    arr = arr.astype(np.float64, copy=False)
    bad = _invalid_mask(arr, nodata)
    out = np.zeros(arr.shape, dtype=np.float32)
    groups = [[c] for c in range(arr.shape[0])] if per_band else [list(range(arr.shape[0]))]
    for bands in groups:
        values = arr[bands][~bad[bands]]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [low, high])
        if hi <= lo:
            continue
        stretched = np.clip((arr[bands] - lo) / (hi - lo), 0.0, 1.0)
        out[bands] = np.where(bad[bands], 0.0, stretched)
    if is_tensor:
        return torch.from_numpy(out).to(x.device)
    return out


class RunningBandStats:
    """Streaming per-band count, mean and sum of squared deviations (Chan et al. parallel update).

    Each :meth:`update` computes the exact statistics of one array (float64) and merges them:
    ``n = n_a + n_b``, ``delta = mean_b - mean_a``, ``mean = mean_a + delta n_b / n``,
    ``M2 = M2_a + M2_b + delta^2 n_a n_b / n``. Merging is exact up to float64 rounding and
    independent of how the data are split into arrays.

    Example:
        >>> rs = RunningBandStats()
        >>> rs.update(np.array([[[1.0, 2.0]]])); rs.update(np.array([[[3.0, 4.0]]]))
        >>> rs.finalize().mean, rs.finalize().std
        (array([2.5]), array([1.11803399]))
    """

    def __init__(self, nodata: float | None = None) -> None:
        self.nodata = nodata
        self.count: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, array: np.ndarray | Tensor) -> None:
        """Merge one ``(C, H, W)`` or ``(B, C, H, W)`` array (NaN/inf and ``nodata`` ignored)."""
        if isinstance(array, Tensor):
            array = array.detach().cpu().numpy()
        arr = np.asarray(array, dtype=np.float64)
        if arr.ndim == 4:
            arr = np.moveaxis(arr, 1, 0).reshape(arr.shape[1], arr.shape[0], -1)
        elif arr.ndim != 3:
            raise ValueError(
                f"BandStats: expected (C, H, W) or (B, C, H, W), got shape {arr.shape}"
            )
        flat = arr.reshape(arr.shape[0], -1)
        good = ~_invalid_mask(flat, self.nodata)
        n_b = good.sum(axis=1).astype(np.float64)
        safe_n = np.maximum(n_b, 1.0)
        mean_b = np.where(good, flat, 0.0).sum(axis=1) / safe_n
        m2_b = (np.where(good, flat - mean_b[:, None], 0.0) ** 2).sum(axis=1)
        if self.count is None:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        if n_b.shape != self.count.shape:
            raise ValueError(
                f"BandStats: band count changed from {self.count.shape[0]} to {n_b.shape[0]}"
            )
        n = self.count + n_b
        safe = np.maximum(n, 1.0)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / safe
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n_b / safe
        self.count = n

    def finalize(self) -> BandStats:
        """The statistics so far (population std, ``ddof=0`` like ``numpy.std``)."""
        if self.count is None:
            raise ValueError("BandStats: no array was given")
        if np.any(self.count == 0):
            empty = np.flatnonzero(self.count == 0).tolist()
            raise ValueError(f"BandStats: bands {empty} have no valid pixel")
        return BandStats(
            mean=self.mean.copy(), std=np.sqrt(self.m2 / self.count), count=self.count.copy()
        )


@dataclass
class BandStats:
    """Per-band mean and standard deviation for standardisation, stored as JSON.

    Attributes:
        mean: ``(C,)`` float64.
        std: ``(C,)`` float64, population standard deviation (``ddof=0``).
        count: ``(C,)`` number of valid pixels the statistics came from (informative).

    Example:
        >>> stats = BandStats.from_arrays([np.array([[[0.0, 2.0]], [[10.0, 30.0]]])])
        >>> stats.mean, stats.std
        (array([ 1., 20.]), array([ 1., 10.]))
        >>> stats.standardize(np.array([[[1.0]], [[40.0]]])).ravel()
        array([0., 2.])
    """

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"BandStats: mean has {self.mean.size} bands but std has {self.std.size}"
            )
        if self.count is not None:
            self.count = np.asarray(self.count, dtype=np.float64).reshape(-1)

    @property
    def num_bands(self) -> int:
        return int(self.mean.size)

    @classmethod
    def from_arrays(
        cls, arrays: Iterable[np.ndarray | Tensor], nodata: float | None = None
    ) -> BandStats:
        """Streaming statistics over many ``(C, H, W)`` arrays (one pass, memory of one array)."""
        running = RunningBandStats(nodata=nodata)
        for array in arrays:
            running.update(array)
        return running.finalize()

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``{"mean": [...], "std": [...], "count": [...]}`` atomically."""
        from eo_common.io import atomic_save_json

        obj = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.count is not None:
            obj["count"] = self.count.tolist()
        return atomic_save_json(obj, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BandStats:
        """Read statistics written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"band statistics file not found: {path}")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            return cls(mean=obj["mean"], std=obj["std"], count=obj.get("count"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a band statistics file ({exc})") from exc

    def _constants(self, x: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        _check_bands(x, "BandStats", expected=self.num_bands)
        std = np.where(self.std > 0, self.std, 1.0)
        if isinstance(x, Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            mean_t = torch.as_tensor(self.mean, dtype=dtype, device=x.device).reshape(-1, 1, 1)
            std_t = torch.as_tensor(std, dtype=dtype, device=x.device).reshape(-1, 1, 1)
            return mean_t, std_t
        return self.mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)

    def standardize(self, x: ArrayLike) -> ArrayLike:
        """``(x - mean) / std`` per band on ``(..., C, H, W)``; a band with std 0 is only centred.

        NumPy input keeps its float dtype (integers become float64); torch keeps its float dtype.
        """
        mean, std = self._constants(x)
        if isinstance(x, Tensor) and not x.is_floating_point():
            x = x.to(torch.float32)
        if isinstance(x, np.ndarray):
            out = (x - mean) / std
            return out.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else out
        return (x - mean) / std

    def destandardize(self, x: ArrayLike) -> ArrayLike:
        """``x * std + mean`` per band: the inverse of :meth:`standardize`."""
        mean, std = self._constants(x)
        if isinstance(x, np.ndarray):
            out = x * std + mean
            return out.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else out
        return x * std + mean
