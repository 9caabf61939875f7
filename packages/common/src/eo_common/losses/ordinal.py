r"""CORAL ordinal regression (Cao, Mirjalili, Raschka 2020): head layer, label encoding, loss, decoding.

An ordinal label :math:`y \in \{0, \dots, K-1\}` becomes K-1 binary "levels"
:math:`y_k = [y > k]`, ``k = 0 .. K-2``. The head predicts one logit per level,
:math:`z_k = w^\top x + b_k`, with ONE weight vector shared by all levels and K-1 biases; because
the levels differ only in their bias, :math:`\sigma(z_k)` is ordered across ``k`` exactly like the
biases, which is what makes the predicted ranks consistent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_class_vector, check_float, check_logits_and_labels, check_reduction

__all__ = [
    "CoralLayer",
    "label_to_levels",
    "levels_to_label",
    "coral_class_probabilities",
    "coral_loss",
    "CoralLoss",
]


class CoralLayer(nn.Module):
    r"""CORAL head: one shared weight vector and K-1 biases.

    .. math:: z_{k} = w^\top x + b_k, \qquad k = 0, \dots, K-2

    On vectors ``(B, F)`` it is a linear layer with a single output plus K-1 biases; on dense
    features ``(B, F, H, W)`` it is the same as a 1x1 convolution with one shared filter, applied
    per pixel, so a segmentation decoder can end in it.

    Args:
        in_features: F.
        num_classes: K (>= 2); the layer has K-1 outputs.
        preinit_bias: start with the biases ``(K-1, K-2, ..., 1) / (K-1)`` (descending, as in
            coral-pytorch) instead of zeros.
        ordered_biases: parametrise :math:`b_{k+1} = b_k - \operatorname{softplus}(\delta_k)` so the
            biases stay strictly decreasing during training and the level probabilities are
            non-increasing in ``k`` for every input and every parameter value. The default (False) is
            the published CORAL layer with free biases, which are ordered at its optimum (Theorem 1
            of the paper) and at initialisation with ``preinit_bias``.

    Shape:
        - input: ``(B, F)`` or ``(B, F, H, W)`` float.
        - output: ``(B, K-1)`` or ``(B, K-1, H, W)`` logits.

    Example:
        >>> layer = CoralLayer(in_features=2, num_classes=3)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([1.0, -1.0]))
        >>> layer(torch.tensor([[2.0, 1.0]]))  # w.x = 1, biases (1.0, 0.5)
        tensor([[2.0000, 1.5000]], grad_fn=<AddBackward0>)
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        preinit_bias: bool = True,
        ordered_biases: bool = False,
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.ordered_biases = ordered_biases
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(in_features).uniform_(-bound, bound))
        levels = num_classes - 1
        if preinit_bias:
            init = torch.arange(levels, 0, -1, dtype=torch.float32) / levels
        else:
            init = torch.zeros(levels)
        if ordered_biases:
            # first bias free, then positive gaps softplus(delta) (gap 1/(K-1), or 1e-3 from zeros)
            gap = 1.0 / levels if preinit_bias else 1e-3
            delta = math.log(math.expm1(gap))
            self.bias_first = nn.Parameter(init[:1].clone())
            self.bias_gaps = nn.Parameter(torch.full((levels - 1,), delta))
        else:
            self.coral_bias = nn.Parameter(init)

    @property
    def bias(self) -> Tensor:
        """The K-1 biases :math:`b_k`."""
        if self.ordered_biases:
            steps = torch.cumsum(F.softplus(self.bias_gaps), dim=0)
            return torch.cat([self.bias_first, self.bias_first - steps])
        return self.coral_bias

    def forward(self, x: Tensor) -> Tensor:
        x = check_float(x, "x")
        if x.ndim not in (2, 4) or x.shape[1] != self.in_features:
            raise ValueError(
                f"x must have shape (B, {self.in_features}) or (B, {self.in_features}, H, W), "
                f"got {tuple(x.shape)}"
            )
        bias = self.bias.to(x.dtype)
        weight = self.weight.to(x.dtype)
        if x.ndim == 2:
            return (x @ weight).unsqueeze(1) + bias
        shared = torch.einsum("bfhw,f->bhw", x, weight).unsqueeze(1)
        return shared + bias.view(1, -1, 1, 1)


