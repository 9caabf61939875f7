"""``risk-pipeline``: prepare -> train -> infer -> evaluate, resumable, never losing a finished stage.

Each stage writes into ``<output_dir>/<stage>/``: ``STAGE_STARTED.json`` when it starts and
``STAGE_DONE.json`` (atomic) when it has finished, both with a fingerprint of the settings the stage
depends on (its config sections, chained with the upstream stages' fingerprints). The run folder
holds ``config.yaml`` (the resolved config: ``risk-pipeline --config <run>/config.yaml --output_dir
other`` repeats the run) and ``summary.json`` (the headline metrics under fixed names:
``test/kappa``, ``test/kappa_crf``, ``test/class1_precision``, ``test/class2_recall``,
``test/spearman_rho``, each also with ``_crf``; the prefix is ``evaluation.split``).

=========  =====================================================================================
stage      outputs
=========  =====================================================================================
prepare    split_mask.tif, band_stats.json, tiles_{train,val,test}.npz, dataset_summary.json (and
           stack.tif / labels.tif when the inputs had to be put on one grid)
train      seed<k>/: config.yaml, summary.json, checkpoints/{best,last}.ckpt, metrics.csv,
           training_curves.png, smp_unet/ (smp save_pretrained, when expressible)
infer      probabilities.tif, susceptibility.tif, class_map.tif, uncertainty.tif, and with the CRF
           class_map_crf.tif, susceptibility_crf.tif: COGs with the stack's CRS and transform; the
           class maps coloured and labelled (low / medium / high)
evaluate   metrics.json, report.md, confusion_no_crf.png, confusion_crf.png
=========  =====================================================================================

The rerun rule for a stage pipeline (the eolab rule of :mod:`eo_common.runs`, stage by stage)
    * an empty or absent output folder: the requested stages run;
    * a folder that holds a run, without a flag: refused in one line (nothing is touched);
    * ``--resume``: finished stages whose settings are unchanged are skipped; a stage that was
      interrupted continues (training from each seed's ``last.ckpt``, finished seeds skipped; exact:
      the result equals an uninterrupted run); a finished stage whose settings changed is redone,
      and so is every requested stage after it. The new ``config.yaml`` is written and the old one
      kept as ``config.before-resume-<n>.yaml``;
    * ``--force_recreate``: like ``--resume``, but the requested stages are redone even when
      finished with the same settings;
    * ``--overwrite``: the whole run folder is replaced once the inputs have been checked.

    A finished stage that is redone is never lost on the way: it is moved beside
    (``.<stage>.previous``) while the new one is built in its place, deleted only when the new one
    has finished, and moved back when the new one fails. After a kill, the next run puts the old
    stage back unless it continues the interrupted new one (same settings); later stages are never
    orphaned: each stage's marker says which settings (and upstream stages) produced it.

Every input is checked (files, grids, CRS, nodata, bands, label values, blocks per split, encoder
name) before the run folder is touched.

Example:
    $ risk-pipeline --config config.yaml                      # all four stages
    $ risk-pipeline --config config.yaml --resume             # skips what is finished
    $ risk-pipeline --config config.yaml --stages infer,evaluate --force_recreate
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from eo_common.errors import ConfigError, InputError, RunFolderError, check_writable_dir
from eo_common.io import atomic_save_json
from eo_common.runs import RunFolder, config_identity, read_summary, run_status

from risk_mapping.config import HEADLINE_SCORES, STAGES, RiskConfig

__all__ = ["STAGES", "MARKER", "STARTED", "stage_fingerprints", "plan_run", "run_pipeline"]

MARKER = "STAGE_DONE.json"
STARTED = "STAGE_STARTED.json"
COMMAND = "risk-pipeline"
HEADLINE = HEADLINE_SCORES  # summary.json: <split>/<name> and <split>/<name>_crf


def _say(text: str) -> None:
    print(f"[{COMMAND}] {text}", file=sys.stderr, flush=True)


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_fingerprints(cfg: RiskConfig) -> dict[str, str]:
    """Fingerprint per stage: the identity settings it depends on, chained with the upstream ones.

    Settings that only say where or how a stage runs (workers, progress, output folder, time budget)
    are not part of it.
    """
    ident = config_identity(cfg, ignore_resumable=True)

    def pick(*prefixes: str) -> dict[str, Any]:
        return {k: v for k, v in ident.items() if k.startswith(prefixes)}

    prepare = _hash([pick("dataset."), ident.get("seed")])
    train = _hash(
        [
            prepare,
            pick("model.", "training.", "inference.ensemble_seeds", "inference.head"),
            ident.get("precision"),
        ]
    )
    infer = _hash([train, pick("inference.")])
    evaluate = _hash([infer, pick("evaluation.")])
    return {"prepare": prepare, "train": train, "infer": infer, "evaluate": evaluate}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fingerprint(stage_dir: Path, name: str = MARKER) -> str | None:
    return (_read_json(stage_dir / name) or {}).get("fingerprint")


def _previous(stage_dir: Path) -> Path:
    return stage_dir.with_name(f".{stage_dir.name}.previous")


def _recover(stage_dir: Path, fingerprint: str, force: bool) -> None:
    """Undo what a kill in the middle of a stage rebuild left: the old finished stage sits in
    ``.<stage>.previous``. Put it back, unless the interrupted new stage has the current settings
    (then it continues and the old one stays beside until it finishes)."""
    previous = _previous(stage_dir)
    if not previous.is_dir():
        return
    if _fingerprint(stage_dir) is not None:  # the new one finished: the old one is obsolete
        shutil.rmtree(previous)
        return
    if not force and _fingerprint(stage_dir, STARTED) == fingerprint:
        return
    shutil.rmtree(stage_dir, ignore_errors=True)
    os.replace(previous, stage_dir)


def _plan_stages(cfg: RiskConfig, root: Path, fresh: bool) -> None:
    """Refuse, before anything is written, stages whose upstream has not finished (``fresh``: the
    folder will be emptied first, so nothing there counts)."""
    wanted = cfg.stage_list
    prints = stage_fingerprints(cfg)
    for i, stage in enumerate(STAGES):
        if stage in wanted or not any(s in wanted for s in STAGES[i + 1 :]):
            continue
        stage_dir = root / stage
        finished = (
            None if fresh else (_fingerprint(stage_dir) or _fingerprint(_previous(stage_dir)))
        )
        if finished != prints[stage]:
            raise InputError(
                f"stage '{stage}' has not finished with these settings; add it to --stages "
                f"(e.g. --stages {','.join(STAGES[: i + 1])},...)",
                path=stage_dir,
            )


def plan_run(cfg: RiskConfig) -> RunFolder:
    """The rerun rule for the whole run folder (module docstring); nothing is written.

    Raises:
        RunFolderError: the folder is not writable, or holds a run and no flag says what to do.
    """
    path = Path(cfg.run_dir)
    check_writable_dir(path)
    status = run_status(path)
    if status in ("absent", "empty"):
        return RunFolder(path, "new", COMMAND, cfg)
    other = (read_summary(path) or {}).get("command")
    if cfg.overwrite:
        return RunFolder(path, "overwrite", COMMAND, cfg)
    if not (cfg.resume or cfg.force_recreate):
        what = f"a {status} run" + (f" of {other}" if other else "")
        raise RunFolderError(
            f"already holds {what}; pass --resume to continue it (finished stages with unchanged "
            "settings are skipped), --force_recreate to redo the requested stages, --overwrite to "
            "replace it, or choose another --output_dir",
            path=path,
        )
    if other and other != COMMAND:
        raise RunFolderError(
            f"--resume: this folder holds a run of {other}, not of {COMMAND}", path=path
        )
    return RunFolder(path, "resume", COMMAND, cfg)


def _rel(path: str | os.PathLike, root: Path) -> str:
    """``path`` as stored in a stage marker: relative to the run folder when inside it (the folder
    can move), else absolute (a relative path would be read back against the run folder by
    :func:`_abs`); GDAL virtual paths and URLs as given."""
    text = os.fspath(path)
    if text.startswith("/vsi") or "://" in text:
        return text
    p = Path(text).resolve()
    try:
        return str(p.relative_to(root.resolve()))
    except ValueError:
        return str(p)


def _abs(path: str, root: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() or path.startswith("/vsi") or "://" in path else root / p


def _run_stage(stage: str, cfg: RiskConfig, root: Path) -> dict[str, Any]:
    """Run one stage into ``root/<stage>``; returns the info stored in its marker."""
    prepare_dir, train_dir, infer_dir, eval_dir = (root / s for s in STAGES)
    if stage == "prepare":
        from risk_mapping.prepare import prepare_dataset

        summary = prepare_dataset(cfg, prepare_dir)
        return {
            "stack": _rel(summary["stack"], root),
            "labels": _rel(summary["labels"], root),
            "n_tiles": {s: summary[s]["n_tiles"] for s in ("train", "val", "test")},
            "n_synthetic": summary["train"]["n_synthetic"],
        }
    if stage == "train":
        from risk_mapping.train import train_models

        ckpts = train_models(cfg, prepare_dir, train_dir)
        return {"checkpoints": [_rel(c, root) for c in ckpts]}
    prepared = _read_json(prepare_dir / MARKER) or {}
    stack, labels = _abs(prepared["stack"], root), _abs(prepared["labels"], root)
    if stage == "infer":
        from eo_common.raster import finalize_geotiff

        from risk_mapping.crf import crf_raster
        from risk_mapping.predict import (
            finalize_class_map,
            inference_device,
            load_models,
            predict_raster,
        )

        ckpts = [_abs(c, root) for c in (_read_json(train_dir / MARKER) or {})["checkpoints"]]
        t0 = time.perf_counter()
        device = inference_device(cfg.run.accelerator)
        paths = predict_raster(
            load_models(ckpts, device),
            stack,
            infer_dir,
            cfg.inference,
            device=device,
            seed=cfg.seed,
            progress=cfg.progress,
        )
        info: dict[str, Any] = {
            "outputs": {k: _rel(v, root) for k, v in paths.items()},
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
                progress=cfg.progress,
            )
            finalize_class_map(infer_dir / "class_map_crf.tif", "risk class after dense CRF")
            finalize_geotiff(infer_dir / "susceptibility_crf.tif", cog=cfg.inference.cog)
            info["outputs"]["class_map_crf"] = _rel(infer_dir / "class_map_crf.tif", root)
            info["outputs"]["susceptibility_crf"] = _rel(infer_dir / "susceptibility_crf.tif", root)
            info["crf_seconds"] = time.perf_counter() - t0
        return info
    if stage == "evaluate":
        from risk_mapping.evaluate import evaluate_products, write_evaluation

        variants = evaluate_products(
            infer_dir,
            labels,
            split_mask_path=prepare_dir / "split_mask.tif",
            split=cfg.evaluation.split,
        )
        write_evaluation(
            eval_dir,
            variants,
            cfg.evaluation.targets,
            cfg.evaluation.baseline_metrics,
            extra={"split": cfg.evaluation.split, "labels": str(labels)},
        )
        return {"metrics": "evaluate/metrics.json", "report": "evaluate/report.md"}
    raise ValueError(f"unknown stage {stage!r}")


def _execute(stage: str, cfg: RiskConfig, root: Path, fingerprint: str, rebuild: bool) -> dict:
    """Run a stage; a finished one being redone (``rebuild``) is kept beside until success."""
    stage_dir = root / stage
    previous = _previous(stage_dir)
    continuing = _fingerprint(stage_dir, STARTED) == fingerprint and not cfg.force_recreate
    if rebuild and stage_dir.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(stage_dir, previous)
    elif stage_dir.exists() and not continuing:
        shutil.rmtree(stage_dir)  # an unfinished stage of other settings: nothing finished is lost
    stage_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    atomic_save_json(
        {"fingerprint": fingerprint, "started": dt.datetime.now(dt.UTC).isoformat()},
        stage_dir / STARTED,
    )
    try:
        info = _run_stage(stage, cfg, root)
    except BaseException as exc:
        if previous.is_dir() and not isinstance(exc, KeyboardInterrupt):
            shutil.rmtree(stage_dir, ignore_errors=True)
            os.replace(previous, stage_dir)
            _say(f"{stage}: failed; the previous finished outputs are back in {stage_dir}")
        raise
    info.update(
        fingerprint=fingerprint,
        seconds=time.perf_counter() - start,
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    atomic_save_json(info, stage_dir / MARKER)
    shutil.rmtree(previous, ignore_errors=True)
    return info


def _config_files(root: Path) -> dict[str, bytes]:
    """``config.yaml`` and its ``config.before-resume-*`` copies, to undo a failed rerun's."""
    return {p.name: p.read_bytes() for p in root.glob("config*.yaml")}


