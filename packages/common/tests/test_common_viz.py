"""eo_common.viz: valid PNGs of the documented pixel size, composites pick the requested bands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eo_common.normalize import percentile_stretch
from eo_common.viz import (
    CONFUSION_INCHES,
    CURVE_PANEL_INCHES,
    DPI,
    PANEL_INCHES,
    _parse_column,
    plot_confusion_matrix,
    plot_training_curves,
    rgb_composite,
    save_panels,
)
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size  # (width, height)


def _lightning_csv(path, epochs=3, steps_per_epoch=4):
    """A metrics.csv in the layout Lightning's CSVLogger writes (sparse rows, NaN elsewhere)."""
    rows = []
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            rows.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "train/loss_step": 1.0 / (step + 1),
                    "lr-AdamW": 1e-3 * (0.9**step),
                }
            )
            step += 1
        rows.append(
            {
                "epoch": epoch,
                "step": step - 1,
                "val/loss": 0.8 - 0.1 * epoch,
                "val/psnr": 20.0 + epoch,
                "val/ssim": 0.7 + 0.05 * epoch,
            }
        )
        rows.append({"epoch": epoch, "step": step - 1, "train/loss_epoch": 0.9 - 0.1 * epoch})
    columns = [
        "epoch",
        "lr-AdamW",
        "step",
        "train/loss_epoch",
        "train/loss_step",
        "val/loss",
        "val/psnr",
        "val/ssim",
    ]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if c not in row else repr(row[c]) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parse_column_groups_train_and_val():
    assert _parse_column("train/loss_epoch") == ("train", "loss", "epoch")
    assert _parse_column("train/loss_step") == ("train", "loss", "step")
    assert _parse_column("val/loss") == ("val", "loss", None)
    assert _parse_column("val/loss_l1") == ("val", "loss_l1", None)
    assert _parse_column("lr-AdamW") == ("", "lr-AdamW", None)


def test_training_curves_png_size_and_grouping(tmp_path, monkeypatch):
    csv = _lightning_csv(tmp_path / "metrics.csv")
    calls = []
    from matplotlib.axes import Axes

    original = Axes.plot

    def spy(self, x, y, *args, **kwargs):
        calls.append((self, kwargs.get("label"), list(x), list(y)))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    out = plot_training_curves(csv, tmp_path / "plots" / "curves.png")
    # subplots: loss (train epoch + val), psnr, ssim, lr-AdamW (per step) -> 4 -> 2 rows of 3
    width, height = _png_size(out)
    assert (width, height) == (3 * CURVE_PANEL_INCHES[0] * DPI, 2 * CURVE_PANEL_INCHES[1] * DPI)
    drawn = {}
    for ax, label, x, y in calls:
        drawn.setdefault(ax.get_title(), []).append((label, x, y))
    assert sorted(drawn) == ["loss", "lr-AdamW", "psnr", "ssim"]
    assert len(drawn["lr-AdamW"][0][1]) == 12  # per step
    assert drawn["psnr"][0][1:] == ([0, 1, 2], [20.0, 21.0, 22.0])
    loss_lines = drawn["loss"]  # train (epoch level; the step level is left out) and val together
    assert [label for label, _, _ in loss_lines] == ["train", "val"]
    assert loss_lines[0][1] == [0, 1, 2] and loss_lines[0][2] == pytest.approx([0.9, 0.8, 0.7])
    assert loss_lines[1][2] == pytest.approx([0.8, 0.7, 0.6])


def test_training_curves_selection_and_errors(tmp_path):
    csv = _lightning_csv(tmp_path / "metrics.csv")
    out = plot_training_curves(csv, tmp_path / "psnr.png", metrics=["psnr"])
    assert _png_size(out) == (CURVE_PANEL_INCHES[0] * DPI, CURVE_PANEL_INCHES[1] * DPI)
    out = plot_training_curves(csv, tmp_path / "two.png", metrics=["loss", "train/loss_step"])
    assert _png_size(out) == (2 * CURVE_PANEL_INCHES[0] * DPI, CURVE_PANEL_INCHES[1] * DPI)
    with pytest.raises(ValueError, match="mcc"):
        plot_training_curves(csv, tmp_path / "x.png", metrics=["mcc"])
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        plot_training_curves(tmp_path / "nothere.csv", tmp_path / "x.png")
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,val/loss\n0,1,\n")
    with pytest.raises(ValueError, match="empty.csv"):
        plot_training_curves(empty, tmp_path / "x.png")


