"""The cloud_removal console scripts, one :class:`eo_common.command.Command` each (declarations only).

Flags come from the config dataclasses of :mod:`cloud_removal.config`; the researchers' own spellings
(``train_CR_kaggle.py``) are aliases here, so their command lines run as typed. Nothing heavy is
imported until a command's work starts, so ``--help`` and config errors answer at once.
"""

from __future__ import annotations

from pathlib import Path

from eo_common.command import Command

from .config import (
    EVAL_METRICS,
    TRAIN_METRICS,
    CREvalConfig,
    CRMakeDatalistConfig,
    CRPredictConfig,
    CRTrainConfig,
    ModelInfoConfig,
    SamplesConfig,
)
from .config_ablate import ABLATE_METRICS, ABLATION_BASE, CRAblateConfig

__all__ = [
    "cr_train",
    "cr_eval",
    "cr_predict",
    "cr_ablate",
    "cr_make_datalist",
    "model_info",
    "build_samples",
]

#: presets shipped with the package: ``--demo`` = ``--config <this file>``
DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"

#: the researchers' flag spellings (train_CR_kaggle.py) -> eolab fields
TRAIN_ALIASES = {
    "--batch_sz": "data.batch_size",
    "--save_model_dir": "run.output_dir",
    "--input_data_folder": "data.root",
}
TRAIN_DEFAULTS = {
    "run.output_dir": Path("runs"),
    "run.name": "cloud_removal",
    "optim.epochs": 30,
    "optim.lr": 1e-4,
    "optim.scheduler": "plateau",
    "optim.early_stop_patience": 15,
    "data.num_workers": 2,
}

cr_train = Command(
    "cr-train",
    CRTrainConfig,
    "cloud_removal.train:train",
    description="Train the SAR-guided cloud-removal network on SEN12MS-CR; keeps the checkpoint "
    "with the best validation PSNR (run folder: config.yaml, summary.json, metrics.csv, "
    "checkpoints/best.ckpt and last.ckpt).",
    epilog="examples:\n"
    "  cr-train --demo\n"
    "  cr-train --config run.yaml --lr 5e-5\n"
    "  cr-train --input_data_folder /data/SEN12MS-CR --data_list_filepath data.csv "
    "--batch_sz 8 --save_model_dir runs --experiment_name v4\n"
    "  cr-train --config runs/v4/config.yaml --resume",
    aliases=TRAIN_ALIASES,
    defaults=TRAIN_DEFAULTS,
    presets={"--demo": DEMO_CONFIG},
    metrics=TRAIN_METRICS,
)

cr_ablate = Command(
    "cr-ablate",
    CRAblateConfig,
    "cloud_removal.ablate:ablate",
    description="Run variants of a cr-train configuration (each enhancement removed in turn) with "
    "the same seeds and budget: the 'eolab sweep' preset cloud_removal:ablation over this base "
    "config (its defaults: all enhancements on); writes ablation.md with paired differences to "
    "'full' and the seed-noise verdict of each.",
    epilog="examples:\n"
    "  cr-ablate --demo --max_epochs 3 --seeds 2 --ablation_dir runs/cr_ablation\n"
    "  cr-ablate --config base.yaml --configs '[full,no_cross_attn]' --time_budget_s 3600 --sweep_workers 2",
    aliases={**TRAIN_ALIASES, "--ablation_dir": "run.output_dir"},
    defaults={
        **TRAIN_DEFAULTS,
        **ABLATION_BASE,
        "run.output_dir": Path("runs/cr_ablation"),
        "run.name": "",
    },
    presets={"--demo": DEMO_CONFIG},
    metrics=ABLATE_METRICS,
)

cr_eval = Command(
    "cr-eval",
    CREvalConfig,
    "cloud_removal.evaluate:evaluate",
    description="Score a cr-train checkpoint and the identity baseline (the cloudy input) on a "
    "split: PSNR, SSIM, SAM, MAE, RMSE over all, cloudy and clear pixels, per-image CSV, panels.",
    epilog="example:\n  cr-eval --checkpoint runs/cloud_removal/checkpoints/best.ckpt --split test "
    "--out runs/cr_eval",
    aliases={"--input_data_folder": "data.root"},
    defaults={"run.output_dir": Path("runs/cr_eval"), "data.batch_size": 4},
    metrics=EVAL_METRICS,
)

cr_predict = Command(
    "cr-predict",
    CRPredictConfig,
    "cloud_removal.predict:predict",
    description="Cloud-free GeoTIFF of a scene of any size from a cloudy S2 L1C GeoTIFF and an S1 "
    "GeoTIFF on the same grid (tiled, blended, constant memory).",
    epilog="example:\n  cr-predict --checkpoint best.ckpt --s2 cloudy_s2.tif --s1 s1.tif "
    "--out runs/scene --tile_size 256 --overlap 32",
    defaults={"run.output_dir": Path("runs/cr_predict")},
)

cr_make_datalist = Command(
    "cr-make-datalist",
    CRMakeDatalistConfig,
    "cloud_removal.datalist:make_datalist",
    description="Write a data list (split,s1_folder,s2_cloudfree_folder,s2_cloudy_folder,filename) "
    "for the official SEN12MS-CR download tree, split by scene (no scene in two splits).",
    epilog="example:\n  cr-make-datalist --input_data_folder /data/SEN12MS-CR --val_fraction 0.1 "
    "--test_fraction 0.1",
    run_folder=False,
)

model_info = Command(
    "python -m cloud_removal.model",
    ModelInfoConfig,
    "cloud_removal.model:describe",
    description="Parameter count and switches of a network configuration.",
    run_folder=False,
)

build_samples = Command(
    "python -m cloud_removal.samples",
    SamplesConfig,
    "cloud_removal.samples:build",
    description="Build the sample dataset of the demo (real BigEarthNet S1/S2 pairs at TOA level, real "
    "L1C scene tiles with simulated S1, simulated clouds) in the SEN12MS-CR layout.",
    run_folder=False,
)
