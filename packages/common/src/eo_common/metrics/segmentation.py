"""Segmentation metrics from a streaming confusion matrix (MCC, kappa, per-class scores) and
Spearman's rho over all pixels of a split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from .image import _as_tensor

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
