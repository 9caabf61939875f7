"""Run folders: the one rerun rule, ``config.yaml`` and the ``summary.json`` every command writes.

**The rule** (the same for every command that writes a run folder): a folder that already holds a run
(finished, failed or killed) is never modified unless the user says so.

* no run there (absent or empty folder): the command starts a new run;
* ``--resume``: the run there continues (training from ``checkpoints/last.ckpt``, tile jobs and
  pipeline stages skip finished work). The settings must be those of the run, except for the ones
  marked resumable (epochs, time budget, devices, workers, logging); a difference is refused with the
  fields named. ``--resume`` on an empty folder starts a new run (job scripts can always pass it);
* ``--overwrite``: the run there is replaced, but only once the new run has checked its inputs
  (:meth:`RunFolder.open`); a new run that fails its input checks leaves the old one untouched;
* neither: the command refuses in one line that names the folder and the two flags (exit 2).

A run folder holds ``config.yaml`` (the full resolved config, absolute paths: ``<command> --config
<run>/config.yaml --output_dir other`` repeats the run) and ``summary.json`` (:data:`SUMMARY_SCHEMA`),
written with ``status: running`` when the run starts and completed when it ends.

Nothing here imports torch.

Example:
    >>> from eo_common.config import RunConfig
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Cfg:
    ...     run: RunConfig = field(default_factory=RunConfig)
    >>> folder = RunFolder.plan(Cfg(RunConfig(output_dir=tmp)), "demo-cmd")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import socket
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from .config import config_from_dict, config_to_dict, mentions_path
from .errors import RunFolderError, check_writable_dir
from .io import atomic_save_json, atomic_write, git_commit, package_versions

__all__ = [
    "CONFIG_NAME",
    "SUMMARY_NAME",
    "SUMMARY_SCHEMA",
    "RunFolder",
    "run_status",
    "read_summary",
    "read_config",
    "config_identity",
    "config_hash",
    "config_differences",
    "global_rank_from_env",
]

CONFIG_NAME = "config.yaml"
SUMMARY_NAME = "summary.json"
SUMMARY_SCHEMA = "eolab.summary/1"
#: summary.json keys, in order. ``metrics`` holds the headline metrics under fixed names
#: (``val/psnr``, ``val/mcc``, ``test/kappa``, ...); ``paths`` the checkpoints and reports.
SUMMARY_KEYS = (
    "schema",
    "command",
    "status",
    "package",
    "package_version",
    "git_commit",
    "config_hash",
    "seed",
    "device",
    "started",
    "ended",
    "seconds",
    "best_epoch",
    "epochs_run",
    "monitor",
    "metrics",
    "paths",
    "error",
    "argv",
    "hostname",
    "extra",
)


def global_rank_from_env() -> int:
    """This process's global rank under torchrun / Lightning's DDP launcher (0 otherwise).

    Example:
        >>> global_rank_from_env()  # a plain process
        0
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    local = int(os.environ.get("LOCAL_RANK", 0))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return node * per_node + local


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``summary.json`` of a run folder, or None when absent or unreadable."""
    path = Path(run_dir) / SUMMARY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``config.yaml`` of a run folder as a nested dict, or None."""
    import yaml

    path = Path(run_dir) / CONFIG_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def run_status(run_dir: str | os.PathLike) -> str:
    """``absent``, ``empty``, ``running`` (started, never finished: killed or still going),
    ``failed``, ``finished``, or ``unknown`` (files of a run without a ``summary.json``)."""
    path = Path(run_dir)
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "unknown"
    entries = [p for p in path.iterdir() if not p.name.startswith(".eolab-")]
    if not entries:
        return "empty"
    summary = read_summary(path)
    if summary is None:
        return "unknown"
    return str(summary.get("status", "finished"))


