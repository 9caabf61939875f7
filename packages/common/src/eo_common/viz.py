"""Headless PNG figures: training curves, RGB composites, side-by-side panels, confusion matrices.

Figures are built with :class:`matplotlib.figure.Figure` directly (the Agg renderer, no ``pyplot``
and no global backend switch), so they work on servers without a display and in threads, and never
leak open figures. Every PNG is written atomically and has an exact, documented pixel size:

* :func:`plot_training_curves`: ``CURVE_PANEL_INCHES`` per subplot, up to 3 subplots per row;
* :func:`save_panels`: ``PANEL_INCHES`` x ``PANEL_INCHES`` per panel;
* :func:`plot_confusion_matrix`: ``CONFUSION_INCHES`` square per matrix (two matrices when normalised);

all at ``DPI`` dots per inch.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eo_common.io import atomic_write
from eo_common.normalize import percentile_stretch

__all__ = [
    "DPI",
    "PANEL_INCHES",
    "CURVE_PANEL_INCHES",
    "CONFUSION_INCHES",
    "plot_training_curves",
    "rgb_composite",
    "save_panels",
    "plot_confusion_matrix",
]

DPI = 100
PANEL_INCHES = 3.0
CURVE_PANEL_INCHES = (4.0, 3.0)
CONFUSION_INCHES = 5.0
_MAX_CURVE_COLUMNS = 3
_MAX_ANNOTATED_CLASSES = 20


def _save(fig: Figure, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    with atomic_write(out, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return out


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------------

_STAGES = ("train", "val", "test", "predict")


def _parse_column(column: str) -> tuple[str, str, str | None]:
    """``"train/loss_epoch"`` -> ``("train", "loss", "epoch")``; ``"val/psnr"`` -> ``("val", "psnr", None)``."""
    stage, quantity = "", column
    if "/" in column:
        head, tail = column.split("/", 1)
        if head in _STAGES:
            stage, quantity = head, tail
    elif "_" in column and column.split("_", 1)[0] in _STAGES:  # Lightning <2 style "val_loss"
        stage, quantity = column.split("_", 1)
    level = None
    match = re.fullmatch(r"(.+)_(step|epoch)", quantity)
    if match:
        quantity, level = match.group(1), match.group(2)
    return stage, quantity, level


def plot_training_curves(
    metrics_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    metrics: Sequence[str] | None = None,
) -> Path:
    """Plot the curves of a Lightning ``metrics.csv``, train and val of one quantity in one subplot.

    Columns are grouped by quantity: ``train/loss_epoch``, ``val/loss`` and ``test/loss`` share the
    subplot "loss". A column is drawn against ``epoch`` when it has at most one value per epoch (the
    last one is kept), otherwise against ``step``. Step-level columns (``*_step``) are left out when an
    epoch-level column of the same quantity exists, unless named in ``metrics``. Rows where a column is
    empty (Lightning writes train and val on separate rows) are skipped per column.

    Args:
        metrics_csv: the CSV written by Lightning's ``CSVLogger``.
        out_png: output file; ``CURVE_PANEL_INCHES`` per subplot at ``DPI``, up to 3 subplots a row.
        metrics: quantities (``"loss"``, ``"psnr"``) or full column names to draw; default all.

    Returns:
        ``out_png`` as a Path.

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: the CSV holds no metric column, or ``metrics`` names none that exists.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "metrics.csv").write_text(
        ...     "epoch,step,train/loss_epoch,val/loss,val/psnr\\n0,9,0.9,,\\n0,9,,0.8,21.0\\n"
        ...     "1,19,0.5,,\\n1,19,,0.6,24.5\\n")
        >>> plot_training_curves(d / "metrics.csv", d / "curves.png").name
        'curves.png'
    """
    path = Path(metrics_csv)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: cannot read as CSV ({exc})") from exc
    axes_columns = [c for c in ("epoch", "step") if c in df.columns]
    candidates = [
        c
        for c in df.columns
        if c not in axes_columns and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()
    ]
    if not candidates:
        raise ValueError(f"{path}: no metric column with values (columns: {list(df.columns)})")

    parsed = {c: _parse_column(c) for c in candidates}
    if metrics is not None:
        wanted = set(metrics)
        known = set(candidates) | {q for _, q, _ in parsed.values()}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(
                f"{path}: no column for {unknown}; available quantities "
                f"{sorted({q for _, q, _ in parsed.values()})}"
            )
        candidates = [c for c in candidates if c in wanted or parsed[c][1] in wanted]
        explicit = {c for c in candidates if c in wanted}
    else:
        explicit = set()

    def x_axis(column: str) -> str | None:
        values = df[[*axes_columns, column]].dropna(subset=[column])
        if "epoch" in axes_columns and parsed[column][2] != "step":
            if parsed[column][2] == "epoch" or not values["epoch"].duplicated().any():
                return "epoch"
        return "step" if "step" in axes_columns else ("epoch" if axes_columns else None)

    xs = {c: x_axis(c) for c in candidates}
    epoch_quantities = {parsed[c][1] for c in candidates if xs[c] == "epoch"}
    groups: dict[tuple[str, str | None], list[str]] = {}
    for c in candidates:
        quantity = parsed[c][1]
        if xs[c] != "epoch" and quantity in epoch_quantities and c not in explicit:
            continue
        groups.setdefault((quantity, xs[c]), []).append(c)

    def order(item: tuple[tuple[str, str | None], list[str]]) -> int:
        quantity = item[0][0].lower()
        return 0 if quantity.startswith("loss") else (2 if quantity.startswith("lr") else 1)

    groups = dict(sorted(groups.items(), key=order))  # losses first, learning rates last
    n = len(groups)
    ncols = min(_MAX_CURVE_COLUMNS, n)
    nrows = math.ceil(n / ncols)
    width, height = CURVE_PANEL_INCHES
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    for i, ((quantity, x), columns) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for column in columns:
            data = df[[x, column]] if x is not None else df[[column]].reset_index()
            data = data.dropna(subset=[column])
            xname = x if x is not None else "index"
            if x == "epoch":
                data = data.dropna(subset=["epoch"]).groupby("epoch", as_index=False).last()
            label = parsed[column][0] or column
            marker = "o" if len(data) <= 30 else None
            ax.plot(data[xname], data[column], marker=marker, markersize=3, label=label)
        ax.set_title(quantity)
        ax.set_xlabel(x or "row")
        ax.grid(alpha=0.3)
        if len(columns) > 1 or parsed[columns[0]][0]:
            ax.legend(fontsize="small")
    return _save(fig, out_png)


# --------------------------------------------------------------------------------------------------
# composites and panels
# --------------------------------------------------------------------------------------------------


def rgb_composite(
    x: Any,
    bands: Sequence[int] = (3, 2, 1),
    low: float = 2,
    high: float = 98,
    nodata: float | None = None,
) -> np.ndarray:
    """An ``(H, W, 3)`` display image from three bands of ``(C, H, W)``, percentile-stretched per band.

    Channel k of the result is ``percentile_stretch(x[bands[k]])``, so ``bands=(3, 2, 1)`` gives the
    Sentinel-2 true colour composite B04, B03, B02 (0-based band indices of a 13- or 12-band stack).

    Example:
        >>> x = np.stack([np.full((2, 2), v) for v in range(5)]).astype(float)
        >>> x[:, 0, 0] = 0.0
        >>> rgb_composite(x, bands=(4, 2, 1), low=0, high=100)[1, 1]
        array([1., 1., 1.], dtype=float32)
    """
    arr = _to_numpy(x)
    if arr.ndim != 3:
        raise ValueError(f"rgb_composite: expected (C, H, W), got shape {arr.shape}")
    bands = tuple(int(b) for b in bands)
    if len(bands) != 3:
        raise ValueError(f"rgb_composite: bands must name 3 bands (R, G, B), got {bands}")
    channels = arr.shape[0]
    if any(not -channels <= b < channels for b in bands):
        raise ValueError(f"rgb_composite: bands {bands} out of range for {channels} bands")
    stretched = percentile_stretch(arr[list(bands)], low, high, per_band=True, nodata=nodata)
    return np.ascontiguousarray(np.moveaxis(stretched, 0, -1))


def _panel_grid(panels: Sequence[Any], ncols: int | None) -> list[list[Any]]:
    if len(panels) == 0:
        raise ValueError("save_panels: no panels given")
    if all(isinstance(p, list) for p in panels):  # rows of panels
        return [list(row) for row in panels]
    ncols = ncols or len(panels)
    return [list(panels[i : i + ncols]) for i in range(0, len(panels), ncols)]


def save_panels(
    panels: Sequence[Any],
    out_png: str | os.PathLike,
    ncols: int | None = None,
    cmap: str = "viridis",
) -> Path:
    """Save images side by side, each with a title: RGB ``(H, W, 3)`` or scalar ``(H, W)`` + colorbar.

    Args:
        panels: ``[(title, array), ...]`` laid out in rows of ``ncols`` (default: one row), or a list
            of rows (``[[(title, array), ...], [...]]``). A panel may carry a third element, a dict of
            ``imshow`` options (``cmap``, ``vmin``, ``vmax``, ``interpolation``) plus ``colorbar``
            (bool). RGB arrays are floats in [0, 1] (clipped) or uint8; NaN in a scalar panel is blank.
        out_png: output file, ``PANEL_INCHES`` per panel at ``DPI``.
        ncols: panels per row for a flat list.
        cmap: colour map of scalar panels.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "panels.png"
        >>> rgb, err = np.random.rand(16, 16, 3), np.random.rand(16, 16)
        >>> save_panels([("prediction", rgb), ("error", err, {"cmap": "magma"})], out).name
        'panels.png'
    """
    grid = _panel_grid(panels, ncols)
    nrows, ncols_ = len(grid), max(len(row) for row in grid)
    fig = Figure(
        figsize=(PANEL_INCHES * ncols_, PANEL_INCHES * nrows), dpi=DPI, layout="constrained"
    )
    axes = fig.subplots(nrows, ncols_, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, row in enumerate(grid):
        for c, panel in enumerate(row):
            if panel is None:
                continue
            if not isinstance(panel, tuple | list) or len(panel) not in (2, 3):
                raise ValueError(
                    f"save_panels: a panel must be (title, array[, options]), got {panel!r}"
                )
            title, array = panel[0], _to_numpy(panel[1])
            options = dict(panel[2]) if len(panel) == 3 else {}
            colorbar = options.pop("colorbar", None)
            ax = axes[r, c]
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim == 3 and array.shape[-1] == 3:
                if array.dtype != np.uint8:
                    array = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
                ax.imshow(array, interpolation=options.pop("interpolation", "nearest"), **options)
            elif array.ndim == 2:
                options.setdefault("cmap", cmap)
                options.setdefault("interpolation", "nearest")
                image = ax.imshow(np.ma.masked_invalid(array.astype(np.float64)), **options)
                if colorbar is None or colorbar:
                    fig.colorbar(image, ax=ax, shrink=0.8)
            else:
                raise ValueError(
                    f"save_panels: panel {title!r} has shape {array.shape}; expected (H, W, 3) RGB or "
                    "(H, W) scalar (use rgb_composite for a (C, H, W) stack)"
                )
            ax.set_title(str(title), fontsize="medium")
    return _save(fig, out_png)


# --------------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------------


def _draw_matrix(
    fig: Figure,
    ax: Any,
    values: np.ndarray,
    names: list[str],
    title: str,
    fmt: str,
    vmax: float | None = None,
) -> None:
    k = values.shape[0]
    finite = values[np.isfinite(values)]
    if vmax is None:
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    image = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= _MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                text = "-" if not np.isfinite(v) else format(v, fmt)
                color = "white" if np.isfinite(v) and v > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str] | None,
    out_png: str | os.PathLike,
    normalize: bool = True,
) -> Path:
    """Draw a confusion matrix (rows = truth, columns = prediction) with the value in each cell.

    With ``normalize=True`` two matrices are drawn side by side: the counts and the row-normalised
    matrix (each row divided by its support, so the diagonal is the per-class recall; a class with no
    pixels shows "-"). Figure: ``CONFUSION_INCHES`` square per matrix at ``DPI``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "cm.png"
        >>> plot_confusion_matrix([[50, 2], [5, 10]], ["clear", "cloud"], out).name
        'cm.png'
    """
    counts = _to_numpy(cm).astype(np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(
            f"plot_confusion_matrix: expected a square (K, K) matrix, got {counts.shape}"
        )
    k = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for {k} classes")
    panels = 2 if normalize else 1
    fig = Figure(
        figsize=(CONFUSION_INCHES * panels, CONFUSION_INCHES), dpi=DPI, layout="constrained"
    )
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _draw_matrix(fig, axes[0], counts, names, "counts", ".0f")
    if normalize:
        support = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = np.where(support > 0, counts / support, np.nan)
        _draw_matrix(
            fig, axes[1], rows, names, "row-normalised (recall on diagonal)", ".2f", vmax=1.0
        )
    return _save(fig, out_png)
