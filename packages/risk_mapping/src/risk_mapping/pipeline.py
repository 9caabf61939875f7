"""``risk-pipeline``: config-driven prepare -> train -> infer -> evaluate with resumable stages.

Each stage writes into ``<output_dir>/<stage>/`` and finishes by writing ``STAGE_DONE.json`` (atomic)
with a fingerprint of the config sections it depends on and of the upstream stages' fingerprints.
A later run skips a stage whose marker exists with the same fingerprint; a stage whose inputs changed
(different fingerprint) is re-run from scratch, and so are the stages after it. ``--force_recreate``
re-runs the requested stages regardless. A stage interrupted before its marker is re-run; training
then resumes from the last Lightning checkpoint of each seed and skips finished seeds.

=========  =====================================================================================
stage      outputs
=========  =====================================================================================
prepare    split_mask.tif, band_stats.json, tiles_{train,val,test}.npz, dataset_summary.json
train      seed<k>/checkpoints/{best,last}.ckpt, metrics.csv, training_curves.png, DONE.json
infer      probabilities.tif, susceptibility.tif, class_map.tif, uncertainty.tif, and with the CRF
           class_map_crf.tif, susceptibility_crf.tif (all with the stack's CRS and transform)
evaluate   metrics.json, report.md, confusion_no_crf.png, confusion_crf.png
=========  =====================================================================================

Example:
    $ risk-pipeline --config config.yaml --stages prepare,train
    $ risk-pipeline --config config.yaml                    # prepare and train are skipped
    $ risk-pipeline --config config.yaml --stages infer --force_recreate
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eo_common.io import atomic_save_json

from risk_mapping.config import ConfigError, PipelineConfig, load_config, section_fingerprint

__all__ = ["STAGES", "MARKER", "stage_fingerprints", "run_pipeline", "main"]

log = logging.getLogger(__name__)

STAGES = ("prepare", "train", "infer", "evaluate")
MARKER = "STAGE_DONE.json"


def stage_fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """Fingerprint per stage: its own config sections chained with the upstream fingerprint."""
    prepare = section_fingerprint(cfg.dataset, cfg.seed)
    train = section_fingerprint(
        prepare, cfg.model, cfg.training, cfg.inference.ensemble_seeds, cfg.inference.head
    )
    infer = section_fingerprint(train, cfg.inference)
    evaluate = section_fingerprint(infer, cfg.evaluation)
    return {"prepare": prepare, "train": train, "infer": infer, "evaluate": evaluate}


def _marker(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _parse_stages(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return list(STAGES)
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in items if s not in STAGES]
    if unknown:
        raise ValueError(f"--stages: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in items]


def _run_stage(
    stage: str, cfg: PipelineConfig, root: Path, *, budget_s: float | None, progress: bool
) -> dict[str, Any]:
    """Run one stage; returns the info stored in its marker."""
    prepare_dir, train_dir, infer_dir, eval_dir = (root / s for s in STAGES)
    if stage == "prepare":
        from risk_mapping.data import prepare_dataset

        summary = prepare_dataset(cfg, prepare_dir)
        return {
            "stack": summary["stack"],
            "n_tiles": {s: summary[s]["n_tiles"] for s in ("train", "val", "test")},
            "n_synthetic": summary["train"]["n_synthetic"],
        }
    if stage == "train":
        from risk_mapping.train import train_models

        ckpts = train_models(cfg, prepare_dir, train_dir, budget_s=budget_s, progress=progress)
        return {"checkpoints": [str(c) for c in ckpts]}
    if stage == "infer":
        from risk_mapping.crf import crf_raster
        from risk_mapping.predict import inference_device, load_models, predict_raster

        stack = _marker(prepare_dir)["stack"]
        ckpts = _marker(train_dir)["checkpoints"]
        t0 = time.perf_counter()
        device = inference_device(cfg.training.accelerator)
        paths = predict_raster(
            load_models(ckpts, device),
            stack,
            infer_dir,
            cfg.inference,
            device=device,
            seed=cfg.seed,
            progress=progress,
        )
        info: dict[str, Any] = {
            "outputs": {k: str(v) for k, v in paths.items()},
            "predict_seconds": time.perf_counter() - t0,
        }
        if cfg.inference.crf.enabled:
            t0 = time.perf_counter()
            crf_raster(
                paths["probabilities"],
                stack,
                infer_dir / "class_map_crf.tif",
                infer_dir / "susceptibility_crf.tif",
                cfg.inference.crf,
                progress=progress,
            )
            info["outputs"]["class_map_crf"] = str(infer_dir / "class_map_crf.tif")
            info["outputs"]["susceptibility_crf"] = str(infer_dir / "susceptibility_crf.tif")
            info["crf_seconds"] = time.perf_counter() - t0
        return info
    if stage == "evaluate":
        from risk_mapping.evaluate import evaluate_products, write_evaluation

        variants = evaluate_products(
            infer_dir,
            cfg.dataset.labels,
            split_mask_path=prepare_dir / "split_mask.tif",
            split=cfg.evaluation.split,
        )
        write_evaluation(
            eval_dir,
            variants,
            cfg.evaluation.targets,
            cfg.evaluation.baseline_metrics,
            extra={"split": cfg.evaluation.split},
        )
        return {"metrics": str(eval_dir / "metrics.json"), "report": str(eval_dir / "report.md")}
    raise ValueError(f"unknown stage {stage!r}")


def run_pipeline(
    cfg: PipelineConfig,
    stages: str | Sequence[str] | None = None,
    *,
    force_recreate: bool = False,
    budget_s: float | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Run the requested stages in order; returns ``{stage: "ran" | "skipped"}``.

    Raises:
        FileNotFoundError: a stage needs an upstream stage that has not finished (and is not requested).
    """
    wanted = _parse_stages(stages)
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    prints = stage_fingerprints(cfg)
    status: dict[str, str] = {}
    rerun_downstream = False
    for stage in STAGES:
        stage_dir = root / stage
        marker = _marker(stage_dir)
        fresh = marker is not None and marker.get("fingerprint") == prints[stage]
        if stage not in wanted:
            if not fresh and any(STAGES.index(s) > STAGES.index(stage) for s in wanted):
                raise FileNotFoundError(
                    f"{stage_dir / MARKER}: stage '{stage}' has not finished with this config; "
                    f"add it to --stages (e.g. --stages {','.join(STAGES[: STAGES.index(stage) + 1])},...)"
                )
            continue
        if fresh and not force_recreate and not rerun_downstream:
            print(
                f"[risk-pipeline] {stage}: finished before with this config, skipped (--force_recreate to redo)"
            )
            status[stage] = "skipped"
            continue
        if marker is not None or force_recreate or rerun_downstream or stage != "train":
            # stale or forced: start this stage from scratch (an unfinished train stage keeps its
            # checkpoints so that training resumes)
            shutil.rmtree(stage_dir, ignore_errors=True)
        print(f"[risk-pipeline] {stage}: running")
        start = time.perf_counter()
        info = _run_stage(stage, cfg, root, budget_s=budget_s, progress=progress)
        info.update(
            fingerprint=prints[stage],
            seconds=time.perf_counter() - start,
            finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        atomic_save_json(info, stage_dir / MARKER)
        status[stage] = "ran"
        rerun_downstream = True
    return status


def main(argv: list[str] | None = None) -> int:
    """``risk-pipeline --config config.yaml [--stages prepare,train,infer,evaluate] [--force_recreate]``."""
    parser = argparse.ArgumentParser(
        prog="risk-pipeline",
        description="Ordinal low/medium/high risk segmentation: prepare (tiling, block split, "
        "oversampling, SMOTE) -> train (U-Net + attention + CORAL, Lightning) -> infer (sliding window, "
        "dense CRF) -> evaluate (kappa, per-class scores, Spearman rho, success criteria). Finished "
        "stages are skipped; the config is validated first (see risk-validate-config).",
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="YAML config (see the package's config.yaml)"
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="comma-separated subset of prepare,train,infer,evaluate",
    )
    parser.add_argument(
        "--force_recreate", action="store_true", help="re-run the requested stages even if finished"
    )
    parser.add_argument(
        "--budget_s", type=float, default=None, help="wall-clock budget for training (seconds)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        status = run_pipeline(
            cfg,
            args.stages,
            force_recreate=args.force_recreate,
            budget_s=args.budget_s,
            progress=not args.quiet,
        )
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"risk-pipeline: error: {exc}", file=sys.stderr)
        return 2
    print("[risk-pipeline] " + ", ".join(f"{k}: {v}" for k, v in status.items()))
    report = Path(cfg.output_dir) / "evaluate" / "report.md"
    if "evaluate" in status and report.is_file():
        print(report.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
