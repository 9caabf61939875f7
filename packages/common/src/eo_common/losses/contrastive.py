"""Contrastive loss between two paired feature sets (e.g. cloudy vs clear embeddings)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_float, check_same_shape

__all__ = ["ContrastiveLoss", "contrastive_loss"]

_VARIANTS = ("ntxent", "infonce", "symmetric")


def contrastive_loss(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.1,
    variant: Literal["ntxent", "infonce", "symmetric"] = "ntxent",
    normalize: bool = True,
) -> Tensor:
    r"""NT-Xent / InfoNCE loss; row ``i`` of ``z_a`` and row ``i`` of ``z_b`` are a positive pair.

    With :math:`s(u, v) = u^\top v / (\|u\|\|v\|)` (cosine similarity; the plain dot product when
    ``normalize=False``) and temperature :math:`\tau`:

    - ``"infonce"`` (one direction, a -> b):
      :math:`L = -\frac{1}{B}\sum_i \log \frac{\exp(s(a_i,b_i)/\tau)}{\sum_j \exp(s(a_i,b_j)/\tau)}`,
      i.e. cross-entropy over the ``B x B`` similarity matrix with the diagonal as targets.
    - ``"symmetric"`` (CLIP): the mean of the a -> b and b -> a InfoNCE terms.
    - ``"ntxent"`` (SimCLR, default): the ``2B`` vectors :math:`x = [a; b]` each take their
      partner as the positive and the other ``2B - 2`` vectors (both views) as negatives:
      :math:`L = -\frac{1}{2B}\sum_{k=1}^{2B} \log \frac{\exp(s(x_k, x_{k^+})/\tau)}
      {\sum_{m \ne k} \exp(s(x_k, x_m)/\tau)}`.

    Args:
        z_a: float ``(B, D)``, ``B >= 2`` (the negatives come from the batch).
        z_b: float ``(B, D)``.
        temperature: :math:`\tau > 0`.
        variant: ``"ntxent"``, ``"infonce"`` or ``"symmetric"``.
        normalize: L2-normalise the rows first (cosine similarity).

    Returns:
        Scalar tensor (nats).

    Example:
        >>> z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> contrastive_loss(z_a, z_a, temperature=1.0, variant="infonce")
        tensor(0.3133)
    """
    z_a = check_float(z_a, "z_a")
    z_b = check_float(z_b, "z_b")
    if z_a.ndim != 2:
        raise ValueError(f"z_a must have shape (B, D), got {tuple(z_a.shape)}")
    check_same_shape(z_a, z_b, "z_a", "z_b")
    if z_a.shape[0] < 2:
        raise ValueError(f"contrastive loss needs a batch of at least 2 pairs, got {z_a.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    if normalize:
        z_a = F.normalize(z_a, dim=1)
        z_b = F.normalize(z_b, dim=1)
    b = z_a.shape[0]
    if variant == "ntxent":
        z = torch.cat([z_a, z_b], dim=0)
        sim = z @ z.T / temperature
        self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
        sim = sim.masked_fill(self_mask, float("-inf"))
        positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
        return F.cross_entropy(sim, positives)
    sim = z_a @ z_b.T / temperature
    labels = torch.arange(b, device=z_a.device)
    loss_ab = F.cross_entropy(sim, labels)
    if variant == "infonce":
        return loss_ab
    return 0.5 * (loss_ab + F.cross_entropy(sim.T, labels))


class ContrastiveLoss(nn.Module):
    r"""NT-Xent / InfoNCE between two feature sets; positives on the diagonal. See :func:`contrastive_loss`.

    .. math::
        L_{\text{infonce}} = -\frac{1}{B}\sum_i \log
        \frac{\exp(\cos(a_i,b_i)/\tau)}{\sum_j \exp(\cos(a_i,b_j)/\tau)}

    Args:
        temperature: :math:`\tau`, default 0.1.
        variant: ``"ntxent"`` (SimCLR, 2B-way, default), ``"infonce"`` (a -> b) or
            ``"symmetric"`` (CLIP, mean of both directions).
        normalize: cosine similarity (default) instead of dot product.

    Shape:
        - z_a, z_b: ``(B, D)`` float, ``B >= 2``; flatten dense embeddings first.
        - output: scalar.

    Example:
        >>> z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> ContrastiveLoss(temperature=1.0)(z_a, z_a)
        tensor(0.5514)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        variant: Literal["ntxent", "infonce", "symmetric"] = "ntxent",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        self.temperature = float(temperature)
        self.variant = variant
        self.normalize = normalize

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return contrastive_loss(z_a, z_b, self.temperature, self.variant, self.normalize)
