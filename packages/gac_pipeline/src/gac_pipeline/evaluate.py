"""Metrics of the pipeline: image quality per stage and the SAR-edge agreement.

SAR-edge agreement (lower is better)
------------------------------------
How well the structures of an optical image line up with those of the radar, per tile:

1. SAR intensity ``s`` = mean of VV and VH in the GLF-CR [0, 1] scaling; speckle-filtered with a Lee
   filter (5x5 window): ``s' = m + w (s - m)``, ``w = v / (v + sigma_n^2)``, where ``m`` and ``v`` are the
   local mean and variance (box window, reflect border) and ``sigma_n^2`` is the mean local variance of
   the tile (the speckle noise estimate).
2. Optical intensity ``o`` = mean of the 10 m bands B02, B03, B04, B08 (in [0, 1]).
3. Edge maps ``E = sqrt(G_x^2 + G_y^2)`` with Sobel kernels (:func:`eo_common.losses.image_gradients`).
4. Score ``d = (1 - r) / 2`` with ``r`` the Pearson correlation of the two edge maps over the tile's pixels
   (a 2-pixel border excluded). ``d`` is 0 when the edge maps are identical up to a positive scale,
   about 0.5 when unrelated, 1 when anti-correlated. Being scale-free, it compares where edges are, not
   how strong they are in each sensor. The split value is the mean over tiles.

Missing values, one rule: a NaN or +-inf pixel in the SAR or the optical image is missing. It takes no
part in the Lee filter's local statistics or noise estimate, and every pixel whose 3x3 Sobel
neighbourhood touches a missing pixel is left out of the correlation; the score of a tile is over the
remaining pixels, NaN when fewer than two remain. So one missing pixel of 14,400 moves the score by
about its share of the tile instead of turning it into 0.5. Undefined (NaN) tiles are left out of the
split mean (:class:`SAREdgeAgreement`) and out of the stage-3 loss.

The same function is differentiable and serves as the SAR-edge term of the stage-3 loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from eo_common.losses import image_gradients
from eo_common.metrics import ImageQualityMetrics
from torch import Tensor
from torchmetrics import Metric

from gac_pipeline.data import RGB_INDICES, S2_BANDS

__all__ = [
    "OPTICAL_EDGE_BANDS",
    "lee_filter",
    "edge_magnitude",
    "edge_map_disagreement",
    "sar_edge_disagreement",
    "SAREdgeAgreement",
    "StageMetrics",
    "markdown_table",
]

OPTICAL_EDGE_BANDS: tuple[int, ...] = tuple(S2_BANDS.index(b) for b in ("B02", "B03", "B04", "B08"))
_BORDER = 2


def _box_mean(x: Tensor, window: int) -> Tensor:
    pad = window // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), window, stride=1)


def lee_filter(x: Tensor, window: int = 5, valid: Tensor | None = None) -> Tensor:
    """Lee speckle filter on (B, C, H, W), per band; noise variance = mean local variance per image/band.

    Missing pixels (``valid`` False; default: the non-finite ones) take no part: local statistics are
    over the valid pixels of each window (normalised box filter, reflect border) and the noise estimate
    is the mean over valid pixels. A missing pixel gets the mean of its valid neighbours (0 without
    any), so the output is finite everywhere. Without missing pixels this is the textbook filter.

    Example:
        >>> x = torch.ones(1, 1, 8, 8)
        >>> torch.allclose(lee_filter(x), x)
        True
    """
    if x.ndim != 4:
        raise ValueError(f"lee_filter expects (B, C, H, W), got {tuple(x.shape)}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    valid = torch.isfinite(x) if valid is None else valid.bool()
    v = valid.to(x.dtype)
    x0 = torch.where(valid, x, torch.zeros_like(x))
    count = _box_mean(v, window)
    has = count > 0
    safe = torch.where(has, count, torch.ones_like(count))
    mean = torch.where(has, _box_mean(x0, window) / safe, torch.zeros_like(x))
    mean_sq = torch.where(has, _box_mean(x0 * x0, window) / safe, torch.zeros_like(x))
    var = (mean_sq - mean * mean).clamp_min(0.0)
    inside = (valid & has).to(x.dtype)
    noise = (var * inside).sum(dim=(-2, -1), keepdim=True) / inside.sum(
        dim=(-2, -1), keepdim=True
    ).clamp_min(1.0)
    weight = var / (var + noise + 1e-12)
    return torch.where(valid, mean + weight * (x0 - mean), mean)


def edge_magnitude(x: Tensor) -> Tensor:
    """Sobel gradient magnitude of (B, 1, H, W) -> (B, 1, H, W)."""
    g = image_gradients(x)  # (B, 1, 2, H, W)
    return torch.sqrt(g.pow(2).sum(dim=2) + 1e-12)


def edge_map_disagreement(
    edges_a: Tensor, edges_b: Tensor, border: int = _BORDER, valid: Tensor | None = None
) -> Tensor:
    """(1 - Pearson r) / 2 between two (B, 1, H, W) edge maps, per image -> (B,).

    Only pixels where ``valid`` (B, 1, H, W) is True (default: all) and outside ``border`` count. A
    constant map has no defined correlation and scores 0.5 (no agreement); an image with fewer than
    two counted pixels scores NaN (undefined).

    Example:
        >>> e = torch.rand(2, 1, 16, 16)
        >>> edge_map_disagreement(e, 3 * e).abs().max() < 1e-5
        tensor(True)
    """
    if edges_a.shape != edges_b.shape:
        raise ValueError(
            f"edge maps differ in shape: {tuple(edges_a.shape)} vs {tuple(edges_b.shape)}"
        )
    mask = torch.ones_like(edges_a, dtype=torch.bool) if valid is None else valid.bool()
    if border:
        edges_a, edges_b = (e[..., border:-border, border:-border] for e in (edges_a, edges_b))
        mask = mask[..., border:-border, border:-border]
    m = mask.flatten(1)
    n = m.sum(1).to(edges_a.dtype)
    zero = torch.zeros((), dtype=edges_a.dtype, device=edges_a.device)
    a = torch.where(m, edges_a.flatten(1), zero)
    b = torch.where(m, edges_b.flatten(1), zero)
    a = torch.where(m, a - a.sum(1, keepdim=True) / n.clamp_min(1)[:, None], zero)
    b = torch.where(m, b - b.sum(1, keepdim=True) / n.clamp_min(1)[:, None], zero)
    denom = torch.sqrt(a.pow(2).sum(1) * b.pow(2).sum(1))
    r = torch.where(denom > 1e-12, (a * b).sum(1) / denom.clamp_min(1e-12), torch.zeros_like(denom))
    score = (1.0 - r) / 2.0
    return torch.where(n >= 2, score, torch.full_like(score, float("nan")))


def _erode3(valid: Tensor) -> Tensor:
    """Pixels whose whole 3x3 neighbourhood (the Sobel support) is valid."""
    return F.max_pool2d((~valid).to(torch.float32), 3, stride=1, padding=1) == 0


def sar_edge_disagreement(optical: Tensor, s1: Tensor, window: int = 5) -> Tensor:
    """SAR-edge agreement score per tile (lower is better), see the module docstring.

    Missing values (NaN, +-inf) in either input: those pixels take no part in the Lee filter's
    statistics, and every pixel whose 3x3 Sobel neighbourhood touches one is left out of the
    correlation; the score is over the rest (NaN when fewer than two pixels remain).

    Args:
        optical: (B, 12, H, W) S2 in [0, 1] (band order :data:`gac_pipeline.data.S2_BANDS`).
        s1: (B, 2, H, W) VV, VH in the GLF-CR [0, 1] scaling.

    Returns:
        (B,) scores in [0, 1] (NaN: undefined); differentiable with respect to ``optical``.
    """
    if optical.ndim != 4 or optical.shape[1] != len(S2_BANDS):
        raise ValueError(f"optical must be (B, 12, H, W), got {tuple(optical.shape)}")
    if s1.ndim != 4 or s1.shape[1] != 2 or s1.shape[-2:] != optical.shape[-2:]:
        raise ValueError(f"s1 must be (B, 2, H, W) matching optical, got {tuple(s1.shape)}")
    sar = s1.float().mean(dim=1, keepdim=True)
    sar_valid = torch.isfinite(sar)
    sar = lee_filter(sar, window, valid=sar_valid)
    opt = optical.float()[:, list(OPTICAL_EDGE_BANDS)].mean(dim=1, keepdim=True)
    opt_valid = torch.isfinite(opt)
    opt = torch.where(opt_valid, opt, torch.zeros_like(opt))
    valid = _erode3(sar_valid & opt_valid)
    return edge_map_disagreement(edge_magnitude(opt), edge_magnitude(sar), valid=valid)


class SAREdgeAgreement(Metric):
    """Streaming mean of :func:`sar_edge_disagreement` over tiles (lower is better).

    Tiles whose score is undefined (NaN: fewer than two usable pixels) are not averaged in; they are
    counted in ``undefined``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("undefined", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, optical: Tensor, s1: Tensor) -> None:
        scores = sar_edge_disagreement(optical.detach(), s1.detach()).double()
        finite = torch.isfinite(scores)
        self.total += scores[finite].sum()
        self.count += finite.sum()
        self.undefined += (~finite).sum()

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))


