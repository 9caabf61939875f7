"""Typed configuration shared by every eolab command: the ``run``, ``optim`` and ``data`` groups.

A command's configuration is one dataclass whose fields are plain values or nested dataclasses (the
groups of ``--help`` and the sections of its YAML file). Each field is declared with :func:`opt`,
which records its help text (with units), extra flag spellings (aliases) and its range. The command
layer (:mod:`eo_common.command`) turns such a dataclass into flags, ``--config`` files,
``--print_config`` and validation; nothing here imports torch, so ``--help`` stays fast.

One spelling per concept, in every package:

================  =========================  ====================================================
concept           field (flag)               also accepted
================  =========================  ====================================================
data root         ``data.root``              ``--data_root``
batch size        ``data.batch_size``        ``--batch_size``
loader workers    ``data.num_workers``       ``--num_workers``, ``--workers``
output folder     ``run.output_dir``         ``--output_dir``, ``--out``, ``--out_dir``
experiment name   ``run.name``               ``--name``, ``--experiment_name``
seed              ``run.seed``               ``--seed``
resume            ``run.resume``             ``--resume``
time budget       ``run.time_budget_s``      ``--time_budget_s``, ``--max_time_s``
devices           ``run.devices``            ``--devices``
precision         ``run.precision``          ``--precision``
log               ``run.log``                ``--log``
epochs            ``optim.epochs``           ``--epochs``, ``--max_epochs``
learning rate     ``optim.lr``               ``--lr``, ``--learning_rate``
================  =========================  ====================================================

Flags may be written with ``-`` or ``_`` (``--batch-size`` = ``--batch_size``); a boolean flag alone
means true (``--resume``), ``--no_<flag>`` false.

Example:
    >>> run = RunConfig(output_dir=Path("runs"), name="unet_a")
    >>> run.run_dir.as_posix()
    'runs/unet_a'
    >>> config_problems(OptimConfig(lr=-1.0, epochs=0), "optim.")
    ['optim.epochs: must be >= 1, got 0', 'optim.lr: must be > 0, got -1.0']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "opt",
    "RunConfig",
    "OptimConfig",
    "DataConfig",
    "PRECISIONS",
    "SCHEDULERS",
    "OPTIMIZERS",
    "LOGGERS",
    "config_problems",
    "config_to_dict",
    "config_from_dict",
    "iter_leaves",
    "mentions_path",
    "default_num_workers",
]

PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed", "bf16-true")
SCHEDULERS = ("none", "step", "plateau", "cosine", "cosine_restarts")
OPTIMIZERS = ("adamw", "adam", "sgd")
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")
#: ``last_tile`` of a sliding-window command: what :func:`eo_common.raster.tile_spans` does at the
#: border (``stretch`` computes fewer pixels twice; ``shift`` is the square-tile layout of earlier
#: versions, release 0.1.0 included, kept to reproduce their outputs)
LastTile = Literal["stretch", "shift"]
LAST_TILE_HELP = (
    "the last tile of each row and column: stretch = to the border (up to 2 x tile_size - overlap, "
    "fewer pixels computed twice: 1.20x a 1024 px scene's pixels for 256/32 tiles instead of 1.56x); "
    "shift = a tile_size tile shifted inwards (the layout of earlier versions)"
)


def opt(
    default: Any = MISSING,
    *,
    help: str,  # noqa: A002 - the natural name for a flag's help text
    aliases: tuple[str, ...] = (),
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    min_exclusive: bool = False,
    choices: tuple[Any, ...] | None = None,
    factory: Any = None,
    required: bool = False,
    positional: bool = False,
    resumable: bool = False,
    identity: bool = True,
    path: bool = False,
) -> Any:
    """A dataclass field that the command layer turns into a documented flag.

    Args:
        default: the default value (or use ``factory`` for lists and dicts).
        help: one line for ``--help``; state the unit (s, px, dB, epochs) where there is one.
        aliases: further flag spellings, e.g. ``("--batch_sz",)`` (the researchers' own).
        min, max: allowed range (checked by :func:`config_problems`, every bad field at once).
        min_exclusive: ``min`` itself is not allowed (``> min`` instead of ``>= min``).
        choices: allowed values when the type cannot say it (``Literal`` types are checked while
            parsing).
        factory: ``default_factory`` of the field.
        required: the value must be given (a flag or a config file key).
        positional: a positional argument instead of a ``--flag``.
        resumable: may differ between a run and its ``--resume`` (epochs, time budget, devices).
        identity: part of the experiment's identity (its config hash); False for where and how a
            run executes (output folder, workers, progress bars).
        path: a ``str`` field that holds a file path or a GDAL path/URL (``/vsizip/...``,
            ``s3://...``, ``/vsicurl/https://...``): treated like a ``Path`` field (relative to the
            config file, absolute in ``config.yaml``) without ``pathlib`` folding ``//`` of URLs.
            ``Path``-typed fields are paths anyway.
    """
    meta = {
        "help": help,
        "aliases": tuple(aliases),
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "choices": choices,
        "required": required,
        "positional": positional,
        "resumable": resumable,
        "identity": identity,
        "path": path,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def default_num_workers() -> int:
    """Loader processes when ``data.num_workers`` is -1: one per core beyond the main one, at most 8.

    Example:
        >>> 0 <= default_num_workers() <= 8
        True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cores or 1) - 1))


