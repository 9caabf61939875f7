"""How the files in this folder were made: with the code of the previous release (commit bcbb749).

Run from a checkout of that commit, with its sources first on the path::

    git worktree add /tmp/eolab-old bcbb749
    PYTHONPATH=/tmp/eolab-old/packages/gac_pipeline/src:/tmp/eolab-old/packages/common/src \\
        uv run python packages/gac_pipeline/tests/data/old_release/make_old_checkpoints.py OUT_FOLDER

It trains a tiny stage 2 (prithvi_eo_tiny, random frozen backbone, LoRA rank 2) and stage 3
(terramind_v1_tiny, LoRA rank 2 on attention only) for one step each on the fake BigEarthNet v2 set
(``make_fake_benv2(root, n=6, seed=0)``) with opt_v1 stand-ins (target + N(0, 300) DN noise, seed 0),
runs that release's ``gac-infer`` on the test split and keeps:

* ``stage2.ckpt``, ``stage3.ckpt``: the best checkpoints, with the optimiser state removed (the only
  change: it is not needed to predict and triples the size);
* ``infer_metrics.json``: the ablation rows that release's ``gac-infer`` computed with them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def main(out: Path) -> None:
    import gac_pipeline

    print("gac_pipeline from", gac_pipeline.__file__)
    from eo_common.testing import make_fake_benv2
    from gac_pipeline import stage2, stage3
    from gac_pipeline.data import build_catalogue, read_tile, stage1_path
    from gac_pipeline.predict import main as infer_main
    from gac_pipeline.stage1 import write_opt_v1

    work = out / "work"
    data = make_fake_benv2(work / "benv2", n=6, seed=0)
    s1dir = work / "stage1"
    rng = np.random.default_rng(0)
    for record in build_catalogue(data):
        tile = read_tile(record)
        noisy = tile.s2 + rng.normal(0, 300, tile.s2.shape)
        write_opt_v1(
            stage1_path(s1dir, record.patch_id),
            noisy,
            crs=tile.crs,
            transform=tile.transform,
            tags={},
        )
    common = [
        "--data-dir",
        str(data),
        "--stage1-dir",
        str(s1dir),
        "--random-init",
        "--lora-rank",
        "2",
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--no-progress",
        "--lr",
        "1e-3",
        "--seed",
        "0",
    ]
    r2 = stage2.run([*common, "--output-dir", str(work / "s2"), "--backbone", "prithvi_eo_tiny"])
    r3 = stage3.run(
        [
            *common,
            "--output-dir",
            str(work / "s3"),
            "--model-size",
            "tiny",
            "--stage2-checkpoint",
            str(r2["best_checkpoint"]),
            "--lora-cross-attention-only",
        ]
    )
    code = infer_main(
        [
            "--data-dir",
            str(data),
            "--stage1-dir",
            str(s1dir),
            "--stage2-checkpoint",
            str(r2["best_checkpoint"]),
            "--stage3-checkpoint",
            str(r3["best_checkpoint"]),
            "--output-dir",
            str(work / "infer"),
            "--split",
            "test",
            "--no-progress",
        ]
    )
    assert code == 0
    for name, r in (("stage2", r2), ("stage3", r3)):
        ckpt = torch.load(r["best_checkpoint"], map_location="cpu", weights_only=False)
        ckpt.pop("optimizer_states", None)
        torch.save(ckpt, out / f"{name}.ckpt")
    metrics = json.loads((work / "infer" / "metrics.json").read_text())
    keep = {"tiles": metrics["tiles"], "rows": metrics["rows"], "made_with": "bcbb749"}
    (out / "infer_metrics.json").write_text(json.dumps(keep, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
