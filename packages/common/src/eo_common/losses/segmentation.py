"""Multiclass segmentation losses: focal, Dice, soft MCC, boundary (surface) loss.

Conventions shared by all of them: ``logits`` are raw scores ``(B, K, H, W)`` (any number of
trailing spatial axes, also none), ``target`` holds integer labels ``(B, H, W)`` in ``[0, K)``;
pixels equal to ``ignore_index`` (default 255, the nodata label of the project) take no part in
the loss, and changing ``logits`` there (to anything, NaN included) changes neither the loss nor
any gradient. A NaN logit at a pixel that takes part makes the loss NaN (never a finite value with a
NaN gradient), so the run's NaN guard sees it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from segmentation_models_pytorch.losses import DiceLoss as _SmpDiceLoss
from torch import Tensor, nn

from ._validation import (
    check_class_vector,
    check_float,
    check_logits_and_labels,
    check_reduction,
)

__all__ = [
    "FocalLoss",
    "focal_loss",
    "DiceLoss",
    "dice_loss",
    "MCCLoss",
    "mcc_loss",
    "soft_mcc",
    "BoundaryLoss",
    "boundary_loss",
    "signed_distance_map",
]


def _zero_ignored(logits: Tensor, target: Tensor, ignore_index: int | None) -> Tensor:
    """``logits`` with 0 at ignored pixels: what they held (NaN included) reaches neither the loss
    nor any gradient (a product with a 0/1 mask would let NaN through as NaN * 0)."""
    if ignore_index is None:
        return logits
    valid = (target != ignore_index).unsqueeze(1)
    return torch.where(valid, logits, torch.zeros_like(logits))


# --------------------------------------------------------------------------------------- focal
def _gamma_arg(gamma: float | Sequence[float] | Tensor, num_classes: int | None) -> float | Tensor:
    if isinstance(gamma, Tensor | np.ndarray) and gamma.ndim == 0:
        gamma = float(gamma)
    if isinstance(gamma, numbers.Real):
        if not (np.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
        return float(gamma)
    vec = check_class_vector(gamma, num_classes, "gamma")
    assert vec is not None
    return vec


def focal_loss(
    logits: Tensor,
    target: Tensor,
    alpha: Sequence[float] | Tensor | None = None,
    gamma: float | Sequence[float] | Tensor = 2.0,
    ignore_index: int | None = 255,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    r"""Multiclass softmax focal loss with per-class :math:`\alpha` and per-class :math:`\gamma`.

    For a pixel with true class :math:`c` and softmax probability :math:`p_c`:

    .. math:: \ell = -\alpha_c \, (1 - p_c)^{\gamma_c} \, \log p_c

    :math:`\alpha_c = 1` when ``alpha`` is None; a scalar ``gamma`` is used for every class.
    ``"mean"`` divides the sum by the number of non-ignored pixels (not by :math:`\sum\alpha`), so
    with ``gamma=0`` and ``alpha=None`` this is exactly ``F.cross_entropy``. If every pixel is
    ignored the loss is 0.

    Args:
        logits: float ``(B, K, *)``.
        target: long ``(B, *)``, labels in ``[0, K)`` or ``ignore_index``.
        alpha: per-class weights ``(K,)``, ``>= 0``, or None.
        gamma: focusing exponent, a float or ``(K,)``, ``>= 0``.
        ignore_index: label excluded from the loss (None: every label must be valid).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, *)``, 0 at ignored pixels).

    Example (two pixels, class 0 with gamma 0 and class 1 with gamma 2):
        >>> logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # (B=1, K=2, N=2): p = 0.5 everywhere
        >>> target = torch.tensor([[0, 1]])
        >>> focal_loss(logits, target, gamma=[0.0, 2.0], reduction="none")
        tensor([[0.6931, 0.1733]])
    """
    logits, target = check_logits_and_labels(logits, target, ignore_index=ignore_index)
    check_reduction(reduction)
    num_classes = logits.shape[1]
    alpha_vec = check_class_vector(alpha, num_classes, "alpha")
    gamma_arg = _gamma_arg(gamma, num_classes)

    valid = (
        target != ignore_index
        if ignore_index is not None
        else torch.ones_like(target, dtype=torch.bool)
    )
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    # ignored pixels: constant logits, so that whatever they hold (NaN too) reaches no gradient
    logits = torch.where(valid.unsqueeze(1), logits, torch.zeros_like(logits))
    log_p = F.log_softmax(logits, dim=1)
    log_pt = log_p.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    # 1 - p_t computed as -expm1(log p_t) (accurate near p_t = 1) and kept > 0 so that
    # gamma < 1 keeps a finite gradient at perfect predictions.
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(1e-8)
    if isinstance(gamma_arg, Tensor):
        gamma_t = gamma_arg.to(device=logits.device, dtype=logits.dtype)[safe_target]
        modulator = one_minus_pt.pow(gamma_t)
    else:
        modulator = one_minus_pt.pow(gamma_arg)
    loss = -modulator * log_pt
    if alpha_vec is not None:
        loss = loss * alpha_vec.to(device=logits.device, dtype=logits.dtype)[safe_target]
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1)


class FocalLoss(nn.Module):
    r"""Multiclass softmax focal loss with per-class alpha and gamma; see :func:`focal_loss`.

    .. math:: \ell = -\alpha_c (1 - p_c)^{\gamma_c} \log p_c, \qquad L = \frac{1}{N_{\text{valid}}}\sum \ell

    (smp's ``FocalLoss`` has neither per-class gamma nor per-class alpha in multiclass mode.)

    Args:
        alpha: per-class weights ``(K,)`` or None.
        gamma: float or per-class ``(K,)``, default 2.
        ignore_index: label to ignore, default 255.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - logits: ``(B, K, H, W)`` float; target: ``(B, H, W)`` long.
        - output: scalar (``(B, H, W)`` for ``"none"``).

    Example:
        >>> loss = FocalLoss(gamma=0.0)
        >>> logits = torch.tensor([[[[2.0]], [[0.0]]]])  # (1, 2, 1, 1)
        >>> loss(logits, torch.tensor([[[0]]]))
        tensor(0.1269)
    """

    def __init__(
        self,
        alpha: Sequence[float] | Tensor | None = None,
        gamma: float | Sequence[float] | Tensor = 2.0,
        ignore_index: int | None = 255,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        alpha_vec = check_class_vector(alpha, None, "alpha")
        gamma_arg = _gamma_arg(gamma, None)
        if (
            isinstance(gamma_arg, Tensor)
            and alpha_vec is not None
            and gamma_arg.numel() != alpha_vec.numel()
        ):
            raise ValueError(
                f"alpha ({alpha_vec.numel()} values) and gamma ({gamma_arg.numel()} values) "
                "must have one value per class each"
            )
        self.register_buffer("alpha", alpha_vec, persistent=False)
        if isinstance(gamma_arg, Tensor):
            self.register_buffer("gamma", gamma_arg, persistent=False)
        else:
            self.gamma = gamma_arg
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, self.alpha, self.gamma, self.ignore_index, self.reduction)


# --------------------------------------------------------------------------------------- Dice
def dice_loss(
    logits: Tensor,
    target: Tensor,
    num_classes: int | None = None,
    ignore_index: int | None = 255,
    smooth: float = 1.0,
    classes: Sequence[int] | None = None,
) -> Tensor:
    r"""Multiclass soft Dice loss (smp's ``DiceLoss`` in multiclass mode underneath).

    With softmax probabilities :math:`p` and one-hot targets :math:`t`, summed over the batch and
    all non-ignored pixels, per class :math:`c`:

    .. math::
        I_c = \sum p_c t_c, \quad D_c = \frac{I_c + s}{\tfrac12\left(\sum p_c + \sum t_c\right) + s}
        = \frac{2 I_c + 2s}{\sum p_c + \sum t_c + 2s}, \qquad
        L = \frac{1}{|\mathcal C|}\sum_{c \in \mathcal C} (1 - D_c)\,[\textstyle\sum t_c > 0]

    (:math:`s` = ``smooth``; note smp's form, which amounts to :math:`2s` in the classic
    :math:`(2I + s)/(\sum p + \sum t + s)`.) A class absent from the whole batch's target
    contributes 0 but still counts in the mean over :math:`\mathcal C` (all classes, or
    ``classes``), as in smp.

    Args:
        logits: float ``(B, K, *)``.
        target: long ``(B, *)``.
        num_classes: K; checked against ``logits.shape[1]`` when given.
        ignore_index: label to ignore (default 255), or None.
        smooth: :math:`s >= 0`.
        classes: subset of class ids averaged in the loss (default all).

    Example:
        >>> logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])  # p = 0.5 for both classes
        >>> dice_loss(logits, torch.tensor([[[0, 1]]]), smooth=0.0)
        tensor(0.5000)
    """
    return DiceLoss(num_classes, ignore_index, smooth, classes)(logits, target)


class DiceLoss(nn.Module):
    r"""Multiclass soft Dice loss with ignore_index; a checked wrapper of smp's ``DiceLoss``.

    .. math:: L = \operatorname{mean}_{c}\Big(1 - \frac{2 I_c + 2s}{\sum p_c + \sum t_c + 2s}\Big)

    See :func:`dice_loss` for the conventions (absent classes contribute 0).

    Args:
        num_classes: K (None: taken from the logits).
        ignore_index: label to ignore, default 255.
        smooth: smoothing :math:`s`, default 1.
        classes: class ids that enter the mean (default all).

    Shape:
        - logits: ``(B, K, H, W)`` float; target: ``(B, H, W)`` long.
        - output: scalar.

    Example:
        >>> loss = DiceLoss(num_classes=2, smooth=0.0)
        >>> logits = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]]]])  # perfect
        >>> loss(logits, torch.tensor([[[0, 1]]]))
        tensor(0.)
    """

    def __init__(
        self,
        num_classes: int | None = None,
        ignore_index: int | None = 255,
        smooth: float = 1.0,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not smooth >= 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        if classes is not None:
            classes = [int(c) for c in classes]
            if not classes or (
                num_classes is not None and not all(0 <= c < num_classes for c in classes)
            ):
                raise ValueError(f"classes must be class ids in [0, {num_classes}), got {classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.classes = classes
        self._dice = _SmpDiceLoss(
            mode="multiclass",
            classes=classes,
            from_logits=True,
            smooth=float(smooth),
            ignore_index=ignore_index,
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = check_logits_and_labels(
            logits, target, self.num_classes, self.ignore_index
        )
        if self.classes is not None and max(self.classes) >= logits.shape[1]:
            raise ValueError(f"classes {self.classes} exceed the {logits.shape[1]} logit channels")
        # smp one-hot encodes ``target * (target != ignore_index)``, so ignored labels are safe;
        # it masks ignored probabilities by a product, so their logits are made constant first
        return self._dice(_zero_ignored(logits, target, self.ignore_index), target.long())


# --------------------------------------------------------------------------------------- MCC
def soft_mcc(probs: Tensor, target: Tensor, ignore_index: int | None = 255) -> Tensor:
    r"""Multiclass Matthews correlation (Gorodkin's :math:`R_K`) of a soft confusion matrix.

    The soft confusion matrix :math:`C_{ij} = \sum_{\text{pixels}} [y = i]\, p_j` (rows = truth,
    columns = prediction, non-ignored pixels of the whole batch) gives, with
    :math:`t_k = \sum_j C_{kj}`, :math:`\hat p_k = \sum_i C_{ik}`, :math:`c = \operatorname{tr} C`,
    :math:`s = \sum_{ij} C_{ij}`:

    .. math::
        \mathrm{MCC} = \frac{c\,s - \sum_k \hat p_k t_k}
        {\sqrt{\left(s^2 - \sum_k \hat p_k^2\right)\left(s^2 - \sum_k t_k^2\right)}}

    which is scikit-learn's ``matthews_corrcoef`` when ``probs`` is one-hot (hard predictions),
    including its convention MCC = 0 when the denominator is 0 (e.g. one class only).
    Computed in float64 from the ``(K, K)`` matrix. A NaN probability at a pixel that is not ignored
    makes the result NaN (it is never read as the degenerate case); ignored pixels never count.

    Args:
        probs: float ``(B, K, *)`` class probabilities (rows sum to 1).
        target: long ``(B, *)``.
        ignore_index: label excluded (default 255), or None.

    Returns:
        Scalar in ``[-1, 1]`` (dtype of ``probs``).

    Example:
        >>> probs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])  # predicts 0, 1, 1
        >>> soft_mcc(probs, torch.tensor([[0, 1, 0]]))
        tensor(0.5000)
    """
    probs, target = check_logits_and_labels(
        probs, target, ignore_index=ignore_index, logits_name="probs"
    )
    num_classes = probs.shape[1]
    valid = (
        target != ignore_index
        if ignore_index is not None
        else torch.ones_like(target, dtype=torch.bool)
    )
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    truth = F.one_hot(safe_target, num_classes).to(probs.dtype) * valid.unsqueeze(-1).to(
        probs.dtype
    )
    pred = torch.where(valid.unsqueeze(1), probs, torch.zeros_like(probs)).movedim(1, -1)
    # (K, K) soft confusion matrix, accumulated in float32 even under AMP autocast
    with torch.autocast(device_type=probs.device.type, enabled=False):
        confusion = truth.reshape(-1, num_classes).float().T @ pred.reshape(-1, num_classes).float()
    confusion = confusion.double()
    true_counts = confusion.sum(1)
    pred_counts = confusion.sum(0)
    correct = torch.diagonal(confusion).sum()
    total = confusion.sum()
    numerator = correct * total - (pred_counts * true_counts).sum()
    denominator = (total**2 - (pred_counts**2).sum()) * (total**2 - (true_counts**2).sum())
    # MCC = 0 where the denominator is 0 (one class only), as scikit-learn; a NaN denominator (a NaN
    # probability) is not "0" and propagates, so the loss shows it (and the NaN guard acts)
    degenerate = denominator <= 0
    mcc = torch.where(
        degenerate,
        torch.zeros_like(numerator),
        numerator / torch.sqrt(torch.where(degenerate, torch.ones_like(denominator), denominator)),
    )
    return mcc.to(probs.dtype)


def mcc_loss(
    logits: Tensor,
    target: Tensor,
    num_classes: int | None = None,
    ignore_index: int | None = 255,
) -> Tensor:
    r"""Differentiable multiclass MCC loss: :math:`L = 1 - \mathrm{MCC}(\operatorname{softmax}(z), y)`.

    See :func:`soft_mcc`. Range ``[0, 2]``; 0 for perfect predictions. The statistic is taken over
    the whole batch (like the GlacierHack score over all pixels), not averaged per image.

    Example:
        >>> logits = torch.tensor([[[20.0, -20.0, 20.0], [-20.0, 20.0, -20.0]]])  # predicts 0, 1, 0
        >>> mcc_loss(logits, torch.tensor([[0, 1, 0]]))
        tensor(0.)
    """
    logits, target = check_logits_and_labels(logits, target, num_classes, ignore_index)
    return 1.0 - soft_mcc(
        F.softmax(_zero_ignored(logits, target, ignore_index), dim=1), target, ignore_index
    )


class MCCLoss(nn.Module):
    r"""``1 - soft multiclass MCC`` (Gorodkin) with ignore_index; see :func:`soft_mcc`.

    .. math::
        L = 1 - \frac{c\,s - \sum_k \hat p_k t_k}{\sqrt{(s^2 - \sum_k \hat p_k^2)(s^2 - \sum_k t_k^2)}}

    on the soft confusion matrix of softmax probabilities (smp's ``MCCLoss`` is binary only).

    Args:
        num_classes: K.
        ignore_index: label to ignore, default 255.

    Shape:
        - logits: ``(B, K, H, W)`` float; target: ``(B, H, W)`` long.
        - output: scalar in ``[0, 2]``.

    Example:
        >>> loss = MCCLoss(num_classes=2)
        >>> logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])  # undecided
        >>> loss(logits, torch.tensor([[[0, 1]]]))
        tensor(1.)
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return mcc_loss(logits, target, self.num_classes, self.ignore_index)


