"""The Optuna storage of a sweep, its study, and what happens to the trials of a worker that dies.

**Embedded storage (the default): an Optuna journal file, ``<sweep>/study.journal``.** Several worker
processes on one machine append to it under a file lock (``JournalFileBackend``; symlink lock, an
open-file lock on Windows); every process replays the log, so there is no server and no database
file that a second writer could find locked. SQLite was the alternative and was not chosen: its one
writer at a time makes concurrent workers wait on, and after five seconds fail with, "database is
locked", and Optuna itself advises against SQLite for parallel optimisation.

**Any other Optuna storage** with ``--storage``: ``postgresql://user@host:5432/db`` (the multi-node
path), ``mysql://...``, ``sqlite:///file.db``, or another ``*.journal`` / ``journal:///path`` file.

**Dead workers.** A worker records a heartbeat for the trial it runs. On an RDB storage this is
Optuna's own heartbeat (``RDBStorage(heartbeat_interval, grace_period,
heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback)``, failed by
:func:`optuna.storages.fail_stale_trials`). Optuna's journal storage has no heartbeat, so here the
worker stores ``{host, pid, process start, beat time}`` in the trial's user attributes; a trial whose
worker process is gone (same host: the pid is dead or reused; any host: no beat for ``grace_s``) is
failed and queued again with the same :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`. A
trial is failed by one process only (the storage refuses to finish a finished trial), so a retry is
queued once. The retry runs in the original trial's run folder with ``--resume``.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from .spec import SweepSpec

__all__ = [
    "JOURNAL_NAME",
    "open_storage",
    "describe_storage",
    "create_or_load_study",
    "load_study",
    "reap_dead_trials",
    "worker_info",
    "process_alive",
    "budget_used",
    "is_surplus",
    "trial_id_of",
    "make_pruner",
]

JOURNAL_NAME = "study.journal"
WORKER_ATTR = "eolab_worker"
SURPLUS_ATTR = "eolab_surplus"
QUEUED_ATTR = "eolab_queued"


def quiet_optuna() -> None:
    """Optuna's info logging and experimental-feature warnings off (eolab prints its own lines)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def describe_storage(url: str, sweep_dir: Path) -> str:
    """The storage for messages, with any password masked."""
    if not url:
        return str(sweep_dir / JOURNAL_NAME)
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _journal_path(url: str, sweep_dir: Path) -> Path | None:
    if not url:
        return sweep_dir / JOURNAL_NAME
    if url.startswith("journal://"):
        return Path(url[len("journal://") :])
    if "://" not in url and (url.endswith(".journal") or url.endswith(".log")):
        return Path(url)
    return None


def open_storage(
    url: str, sweep_dir: Path, *, heartbeat_s: int = 30, grace_s: int = 120, max_retry: int = 3
) -> Any:
    """The Optuna storage object; :class:`UserError` (one line) when it cannot be reached.

    Args:
        url: ``""`` for ``<sweep_dir>/study.journal``, a journal file, or an RDB URL.
        sweep_dir: the sweep folder.
        heartbeat_s, grace_s: heartbeat period and how long without one makes a trial stale.
        max_retry: how often a trial of a dead worker is queued again.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import (
        JournalFileBackend,
        JournalFileOpenLock,
        JournalFileSymlinkLock,
        JournalStorage,
    )

    quiet_optuna()
    journal = _journal_path(url, sweep_dir)
    shown = describe_storage(url, sweep_dir)
    if journal is not None:
        try:
            journal.parent.mkdir(parents=True, exist_ok=True)
            lock_cls = JournalFileOpenLock if os.name == "nt" else JournalFileSymlinkLock
            backend = JournalFileBackend(str(journal), lock_obj=lock_cls(str(journal)))
            return JournalStorage(backend)
        except OSError as exc:
            raise UserError(
                f"cannot open the journal: {exc.strerror or exc}", path=journal
            ) from None
    try:
        return RDBStorage(
            url,
            heartbeat_interval=max(1, int(heartbeat_s)),
            grace_period=max(1, int(grace_s)),
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
        )
    except ModuleNotFoundError as exc:
        raise UserError(
            f"--storage {shown}: needs the database driver {exc.name} "
            "(PostgreSQL: 'uv sync --extra postgres')"
        ) from None
    except (optuna.exceptions.StorageInternalError, ValueError, ImportError) as exc:
        raise UserError(f"--storage {shown}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises OperationalError, ArgumentError, ...
        raise UserError(f"--storage {shown}: cannot connect ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def make_pruner(pruning: dict[str, Any]) -> Any:
    """Optuna's pruner for a sweep's ``pruning`` setting (median, or none)."""
    import optuna

    if pruning.get("type") != "median":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(pruning["startup_trials"]),
        n_warmup_steps=int(pruning["warmup_epochs"]),
    )


def _sampler(spec: SweepSpec, salt: int = 0) -> Any:
    import optuna

    seed = (spec.seed + 7919 * salt) % 2**32
    if spec.mode != "space":  # grid and variants are queued trials: the sampler is never asked
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def load_study(storage: Any, spec: SweepSpec, salt: int = 0) -> Any:
    """The sweep's study with its sampler (seeded with ``spec.seed`` and ``salt``) and pruner."""
    import optuna

    return optuna.load_study(
        study_name=spec.name,
        storage=storage,
        sampler=_sampler(spec, salt),
        pruner=make_pruner(spec.pruning),
    )


