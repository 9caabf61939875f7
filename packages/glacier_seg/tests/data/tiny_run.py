"""The smallest glacier-train run that exercises everything: a 134 k-parameter U-Net on fake tiles.

The encoder is timm's ``test_efficientnet`` (through smp's ``tu-`` encoders), made for tests; the
decoder uses the narrowest widths scSE allows (16). Tests import this as ``glacier_tiny``.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_MODEL = {"encoder_name": "tu-test_efficientnet", "decoder_channels": [16, 16, 16, 16, 16]}


def tiny_train_args(root: str | Path, out: str | Path, cache: str | Path, *extra: str) -> list[str]:
    """A ``glacier-train`` command line (tiles of the organisers' fake layout, tile 05 held out) that
    trains 2 epochs of 2 steps in a few seconds on one CPU thread; ``extra`` flags win."""
    return [
        "--data_root", str(root), "--output_dir", str(out), "--glcm_cache", str(cache),
        "--encoder_name", TINY_MODEL["encoder_name"],
        "--decoder_channels", json.dumps(TINY_MODEL["decoder_channels"]),
        "--crop_size", "32", "--batch_size", "4", "--samples_per_epoch", "8", "--val_ids", "05",
        "--glcm_window", "5", "--glcm_levels", "16", "--T_0", "1", "--early_stop_patience", "0",
        "--epochs", "2", "--no_progress", "--threads", "1", "--log", "[csv]", *extra,
    ]  # fmt: skip