def _restore_config_files(root: Path, saved: dict[str, bytes]) -> None:
    from eo_common.io import atomic_write

    for path in root.glob("config*.yaml"):
        if path.name not in saved:
            path.unlink()
    for name, data in saved.items():
        with atomic_write(root / name, "wb") as f:
            f.write(data)


def _headline(root: Path, split: str) -> dict[str, float]:
    """The fixed-name headline metrics of a finished evaluate stage (empty when there is none)."""
    metrics = _read_json(root / "evaluate" / "metrics.json") or {}
    out: dict[str, float] = {}
    for variant, suffix in (("no_crf", ""), ("crf", "_crf")):
        values = (metrics.get("variants") or {}).get(variant) or {}
        for name in HEADLINE:
            if isinstance(values.get(name), int | float):
                out[f"{split}/{name}{suffix}"] = float(values[name])
    return out


def run_pipeline(cfg: RiskConfig) -> dict[str, Any]:
    """Run the requested stages by the rerun rule; return the run's ``summary.json`` record.

    Raises:
        RunFolderError, InputError, ConfigError: refused before anything is written (one line).
    """
    folder = plan_run(cfg)
    root = folder.path
    _plan_stages(cfg, root, fresh=folder.mode != "resume")
    prints = stage_fingerprints(cfg)
    wanted = cfg.stage_list
    will_prepare = "prepare" in wanted and (
        cfg.force_recreate
        or folder.mode != "resume"
        or _fingerprint(root / "prepare") != prints["prepare"]
    )
    from risk_mapping.sources import check_inputs

    problems = check_inputs(cfg, rasters=will_prepare, encoder="train" in wanted)
    if problems:
        raise ConfigError(problems)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    record = cfg.with_run(
        stages=",".join(STAGES), force_recreate=False, resume=False, overwrite=False
    )
    folder.cfg = record
    saved = _config_files(root) if folder.mode == "resume" else None
    folder.open()
    status: dict[str, str] = {}
    downstream = False
    try:
        for stage in STAGES:
            stage_dir = root / stage
            _recover(stage_dir, prints[stage], cfg.force_recreate)
            if stage not in wanted:
                continue
            done = _fingerprint(stage_dir)
            if done == prints[stage] and not cfg.force_recreate and not downstream:
                _say(f"{stage}: finished before with these settings, skipped")
                status[stage] = "skipped"
                continue
            _say(f"{stage}: running")
            _execute(stage, cfg, root, prints[stage], rebuild=done is not None)
            status[stage] = "ran"
            downstream = True
    except BaseException as exc:
        state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        if saved is not None and state == "failed":
            _restore_config_files(root, saved)  # the folder's config.yaml describes its outputs
        folder.finish(
            status=state, error=f"{type(exc).__name__}: {exc}"[:2000], extra={"stages": status}
        )
        raise
    paths = {s: root / s for s in STAGES if _fingerprint(root / s) == prints[s]}
    if "evaluate" in paths:
        paths = {**paths, "report": root / "evaluate" / "report.md"}
    metrics = _headline(root, cfg.evaluation.split) if "evaluate" in paths else {}
    _say(", ".join(f"{k}: {v}" for k, v in status.items()))
    return folder.finish(
        metrics=metrics,
        paths=paths,
        monitor=f"{cfg.evaluation.split}/kappa",
        extra={"stages": status, "fingerprints": prints},
    )
