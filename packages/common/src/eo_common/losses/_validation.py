"""Input checks shared by the losses; every failure raises ``ValueError`` with a clear message."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_float(x: object, name: str) -> Tensor:
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_ndim(x: Tensor, name: str, ndims: Sequence[int], layout: str) -> Tensor:
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    return x


def check_same_shape(a: Tensor, b: Tensor, name_a: str = "pred", name_b: str = "target") -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_images(pred: object, target: object) -> tuple[Tensor, Tensor]:
    """pred and target: float (B, C, H, W) of equal shape."""
    pred = check_ndim(check_float(pred, "pred"), "pred", (4,), "(B, C, H, W)")
    target = check_ndim(check_float(target, "target"), "target", (4,), "(B, C, H, W)")
    check_same_shape(pred, target)
    return pred, target


def check_logits_and_labels(
    logits: object,
    target: object,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    logits_name: str = "logits",
    channels: int | None = None,
) -> tuple[Tensor, Tensor]:
    """logits: float (B, K, *spatial); target: integer (B, *spatial), labels in [0, K) or ignore_index.

    ``channels`` is the expected size of dim 1 of ``logits`` (defaults to ``num_classes``);
    ``num_classes`` bounds the labels (defaults to ``logits.shape[1]``).
    """
    logits = check_float(logits, logits_name)
    target = check_tensor(target, "target")
    if logits.ndim < 2:
        raise ValueError(f"{logits_name} must have shape (B, K, ...), got {tuple(logits.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"target must hold integer class labels (torch.long), got dtype {target.dtype}"
        )
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target must have shape {tuple(logits.shape[:1] + logits.shape[2:])} to match "
            f"{logits_name} {tuple(logits.shape)} (B, K, ...), got {tuple(target.shape)}"
        )
    if num_classes is None:
        num_classes = logits.shape[1]
    expected_channels = num_classes if channels is None else channels
    if logits.shape[1] != expected_channels:
        raise ValueError(
            f"{logits_name} has {logits.shape[1]} channels in dim 1 but {expected_channels} were "
            f"expected (num_classes={num_classes})"
        )
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        found = torch.unique(target[bad]).tolist()[:10]
        raise ValueError(
            f"target holds labels {found} outside [0, {num_classes}) "
            f"(ignore_index={ignore_index}); check num_classes and the label encoding"
        )
    return logits, target


def check_class_vector(
    values: Sequence[float] | Tensor | None, num: int | None, name: str
) -> Tensor | None:
    """A per-class vector of finite, non-negative floats (or None)."""
    if values is None:
        return None
    vec = torch.as_tensor(values, dtype=torch.float32).flatten()
    if num is not None and vec.numel() != num:
        raise ValueError(f"{name} must have one value per class ({num}), got {vec.numel()}")
    if not bool(torch.isfinite(vec).all()) or bool((vec < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {vec.tolist()}")
    return vec


def reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
