"""A sweep worker: takes trials from the shared study and runs each seed as the ordinary command.

Each seed of a trial runs in its own subprocess (:mod:`eo_common.sweep.launch`), as
``<command> --config <sweep>/inputs/<trial>.yaml``, and leaves an ordinary run folder
``<sweep>/trials/<number>[_s<seed>]/``. Subprocesses rather than calls in this process, because a
crash (segfault, out-of-memory kill, CUDA error) then costs one trial and not the worker, all GPU
memory is released between trials, no global state (seeds, threads, CUDA context, matplotlib) leaks
from one trial into the next, and the trial is exactly the command a user runs by hand. The price is
the command's start-up (imports) per seed, measured in ``docs/benchmarks.md``.

The loop: fail the trials of dead workers (queuing their retries), then take a trial while one is
queued or the budget is not used up; wait while trials run elsewhere (one of them may still fail and be
queued again); stop when nothing is left. A trial that fails (bad input, NaN, non-zero exit) is
recorded as failed with its error line and the worker goes on. On Ctrl-C or SIGTERM the worker stops
its trial's process, marks the trial failed and queues it again, so the next ``eolab sweep run``
resumes it in its folder.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..command import Command
from ..errors import ConfigError
from ..io import atomic_write
from ..runs import read_summary, resolved_config_dict
from . import TRIAL_ENV
from .pruning import PRUNED_ATTR
from .spec import SweepSpec, parse_trial_config
from .storage import (
    SURPLUS_ATTR,
    WORKER_ATTR,
    budget_used,
    is_surplus,
    load_study,
    open_storage,
    reap_dead_trials,
    trial_id_of,
    worker_info,
)
from .values import run_values

__all__ = ["WorkerSettings", "run_worker", "trial_folder_name", "main"]


@dataclass
class WorkerSettings:
    """Where the sweep lives and how dead workers are detected (shared by all its workers)."""

    sweep_dir: str
    storage: str = ""
    heartbeat_s: int = 30
    grace_s: int = 120
    max_retry: int = 3
    index: int = 0


@dataclass
class SeedResult:
    state: str  # "ok", "pruned", "failed"
    value: float | None = None
    error: str = ""
    epoch: int | None = None


def trial_folder_name(number: int, seed: int, n_seeds: int) -> str:
    """``0007`` (one seed) or ``0007_s42``.

    Example:
        >>> trial_folder_name(7, 42, 3), trial_folder_name(7, 0, 1)
        ('0007_s42', '0007')
    """
    return f"{number:04d}" + (f"_s{seed}" if n_seeds > 1 else "")


def _say(settings: WorkerSettings, text: str) -> None:
    print(f"[worker {settings.index}] {text}", flush=True)


class _Heartbeat:
    """Records that this worker still runs trial ``tid``: Optuna's RDB heartbeat, or (journal
    storage) ``eolab_worker = {host, pid, start, beat}`` in the trial's user attributes."""

    def __init__(self, storage: Any, tid: int, interval: float):
        from optuna.storages import RDBStorage

        self.storage, self.tid, self.interval = storage, tid, max(0.5, float(interval))
        self.rdb = isinstance(storage, RDBStorage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="eolab-heartbeat")

    def beat(self) -> None:
        if self.rdb:
            self.storage.record_heartbeat(self.tid)
        else:
            self.storage.set_trial_user_attr(self.tid, WORKER_ATTR, worker_info())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001,S112 - a missed beat is retried; the trial goes on
                continue

    def __enter__(self) -> _Heartbeat:
        self.storage.set_trial_user_attr(self.tid, WORKER_ATTR, worker_info())
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Worker:
    def __init__(self, settings: WorkerSettings, spec: SweepSpec, command: Command):
        self.s, self.spec, self.command = settings, spec, command
        self.dir = Path(settings.sweep_dir)
        self.storage = open_storage(
            settings.storage,
            self.dir,
            heartbeat_s=settings.heartbeat_s,
            grace_s=settings.grace_s,
            max_retry=settings.max_retry,
        )
        salt = settings.index + 1 + 1000 * int(time.time() % 100000)
        self.study = load_study(self.storage, spec, salt=salt)
        self.storage_env = settings.storage or "journal://" + str(
            (self.dir / "study.journal").resolve()
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> Counter:
        from optuna.trial import TrialState

        counts: Counter = Counter()
        waiting_said = False
        while True:
            for number in reap_dead_trials(
                self.study, self.storage, grace_s=self.s.grace_s, max_retry=self.s.max_retry
            ):
                _say(self.s, f"trial {number}: its worker is gone; marked failed and queued again")
            trials = self.study.get_trials(deepcopy=False)
            queued = any(t.state == TrialState.WAITING for t in trials)
            room = self.spec.mode == "space" and budget_used(trials) < self.spec.trials
            if queued or room:
                counts[self.run_trial()] += 1
                waiting_said = False
                continue
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if not running:
                return counts
            if not waiting_said:
                _say(self.s, f"waiting for trial(s) {running} running elsewhere")
                waiting_said = True
            time.sleep(min(5.0, max(0.5, self.s.heartbeat_s / 2)))

    def run_trial(self) -> str:
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        trial = self.study.ask()
        tid = trial_id_of(self.storage, self.study, trial.number)
        with _Heartbeat(self.storage, tid, self.s.heartbeat_s):
            try:
                frozen = self.storage.get_trial(tid)
                if is_surplus(self.spec, self.study.get_trials(deepcopy=False), frozen):
                    self.storage.set_trial_user_attr(tid, SURPLUS_ATTR, True)
                    self.study.tell(trial, state=TrialState.FAIL)
                    return "surplus"
                overrides = self.spec.suggest(trial)
                origin = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
                if frozen.user_attrs.get("error"):  # a retry inherits its original's attributes
                    self.storage.set_trial_user_attr(tid, "error", "")
                return self._run_seeds(trial, tid, overrides, origin)
            except KeyboardInterrupt:
                self._give_back(tid)
                raise

    def _give_back(self, tid: int) -> None:
        """Interrupted: fail the trial and queue it again (resumed in its folder next time)."""
        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_user_attr(tid, "error", "interrupted; queued again")
            if self.storage.set_trial_state_values(tid, state=TrialState.FAIL):
                retry = RetryHeartbeatStaleTrialCallback(max_retry=self.s.max_retry)
                retry(self.study, self.storage.get_trial(tid))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def _run_seeds(
        self, trial: Any, tid: int, overrides: dict[str, Any], origin: int | None
    ) -> str:
        from optuna.trial import TrialState

        number = trial.number if origin is None else origin
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base config"
        again = f" (retry of trial {origin})" if origin is not None else ""
        _say(self.s, f"trial {trial.number}{again}: {shown}")
        t0 = time.perf_counter()
        values: dict[str, float] = {}
        dirs: list[str] = []
        for i, seed in enumerate(self.spec.seeds):
            name = trial_folder_name(number, seed, len(self.spec.seeds))
            dirs.append(f"trials/{name}")
            self.storage.set_trial_user_attr(tid, "run_dirs", dirs)
            result = self._run_seed(
                tid, overrides, seed, name, first=i == 0, resume=origin is not None
            )
            if result.state == "pruned":
                self.storage.set_trial_user_attr(tid, "seed_values", values)
                self.study.tell(trial, state=TrialState.PRUNED)
                _say(self.s, f"trial {trial.number}: pruned after epoch {result.epoch}")
                return "pruned"
            if result.state == "failed":
                self.storage.set_trial_user_attr(tid, "error", result.error[:1000])
                self.study.tell(trial, state=TrialState.FAIL)
                _say(self.s, f"trial {trial.number}: failed: {result.error}")
                return "failed"
            values[str(seed)] = float(result.value)
            self.storage.set_trial_user_attr(tid, "seed_values", values)
        numbers = list(values.values())
        mean = statistics.fmean(numbers)
        sd = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        self.storage.set_trial_user_attr(tid, "value_sd", sd)
        self.storage.set_trial_user_attr(tid, "seconds", round(time.perf_counter() - t0, 2))
        self.study.tell(trial, mean)
        spread = f" ± {sd:.4g} over {len(numbers)} seeds" if len(numbers) > 1 else ""
        _say(self.s, f"trial {trial.number}: {self.spec.metric} {mean:.4g}{spread}")
        return "complete"

    def _run_seed(
        self,
        tid: int,
        overrides: dict[str, Any],
        seed: int,
        name: str,
        *,
        first: bool,
        resume: bool,
    ) -> SeedResult:
        run_dir = self.dir / "trials" / name
        old = read_summary(run_dir)
        metric = self.spec.metric
        if (
            resume
            and old
            and old.get("status") == "finished"
            and metric in (old.get("metrics") or {})
        ):
            return SeedResult(
                "ok", float(old["metrics"][metric])
            )  # finished before its worker died
        values = {
            **overrides,
            **run_values(self.command, self.dir / "trials", name, seed, resume=resume),
        }
        try:
            cfg = parse_trial_config(self.command, self.spec, values)
        except ConfigError as err:
            return SeedResult("failed", error="; ".join(err.problems))
        inputs = self.dir / "inputs" / f"{name}.yaml"
        inputs.parent.mkdir(parents=True, exist_ok=True)
        import yaml

        with atomic_write(inputs, "w") as f:
            yaml.safe_dump(resolved_config_dict(cfg), f, sort_keys=False)
        env = dict(os.environ)
        env[TRIAL_ENV] = json.dumps(
            {
                "storage": self.storage_env,
                "sweep_dir": str(self.dir.resolve()),
                "study": self.spec.name,
                "trial_id": tid,
                "metric": metric,
                "pruning": self.spec.pruning,
                "report": first,
                "parent_pid": os.getpid(),
            }
        )
        env["PYTHONUNBUFFERED"] = "1"
        log_file = self.dir / "logs" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "eo_common.sweep.launch",
            self.spec.command,
            "--config",
            str(inputs),
        ]
        with open(log_file, "ab") as log:
            log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:
                _stop(proc)
                raise
        summary = read_summary(run_dir) or {}
        pruned = self.storage.get_trial(tid).user_attrs.get(PRUNED_ATTR)
        if rc == 0 and summary.get("status") == "finished":
            if pruned:
                return SeedResult("pruned", epoch=pruned.get("epoch"))
            value = (summary.get("metrics") or {}).get(metric)
            if value is None:
                return SeedResult(
                    "failed", error=f"{metric} is not in {run_dir}/summary.json metrics"
                )
            if not math.isfinite(float(value)):
                return SeedResult("failed", error=f"{metric} is {value} (not finite)")
            return SeedResult("ok", float(value))
        if rc < 0:
            error = f"killed by signal {-rc}" + (" (out of memory?)" if -rc == 9 else "")
        else:
            error = summary.get("error") or _last_line(log_file) or f"exit status {rc}"
        return SeedResult("failed", error=f"{error} (log: {log_file})")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_line(log_file: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return lines[-1][:500] if lines else ""


def run_worker(settings: WorkerSettings, spec: SweepSpec, command: Command) -> Counter:
    """Run trials until the sweep has none left for this worker; counts by outcome."""
    return _Worker(settings, spec, command).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m eo_common.sweep.worker SETTINGS_JSON``: one worker started by ``eolab sweep run``."""
    from ..errors import USER_FAULTS, format_user_error
    from .spec import load_sweep

    argv = list(sys.argv[1:] if argv is None else argv)
    settings = WorkerSettings(**json.loads(argv[0]))
    prog = f"eolab sweep worker {settings.index}"

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        spec, command = load_sweep(Path(settings.sweep_dir) / "sweep.yaml")
        counts = run_worker(settings, spec, command)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; its trial is queued again", file=sys.stderr)
        return 130
    except USER_FAULTS as err:
        print(format_user_error(prog, err), file=sys.stderr)
        return 2
    _say(
        settings,
        "done: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no trial left"),
    )
    return 0


def settings_json(settings: WorkerSettings) -> str:
    return json.dumps(asdict(settings))


if __name__ == "__main__":  # pragma: no cover - the subprocess entry
    raise SystemExit(main())