def _leaf_meta(cls: type, prefix: str = "") -> dict[str, dict[str, Any]]:
    import typing

    out: dict[str, dict[str, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            out.update(_leaf_meta(hint, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = dict(f.metadata)
    return out


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _absolute(value: Any, is_path: bool) -> Any:
    if not is_path or value in (None, ""):
        return value
    if isinstance(value, list):
        return [_absolute(v, True) for v in value]
    text = str(value)
    if "://" in text or text.startswith("/vsi"):
        return text
    return str(Path(text).expanduser().resolve())


def _path_keys(cfg: Any) -> set[str]:
    import typing

    out: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            hint = hints[f.name]
            if isinstance(hint, type) and is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            elif mentions_path(hint) or f.metadata.get("path"):
                out.add(f"{prefix}{f.name}")

    walk(type(cfg), "")
    return out


def resolved_config_dict(cfg: Any) -> dict[str, Any]:
    """``config_to_dict`` with every path made absolute (what ``config.yaml`` stores)."""
    paths = _path_keys(cfg)

    def walk(d: dict[str, Any], prefix: str) -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out[k] = (
                walk(v, f"{key}.")
                if isinstance(v, dict) and key not in paths
                else (_absolute(v, key in paths))
            )
        return out

    return walk(config_to_dict(cfg), "")


def config_identity(cfg: Any, *, ignore_resumable: bool = False) -> dict[str, Any]:
    """The flat ``{key: value}`` of the fields that make the experiment what it is.

    Fields declared with ``identity=False`` (output folder, workers, progress bars) are left out, and
    with ``ignore_resumable`` also those that may change on ``--resume`` (epochs, time budget).
    """
    meta = _leaf_meta(type(cfg))
    flat = _flat(resolved_config_dict(cfg))
    out = {}
    for key, value in flat.items():
        m = meta.get(key, {})
        if not m.get("identity", True):
            continue
        if ignore_resumable and m.get("resumable"):
            continue
        out[key] = value
    return out


def config_hash(cfg: Any) -> str:
    """16 hex digits of the SHA-256 of :func:`config_identity` (the key of a finished experiment).

    Example:
        >>> from eo_common.config import OptimConfig
        >>> config_hash(OptimConfig()) == config_hash(OptimConfig(lr=1e-3))
        True
        >>> config_hash(OptimConfig()) == config_hash(OptimConfig(lr=2e-3))
        False
    """
    text = json.dumps(config_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_differences(cfg: Any, saved: dict[str, Any], *, ignore_resumable: bool) -> list[str]:
    """``key (saved -> now)`` for each identity field where ``cfg`` differs from a saved config."""
    try:
        old = config_from_dict(type(cfg), saved)
    except (TypeError, ValueError) as exc:
        return [f"the saved config cannot be read ({exc})"]
    a = config_identity(old, ignore_resumable=ignore_resumable)
    b = config_identity(cfg, ignore_resumable=ignore_resumable)
    return [
        f"{k} ({a.get(k)!r} -> {b.get(k)!r})"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


@functools.cache
def _distribution_of(module: str) -> tuple[str | None, str | None]:
    """The installed distribution of a top-level module (``risk_mapping`` -> ``risk-mapping``).

    The conventional name (underscores as dashes) is tried first: scanning every installed
    distribution costs seconds on a large environment.
    """
    from importlib import metadata

    for name in (module.replace("_", "-"), module):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    names = metadata.packages_distributions().get(module, [])
    if not names:
        return None, None
    return names[0], package_versions([names[0]]).get(names[0])


class RunFolder:
    """The run folder of one command invocation, planned by the rerun rule.

    Attributes:
        path: the folder.
        mode: ``"new"``, ``"resume"`` or ``"overwrite"``.
        command: the command's name (``cr-train``).
    """

    def __init__(self, path: Path, mode: str, command: str, cfg: Any):
        self.path = Path(path)
        self.mode = mode
        self.command = command
        self.cfg = cfg
        self.started: str | None = None
        self._t0: float | None = None

    @classmethod
    def plan(cls, cfg: Any, command: str) -> RunFolder:
        """Apply the rerun rule to ``cfg.run``; raise :class:`RunFolderError` (one line) if refused.

        Nothing is written: the folder is only probed for writability.
        """
        run = cfg.run
        path = Path(run.run_dir)
        check_writable_dir(path)
        if global_rank_from_env() != 0:
            # another process of a DDP run (torchrun, or Lightning's launcher re-running the
            # command): rank 0 applies the rule and writes the folder, the others follow it
            mode = "resume" if run.resume else "overwrite" if run.overwrite else "new"
            return cls(path, mode, command, cfg)
        status = run_status(path)
        if status in ("absent", "empty"):
            return cls(path, "new", command, cfg)
        summary = read_summary(path) or {}
        other = summary.get("command")
        if run.overwrite:
            return cls(path, "overwrite", command, cfg)
        if not run.resume:
            what = f"a {status} run" + (f" of {other}" if other else "")
            raise RunFolderError(
                f"already holds {what}; pass --resume to continue it, --overwrite to replace it, "
                "or choose another --output_dir/--name",
                path=path,
            )
        if other and other != command:
            raise RunFolderError(
                f"--resume: this folder holds a run of {other}, not of {command}", path=path
            )
        saved = read_config(path)
        if saved is not None:
            diffs = config_differences(cfg, saved, ignore_resumable=True)
            if diffs:
                raise RunFolderError(
                    "--resume: the settings differ from the run's config.yaml in "
                    + ", ".join(diffs)
                    + "; resume with the run's settings (--config "
                    + str(path / CONFIG_NAME)
                    + "), or use --overwrite or another --name",
                    path=path,
                )
        return cls(path, "resume", command, cfg)

    # ---------------------------------------------------------------- writing
    def open(self) -> Path:
        """Create the folder for the run (replacing an old run on ``--overwrite``), write
        ``config.yaml`` and a ``summary.json`` with ``status: running``; return the folder.

        Call it once the command has checked its inputs: until then nothing of an old run is touched.
        """
        import time

        import yaml

        if self.mode == "overwrite" and self.path.exists():
            trash = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            os.replace(self.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        config = resolved_config_dict(self.cfg)
        previous = read_config(self.path) if self.mode == "resume" else None
        if previous is not None and previous != config:
            n = 1
            while (self.path / f"config.before-resume-{n}.yaml").exists():
                n += 1
            os.replace(self.path / CONFIG_NAME, self.path / f"config.before-resume-{n}.yaml")
        with atomic_write(self.path / CONFIG_NAME, "w") as f:
            f.write(f"# {self.command} run, written {_now()}; repeat it with:\n")
            where = self.path.resolve() / CONFIG_NAME
            f.write(f"#   {self.command} --config {where} --output_dir OTHER\n")
            yaml.safe_dump(config, f, sort_keys=False)
        self.started = _now()
        self._t0 = time.perf_counter()
        old = read_summary(self.path) if self.mode == "resume" else None
        self._write_summary(
            status="running",
            started=(old or {}).get("started", self.started),
        )
        return self.path

    def _package(self) -> tuple[str | None, str | None]:
        """(distribution, version) of the package whose config this run uses."""
        return _distribution_of(type(self.cfg).__module__.split(".")[0])

    def _write_summary(self, **values: Any) -> dict[str, Any]:
        package, version = self._package()
        run = self.cfg.run
        record: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
        record.update(
            schema=SUMMARY_SCHEMA,
            command=self.command,
            package=package,
            package_version=version,
            git_commit=git_commit(Path(__file__).resolve().parent),
            config_hash=config_hash(self.cfg),
            seed=run.seed,
            argv=list(sys.argv),
            hostname=socket.gethostname(),
            metrics={},
            paths={"config": str(self.path / CONFIG_NAME)},
            extra={},
        )
        record.update({k: v for k, v in values.items() if v is not None or k == "error"})
        record["versions"] = package_versions()
        atomic_save_json(record, self.path / SUMMARY_NAME)
        return record

    def finish(
        self,
        *,
        metrics: dict[str, float] | None = None,
        paths: dict[str, str | os.PathLike] | None = None,
        best_epoch: int | None = None,
        epochs_run: int | None = None,
        monitor: str | None = None,
        device: str | None = None,
        extra: dict[str, Any] | None = None,
        status: str = "finished",
        error: str | None = None,
    ) -> dict[str, Any]:
        """Complete ``summary.json`` (status ``finished`` or ``failed``) and return it."""
        import time

        seconds = None if self._t0 is None else round(time.perf_counter() - self._t0, 3)
        old = read_summary(self.path) or {}
        all_paths = {"config": str(self.path / CONFIG_NAME)}
        all_paths.update({k: str(v) for k, v in (paths or {}).items()})
        return self._write_summary(
            status=status,
            started=old.get("started", self.started),
            ended=_now(),
            seconds=seconds,
            metrics={k: float(v) for k, v in (metrics or {}).items() if v is not None},
            paths=all_paths,
            best_epoch=best_epoch,
            epochs_run=epochs_run,
            monitor=monitor,
            device=device,
            extra=extra or {},
            error=error,
        )