@dataclass
class RunConfig:
    """run: where the outputs go, the seed, reruns, devices and logging."""

    output_dir: Path = opt(
        Path("runs"),
        help="folder of the run's outputs; with --name, the parent of that folder",
        aliases=("--out", "--out_dir"),
        identity=False,
    )
    name: str = opt(
        "",
        help="experiment name: a subfolder of --output_dir (empty: --output_dir itself)",
        aliases=("--experiment_name",),
        identity=False,
    )
    seed: int = opt(0, help="one seed for Python, NumPy, torch and data-loader workers")
    resume: bool = opt(
        False,
        help="continue the run already in the output folder (training: from last.ckpt; "
        "tiles and stages: skip finished ones)",
        identity=False,
        resumable=True,
    )
    overwrite: bool = opt(
        False,
        help="replace the run already in the output folder (after the inputs have been checked)",
        identity=False,
        resumable=True,
    )
    time_budget_s: float = opt(
        0.0,
        help="stop training after this many seconds, keeping the best checkpoint (0: no limit)",
        aliases=("--max_time_s",),
        min=0,
        resumable=True,
    )
    accelerator: str = opt(
        "auto",
        help="auto, cpu, gpu, cuda or mps",
        choices=("auto", "cpu", "gpu", "cuda", "mps"),
        identity=False,
        resumable=True,
    )
    devices: str = opt(
        "auto",
        help="auto, a device count (2; -1 = all) or a list of device ids (0,1)",
        identity=False,
        resumable=True,
    )
    num_nodes: int = opt(1, help="machines for DDP", min=1, identity=False, resumable=True)
    strategy: str = opt(
        "auto", help="auto, ddp, ddp_find_unused_parameters_true, ...", identity=False
    )
    precision: str | int = opt(
        "32",
        help="numeric precision: 32, bf16-mixed, 16-mixed, bf16-true, 64",
        choices=PRECISIONS,
    )
    threads: int = opt(
        0,
        help="torch intra-op threads (0: torch's default)",
        min=0,
        identity=False,
        resumable=True,
    )
    log: list[str] = opt(
        help="experiment loggers: csv, tensorboard, mlflow (local ./mlruns or --log_uri), wandb",
        factory=lambda: ["csv", "tensorboard"],
        identity=False,
        resumable=True,
    )
    log_uri: str = opt(
        "",
        help="MLflow tracking URI (default: file store in the output folder) or W&B project name",
        identity=False,
        resumable=True,
    )
    notes: str = opt("", help="free text kept in the run's config.yaml", identity=False)
    progress: bool = opt(True, help="progress bars on stderr", identity=False, resumable=True)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.precision = str(self.precision)
        self.devices = str(self.devices)

    @property
    def run_dir(self) -> Path:
        """The run folder: ``output_dir / name``, or ``output_dir`` when ``name`` is empty."""
        return self.output_dir / self.name if self.name else self.output_dir

    def check(self) -> list[str]:
        problems = []
        name = self.name
        if name in (".", "..") or "/" in name or "\\" in name:
            problems.append(f"name: must be a plain folder name, got {name!r}")
        if self.resume and self.overwrite:
            problems.append("resume: --resume and --overwrite exclude each other")
        unknown = [x for x in self.log if x not in LOGGERS]
        if unknown:
            problems.append(f"log: unknown logger(s) {unknown}; choose from {list(LOGGERS)}")
        text = self.devices.strip().strip("[]")
        if text != "auto":
            try:
                [int(d) for d in text.split(",") if d.strip()]
            except ValueError:
                problems.append(
                    f"devices: 'auto', a count or a list like 0,1, got {self.devices!r}"
                )
        return problems


