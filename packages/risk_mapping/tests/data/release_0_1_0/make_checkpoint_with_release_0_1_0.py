"""Write a tiny checkpoint with risk_mapping release 0.1.0 (run in a worktree of commit bcbb749).

The fake stack is eo_common.testing.make_fake_risk_stack(size=96, bands=4, seed=0), identical to
tests/data/risk_stack.py make_risk_stack of later versions.
"""

import sys
from pathlib import Path

import yaml
from eo_common.testing import make_fake_risk_stack

root = Path(sys.argv[1] if len(sys.argv) > 1 else "release_0_1_0_run")
data = root / "data"
stack, labels = make_fake_risk_stack(data, size=96, bands=4, seed=0)
cfg = {
    "output_dir": str(root / "run"),
    "seed": 0,
    "dataset": {
        "stack": str(stack),
        "labels": str(labels),
        "tile_size": 32,
        "overlap": 8,
        "block_size": 32,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "smote_k_neighbors": 2,
    },
    "model": {
        "encoder": "tu-test_efficientnet",
        "encoder_weights": None,
        "attention": True,
        "attention_reduction": 4,
        "dropout_prob": 0.1,
        "decoder_channels": [8, 8, 8, 8, 8],
    },
    "training": {"epochs": 1, "batch_size": 8, "patience": 2},
    "inference": {
        "tile_size": 64,
        "overlap": 16,
        "crf": {
            "tile_size": 64,
            "overlap": 16,
            "iterations": 3,
            "bilateral_sxy": 10.0,
            "workers": 1,
        },
    },
    "evaluation": {"split": "test"},
}
(root / "config.yaml").write_text(yaml.safe_dump(cfg))
from risk_mapping import evaluate, pipeline  # noqa: E402

assert pipeline.main(["--config", str(root / "config.yaml"), "--quiet"]) == 0
assert (
    evaluate.main(
        [
            "--model_path",
            str(root / "run/train/seed0/checkpoints/best.ckpt"),
            "--test_data_path",
            str(data),
            "--output_dir",
            str(root / "eval"),
            "--quiet",
        ]
    )
    == 0
)