def label_to_levels(y: Tensor, num_classes: int) -> Tensor:
    r"""Encode ordinal labels as K-1 binary levels: :math:`\text{levels}[..., k] = [y > k]`.

    Args:
        y: integer labels of any shape ``(...)`` in ``[0, K)``.
        num_classes: K.

    Returns:
        float32 ``(..., K-1)``.

    Example:
        >>> label_to_levels(torch.tensor([0, 1, 2]), num_classes=3)
        tensor([[0., 0.],
                [1., 0.],
                [1., 1.]])
    """
    if not isinstance(y, Tensor):
        raise ValueError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if y.numel() and (bool((y < 0).any()) or bool((y >= num_classes).any())):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got values {torch.unique(y).tolist()[:10]} "
            "(mask ignore_index first)"
        )
    thresholds = torch.arange(num_classes - 1, device=y.device)
    return (y.unsqueeze(-1) > thresholds).to(torch.float32)


def levels_to_label(
    logits_or_probs: Tensor, threshold: float = 0.5, from_logits: bool = True, dim: int = 1
) -> Tensor:
    r"""Predicted rank = number of levels with :math:`\sigma(z_k) > \text{threshold}`.

    Args:
        logits_or_probs: ``(B, K-1)`` or ``(B, K-1, H, W)`` logits (or probabilities with
            ``from_logits=False``).
        threshold: probability threshold, default 0.5 (i.e. logit > 0).
        from_logits: apply the sigmoid first.
        dim: the level axis (1 for :class:`CoralLayer` outputs; -1 for :func:`label_to_levels`).

    Returns:
        long ``(B,)`` or ``(B, H, W)``.

    Example:
        >>> levels_to_label(torch.tensor([[2.1, 1.8, -2.1, -1.8], [1.9, 1.8, 1.7, 1.6]]))
        tensor([2, 4])
    """
    x = check_float(logits_or_probs, "logits_or_probs")
    if x.ndim < 1:
        raise ValueError("logits_or_probs must have a level axis")
    probs = torch.sigmoid(x) if from_logits else x
    return (probs > threshold).sum(dim=dim).long()


def coral_class_probabilities(logits: Tensor, dim: int = 1) -> Tensor:
    r"""Class probabilities from CORAL logits: :math:`P(y=k) = P(y>k-1) - P(y>k)`.

    With :math:`q_k = \sigma(z_k)` and :math:`q_{-1} = 1`, :math:`q_{K-1} = 0`. Differences are
    clipped at 0 and renormalised (they can only be negative when the biases are not ordered).
    Useful for a CRF unary or an expected-rank map (:math:`\sum_k k P(y=k) = \sum_k q_k`).

    Args:
        logits: ``(B, K-1)`` or ``(B, K-1, H, W)``.
        dim: the level axis.

    Returns:
        ``(B, K)`` or ``(B, K, H, W)``, sums to 1 along ``dim``.

    Example:
        >>> coral_class_probabilities(torch.tensor([[0.0, 0.0]]))
        tensor([[0.5000, 0.0000, 0.5000]])
    """
    logits = check_float(logits, "logits")
    q = torch.sigmoid(logits).movedim(dim, -1)
    ones = torch.ones_like(q[..., :1])
    upper = torch.cat([ones, q], dim=-1)
    lower = torch.cat([q, torch.zeros_like(ones)], dim=-1)
    probs = (upper - lower).clamp_min(0)
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
    return probs.movedim(-1, dim)