@pytest.mark.parametrize("seed", range(5))
def test_rgb_composite_picks_the_requested_bands(seed):
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(3, 14))
    x = rng.gamma(2.0, 100.0 * (1 + np.arange(channels)[:, None, None]), size=(channels, 12, 10))
    bands = tuple(int(b) for b in rng.choice(channels, size=3, replace=False))
    rgb = rgb_composite(x, bands=bands)
    assert rgb.shape == (12, 10, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    for k, band in enumerate(bands):
        np.testing.assert_array_equal(rgb[..., k], percentile_stretch(x[band : band + 1])[0])
        # the k-th channel is a monotone function of the chosen band (same ordering of pixels)
        inner = (rgb[..., k] > 0) & (rgb[..., k] < 1)
        order = np.argsort(x[band][inner])
        assert np.all(np.diff(rgb[..., k][inner][order]) >= 0)
    np.testing.assert_array_equal(rgb_composite(torch.from_numpy(x), bands=bands), rgb)


def test_rgb_composite_rejects_bad_bands():
    x = np.zeros((4, 5, 5))
    with pytest.raises(ValueError, match="out of range"):
        rgb_composite(x, bands=(4, 2, 1))
    with pytest.raises(ValueError, match="3 bands"):
        rgb_composite(x, bands=(0, 1))


def test_save_panels_sizes_for_rows_and_flat_lists(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.random((20, 20, 3))
    scalar = rng.random((20, 20))
    scalar[0, 0] = np.nan
    out = save_panels(
        [("cloudy", rgb), ("prediction", torch.from_numpy(rgb)), ("error", scalar)],
        tmp_path / "row.png",
    )
    assert _png_size(out) == (3 * PANEL_INCHES * DPI, PANEL_INCHES * DPI)
    out = save_panels(
        [("a", rgb), ("b", scalar), ("c", scalar, {"cmap": "magma", "vmin": 0})],
        tmp_path / "wrapped.png",
        ncols=2,
    )
    assert _png_size(out) == (2 * PANEL_INCHES * DPI, 2 * PANEL_INCHES * DPI)
    out = save_panels(
        [[("a", rgb)], [("b", scalar), ("c", (rgb * 255).astype(np.uint8))]], tmp_path / "grid.png"
    )
    assert _png_size(out) == (2 * PANEL_INCHES * DPI, 2 * PANEL_INCHES * DPI)
    with pytest.raises(ValueError, match="'stack' has shape"):
        save_panels([("stack", rng.random((13, 20, 20)))], tmp_path / "bad.png")


def test_save_panels_shows_the_rgb_pixels(tmp_path):
    """A pure red panel comes out red in the PNG."""
    red = np.zeros((30, 30, 3))
    red[..., 0] = 1.0
    out = save_panels([("red", red)], tmp_path / "red.png")
    with Image.open(out) as im:
        pixels = np.asarray(im.convert("RGB"))
    centre = pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]
    assert tuple(centre) == (255, 0, 0)


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_matrix_png(tmp_path, normalize):
    cm = np.array([[50, 3, 0, 0], [4, 20, 1, 0], [0, 2, 5, 0], [0, 0, 0, 0]])
    out = plot_confusion_matrix(
        cm,
        ["background", "glacier", "debris", "lake"],
        tmp_path / f"cm_{normalize}.png",
        normalize=normalize,
    )
    panels = 2 if normalize else 1
    assert _png_size(out) == (panels * CONFUSION_INCHES * DPI, CONFUSION_INCHES * DPI)
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "x.png")
