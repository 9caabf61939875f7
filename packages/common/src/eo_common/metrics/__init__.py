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

from .image import (
    ImageQualityMetrics,
    psnr,
    sam,
    ssim,
    ssim_map,
)
from .lpips import LPIPS, LPIPS_WEIGHTS_HELP, build_lpips
from .segmentation import (
    SegmentationMetrics,
    SpearmanRho,
    kappa_from_confusion,
    mcc_from_confusion,
    scores_from_confusion,
)

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
    "build_lpips",
    "LPIPS",
]