def coral_loss(
    logits: Tensor,
    levels: Tensor,
    importance_weights: Sequence[float] | Tensor | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    r"""CORAL loss on level targets (the published form).

    .. math::
        \ell = -\sum_{k=0}^{K-2} \lambda_k\Big[\log\sigma(z_k)\,y_k + \big(\log\sigma(z_k) - z_k\big)(1 - y_k)\Big]

    (:math:`\log\sigma(z) - z = \log(1 - \sigma(z))`), i.e. the sum of the K-1 binary
    cross-entropies, per sample; ``"mean"`` averages over samples.

    Args:
        logits: ``(N, K-1)`` float.
        levels: ``(N, K-1)`` float in {0, 1} from :func:`label_to_levels`.
        importance_weights: :math:`\lambda`, ``(K-1,)``, default all 1.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N,)``).

    Example (the reference case of the CORAL paper's code):
        >>> logits = torch.tensor([[2.1, 1.8, -2.1, -1.8], [1.9, -1.0, -1.5, -1.3], [1.9, 1.8, 1.7, 1.6]])
        >>> levels = torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
        >>> coral_loss(logits, levels, reduction="none")
        tensor([0.5370, 0.8951, 0.6441])
        >>> coral_loss(logits, levels)
        tensor(0.6920)
    """
    logits = check_float(logits, "logits")
    levels = check_float(levels, "levels")
    check_reduction(reduction)
    if logits.ndim != 2 or logits.shape != levels.shape:
        raise ValueError(
            f"logits and levels must both have shape (N, K-1), got {tuple(logits.shape)} and "
            f"{tuple(levels.shape)}"
        )
    weights = check_class_vector(importance_weights, logits.shape[1], "importance_weights")
    log_sig = F.logsigmoid(logits)
    terms = log_sig * levels + (log_sig - logits) * (1.0 - levels)
    if weights is not None:
        terms = terms * weights.to(device=logits.device, dtype=logits.dtype)
    loss = -terms.sum(dim=1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class CoralLoss(nn.Module):
    r"""CORAL loss on integer ordinal labels, for vectors or dense maps, with ignore_index.

    .. math::
        \ell = -\sum_{k} \lambda_k\Big[\log\sigma(z_k)[y > k] + \log\big(1-\sigma(z_k)\big)[y \le k]\Big],
        \qquad L = \frac{1}{N_{\text{valid}}}\sum \ell

    Args:
        num_classes: K (logits have K-1 channels).
        ignore_index: label excluded from the loss (default 255, the nodata label), or None.
        reduction: ``"mean"`` (over non-ignored samples/pixels; 0 if none), ``"sum"`` or ``"none"``
            (per sample/pixel, 0 at ignored ones).
        importance_weights: optional :math:`\lambda`, ``(K-1,)``.

    Shape:
        - logits: ``(B, K-1)`` or ``(B, K-1, H, W)`` (a :class:`CoralLayer` output).
        - target: ``(B,)`` or ``(B, H, W)`` long in ``[0, K)`` or ``ignore_index``.
        - output: scalar (``(B,)`` / ``(B, H, W)`` for ``"none"``).

    Example:
        >>> loss = CoralLoss(num_classes=5)
        >>> logits = torch.tensor([[2.1, 1.8, -2.1, -1.8], [1.9, -1.0, -1.5, -1.3], [1.9, 1.8, 1.7, 1.6]])
        >>> loss(logits, torch.tensor([2, 1, 4]))
        tensor(0.6920)
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        reduction: Literal["mean", "sum", "none"] = "mean",
        importance_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        weights = check_class_vector(importance_weights, num_classes - 1, "importance_weights")
        self.register_buffer("importance_weights", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = check_logits_and_labels(
            logits, target, self.num_classes, self.ignore_index, channels=self.num_classes - 1
        )
        levels_axis_last = logits.movedim(1, -1).reshape(-1, self.num_classes - 1)
        flat_target = target.reshape(-1)
        if self.ignore_index is not None:
            valid = flat_target != self.ignore_index
        else:
            valid = torch.ones_like(flat_target, dtype=torch.bool)
        safe_target = torch.where(valid, flat_target, torch.zeros_like(flat_target))
        # ignored pixels: constant logits, so that whatever they hold (NaN too) reaches no gradient
        levels_axis_last = torch.where(
            valid[:, None], levels_axis_last, torch.zeros_like(levels_axis_last)
        )
        levels = label_to_levels(safe_target, self.num_classes).to(logits.dtype)
        per_sample = coral_loss(levels_axis_last, levels, self.importance_weights, reduction="none")
        per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
        if self.reduction == "none":
            return per_sample.reshape(target.shape)
        if self.reduction == "sum":
            return per_sample.sum()
        return per_sample.sum() / valid.sum().clamp_min(1)
