"""``eolab sweep run``: validate the sweep, open the study, start the workers, say how it ended.

Everything the user can get wrong is checked before anything is written: the sweep file (see
:mod:`eo_common.sweep.spec`), the sweep folder (writable; if it holds a sweep already, the same one:
only ``trials`` may grow), and the storage (reachable). Then the study is created or loaded (a rerun
resumes it), ``<sweep>/sweep.yaml`` records the resolved sweep, and ``workers`` worker processes
(``--gpus 0,1``: that many per GPU, each with its ``CUDA_VISIBLE_DEVICES``) take trials until none is
left; one worker runs in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError, check_writable_dir
from ..io import atomic_write
from .spec import load_sweep
from .storage import (
    SURPLUS_ATTR,
    budget_used,
    create_or_load_study,
    describe_storage,
    open_storage,
)
from .worker import WorkerSettings, run_worker, settings_json

__all__ = ["run_sweep", "study_counts", "sweep_folder", "worker_devices"]


def sweep_folder(cfg: Any, spec: Any) -> Path:
    """``--out``, else the file's ``output_dir``, else ``runs/sweeps/<name>``."""
    return Path(cfg.out or spec.output_dir or Path("runs") / "sweeps" / spec.name)


def _parse_gpus(text: str) -> list[str]:
    items = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in items if not g.isdigit()]
    if bad:
        raise UserError(f"--gpus: comma-separated GPU ids like 0,1,2, got {text!r}")
    return items


def worker_devices(workers: int, gpus: list[str]) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each worker: ``workers`` per GPU, or None each without ``--gpus``.

    Example:
        >>> worker_devices(2, ["0", "3"]), worker_devices(3, [])
        (['0', '0', '3', '3'], [None, None, None])
    """
    if not gpus:
        return [None] * workers
    return [g for g in gpus for _ in range(workers)]


def study_counts(study: Any) -> dict[str, int]:
    """``{"complete": n, "pruned": n, "failed": n, "running": n, "waiting": n}`` of the trials that
    count (not surplus, not replaced by a retry)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    trials = study.get_trials(deepcopy=False)
    retired = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    names = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
    counts: Counter = Counter()
    for t in trials:
        if t.number in retired or t.user_attrs.get(SURPLUS_ATTR):
            continue
        counts[names.get(t.state.name, t.state.name.lower())] += 1
    return {k: counts.get(k, 0) for k in ("complete", "pruned", "failed", "running", "waiting")}


def _select(spec: Any, seeds: list[int], variants: list[str]) -> None:
    """Apply ``--seeds`` and ``--variants`` to the sweep (checked before anything is written)."""
    if seeds:
        if len(set(seeds)) != len(seeds):
            raise UserError(f"--seeds: repeated seed in {seeds}")
        spec.seeds = [int(s) for s in seeds]
    if not variants:
        return
    if spec.mode != "variants":
        raise UserError(f"--variants: a {spec.mode} sweep has no named variants")
    unknown = [v for v in variants if v not in spec.variants]
    if unknown:
        raise UserError(
            f"--variants: no variant {unknown} in this sweep ({', '.join(spec.variants)})"
        )
    if spec.baseline not in variants:
        raise UserError(
            f"--variants: include the baseline {spec.baseline!r} (deltas are against it)"
        )
    spec.variants = {v: spec.variants[v] for v in dict.fromkeys(variants)}
    spec.trials = len(spec.variants)


def run_sweep(cfg: Any) -> int:
    """Run (or resume) a sweep; exit status 0 when every trial has ended, 1 otherwise."""
    import yaml

    spec, command = load_sweep(cfg.sweep, sets=cfg.set, base_config=cfg.base)
    if cfg.trials:
        if spec.mode != "space":
            raise UserError(
                f"--trials: a {spec.mode} sweep runs each of its {spec.trials} points once"
            )
        spec.trials = int(cfg.trials)
    _select(spec, list(cfg.seeds), list(cfg.variants))
    gpus = _parse_gpus(cfg.gpus)
    folder = sweep_folder(cfg, spec)
    check_writable_dir(folder, "sweep folder")
    copy = folder / "sweep.yaml"
    if copy.is_file():
        old = yaml.safe_load(copy.read_text(encoding="utf-8")) or {}
        new = spec.as_dict()
        diff = sorted(k for k in set(old) | set(new) if k != "trials" and old.get(k) != new.get(k))
        if diff:
            raise UserError(
                f"holds another sweep (differs in {', '.join(diff)}); choose another --out",
                path=folder,
            )
    shown = describe_storage(cfg.storage, folder)
    storage = open_storage(
        cfg.storage,
        folder,
        heartbeat_s=cfg.heartbeat_s,
        grace_s=cfg.grace_s,
        max_retry=cfg.max_retry,
    )
    study = create_or_load_study(storage, spec, shown=shown)
    with atomic_write(copy, "w") as f:
        f.write(f"# eolab sweep {spec.name}: the resolved sweep file (from {spec.source})\n")
        yaml.safe_dump(spec.as_dict(), f, sort_keys=False)
    settings = WorkerSettings(
        sweep_dir=str(folder),
        storage=cfg.storage,
        heartbeat_s=cfg.heartbeat_s,
        grace_s=cfg.grace_s,
        max_retry=cfg.max_retry,
    )
    devices = worker_devices(cfg.workers, gpus)
    n_workers = len(devices)
    before = study_counts(study)
    print(
        f"eolab sweep {spec.name}: {spec.command}, {spec.mode} of {spec.trials} trial(s) x "
        f"{len(spec.seeds)} seed(s), {spec.direction} {spec.metric}; storage {shown}; "
        f"{n_workers} worker(s); {before['complete']} trial(s) already complete",
        flush=True,
    )
    t0 = time.perf_counter()
    if n_workers == 1 and not gpus:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            run_worker(settings, spec, command)
        finally:
            signal.signal(signal.SIGTERM, previous)
        status = 0
    else:
        status = _run_workers(settings, devices)
    counts = study_counts(study)
    seconds = time.perf_counter() - t0
    print(
        f"eolab sweep {spec.name}: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed, {counts['running'] + counts['waiting']} not done "
        f"({seconds:.1f} s); report: eolab sweep report {folder}",
        flush=True,
    )
    done = counts["running"] == 0 and counts["waiting"] == 0
    if spec.mode == "space":
        done = done and budget_used(study.get_trials(deepcopy=False)) >= spec.trials
    return 0 if done and status == 0 else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run_workers(settings: WorkerSettings, devices: list[str | None]) -> int:
    """Start one worker process per entry of ``devices`` and wait for them; 0 if all ended well."""
    procs: list[tuple[int, subprocess.Popen]] = []
    for index, device in enumerate(devices):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        settings.index = index
        argv = [sys.executable, "-m", "eo_common.sweep.worker", settings_json(settings)]
        procs.append((index, subprocess.Popen(argv, env=env)))
    status = 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        pending = dict(procs)
        while pending:
            for index, proc in list(pending.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del pending[index]
                if rc != 0:
                    status = 1
                    why = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
                    print(
                        f"eolab sweep: worker {index} ended ({why}); its trial is failed and "
                        "queued again by the other workers or the next run",
                        file=sys.stderr,
                        flush=True,
                    )
            time.sleep(0.2)
    except KeyboardInterrupt:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return status
