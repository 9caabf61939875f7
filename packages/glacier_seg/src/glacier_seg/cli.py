"""The console scripts of glacier_seg: one :class:`eo_common.command.Command` each (declarations only).

``pyproject.toml`` points ``glacier-train``, ``glacier-eval``, ``glacier-predict`` and
``glacier-diagnose`` here. Nothing heavy is imported until a command's work starts, so ``--help``,
``--print_config`` and every config error answer at once.
"""

from __future__ import annotations

from eo_common.command import Command

from glacier_seg.config import (
    DIAGNOSE_METRICS,
    EVAL_METRICS,
    PREDICT_METRICS,
    TRAIN_METRICS,
    GlacierDiagnoseConfig,
    GlacierEvalConfig,
    GlacierPredictConfig,
    GlacierTrainConfig,
)

__all__ = ["glacier_train", "glacier_eval", "glacier_predict", "glacier_diagnose"]

_TRAIN_EPILOG = (
    "example: glacier-train --config packages/glacier_seg/configs/researchers_v3.yaml "
    "--data_root GlacierHack/Train; repeat a run: glacier-train --config <run>/config.yaml "
    "--output_dir other; more in packages/glacier_seg/README.md"
)

glacier_train = Command(
    "glacier-train",
    GlacierTrainConfig,
    "glacier_seg.train:train",
    description="Train the 4-class glacier U-Net (background, glacier, debris, lake) on GlacierHack "
    "tiles; keeps the checkpoint with the best validation MCC over all validation pixels.",
    epilog=_TRAIN_EPILOG,
    defaults={
        "run.output_dir": "runs/glacier_train",
        "optim.epochs": 60,
        "optim.scheduler": "cosine_restarts",
    },
    aliases={"--T0": "optim.T_0", "--eta_min": "optim.min_lr"},
    metrics=TRAIN_METRICS,
)

glacier_eval = Command(
    "glacier-eval",
    GlacierEvalConfig,
    "glacier_seg.evaluate:evaluate",
    description="Score glacier-train checkpoints (one, or an ensemble) on labelled GlacierHack tiles: "
    "competition MCC over all valid pixels flattened, kappa, per-class IoU/F1, confusion matrix, "
    "prediction panels; optional flip TTA and multi-scale inference.",
    epilog="example: glacier-eval --checkpoints runs/glacier_train/r34/checkpoints/best.ckpt "
    "--data_root GlacierHack/Train --split val --tta --output_dir runs/r34_eval",
    defaults={"run.output_dir": "runs/glacier_eval"},
    metrics=EVAL_METRICS,
)

glacier_predict = Command(
    "glacier-predict",
    GlacierPredictConfig,
    "glacier_seg.predict:predict",
    description="Predict glacier masks for GlacierHack tiles: competition masks (0/85/170/255, named "
    "like each tile's Band1 file) and GIS class maps (COG, colour table, category names, QGIS style).",
    epilog="example: glacier-predict --checkpoints runs/glacier_train/r34/checkpoints/best.ckpt "
    "--input GlacierHack/test --output_dir runs/r34_test --tta",
    defaults={"run.output_dir": "runs/glacier_predict"},
    aliases={"--input": "data.root"},
    metrics=PREDICT_METRICS,
)

glacier_diagnose = Command(
    "glacier-diagnose",
    GlacierDiagnoseConfig,
    "glacier_seg.diagnose:diagnose",
    description="Checks for a glacier run that scores near MCC 0: pairing by tile key, raw mask "
    "values, class fractions per split, band and GLCM statistics, trivial-baseline MCC, an "
    "overfit-one-batch sanity run, and a short 5- vs 7-channel ablation.",
    epilog="example: glacier-diagnose --data_root GlacierHack/Train --ablation_epochs 3",
    defaults={
        "run.output_dir": "runs/glacier_diagnose",
        "model.encoder_name": "resnet18",
        "optim.scheduler": "cosine_restarts",
    },
    metrics=DIAGNOSE_METRICS,
)