# --------------------------------------------------------------------------------------- boundary
def _signed_distance_2d(
    mask: np.ndarray, num_classes: int, ignore_index: int | None, spacing: tuple[float, float]
) -> np.ndarray:
    out = np.zeros((num_classes, *mask.shape), dtype=np.float32)
    valid = mask != ignore_index if ignore_index is not None else np.ones(mask.shape, dtype=bool)
    for k in range(num_classes):
        inside = mask == k
        if not inside.any() or inside.all():
            continue  # absent class or no boundary: no supervision from this map
        outside = ~inside
        depth = np.maximum(distance_transform_edt(inside, sampling=spacing) - min(spacing), 0.0)
        dist = distance_transform_edt(outside, sampling=spacing) * outside - depth * inside
        out[k] = np.where(valid, dist, 0.0)
    return out


def signed_distance_map(
    mask: Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = 255,
    spacing: float | tuple[float, float] = 1.0,
) -> Tensor | np.ndarray:
    r"""Per-class signed Euclidean distance to the class boundary (Kervadec et al.).

    For each class :math:`k` with region :math:`G_k = \{y = k\}`, using
    ``scipy.ndimage.distance_transform_edt`` (EDT, distance to the nearest zero):

    .. math::
        \phi_k = \mathrm{EDT}(\lnot G_k)\,[\lnot G_k] - \big(\mathrm{EDT}(G_k) - 1\big)\,[G_k]

    so outside pixels get their (positive) distance to the nearest pixel of class :math:`k`,
    inside pixels ``-(distance to the nearest non-k pixel - 1)``: 0 on the inner border row,
    negative deeper inside (the exact form of the authors' ``one_hot2dist``). The tile border is
    not a class boundary (a corner pixel two pixels from the nearest non-k pixel gets -1). With a
    pixel size ``spacing`` the EDT is measured in those units and the "1" becomes the smallest
    pixel size, clipped so inside values stay <= 0: for an isotropic spacing ``s`` the map is
    exactly ``s`` times the pixel-unit map. A class absent from
    a tile (e.g. no lake pixels), or covering all of it (no boundary), gets an all-zero map.
    ``ignore_index`` pixels count as "not this class" for the distances and get 0 in every map,
    so they add nothing to :func:`boundary_loss`. ``spacing`` is the pixel size (e.g. metres).

    Args:
        mask: integer labels ``(B, H, W)`` (or a single ``(H, W)``), NumPy or torch.
        num_classes: K.
        ignore_index: nodata label (default 255) or None.
        spacing: pixel size, a float or ``(dy, dx)``.

    Returns:
        float32 ``(B, K, H, W)`` (``(K, H, W)`` for a 2-D mask), same library (and device) as
        ``mask``.

    Example:
        >>> signed_distance_map(torch.tensor([[[0, 1, 1, 1, 0]]]), num_classes=2)[0, 1]
        tensor([[ 1.,  0., -1.,  0.,  1.]])
    """
    is_tensor = isinstance(mask, Tensor)
    array = mask.detach().cpu().numpy() if is_tensor else np.asarray(mask)
    if array.ndim not in (2, 3):
        raise ValueError(f"mask must have shape (B, H, W) or (H, W), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"mask must hold integer class labels, got dtype {array.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    bad = (array < 0) | (array >= num_classes)
    if ignore_index is not None:
        bad &= array != ignore_index
    if bad.any():
        raise ValueError(
            f"mask holds labels {np.unique(array[bad])[:10].tolist()} outside [0, {num_classes}) "
            f"(ignore_index={ignore_index})"
        )
    sampling = (
        (float(spacing), float(spacing))
        if np.isscalar(spacing)
        else tuple(float(s) for s in spacing)
    )
    if len(sampling) != 2 or min(sampling) <= 0:
        raise ValueError(f"spacing must be > 0 (a float or (dy, dx)), got {spacing}")
    batch = array[None] if array.ndim == 2 else array
    maps = np.stack([_signed_distance_2d(m, num_classes, ignore_index, sampling) for m in batch])
    if array.ndim == 2:
        maps = maps[0]
    if is_tensor:
        return torch.from_numpy(maps).to(mask.device)
    return maps


def boundary_loss(
    logits: Tensor, dist_maps: Tensor, classes: Sequence[int] | None = None
) -> Tensor:
    r"""Boundary (surface) loss of Kervadec et al.: mean of softmax probability x signed distance.

    .. math::
        L = \frac{1}{B\,|\mathcal C|\,H W} \sum_{b} \sum_{k \in \mathcal C} \sum_{h,w}
        \operatorname{softmax}(z)_{b,k,h,w}\; \phi_{b,k,h,w}

    with :math:`\phi` from :func:`signed_distance_map` and :math:`\mathcal C` = ``classes``
    (default: every class except 0, the background). Probability mass outside a class region
    costs its distance to the region, mass inside earns a reward, so the minimum is negative;
    usually combined with a regional loss (Dice, focal) whose weight is decreased over training.

    Args:
        logits: float ``(B, K, H, W)``.
        dist_maps: float ``(B, K, H, W)`` from :func:`signed_distance_map` (units of ``spacing``).
        classes: class ids summed (default ``1..K-1``).

    Example (one row, class 1 in the middle, logits favouring class 1 everywhere):
        >>> dist = signed_distance_map(torch.tensor([[[0, 1, 1, 1, 0]]]), num_classes=2)
        >>> logits = torch.tensor([[[[0.0] * 5], [[2.0] * 5]]])
        >>> boundary_loss(logits, dist)
        tensor(0.1762)
    """
    logits = check_float(logits, "logits")
    dist_maps = check_float(dist_maps, "dist_maps")
    if logits.ndim < 3:
        raise ValueError(f"logits must have shape (B, K, H, W), got {tuple(logits.shape)}")
    if logits.shape != dist_maps.shape:
        raise ValueError(
            f"dist_maps must have the shape of logits {tuple(logits.shape)} (B, K, H, W), "
            f"got {tuple(dist_maps.shape)}"
        )
    num_classes = logits.shape[1]
    if classes is None:
        classes = list(range(1, num_classes)) if num_classes > 1 else [0]
    classes = [int(c) for c in classes]
    if not classes or not all(0 <= c < num_classes for c in classes):
        raise ValueError(f"classes must be ids in [0, {num_classes}), got {classes}")
    dist = dist_maps[:, classes].to(logits.dtype)
    # a pixel whose distances are all 0 (ignore_index in signed_distance_map) takes no part: its
    # logits are made constant, so that whatever they hold (NaN too) reaches neither loss nor gradient
    counts = (dist != 0).any(dim=1, keepdim=True)
    logits = torch.where(counts, logits, torch.zeros_like(logits))
    probs = F.softmax(logits, dim=1)[:, classes]
    return (probs * dist).mean()


class BoundaryLoss(nn.Module):
    r"""Kervadec boundary (surface) loss on softmax probabilities and signed distance maps.

    .. math:: L = \operatorname{mean}_{b,\,k \in \mathcal C,\,h,\,w}\; p_{b,k,h,w}\,\phi_{b,k,h,w}

    Compute ``dist_maps`` once per label tile with :func:`signed_distance_map` (in the dataset,
    on the CPU) and pass them with the logits.

    Args:
        classes: class ids in the loss (default all but 0; pass e.g. ``(1, 2, 3)``).

    Shape:
        - logits: ``(B, K, H, W)`` float; dist_maps: ``(B, K, H, W)`` float.
        - output: scalar (can be negative).

    Example:
        >>> dist = signed_distance_map(torch.tensor([[[0, 1, 1, 1, 0]]]), num_classes=2)
        >>> logits = torch.tensor([[[[5.0, -5.0, -5.0, -5.0, 5.0]], [[-5.0, 5.0, 5.0, 5.0, -5.0]]]])
        >>> BoundaryLoss()(logits, dist)
        tensor(-0.2000)
    """

    def __init__(self, classes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.classes = None if classes is None else [int(c) for c in classes]

    def forward(self, logits: Tensor, dist_maps: Tensor) -> Tensor:
        return boundary_loss(logits, dist_maps, self.classes)
