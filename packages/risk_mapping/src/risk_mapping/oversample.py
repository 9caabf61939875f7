"""Minority-class oversampling of training tiles: duplication of rich tiles and SMOTE.

Oversampling by duplication
    Tiles whose fraction of ``oversample_class`` pixels (among labelled pixels) is at least
    ``medium_rich_threshold`` are "rich". Copies of rich tiles, richest first and cycling, are appended
    until the class's pixel fraction over all train tiles reaches ``oversample_target_fraction``
    (the smallest number of copies that does). An unreachable target (or one that needs more copies
    than that) stops after ``3 x N`` copies with a note in the summary.

SMOTE on rich tiles, and the rule for synthetic labels and categorical bands
    imbalanced-learn's SMOTE works on flat vectors, so each *original* train tile becomes one vector:
    its standardised continuous bands, a one-hot encoding of its label mask with four channels (low,
    medium, high, ignore), and a one-hot encoding of each *categorical* band over the values that band
    takes. Rich tiles are the minority class. SMOTE draws a rich tile ``a``, one of its ``k`` nearest
    rich neighbours ``b`` and ``lam ~ U(0, 1)`` and returns ``a + lam (b - a)`` for the whole vector.
    Continuous bands are that interpolation. One-hot parts are turned back into one value per pixel:

    * a label pixel that is ignore (255) in either parent stays ignore (its ignore weight is > 0);
    * otherwise the value with the larger weight, i.e. the one of the parent the synthetic tile is
      closer to (``lam < 0.5``: ``a``; ``lam > 0.5``: ``b``); where both parents agree, that value.
      An exact tie goes to the lower class (for categorical bands: the lower value).

    So synthetic labels are always valid values {0, 1, 2, 255}, categorical bands only hold values
    that occur in the inputs (a land-cover code is never interpolated), and every synthetic pixel
    carries the label one of its two parents has at that position. Ids ``smote_00000``, ...

"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from risk_mapping.config import IGNORE_INDEX, NUM_CLASSES
from risk_mapping.tiles import TileSet

__all__ = [
    "class_fractions",
    "rich_mask",
    "oversample_by_duplication",
    "SmoteResult",
    "smote_tiles",
    "synthetic_labels_from_onehot",
]

log = logging.getLogger(__name__)


def class_fractions(y: np.ndarray) -> dict[str, Any]:
    """Pixel counts and fractions of classes 0/1/2 among labelled pixels (255 excluded)."""
    counts = np.bincount(y[y != IGNORE_INDEX].ravel().astype(np.int64), minlength=NUM_CLASSES)[
        :NUM_CLASSES
    ]
    total = int(counts.sum())
    return {
        "n_pixels": total,
        "n_ignored": int((y == IGNORE_INDEX).sum()),
        "counts": counts.tolist(),
        "fractions": [float(c / total) if total else 0.0 for c in counts],
    }


def rich_mask(y: np.ndarray, cls: int, threshold: float) -> np.ndarray:
    """``(N,)`` bool: tiles whose fraction of class ``cls`` among labelled pixels is >= threshold."""
    valid = (y != IGNORE_INDEX).reshape(len(y), -1).sum(1)
    hits = (y == cls).reshape(len(y), -1).sum(1)
    frac = np.where(valid > 0, hits / np.maximum(valid, 1), 0.0)
    return (frac >= threshold) & (valid > 0)


def oversample_by_duplication(
    tiles: TileSet, cls: int, target_fraction: float, threshold: float, max_factor: int = 3
) -> tuple[TileSet, dict[str, Any]]:
    """Append copies of rich tiles until class ``cls`` makes up ``target_fraction`` of labelled pixels.

    Rich tiles (see :func:`rich_mask`) are copied richest first, cycling, and the fewest copies that
    reach the target are used. Copies get ids ``<id>_dup<j>``.

    Returns:
        ``(tiles with copies appended, info)`` with ``info = {"n_duplicated", "fraction_before",
        "fraction_after", "reached"}``.

    Example:
        >>> y = np.zeros((4, 2, 2), np.uint8); y[0] = 1
        >>> ts = TileSet(np.zeros((4, 1, 2, 2), np.float32), y, ["a", "b", "c", "d"], np.zeros((4, 4), np.int64))
        >>> out, info = oversample_by_duplication(ts, cls=1, target_fraction=0.5, threshold=0.3)
        >>> info["n_duplicated"], info["fraction_after"]
        (2, 0.5)
    """
    flat = tiles.y.reshape(len(tiles), -1)
    valid = (flat != IGNORE_INDEX).sum(1).astype(np.int64)
    hits = (flat == cls).sum(1).astype(np.int64)
    total_valid, total_hits = int(valid.sum()), int(hits.sum())
    before = total_hits / total_valid if total_valid else 0.0
    info: dict[str, Any] = {
        "n_duplicated": 0,
        "fraction_before": before,
        "fraction_after": before,
        "reached": before >= target_fraction,
    }
    if target_fraction <= 0 or before >= target_fraction:
        return tiles, info
    rich = np.flatnonzero(rich_mask(tiles.y, cls, threshold))
    if rich.size == 0:
        info["reached"] = False
        info["note"] = f"no tile has >= {threshold:.0%} class-{cls} pixels; nothing to duplicate"
        return tiles, info
    frac = hits[rich] / np.maximum(valid[rich], 1)
    order = rich[np.argsort(-frac, kind="stable")]
    picks: list[int] = []
    limit = max_factor * len(tiles)
    while total_hits / total_valid < target_fraction and len(picks) < limit:
        i = int(order[len(picks) % len(order)])
        picks.append(i)
        total_hits += int(hits[i])
        total_valid += int(valid[i])
    reached = total_hits / total_valid >= target_fraction
    copies_of: dict[int, int] = {}
    new_ids = []
    for i in picks:
        copies_of[i] = copies_of.get(i, 0) + 1
        new_ids.append(f"{tiles.ids[i]}_dup{copies_of[i]:04d}")
    idx = np.array(picks, dtype=np.int64)
    dup = TileSet(tiles.x[idx], tiles.y[idx], new_ids, tiles.windows[idx])
    info.update(
        n_duplicated=len(picks), fraction_after=total_hits / total_valid, reached=bool(reached)
    )
    if not reached:
        info["note"] = f"target {target_fraction} unreachable within {limit} copies"
    return tiles.concat(dup), info


@dataclass
class SmoteResult:
    """Synthetic tiles and what happened (``message`` is the line printed to the user)."""

    tiles: TileSet
    k_used: int | None
    message: str


def synthetic_labels_from_onehot(onehot: np.ndarray) -> np.ndarray:
    """Labels of synthetic tiles from interpolated one-hot masks (the documented SMOTE rule).

    Args:
        onehot: ``(N, 4, t, t)`` interpolated one-hot weights for (low, medium, high, ignore).

    Returns:
        ``(N, t, t)`` uint8: 255 where the ignore weight is > 0, else the argmax of the three class
        weights (ties to the lower class).

    Example:
        >>> oh = np.zeros((1, 4, 1, 3), np.float32)
        >>> oh[0, :, 0, 0] = [0.3, 0.7, 0, 0]; oh[0, :, 0, 1] = [0, 0, 1, 0]; oh[0, :, 0, 2] = [0.6, 0, 0, 0.4]
        >>> synthetic_labels_from_onehot(oh).tolist()
        [[[1, 2, 255]]]
    """
    labels = np.argmax(onehot[:, :NUM_CLASSES], axis=1).astype(np.uint8)
    labels[onehot[:, NUM_CLASSES] > 1e-6] = IGNORE_INDEX
    return labels


def _onehot(y: np.ndarray) -> np.ndarray:
    """``(N, t, t)`` labels -> ``(N, 4, t, t)`` float32 one-hot (channel 3 = ignore)."""
    codes = np.where(y == IGNORE_INDEX, NUM_CLASSES, y).astype(np.int64)
    return np.eye(NUM_CLASSES + 1, dtype=np.float32)[codes].transpose(0, 3, 1, 2)


def smote_tiles(
    tiles: TileSet,
    *,
    cls: int,
    threshold: float,
    k_neighbors: int,
    ratio: float,
    too_few: str = "lower_k",
    seed: int = 0,
    categorical_bands: list[int] | tuple[int, ...] = (),
) -> SmoteResult:
    """Synthesise ``round(ratio * n_rich)`` tiles by SMOTE between rich tiles (imbalanced-learn).

    See the module docstring for the label rule; ``categorical_bands`` (0-based) are one-hot encoded
    over the values they take and decoded by the same nearer-parent rule, so a synthetic tile holds
    only values that occur in the tiles. Needs ``k_neighbors + 1`` rich tiles; with fewer,
    ``too_few`` decides: ``"lower_k"`` uses ``k = n_rich - 1`` (skips when that is 0), ``"skip"`` makes
    no tiles, ``"error"`` raises.

    Raises:
        ValueError: too few rich tiles and ``too_few="error"`` (names ``dataset.smote_k_neighbors``).
    """
    from imblearn.over_sampling import SMOTE

    n, c, t, _ = tiles.x.shape
    empty = TileSet.empty(c, t)
    rich = rich_mask(tiles.y, cls, threshold)
    n_rich = int(rich.sum())
    n_new = int(round(ratio * n_rich))
    what = f"{n_rich} tile(s) with >= {threshold:.0%} class-{cls} pixels"
    if n_new == 0:
        return SmoteResult(empty, None, f"SMOTE: {what}; smote_ratio={ratio} asks for 0 new tiles")
    k = k_neighbors
    if n_rich < k + 1:
        msg = f"SMOTE needs at least smote_k_neighbors + 1 = {k + 1} rich tiles but found {what}"
        if too_few == "error":
            raise ValueError(
                f"dataset.smote_k_neighbors: {msg} (set smote_too_few: lower_k or skip)"
            )
        if too_few == "skip" or n_rich < 2:
            return SmoteResult(empty, None, f"{msg}; SMOTE skipped")
        k = n_rich - 1
        log.warning("%s; lowering k_neighbors to %d", msg, k)
    categorical = sorted(set(int(b) for b in categorical_bands))
    continuous = [b for b in range(c) if b not in categorical]
    levels = [np.unique(tiles.x[:, b]) for b in categorical]
    parts = [tiles.x[:, continuous].reshape(n, -1), _onehot(tiles.y).reshape(n, -1)]
    for b, values in zip(categorical, levels):
        index = np.searchsorted(values, tiles.x[:, b])
        parts.append(
            np.eye(len(values), dtype=np.float32)[index].transpose(0, 3, 1, 2).reshape(n, -1)
        )
    features = np.concatenate(parts, axis=1).astype(np.float32)
    target = rich.astype(np.int64)
    if n_rich == n:
        # SMOTE insists on two classes; a dummy majority row does not enter the neighbour search
        # (SMOTE fits its nearest neighbours on the minority rows only) and is dropped again.
        features = np.concatenate([features, np.zeros((1, features.shape[1]), np.float32)])
        target = np.concatenate([target, [0]])
    sampler = SMOTE(sampling_strategy={1: n_rich + n_new}, k_neighbors=k, random_state=seed)
    resampled, _ = sampler.fit_resample(features, target)
    synth = resampled[len(features) :]
    if len(synth) != n_new:
        raise RuntimeError(f"SMOTE returned {len(synth)} synthetic rows, expected {n_new}")
    x_new = np.empty((n_new, c, t, t), np.float32)
    offset = len(continuous) * t * t
    x_new[:, continuous] = synth[:, :offset].reshape(n_new, len(continuous), t, t)
    y_size = (NUM_CLASSES + 1) * t * t
    y_new = synthetic_labels_from_onehot(
        synth[:, offset : offset + y_size].reshape(n_new, NUM_CLASSES + 1, t, t)
    )
    offset += y_size
    for b, values in zip(categorical, levels):
        size = len(values) * t * t
        weights = synth[:, offset : offset + size].reshape(n_new, len(values), t, t)
        x_new[:, b] = values[np.argmax(weights, axis=1)]
        offset += size
    ids = [f"smote_{i:05d}" for i in range(n_new)]
    windows = np.full((n_new, 4), -1, dtype=np.int64)
    msg = f"Generated {n_new} synthetic tiles via SMOTE (k_neighbors={k}, from {what})"
    return SmoteResult(TileSet(x_new, y_new, ids, windows), k, msg)
