"""Streaming evaluation metrics: accumulate sufficient statistics over a whole split, then compute.

Per-batch scores are never averaged: PSNR, for instance, is ``10 log10(R^2 / MSE)`` with the MSE of
every pixel of the split, which differs from the mean of per-batch PSNRs. Every metric class is a
:class:`torchmetrics.Metric`, so ``update()`` per batch, ``compute()`` at the end, ``reset()``, device
moves and DDP synchronisation (states are summed or concatenated over processes) come for free.

* :class:`ImageQualityMetrics` -- PSNR, SSIM, SAM (degrees and radians), MAE, RMSE, optional LPIPS,
  optionally restricted to a pixel mask (e.g. cloudy vs clear pixels).
* :class:`SegmentationMetrics` -- a streaming confusion matrix and everything derived from it:
  multiclass MCC, Cohen's kappa (plain and quadratic), accuracy, per-class precision/recall/F1/IoU.
* :class:`SpearmanRho` -- exact Spearman rank correlation with ties over all pixels of a split.
* Functional helpers: :func:`psnr`, :func:`ssim`, :func:`sam`, :func:`mcc_from_confusion`,
  :func:`kappa_from_confusion`, :func:`scores_from_confusion`.

The formulas and conventions (and how they compare with scikit-image, scikit-learn, scipy and
torchmetrics) are written out in ``docs/common.md`` (section Metrics).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "ImageQualityMetrics",
    "SegmentationMetrics",
    "SpearmanRho",
    "psnr",
    "ssim",
    "ssim_map",
    "sam",
    "mcc_from_confusion",
    "kappa_from_confusion",
    "scores_from_confusion",
    "LPIPS_WEIGHTS_HELP",
]

LPIPS_WEIGHTS_HELP = (
    "LPIPS needs the ImageNet weights of its backbone, which cannot be downloaded here. Pass "
    "`lpips_weights=<path>` pointing at a local file: either the torchvision state dict of the backbone "
    "(alex: alexnet-owt-7be5be79.pth, vgg: vgg16-397923af.pth, squeeze: squeezenet1_1-b8a52dc0.pth; "
    "on a machine with internet `torchvision.models.alexnet(weights='DEFAULT')` stores it under "
    "~/.cache/torch/hub/checkpoints/), or a full LPIPS state dict (keys 'net.slice*', 'lin*'). "
    "The LPIPS linear heads ship with torchmetrics and are used from there."
)


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
    """Angle in radians between spectral vectors, ``(B, H, W)``, and where it is defined."""
    pred_norm = torch.linalg.vector_norm(pred, dim=1, keepdim=True)
    target_norm = torch.linalg.vector_norm(target, dim=1, keepdim=True)
    valid = (pred_norm > 0) & (target_norm > 0)
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
    returns NaN there).

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
    return 10.0 * math.log10(data_range**2 / mse)


# --------------------------------------------------------------------------------------------------
# LPIPS with local weights
# --------------------------------------------------------------------------------------------------


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a clear error
        raise ValueError(f"{path}: cannot read LPIPS weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors. {LPIPS_WEIGHTS_HELP}")
    return state


def build_lpips(weights_path: str | os.PathLike, net: str = "alex") -> torch.nn.Module:
    """An LPIPS network (torchmetrics' implementation) whose backbone weights come from a local file.

    The linear heads are the published LPIPS v0.1 heads shipped inside torchmetrics. The file holds
    either the torchvision state dict of the backbone (keys ``features.N.*`` or ``N.*``) or a complete
    LPIPS state dict (keys ``net.sliceK.N.*`` and optionally ``linK.*``).

    Raises:
        FileNotFoundError: the file does not exist (the message explains how to get one).
        ValueError: the file is not a matching state dict.
    """
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights file not found: {path}. {LPIPS_WEIGHTS_HELP}")
    if net not in ("alex", "vgg", "squeeze"):
        raise ValueError(f"lpips_net must be 'alex', 'vgg' or 'squeeze', got {net!r}")
    state = _read_state_dict(path)
    model = _NoTrainLpips(pretrained=True, net=net, pnet_rand=True)
    if any(k.startswith("net.") for k in state):
        backbone = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        heads = {k: v for k, v in state.items() if k.startswith("lin")}
        if heads:
            missing = model.load_state_dict(heads, strict=False)
            if missing.unexpected_keys:
                raise ValueError(
                    f"{path}: unexpected LPIPS head keys {missing.unexpected_keys[:5]}"
                )
    else:
        # torchmetrics puts torchvision's features[i] into Sequential slices under the name str(i)
        slice_of = {
            index: slice_name
            for slice_name, block in model.net.named_modules()
            if isinstance(block, torch.nn.Sequential)
            and block._modules
            and all(k.isdigit() for k in block._modules)
            for index in block._modules
        }
        has_prefix = any(k.startswith("features.") for k in state)
        backbone = {}
        for key, value in state.items():
            if has_prefix:
                if not key.startswith("features."):
                    continue  # classifier weights of a full torchvision model
                key = key[len("features.") :]
            index, _, rest = key.partition(".")
            if index in slice_of:
                backbone[f"{slice_of[index]}.{index}.{rest}"] = value
    try:
        model.net.load_state_dict(backbone, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path}: does not hold the weights of the LPIPS '{net}' backbone ({str(exc)[:300]}). "
            f"{LPIPS_WEIGHTS_HELP}"
        ) from exc
    return model


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
        else:
            mf = m.to(diff.dtype)
            self.sq_err_sum += torch.sum(diff * diff * mf, dtype=f64)
            self.abs_err_sum += torch.sum(diff.abs() * mf, dtype=f64)
            self.value_count += float(m.sum()) * diff.shape[1]

        smap = ssim_map(
            pred,
            target,
            self.data_range,
            self.ssim_kernel,
            self.ssim_sigma,
            self.ssim_window,
            self.ssim_border,
        )
        if m is None:
            self.ssim_sum += torch.sum(smap, dtype=f64)
            self.ssim_count += float(smap.numel())
        else:
            if self.ssim_border == "crop":
                p = self.ssim_kernel // 2
                h, w = m.shape[-2:]
                m_ssim = m[..., p : h - p, p : w - p]
            else:
                m_ssim = m
            self.ssim_sum += torch.sum(smap * m_ssim.to(smap.dtype), dtype=f64)
            self.ssim_count += float(m_ssim.sum()) * smap.shape[1]

        if pred.shape[1] >= 2:
            angle, valid = _sam_angles(pred, target)
            if m is not None:
                valid = valid & m[:, 0]
            self.sam_sum += torch.sum(angle * valid.to(angle.dtype), dtype=f64)
            self.sam_count += float(valid.sum())

        if self.lpips is not None:
            if m is not None:
                raise ValueError(
                    "LPIPS is an image-level score and has no masked form; use a separate "
                    "ImageQualityMetrics without lpips_weights for masked regions"
                )
            self._update_lpips(pred, target)

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


# --------------------------------------------------------------------------------------------------
# confusion-matrix metrics
# --------------------------------------------------------------------------------------------------


def _check_confusion(cm: Any) -> np.ndarray:
    cm = np.asarray(cm.detach().cpu() if isinstance(cm, Tensor) else cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
    if np.any(cm < 0):
        raise ValueError("confusion matrix has negative counts")
    return cm


def mcc_from_confusion(cm: Any) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K) from a confusion matrix (rows = truth).

    ``MCC = (c s - sum_k t_k p_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))`` with ``c`` the trace,
    ``s`` the total, ``t_k`` the true and ``p_k`` the predicted count of class k. 0 when undefined,
    like ``sklearn.metrics.matthews_corrcoef``.

    Example:
        >>> mcc_from_confusion([[5, 0], [0, 5]]), round(mcc_from_confusion([[3, 2], [1, 4]]), 4)
        (1.0, 0.4082)
    """
    cm = _check_confusion(cm)
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    c, s = np.trace(cm), cm.sum()
    cov_tp = c * s - t @ p
    cov_pp = s * s - p @ p
    cov_tt = s * s - t @ t
    denom = cov_tt * cov_pp
    if denom == 0:
        return 0.0
    return float(cov_tp / math.sqrt(denom))


def kappa_from_confusion(cm: Any, weights: Literal["linear", "quadratic"] | None = None) -> float:
    """Cohen's kappa from a confusion matrix: plain, linear or quadratic weights.

    ``kappa = 1 - sum(w * O) / sum(w * E)``, ``O`` the confusion matrix, ``E = outer(t, p) / s`` the
    matrix expected by chance, ``w_ij = [i != j]`` (plain), ``|i - j|`` (linear) or ``(i - j)^2``
    (quadratic). NaN when undefined, like ``sklearn.metrics.cohen_kappa_score``.

    Example:
        >>> round(kappa_from_confusion([[3, 2], [1, 4]]), 4)
        0.4
        >>> round(kappa_from_confusion([[2, 1, 0], [0, 2, 1], [0, 0, 3]], "quadratic"), 4)
        0.8333
    """
    cm = _check_confusion(cm)
    k = cm.shape[0]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    if weights is None:
        w = (i != j).astype(np.float64)
    elif weights == "linear":
        w = np.abs(i - j).astype(np.float64)
    elif weights == "quadratic":
        w = ((i - j) ** 2).astype(np.float64)
    else:
        raise ValueError(f"kappa weights must be None, 'linear' or 'quadratic', got {weights!r}")
    s = cm.sum()
    if s == 0:
        return float("nan")
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / s
    denom = float((w * expected).sum())
    if denom == 0:
        return float("nan")
    return float(1.0 - (w * cm).sum() / denom)


def scores_from_confusion(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every score :class:`SegmentationMetrics` reports, from a ``(K, K)`` confusion matrix.

    Per class k: ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
    ``f1 = 2 TP / (2 TP + FP + FN)``, ``iou = TP / (TP + FP + FN)``, ``support = TP + FN``; a ratio
    with a zero denominator is 0 (scikit-learn's ``zero_division=0``). ``miou`` and ``macro_f1``
    average over the classes that occur in the truth or the prediction.

    Example:
        >>> out = scores_from_confusion([[3, 1], [0, 4]], ["water", "land"])
        >>> out["accuracy"], out["per_class"]["water"]["recall"], out["per_class"]["land"]["iou"]
        (0.875, 0.75, 0.8)
    """
    cm = _check_confusion(cm)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names for {k} classes")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1, iou = ratio(2 * tp, 2 * tp + fp + fn), ratio(tp, tp + fp + fn)
    present = (tp + fp + fn) > 0
    total = cm.sum()
    per_class = {
        names[c]: {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "iou": float(iou[c]),
            "support": int(tp[c] + fn[c]),
        }
        for c in range(k)
    }
    return {
        "mcc": mcc_from_confusion(cm),
        "kappa": kappa_from_confusion(cm),
        "kappa_quadratic": kappa_from_confusion(cm, "quadratic"),
        "accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": per_class,
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


class SegmentationMetrics(Metric):
    """Streaming confusion matrix over a split and the scores of :func:`scores_from_confusion`.

    ``update(pred, target)`` accepts predicted labels shaped like ``target`` or logits/probabilities
    ``(B, K, ...)`` (argmax over dim 1). Pixels whose target equals ``ignore_index`` are left out.
    The matrix is accumulated with one ``bincount`` per batch (int64, DDP-summed).

    Example:
        >>> metric = SegmentationMetrics(num_classes=3, class_names=["bg", "glacier", "debris"])
        >>> metric.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 255]))
        >>> metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 2]]))
        >>> out = metric.compute()
        >>> out["accuracy"], out["confusion_matrix"]
        (0.8, [[2, 0, 0], [0, 1, 0], [0, 1, 1]])
        >>> round(out["mcc"], 4), round(out["kappa"], 4)
        (0.75, 0.7059)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def _labels(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"SegmentationMetrics: logits have {pred.shape[1]} channels for "
                    f"{self.num_classes} classes"
                )
            if pred.shape[:1] + pred.shape[2:] != target.shape:
                raise ValueError(
                    f"SegmentationMetrics: logits {tuple(pred.shape)} do not match target "
                    f"{tuple(target.shape)}"
                )
            return pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(
                f"SegmentationMetrics: pred {tuple(pred.shape)} must be labels shaped like target "
                f"{tuple(target.shape)} or logits (B, K, ...)"
            )
        if pred.is_floating_point():
            if not bool(torch.all(pred == pred.round())):
                raise ValueError(
                    "SegmentationMetrics: float pred with the shape of target must hold integer "
                    "labels; pass logits as (B, K, ...)"
                )
        return pred.long()

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch of predictions (labels or logits) and integer targets."""
        pred, target = _as_tensor(pred).detach(), _as_tensor(target).detach()
        if target.is_floating_point():
            raise ValueError(
                f"SegmentationMetrics: target must be integer labels, got {target.dtype}"
            )
        pred = self._labels(pred, target).reshape(-1).to(self.confmat.device)
        target = target.reshape(-1).long().to(self.confmat.device)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        if target.numel() == 0:
            return
        k = self.num_classes
        for name, labels in (("target", target), ("pred", pred)):
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= k:
                raise ValueError(
                    f"SegmentationMetrics: {name} has labels outside [0, {k - 1}] "
                    f"(min {low}, max {high}); ignore_index={self.ignore_index}"
                )
        self.confmat += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """``(K, K)`` int64 NumPy array, rows = truth, columns = prediction (this process's counts)."""
        return self.confmat.detach().cpu().numpy().copy()

    def compute(self) -> dict[str, Any]:
        """``{"mcc", "kappa", "kappa_quadratic", "accuracy", "miou", "macro_f1", "per_class",
        "confusion_matrix"}`` (see :func:`scores_from_confusion`)."""
        return scores_from_confusion(self.confmat.detach().cpu().numpy(), self.class_names)


# --------------------------------------------------------------------------------------------------
# Spearman
# --------------------------------------------------------------------------------------------------


def _small_integer_levels(x: Tensor, levels: int) -> bool:
    if x.numel() == 0:
        return True
    if x.dtype == torch.bool:
        return True
    if x.is_floating_point() and not bool(torch.all(x == x.round())):
        return False
    return int(x.min()) >= 0 and int(x.max()) < levels


def _midranks(counts: np.ndarray) -> np.ndarray:
    """1-based average ranks of tied blocks of sizes ``counts`` (in sorted order)."""
    return np.cumsum(counts) - (counts - 1) / 2.0


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denom if denom > 0 else float("nan")


class SpearmanRho(Metric):
    """Exact Spearman rank correlation over every pair of a split, ties given average ranks.

    ``rho = Pearson(rank(pred), rank(target))``, equal to ``scipy.stats.spearmanr`` (with
    ``nan_policy="omit"``: pairs with a non-finite value are dropped; pairs whose target equals
    ``ignore_index`` too). Storage is compact: a batch whose values are all integers in
    ``[0, levels)`` (class ranks, risk levels 0..2, 8-bit images) only adds to a ``levels x levels``
    joint histogram, so millions of pixels cost nothing; other batches are stored as values and
    ranked at the end. Both parts are combined exactly.

    Example:
        >>> rho = SpearmanRho(ignore_index=255)
        >>> rho.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]))
        >>> rho.update(torch.tensor([2, 0]), torch.tensor([255, 1]))
        >>> round(rho.compute(), 4)  # scipy.stats.spearmanr([0,1,1,2,0], [0,0,1,2,1])
        0.5556
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, levels: int = 256, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if levels < 1:
            raise ValueError(f"levels must be positive, got {levels}")
        self.levels = int(levels)
        self.ignore_index = ignore_index
        self.add_state(
            "joint_hist",
            default=torch.zeros(levels, levels, dtype=torch.long),
            dist_reduce_fx="sum",
        )
        self.add_state("pred_values", default=[], dist_reduce_fx="cat")
        self.add_state("target_values", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add pairs (any equal shapes; flattened)."""
        pred, target = _as_tensor(pred).detach(), _as_tensor(target).detach()
        if pred.shape != target.shape:
            raise ValueError(
                f"SpearmanRho: pred and target shapes differ: {tuple(pred.shape)} vs "
                f"{tuple(target.shape)}"
            )
        pred, target = pred.reshape(-1), target.reshape(-1)
        keep = torch.ones_like(pred, dtype=torch.bool)
        if pred.is_floating_point():
            keep &= torch.isfinite(pred)
        if target.is_floating_point():
            keep &= torch.isfinite(target)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if pred.numel() == 0:
            return
        if _small_integer_levels(pred, self.levels) and _small_integer_levels(target, self.levels):
            index = pred.long() * self.levels + target.long()
            hist = torch.bincount(index, minlength=self.levels * self.levels)
            self.joint_hist += hist.reshape(self.levels, self.levels).to(self.joint_hist.device)
            return
        dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
        if not (pred.is_floating_point() and target.is_floating_point()):
            dtype = torch.float64  # large integers must not be rounded
        self.pred_values.append(pred.to(dtype))
        self.target_values.append(target.to(dtype))

    def compute(self) -> float:
        """Spearman's rho (float; NaN with fewer than two pairs or a constant input)."""
        hist = self.joint_hist.detach().cpu().numpy().astype(np.float64)
        preds = self.pred_values
        targets = self.target_values
        if isinstance(preds, Tensor):  # after DDP sync the list is concatenated
            preds, targets = [preds], [targets]
        if len(preds) == 0:
            n = hist.sum()
            if n < 2:
                return float("nan")
            a, b = hist.sum(axis=1), hist.sum(axis=0)
            mid = (n + 1) / 2.0
            dp, dt = _midranks(a) - mid, _midranks(b) - mid
            denom = math.sqrt(float(a @ dp**2) * float(b @ dt**2))
            return float(dp @ hist @ dt) / denom if denom > 0 else float("nan")
        from scipy.stats import rankdata

        p = np.concatenate([t.detach().cpu().numpy().astype(np.float64) for t in preds])
        t = np.concatenate([t.detach().cpu().numpy().astype(np.float64) for t in targets])
        if hist.sum() > 0:
            counts = hist.astype(np.int64).reshape(-1)
            level = np.arange(self.levels, dtype=np.float64)
            p = np.concatenate([p, np.repeat(np.repeat(level, self.levels), counts)])
            t = np.concatenate([t, np.repeat(np.tile(level, self.levels), counts)])
        return _pearson(rankdata(p), rankdata(t))