@dataclass
class OptimConfig:
    """optim: epochs, optimiser, learning-rate schedule, gradient handling, early stopping."""

    epochs: int = opt(20, help="training epochs", aliases=("--max_epochs",), min=1, resumable=True)
    lr: float = opt(
        1e-3, help="peak learning rate", aliases=("--learning_rate",), min=0, min_exclusive=True
    )
    weight_decay: float = opt(1e-4, help="decoupled weight decay (AdamW) or L2 (Adam, SGD)", min=0)
    optimizer: Literal["adamw", "adam", "sgd"] = opt("adamw", help="optimiser")
    scheduler: Literal["none", "step", "plateau", "cosine", "cosine_restarts"] = opt(
        "cosine", help="learning-rate schedule", aliases=("--lr_scheduler",)
    )
    warmup_epochs: int = opt(0, help="linear learning-rate warmup (epochs)", min=0)
    lr_patience: int = opt(5, help="plateau: epochs without improvement before lr x 0.5", min=0)
    T_0: int = opt(10, help="cosine_restarts: length of the first cycle (epochs)", min=1)
    T_mult: int = opt(1, help="cosine_restarts: cycle length multiplier", min=1)
    min_lr: float = opt(0.0, help="cosine / cosine_restarts: final learning rate", min=0)
    grad_clip: float = opt(0.0, help="clip the gradient L2 norm to this value (0: off)", min=0)
    accumulate_grad_batches: int = opt(
        1,
        help="optimiser step every N batches (effective batch = N x batch size x devices)",
        aliases=("--grad_accum_steps", "--accumulate"),
        min=1,
    )
    early_stop_patience: int = opt(
        10,
        help="stop after N validations without improvement (0: never)",
        aliases=("--patience",),
        min=0,
    )
    max_bad_steps: int = opt(
        10, help="stop after N optimiser steps in a row with NaN/inf loss or gradients", min=1
    )
    val_every_n_steps: int = opt(
        0, help="validate every N optimiser steps as well as each epoch end (0: epochs only)", min=0
    )
    limit_train_batches: float = opt(
        1.0, help="batches per training epoch: a fraction (<= 1) or a count (> 1)", min=0
    )
    limit_val_batches: float = opt(
        1.0, help="batches per validation: a fraction (<= 1) or a count (> 1)", min=0
    )

    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters ``eo_common.training.EOModule.configure_optimizers`` reads.

        Example:
            >>> OptimConfig(scheduler="plateau", epochs=5).hparams()["lr_scheduler"]
            'plateau'
        """
        return {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "lr_scheduler": self.scheduler,
            "warmup_epochs": self.warmup_epochs,
            "max_epochs": self.epochs,
            "lr_patience": self.lr_patience,
            "T_0": self.T_0,
            "T_mult": self.T_mult,
            "min_lr": self.min_lr,
        }


@dataclass
class DataConfig:
    """data: where the data set is and how it is batched. Packages extend it with their fields."""

    root: Path | None = opt(None, help="data set folder", aliases=("--data_root",))
    batch_size: int = opt(8, help="samples per batch and device", min=1)
    num_workers: int = opt(
        0,
        help="loader worker processes (-1: one per core beyond the first, at most 8)",
        aliases=("--workers",),
        min=-1,
        identity=False,
        resumable=True,
    )

    @property
    def workers(self) -> int:
        """``num_workers`` with -1 resolved by :func:`default_num_workers`."""
        return default_num_workers() if self.num_workers == -1 else self.num_workers


# --------------------------------------------------------------------------- generic helpers


def iter_leaves(cls_or_obj: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """``(dotted key, field)`` for every non-dataclass field, depth first.

    Example:
        >>> [k for k, _ in iter_leaves(OptimConfig)][:3]
        ['epochs', 'lr', 'weight_decay']
    """
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = _type_hints(cls)
    for f in fields(cls):
        hint = hints.get(f.name, f.type)
        if isinstance(hint, type) and is_dataclass(hint):
            yield from iter_leaves(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def mentions_path(hint: Any) -> bool:
    """True when a type hint is ``Path`` or contains it (``Path | None``, ``list[Path]``).

    Example:
        >>> mentions_path(Path | None), mentions_path(list[Path]), mentions_path(str)
        (True, True, False)
    """
    import typing

    if hint is Path:
        return True
    return any(mentions_path(a) for a in typing.get_args(hint))


def _type_hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _range_problem(key: str, value: Any, meta: dict[str, Any]) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        if not isinstance(v, int | float):
            continue
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (v < lo or (meta.get("min_exclusive") and v == lo)):
            op = ">" if meta.get("min_exclusive") else ">="
            return f"{key}: must be {op} {lo:g}, got {value}"
        if hi is not None and v > hi:
            return f"{key}: must be <= {hi:g}, got {value}"
    return None


def config_problems(cfg: Any, prefix: str = "") -> list[str]:
    """Every problem of a config object at once: ranges, choices, required values, ``check()``.

    Each dataclass may define ``check(self) -> list[str]`` for rules that involve several fields;
    its lines start with the field name relative to that dataclass (``"name: ..."``) and get the
    group's dotted prefix here (``"run.name: ..."``).

    Example:
        >>> config_problems(RunConfig(name="a/b", log=["csv", "neptune"]), "run.")
        ["run.name: must be a plain folder name, got 'a/b'", "run.log: unknown logger(s) ['neptune']; choose from ['csv', 'tensorboard', 'mlflow', 'wandb']"]
    """
    problems: list[str] = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value) and not isinstance(value, type):
            problems.extend(config_problems(value, f"{key}."))
            continue
        meta = f.metadata
        if meta.get("required") and value in (None, "", [], ()):
            problems.append(f"{key}: required (give --{key} or set it in the config file)")
            continue
        choices = meta.get("choices")
        if choices is not None and value is not None and str(value) not in map(str, choices):
            problems.append(f"{key}: must be one of {list(choices)}, got {value!r}")
        problem = _range_problem(key, value, meta)
        if problem:
            problems.append(problem)
    check = getattr(cfg, "check", None)
    if callable(check):
        problems.extend(prefix + line for line in check())
    return problems


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (Paths as strings, tuples as lists): what ``config.yaml`` holds.

    Example:
        >>> config_to_dict(RunConfig())["output_dir"]
        'runs'
    """
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = (
            config_to_dict(value)
            if is_dataclass(value) and not isinstance(value, type)
            else _plain(value)
        )
    return out


def config_from_dict(cls: type, values: dict[str, Any] | None) -> Any:
    """Build dataclass ``cls`` (nested ones included) from a nested dict; missing keys keep defaults.

    Example:
        >>> config_from_dict(OptimConfig, {"lr": 0.01}).lr
        0.01
    """
    values = dict(values or {})
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        hint = hints.get(f.name, f.type)
        value = values[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            value = config_from_dict(hint, value if isinstance(value, dict) else vars(value))
        elif hint is Path or hint == Path | None:
            value = None if value is None else Path(value)
        kwargs[f.name] = value
    return cls(**kwargs)
