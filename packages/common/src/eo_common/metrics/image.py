"""Image-quality metrics: PSNR, SSIM, SAM, MAE, RMSE, LPIPS, streamed over a whole split.

**Non-finite values, one rule** (functions and :class:`ImageQualityMetrics` alike): pixels are left
out only by a ``mask``. A NaN or +-inf at a pixel that takes part makes the metric non-finite, with
the value torchmetrics gives for the same input (NaN for NaN; for +-inf: MAE and RMSE inf, PSNR
-inf, SSIM and SAM NaN); it never drops out silently. A pixel outside the mask never affects any
metric, whatever it holds. SSIM sees pixels through its window: an included pixel whose window
reaches a non-finite value in an *excluded* pixel has no SSIM and is left out of the SSIM mean. The
one exception to "nothing is skipped" is SAM at a pixel where a spectral vector is all zeros (no
angle exists; skipped, where torchmetrics returns NaN).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from .lpips import build_lpips

# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _check_images(pred: Tensor, target: Tensor, what: str) -> tuple[Tensor, Tensor]:
    pred, target = _as_tensor(pred).detach(), _as_tensor(target).detach()
    if pred.shape != target.shape:
        raise ValueError(
            f"{what}: pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.ndim != 4:
        raise ValueError(f"{what}: expected images shaped (B, C, H, W), got {tuple(pred.shape)}")
    dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    return pred.to(dtype), target.to(dtype)


def _check_mask(mask: Tensor | np.ndarray | None, pred: Tensor, what: str) -> Tensor | None:
    if mask is None:
        return None
    mask = _as_tensor(mask).to(pred.device)
    b, _, h, w = pred.shape
    if mask.ndim == 3:
        mask = mask[:, None]
    if tuple(mask.shape) != (b, 1, h, w):
        raise ValueError(
            f"{what}: mask must be shaped (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(mask.shape)}"
        )
    return mask.bool()


# --------------------------------------------------------------------------------------------------
# image quality: functional pieces
# --------------------------------------------------------------------------------------------------


def _window_1d(
    kernel_size: int, sigma: float, window: str, dtype: torch.dtype, device: torch.device
) -> Tensor:
    if window == "gaussian":
        x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
        g = torch.exp(-(x**2) / (2 * sigma**2))
    elif window == "uniform":
        g = torch.ones(kernel_size, dtype=torch.float64)
    else:
        raise ValueError(f"ssim window must be 'gaussian' or 'uniform', got {window!r}")
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim_map(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    kernel_size: int = 11,
    sigma: float = 1.5,
    window: Literal["gaussian", "uniform"] = "gaussian",
    border: Literal["crop", "reflect"] = "crop",
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Per-pixel, per-band SSIM map with an explicit window.

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``, local moments weighted by a normalised ``kernel_size`` window
    (Gaussian with ``sigma`` or uniform) and population (not sample) covariances.

    Args:
        pred, target: ``(B, C, H, W)``, ``H, W >= kernel_size``.
        data_range: ``R``, the value range of the images (fixed, never estimated from the data).
        border: ``"crop"`` keeps only pixels whose window lies inside the image: map
            ``(B, C, H-k+1, W-k+1)``, identical to scikit-image and pytorch-msssim. ``"reflect"``
            mirror-pads by ``k//2`` and returns the full ``(B, C, H, W)`` map, identical to torchmetrics.

    Example:
        >>> x = torch.rand(1, 2, 16, 16)
        >>> ssim_map(x, x).shape, float(ssim_map(x, x).min())
        (torch.Size([1, 2, 6, 6]), 1.0)
    """
    pred, target = _check_images(pred, target, "ssim")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"ssim: kernel_size must be a positive odd number, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"ssim: sigma must be positive, got {sigma}")
    h, w = pred.shape[-2:]
    if h < kernel_size or w < kernel_size:
        raise ValueError(
            f"ssim: images of {h}x{w} pixels are smaller than the {kernel_size}-pixel window"
        )
    if border not in ("crop", "reflect"):
        raise ValueError(f"ssim: border must be 'crop' or 'reflect', got {border!r}")
    channels = pred.shape[1]
    pad = kernel_size // 2
    if border == "reflect" and pad > 0:
        pred = F.pad(pred, (pad, pad, pad, pad), mode="reflect")
        target = F.pad(target, (pad, pad, pad, pad), mode="reflect")
    g = _window_1d(kernel_size, sigma, window, pred.dtype, pred.device)
    kh = g.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1)
    kw = g.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1)
    stack = torch.cat([pred, target, pred * pred, target * target, pred * target])
    moments = F.conv2d(F.conv2d(stack, kh, groups=channels), kw, groups=channels)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(pred.shape[0])
    var_x = torch.clamp(e_xx - mu_x**2, min=0.0)
    var_y = torch.clamp(e_yy - mu_y**2, min=0.0)
    cov_xy = e_xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )


def ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    kernel_size: int = 11,
    sigma: float = 1.5,
    window: Literal["gaussian", "uniform"] = "gaussian",
    border: Literal["crop", "reflect"] = "crop",
) -> float:
    """Mean of :func:`ssim_map` over all pixels, bands and images.

    With ``border="crop"`` this equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=R, channel_axis=0)`` for a single image.

    Example:
        >>> x = torch.linspace(0, 1, 256).reshape(1, 1, 16, 16)
        >>> round(ssim(x, x), 6), round(ssim(x, 1 - x), 3)  # scikit-image gives -0.826 too
        (1.0, -0.826)
    """
    return float(
        ssim_map(pred, target, data_range, kernel_size, sigma, window, border).mean(
            dtype=torch.float64
        )
    )


def _sam_angles(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Angle in radians between spectral vectors, ``(B, H, W)``, and where it is defined (neither
    vector all zeros; a non-finite vector counts as defined, so its NaN angle propagates)."""
    pred_norm = torch.linalg.vector_norm(pred, dim=1, keepdim=True)
    target_norm = torch.linalg.vector_norm(target, dim=1, keepdim=True)
    valid = ~((pred_norm == 0) | (target_norm == 0))
    tiny = torch.finfo(pred.dtype).tiny
    u = pred / pred_norm.clamp_min(tiny)
    v = target / target_norm.clamp_min(tiny)
    # 2 atan2(|u - v|, |u + v|) is the angle between unit vectors, stable near 0 and pi (Kahan),
    # unlike acos of the cosine.
    angle = 2 * torch.atan2(
        torch.linalg.vector_norm(u - v, dim=1), torch.linalg.vector_norm(u + v, dim=1)
    )
    return angle, valid[:, 0]


def sam(pred: Tensor, target: Tensor, degrees: bool = True, mask: Tensor | None = None) -> float:
    """Spectral angle mapper: mean over pixels of ``arccos(<p, t> / (|p| |t|))`` along the band axis.

    Pixels where either spectral vector is all zeros have no angle and are left out (torchmetrics
    returns NaN there). A NaN or inf at an included pixel makes the result NaN (the module's rule on
    non-finite values); pixels outside ``mask`` never count.

    Args:
        pred, target: ``(B, C, H, W)``.
        degrees: degrees (the unit of the cloud-removal papers) or radians (torchmetrics' unit).
        mask: optional ``(B, 1, H, W)`` bool, pixels to include.

    Example:
        >>> p = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
        >>> t = torch.tensor([0.0, 3.0]).reshape(1, 2, 1, 1)
        >>> round(sam(p, t), 4), round(sam(p, t, degrees=False), 6)
        (90.0, 1.570796)
    """
    pred, target = _check_images(pred, target, "sam")
    angle, valid = _sam_angles(pred, target)
    m = _check_mask(mask, pred, "sam")
    if m is not None:
        valid &= m[:, 0]
    if not bool(valid.any()):
        return float("nan")
    value = float(angle[valid].to(torch.float64).mean())
    return math.degrees(value) if degrees else value


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> float:
    """``10 log10(R^2 / MSE)`` with the MSE over every element of the inputs (inf when equal).

    Example:
        >>> round(psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1)), 4)
        20.0
    """
    pred, target = _as_tensor(pred).detach(), _as_tensor(target).detach()
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    diff = (pred.to(torch.float64) - target.to(torch.float64)).reshape(-1)
    mse = float(torch.mean(diff * diff))
    return _psnr_from_mse(mse, data_range)


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if math.isnan(mse):
        return float("nan")
    if mse == 0:
        return float("inf")
    if math.isinf(mse):
        return -float("inf")
    return 10.0 * math.log10(data_range**2 / mse)


# --------------------------------------------------------------------------------------------------
# ImageQualityMetrics
# --------------------------------------------------------------------------------------------------


class ImageQualityMetrics(Metric):
    """PSNR, SSIM, SAM, MAE, RMSE (and LPIPS) accumulated over a whole split.

    Statistics kept (float64 sums, DDP-summed): squared and absolute errors and their element count,
    the sum and count of SSIM-map values, of per-pixel spectral angles, and of per-image LPIPS.

    * ``psnr = 10 log10(R^2 / MSE_split)``, MSE over every pixel and band of the split.
    * ``mae``, ``rmse = sqrt(MSE_split)`` over every pixel and band.
    * ``ssim``: mean of the SSIM map (see :func:`ssim_map`) over all pixels, bands and images; with
      equal image sizes this is the mean of per-image SSIMs. Gaussian window ``ssim_kernel`` /
      ``ssim_sigma`` (or uniform), ``data_range`` fixed. ``ssim_border="crop"`` (default) matches
      scikit-image; ``"reflect"`` matches torchmetrics.
    * ``sam_deg`` / ``sam_rad``: mean over pixels of the angle between the predicted and true spectral
      vectors; pixels where either vector is zero are skipped.
    * ``lpips`` (only with ``lpips_weights``): mean per-image LPIPS on ``rgb_bands`` scaled by
      ``data_range`` into [0, 1].

    With ``mask`` (``(B, 1, H, W)`` bool, True = include), every metric is restricted to the masked
    pixels: MSE/MAE over masked pixels x bands, SAM over masked pixels, SSIM = mean of the SSIM map over
    the masked pixels (windows still see their unmasked neighbours). Use one instance per region to
    report cloudy and clear pixels separately. LPIPS is image-level and refuses a mask.

    Args:
        data_range: value range ``R`` of the images (1.0 for reflectance scaled to [0, 1]).
        ssim_kernel, ssim_sigma: SSIM window size (odd) and Gaussian sigma.
        rgb_bands: 0-based band indices (R, G, B) for LPIPS, e.g. ``(3, 2, 1)`` for Sentinel-2.
        lpips_weights: local backbone weights file for LPIPS (see :func:`build_lpips`); None = no LPIPS.
        ssim_window: ``"gaussian"`` or ``"uniform"``.
        ssim_border: ``"crop"`` or ``"reflect"``.
        lpips_net: ``"alex"`` (default), ``"vgg"`` or ``"squeeze"``.

    Example:
        >>> metric = ImageQualityMetrics()
        >>> target = torch.full((2, 3, 16, 16), 0.5)
        >>> for b in range(2):
        ...     metric.update(target[b : b + 1] + 0.1, target[b : b + 1])
        >>> out = metric.compute()
        >>> round(out["psnr"], 4), round(out["mae"], 6), round(out["sam_deg"], 4)
        (20.0, 0.1, 0.0)
        >>> cloudy = ImageQualityMetrics()
        >>> cloud_mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool); cloud_mask[:, :, :8] = True
        >>> cloudy.update(target + 0.1, target, mask=cloud_mask)
        >>> round(cloudy.compute()["rmse"], 6)
        0.1
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        data_range: float = 1.0,
        ssim_kernel: int = 11,
        ssim_sigma: float = 1.5,
        rgb_bands: Sequence[int] | None = None,
        lpips_weights: str | os.PathLike | None = None,
        *,
        ssim_window: Literal["gaussian", "uniform"] = "gaussian",
        ssim_border: Literal["crop", "reflect"] = "crop",
        lpips_net: Literal["alex", "vgg", "squeeze"] = "alex",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not data_range > 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        if ssim_kernel < 1 or ssim_kernel % 2 == 0:
            raise ValueError(f"ssim_kernel must be a positive odd number, got {ssim_kernel}")
        if ssim_window not in ("gaussian", "uniform"):
            raise ValueError(f"ssim_window must be 'gaussian' or 'uniform', got {ssim_window!r}")
        if ssim_border not in ("crop", "reflect"):
            raise ValueError(f"ssim_border must be 'crop' or 'reflect', got {ssim_border!r}")
        if rgb_bands is not None and len(rgb_bands) != 3:
            raise ValueError(f"rgb_bands must name 3 bands (R, G, B), got {rgb_bands}")
        self.data_range = float(data_range)
        self.ssim_kernel = int(ssim_kernel)
        self.ssim_sigma = float(ssim_sigma)
        self.ssim_window = ssim_window
        self.ssim_border = ssim_border
        self.rgb_bands = tuple(int(b) for b in rgb_bands) if rgb_bands is not None else None
        self.lpips = build_lpips(lpips_weights, lpips_net) if lpips_weights is not None else None
        for name in (
            "sq_err_sum",
            "abs_err_sum",
            "value_count",
            "ssim_sum",
            "ssim_count",
            "sam_sum",
            "sam_count",
            "lpips_sum",
            "lpips_count",
        ):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add one batch: ``pred``, ``target`` ``(B, C, H, W)``; ``mask`` ``(B, 1, H, W)`` bool or None."""
        pred, target = _check_images(pred, target, "ImageQualityMetrics")
        m = _check_mask(mask, pred, "ImageQualityMetrics")
        f64 = torch.float64
        diff = pred - target
        if m is None:
            self.sq_err_sum += torch.sum(diff * diff, dtype=f64)
            self.abs_err_sum += torch.sum(diff.abs(), dtype=f64)
            self.value_count += float(diff.numel())
        else:  # where(), not a product: a NaN outside the mask must not leak in as NaN * 0
            diff = torch.where(m, diff, torch.zeros_like(diff))
            self.sq_err_sum += torch.sum(diff * diff, dtype=f64)
            self.abs_err_sum += torch.sum(diff.abs(), dtype=f64)
            self.value_count += float(m.sum()) * diff.shape[1]
        self._update_ssim(pred, target, m)
        if pred.shape[1] >= 2:
            angle, valid = _sam_angles(pred, target)
            if m is not None:
                valid = valid & m[:, 0]
            self.sam_sum += torch.sum(torch.where(valid, angle, torch.zeros_like(angle)), dtype=f64)
            self.sam_count += float(valid.sum())

        if self.lpips is not None:
            if m is not None:
                raise ValueError(
                    "LPIPS is an image-level score and has no masked form; use a separate "
                    "ImageQualityMetrics without lpips_weights for masked regions"
                )
            self._update_lpips(pred, target)

    def _ssim_map(self, pred: Tensor, target: Tensor) -> Tensor:
        return ssim_map(
            pred,
            target,
            self.data_range,
            self.ssim_kernel,
            self.ssim_sigma,
            self.ssim_window,
            self.ssim_border,
        )

    def _update_ssim(self, pred: Tensor, target: Tensor, m: Tensor | None) -> None:
        """SSIM sums; see the module docstring for masks and non-finite values."""
        f64 = torch.float64
        if m is None:
            smap = self._ssim_map(pred, target)
            self.ssim_sum += torch.sum(smap, dtype=f64)
            self.ssim_count += float(smap.numel())
            return
        k, pad = self.ssim_kernel, self.ssim_kernel // 2
        if self.ssim_border == "crop":
            h, w = m.shape[-2:]
            m_ssim = m[..., pad : h - pad, pad : w - pad]
        else:
            m_ssim = m
        bad = ~(torch.isfinite(pred) & torch.isfinite(target))
        if not bool(bad.any()):
            smap = self._ssim_map(pred, target)
            keep = m_ssim.expand_as(smap)
        elif bool((bad & m).any()):  # a non-finite value at an included pixel: SSIM is NaN
            self.ssim_sum += float("nan")
            self.ssim_count += float(m_ssim.sum()) * pred.shape[1]
            return
        else:  # non-finite values only outside the mask: drop the windows that reach them
            zero = torch.zeros_like(pred)
            smap = self._ssim_map(torch.where(bad, zero, pred), torch.where(bad, zero, target))
            reach = bad.to(pred.dtype)
            if self.ssim_border == "reflect" and pad > 0:
                reach = F.pad(reach, (pad, pad, pad, pad), mode="reflect")
            touched = F.max_pool2d(reach, k, stride=1) > 0
            keep = m_ssim & ~touched
        self.ssim_sum += torch.sum(torch.where(keep, smap, torch.zeros_like(smap)), dtype=f64)
        self.ssim_count += float(keep.sum())

    def _update_lpips(self, pred: Tensor, target: Tensor) -> None:
        channels = pred.shape[1]
        bands = self.rgb_bands
        if bands is None:
            if channels != 3:
                raise ValueError(
                    f"LPIPS needs rgb_bands for images with {channels} bands (e.g. (3, 2, 1) for "
                    "Sentinel-2 B04, B03, B02)"
                )
            bands = (0, 1, 2)
        if max(bands) >= channels or min(bands) < -channels:
            raise ValueError(f"rgb_bands {bands} out of range for images with {channels} bands")
        idx = list(bands)
        x = (pred[:, idx] / self.data_range).clamp(0, 1).float()
        y = (target[:, idx] / self.data_range).clamp(0, 1).float()
        with torch.no_grad():
            scores = self.lpips(x, y, normalize=True).reshape(-1)
        self.lpips_sum += torch.sum(scores, dtype=torch.float64)
        self.lpips_count += float(scores.numel())

    def compute(self) -> dict[str, float]:
        """``{"psnr", "ssim", "sam_deg", "sam_rad", "mae", "rmse"[, "lpips"]}`` as floats (NaN if empty)."""
        n = float(self.value_count)
        mse = float(self.sq_err_sum) / n if n > 0 else float("nan")
        sam_rad = (
            float(self.sam_sum / self.sam_count) if float(self.sam_count) > 0 else float("nan")
        )
        out = {
            "psnr": _psnr_from_mse(mse, self.data_range),
            "ssim": float(self.ssim_sum / self.ssim_count)
            if float(self.ssim_count) > 0
            else float("nan"),
            "sam_deg": math.degrees(sam_rad),
            "sam_rad": sam_rad,
            "mae": float(self.abs_err_sum) / n if n > 0 else float("nan"),
            "rmse": math.sqrt(mse) if n > 0 else float("nan"),
        }
        if self.lpips is not None:
            count = float(self.lpips_count)
            out["lpips"] = float(self.lpips_sum) / count if count > 0 else float("nan")
        return out