def create_or_load_study(storage: Any, spec: SweepSpec, *, shown: str) -> Any:
    """Create the study (queueing every grid point / variant once) or load it and check that it is
    the same sweep; :class:`UserError` when the storage holds a different sweep of that name."""
    import optuna

    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction=spec.direction,
            sampler=_sampler(spec),
            pruner=make_pruner(spec.pruning),
        )
        study.set_user_attr("eolab_spec", spec.as_dict())
        study.set_user_attr("eolab_spec_id", spec.identity())
    except optuna.exceptions.DuplicatedStudyError:
        study = load_study(storage, spec)
        theirs = study.user_attrs.get("eolab_spec_id")
        if theirs is None:  # the creator died before writing it: complete its job
            study.set_user_attr("eolab_spec", spec.as_dict())
            study.set_user_attr("eolab_spec_id", spec.identity())
        elif theirs != spec.identity():
            old = study.user_attrs.get("eolab_spec", {})
            new = spec.as_dict()
            diff = sorted(
                k for k in set(old) | set(new) if k != "trials" and old.get(k) != new.get(k)
            )
            raise UserError(
                f"{shown} holds a different sweep named {spec.name!r} (differs in "
                f"{', '.join(diff) or 'its settings'}); give the sweep another name: or --out"
            ) from None
        if study.direction.name.lower() != spec.direction:
            raise UserError(
                f"{shown}: study {spec.name!r} is to {study.direction.name.lower()}"
            ) from None
    _queue_points(study, spec)
    return study


def _queue_points(study: Any, spec: SweepSpec) -> None:
    """Enqueue each grid point / variant once (``eolab_queued`` = its index); idempotent."""
    if spec.mode == "space" or study.user_attrs.get("eolab_queued_all"):
        return
    have = {t.user_attrs.get(QUEUED_ATTR) for t in study.get_trials(deepcopy=False)}
    for index, point in enumerate(spec.points()):
        if index not in have:
            study.enqueue_trial(
                point["params"], user_attrs={QUEUED_ATTR: index}, skip_if_exists=False
            )
    study.set_user_attr("eolab_queued_all", True)


def trial_id_of(storage: Any, study: Any, number: int) -> int:
    """The storage's id of trial ``number`` (public storage API)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


# ---------------------------------------------------------------------------- liveness


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` exists, is not a zombie and (when known) started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state in ("Z", "X"):
            return False
    except OSError:
        pass
    return start is None or _process_start(pid) in (None, start)


def worker_info() -> dict[str, Any]:
    """``{host, pid, start, beat}`` of this worker process."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _process_start(pid),
        "beat": time.time(),
    }


def _dead(info: dict[str, Any] | None, started: Any, grace_s: float) -> bool:
    now = time.time()
    if not info:  # died between taking the trial and its first beat
        return started is not None and now - started.timestamp() > grace_s
    if info.get("host") == socket.gethostname() and info.get("pid"):
        if not process_alive(int(info["pid"]), info.get("start")):
            return True
    return now - float(info.get("beat", now)) > grace_s


def reap_dead_trials(study: Any, storage: Any, *, grace_s: float, max_retry: int) -> list[int]:
    """Fail the running trials of dead workers and queue their retries; the failed numbers."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    if isinstance(storage, RDBStorage):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        return sorted(before - after)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead(trial.user_attrs.get(WORKER_ATTR), trial.datetime_start, grace_s):
            continue
        tid = trial_id_of(storage, study, trial.number)
        try:  # (a journal refuses attributes of a finished trial: say why first)
            storage.set_trial_user_attr(tid, "error", "its worker process died; retried")
            if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first and queued the retry
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, storage.get_trial(tid))
        failed.append(trial.number)
    return failed


# ---------------------------------------------------------------------------- the trial budget


def _retired(trials: Iterable[Any]) -> set[int]:
    """Numbers of trials replaced by a retry (the retry counts instead)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    out: set[int] = set()
    for t in trials:
        out.update(RetryHeartbeatStaleTrialCallback.retry_history(t))
    return out


def budget_used(trials: list[Any]) -> int:
    """Trials that count towards ``trials``: all but surplus ones and those replaced by a retry."""
    retired = _retired(trials)
    return sum(1 for t in trials if t.number not in retired and not t.user_attrs.get(SURPLUS_ATTR))


def is_surplus(spec: SweepSpec, trials: list[Any], trial: Any) -> bool:
    """Whether a freshly taken trial is beyond the budget (two workers took the last place at once;
    trial numbers are given out atomically, so the higher number yields), or, for grid/variants,
    is not one of the queued points."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None:
        return False
    if spec.mode != "space":
        return trial.user_attrs.get(QUEUED_ATTR) is None
    earlier = [t for t in trials if t.number < trial.number]
    return budget_used(earlier) >= spec.trials