class StageMetrics(torch.nn.Module):
    """PSNR, SSIM, SAM (deg), MAE, RMSE, optional LPIPS (RGB bands) and SAR-edge agreement of one stage.

    Image metrics come from :class:`eo_common.metrics.ImageQualityMetrics` with data_range 1 (S2 / 10000),
    Gaussian SSIM window 11 / sigma 1.5, border cropped; LPIPS only when ``lpips_weights`` names a local
    backbone weights file (it cannot be downloaded here), on bands B04, B03, B02.

    Example:
        >>> m = StageMetrics()
        >>> x = torch.rand(1, 12, 32, 32)
        >>> m.update(x, x, torch.rand(1, 2, 32, 32))
        >>> round(m.compute()["ssim"], 4)
        1.0
    """

    def __init__(self, lpips_weights: str | None = None):
        super().__init__()
        self.image = ImageQualityMetrics(
            data_range=1.0, rgb_bands=RGB_INDICES, lpips_weights=lpips_weights
        )
        self.edges = SAREdgeAgreement()

    def update(self, pred: Tensor, target: Tensor, s1: Tensor) -> None:
        pred = pred.detach().float()
        self.image.update(pred, target.detach().float())
        self.edges.update(pred, s1)

    def compute(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.image.compute().items()}
        out["sar_edge"] = float(self.edges.compute())
        return out

    def reset(self) -> None:
        self.image.reset()
        self.edges.reset()


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def markdown_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    """A markdown table: one row per key of ``rows``, one column per metric name.

    Example:
        >>> print(markdown_table({"stage 1": {"psnr": 20.0}}, ["psnr"]))
        | run | psnr |
        |---|---|
        | stage 1 | 20.0000 |
    """
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, values in rows.items():
        lines.append(
            f"| {name} | " + " | ".join(_fmt(values.get(c, float("nan"))) for c in columns) + " |"
        )
    return "\n".join(lines)
