"""Pixel-space reconstruction losses: weighted L1, frequency-domain L1, Sobel edge L1.

All take ``pred`` and ``target`` as float ``(B, C, H, W)`` images of the same shape (any band count).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_float, check_images, check_reduction, reduce

__all__ = [
    "L1Loss",
    "l1_loss",
    "FFTLoss",
    "fft_loss",
    "GradientLoss",
    "gradient_loss",
    "image_gradients",
]


# --------------------------------------------------------------------------------------- L1
def l1_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    r"""L1 loss with an optional per-pixel weight map.

    .. math::
        \ell_i = w_i\,|p_i - t_i|, \qquad
        L_{\text{mean}} = \frac{\sum_i w_i |p_i - t_i|}{\sum_i w_i}, \qquad
        L_{\text{sum}} = \sum_i w_i |p_i - t_i|

    where ``i`` runs over every element of ``(B, C, H, W)`` and ``w`` is the weight map broadcast
    to that shape (``w = 1`` when ``weight`` is None, which gives the plain mean absolute error).
    So a 0/1 weight map gives the mean error over the pixels with weight 1 (e.g. a cloud or
    nodata mask). If every weight is 0 the mean is 0 (not NaN). A pixel of weight 0 takes no part
    even if it holds NaN; a NaN where the weight is positive makes the loss NaN.

    Args:
        pred: float ``(B, C, H, W)``.
        target: float ``(B, C, H, W)``, same shape.
        weight: optional float ``(B, 1, H, W)`` (one weight per pixel, shared by the bands) or
            ``(B, C, H, W)``; values ``>= 0``.
        reduction: ``"mean"`` (weighted mean as above), ``"sum"`` or ``"none"`` (``(B, C, H, W)``).

    Returns:
        Scalar tensor, or ``(B, C, H, W)`` for ``reduction="none"``. Units of the input.

    Example:
        >>> pred = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> target = torch.zeros(1, 1, 2, 2)
        >>> l1_loss(pred, target)
        tensor(1.5000)
        >>> weight = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
        >>> l1_loss(pred, target, weight)
        tensor(0.5000)
    """
    pred, target = check_images(pred, target)
    check_reduction(reduction)
    error = (pred - target).abs()
    if weight is None:
        return reduce(error, reduction)
    weight = check_float(weight, "weight")
    b, c, h, w = pred.shape
    if (
        weight.ndim != 4
        or weight.shape[0] != b
        or weight.shape[1] not in (1, c)
        or weight.shape[2:] != (h, w)
    ):
        raise ValueError(
            f"weight must have shape ({b}, 1, {h}, {w}) or ({b}, {c}, {h}, {w}) to match pred, "
            f"got {tuple(weight.shape)}"
        )
    if bool((weight < 0).any()):
        raise ValueError("weight must be >= 0 everywhere")
    weight = weight.expand_as(error)
    # where(), not a product: a pixel of weight 0 takes no part, whatever it holds (NaN * 0 is NaN)
    weighted = torch.where(weight > 0, weight * error, torch.zeros_like(error))
    if reduction == "mean":
        return weighted.sum() / weight.sum().clamp_min(torch.finfo(weighted.dtype).tiny)
    return reduce(weighted, reduction)


class L1Loss(nn.Module):
    r"""L1 loss with an optional per-pixel weight map; see :func:`l1_loss` for the formula.

    Args:
        reduction: ``"mean"`` (weighted mean :math:`\sum w|p-t| / \sum w`), ``"sum"`` or ``"none"``.

    Shape:
        - pred, target: ``(B, C, H, W)`` float.
        - weight (optional): ``(B, 1, H, W)`` or ``(B, C, H, W)``, ``>= 0``.
        - output: scalar (or ``(B, C, H, W)`` for ``"none"``).

    Example:
        >>> loss = L1Loss()
        >>> loss(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
        tensor(1.)
    """

    def __init__(self, reduction: Literal["mean", "sum", "none"] = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        return l1_loss(pred, target, weight, self.reduction)


# --------------------------------------------------------------------------------------- FFT
_FFT_NORMS = ("ortho", "forward", "backward")


def fft_loss(
    pred: Tensor,
    target: Tensor,
    norm: Literal["ortho", "forward", "backward"] = "ortho",
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    r"""Frequency-domain L1: L1 between the real and imaginary parts of the 2-D real FFTs.

    .. math::
        P = \mathrm{rfft2}(p), \quad T = \mathrm{rfft2}(t), \qquad
        L = \frac{1}{2N} \sum_{f} \big(|\Re P_f - \Re T_f| + |\Im P_f - \Im T_f|\big)

    over the last two axes of every image and band; ``N = B \cdot C \cdot H \cdot (W // 2 + 1)`` is
    the number of complex coefficients, so ``L`` is the mean over the stacked (real, imag) parts.
    ``norm`` is passed to :func:`torch.fft.rfft2`: with ``"ortho"`` (default) the transform is
    unitary (scaled by :math:`1/\sqrt{HW}`), so the loss does not grow with the image size.

    Args:
        pred: float ``(B, C, H, W)``.
        target: float ``(B, C, H, W)``.
        norm: ``"ortho"``, ``"forward"`` or ``"backward"`` (as :func:`torch.fft.rfft2`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, C, H, W // 2 + 1, 2)``, last axis
            real/imag).

    Example:
        >>> pred = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
        >>> fft_loss(pred, torch.zeros(1, 1, 2, 2))
        tensor(0.2500)
    """
    pred, target = check_images(pred, target)
    check_reduction(reduction)
    if norm not in _FFT_NORMS:
        raise ValueError(f"norm must be one of {_FFT_NORMS}, got {norm!r}")
    # rfft2 has no half-precision CPU kernel; compute in float32 at least.
    compute_dtype = torch.promote_types(pred.dtype, torch.float32)
    spec_pred = torch.fft.rfft2(pred.to(compute_dtype), norm=norm)
    spec_target = torch.fft.rfft2(target.to(compute_dtype), norm=norm)
    diff = torch.view_as_real(spec_pred - spec_target).abs()
    return reduce(diff, reduction)


class FFTLoss(nn.Module):
    r"""Frequency-domain L1 on the complex ``rfft2`` (real and imaginary parts); see :func:`fft_loss`.

    .. math:: L = \operatorname{mean}\big(|\Re(P - T)|, |\Im(P - T)|\big), \quad P = \mathrm{rfft2}(p)

    Args:
        norm: FFT normalisation, ``"ortho"`` by default (unitary transform).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - pred, target: ``(B, C, H, W)`` float.
        - output: scalar.

    Example:
        >>> FFTLoss()(torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
        tensor(0.1667)
    """

    def __init__(
        self,
        norm: Literal["ortho", "forward", "backward"] = "ortho",
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        if norm not in _FFT_NORMS:
            raise ValueError(f"norm must be one of {_FFT_NORMS}, got {norm!r}")
        self.norm = norm
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return fft_loss(pred, target, self.norm, self.reduction)


# --------------------------------------------------------------------------------------- gradient
_KERNELS = {
    # Cross-correlation kernels (what conv2d applies): d/dx along W (columns), d/dy along H (rows).
    "sobel": torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]),
    "scharr": torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]]),
}


def image_gradients(x: Tensor, mode: Literal["sobel", "scharr"] = "sobel") -> Tensor:
    r"""Per-band horizontal and vertical edge maps (unnormalised Sobel or Scharr kernels).

    .. math::
        G_x = K_x \star x, \quad G_y = K_x^\top \star x, \qquad
        K_x^{\text{sobel}} = \begin{pmatrix}-1&0&1\\-2&0&2\\-1&0&1\end{pmatrix}

    (``\star`` = cross-correlation). Borders are padded by replicating the edge pixel, which for a
    3x3 kernel equals ``scipy.ndimage.sobel(x, axis, mode="reflect")``: ``G_x`` equals
    ``scipy.ndimage.sobel(x, axis=-1)`` and ``G_y`` equals ``scipy.ndimage.sobel(x, axis=-2)``.

    Args:
        x: float ``(B, C, H, W)``.
        mode: ``"sobel"`` or ``"scharr"``.

    Returns:
        ``(B, C, 2, H, W)``: index 0 of dim 2 is ``G_x`` (along W), index 1 is ``G_y`` (along H).

    Example:
        >>> x = torch.tensor([[[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]])
        >>> image_gradients(x)[0, 0, 0]
        tensor([[0., 4., 4.],
                [0., 4., 4.],
                [0., 4., 4.]])
    """
    x = check_float(x, "x")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if mode not in _KERNELS:
        raise ValueError(f"mode must be one of {tuple(_KERNELS)}, got {mode!r}")
    b, c, h, w = x.shape
    kx = _KERNELS[mode].to(device=x.device, dtype=x.dtype)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3)
    padded = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    grads = F.conv2d(padded, kernels)  # (B*C, 2, H, W)
    return grads.reshape(b, c, 2, h, w)


def gradient_loss(
    pred: Tensor,
    target: Tensor,
    mode: Literal["sobel", "scharr"] = "sobel",
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    r"""L1 between the edge maps of ``pred`` and ``target``.

    .. math::
        L = \frac{1}{2N} \sum_{b,c,h,w} \big(|G_x(p) - G_x(t)| + |G_y(p) - G_y(t)|\big)

    with :func:`image_gradients` giving :math:`G_x, G_y` and ``N = B C H W`` (the mean over both
    directions). Working on the components (not the magnitude) keeps the loss differentiable
    everywhere, including on flat regions.

    Args:
        pred: float ``(B, C, H, W)``.
        target: float ``(B, C, H, W)``.
        mode: ``"sobel"`` (default) or ``"scharr"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, C, 2, H, W)``).

    Example:
        >>> pred = torch.tensor([[[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]])
        >>> gradient_loss(pred, torch.zeros(1, 1, 3, 3))
        tensor(1.3333)
    """
    pred, target = check_images(pred, target)
    check_reduction(reduction)
    diff = (image_gradients(pred, mode) - image_gradients(target, mode)).abs()
    return reduce(diff, reduction)


class GradientLoss(nn.Module):
    r"""L1 between Sobel (or Scharr) edge maps; see :func:`gradient_loss`.

    .. math:: L = \operatorname{mean}\big(|G_x(p) - G_x(t)|, |G_y(p) - G_y(t)|\big)

    Args:
        mode: ``"sobel"`` or ``"scharr"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - pred, target: ``(B, C, H, W)`` float.
        - output: scalar.

    Example:
        >>> GradientLoss()(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3))
        tensor(0.)
    """

    def __init__(
        self,
        mode: Literal["sobel", "scharr"] = "sobel",
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        if mode not in _KERNELS:
            raise ValueError(f"mode must be one of {tuple(_KERNELS)}, got {mode!r}")
        self.mode = mode
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return gradient_loss(pred, target, self.mode, self.reduction)
