"""The common training flags, spelled the same in every eolab CLI, and their config dataclass."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .schedulers import SCHEDULERS

__all__ = ["PRECISIONS", "TrainConfig", "add_training_args", "parse_devices"]

PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def parse_devices(devices: str | int | Sequence[int]) -> str | int | list[int]:
    """Turn the ``--devices`` string into what :class:`lightning.Trainer` expects.

    Example:
        >>> parse_devices("auto"), parse_devices("2"), parse_devices("-1"), parse_devices("0,1")
        ('auto', 2, -1, [0, 1])
    """
    if isinstance(devices, int):
        return devices
    if not isinstance(devices, str):
        return [int(d) for d in devices]
    text = devices.strip().strip("[]")
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        return int(text)
    except ValueError:
        raise ValueError(
            f"--devices must be 'auto', an integer or a list like '0,1', got {devices!r}"
        ) from None


@dataclass
class TrainConfig:
    """The common training settings; one field per flag of :func:`add_training_args`.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_training_args(parser)
        >>> cfg = TrainConfig.from_args(parser.parse_args(["--lr", "3e-4", "--resume"]))
        >>> cfg.lr, cfg.resume, cfg.run_dir.as_posix()
        (0.0003, 'last', 'runs/default')
    """

    seed: int = 0
    max_epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 8
    num_workers: int = 2
    accumulate_grad_batches: int = 1
    grad_clip: float | None = None
    precision: str = "32"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    accelerator: str = "auto"
    early_stop_patience: int = 10
    experiment_name: str = "default"
    output_dir: Path = Path("runs")
    resume: str | None = None
    lr_scheduler: str = "cosine"
    warmup_epochs: int = 0
    max_bad_steps: int = 10

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.devices = str(self.devices)
        parse_devices(self.devices)  # fail early on a malformed --devices
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {SCHEDULERS}, got {self.lr_scheduler!r}")
        for name in (
            "max_epochs",
            "batch_size",
            "accumulate_grad_batches",
            "num_nodes",
            "max_bad_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "warmup_epochs", "early_stop_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")
        name = self.experiment_name
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"experiment_name must be a plain folder name, got {name!r}")

    @classmethod
    def from_args(cls, namespace: argparse.Namespace | dict[str, Any]) -> TrainConfig:
        """Take the fields of this dataclass from a parsed namespace (other attributes are ignored)."""
        values = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    @property
    def run_dir(self) -> Path:
        """``output_dir / experiment_name``."""
        return self.output_dir / self.experiment_name

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of all fields."""
        out = dataclasses.asdict(self)
        out["output_dir"] = str(self.output_dir)
        return out

    def optimizer_hparams(self) -> dict[str, Any]:
        """The hyper-parameters :meth:`EOModule.configure_optimizers` reads, to pass to a module.

        Example:
            >>> TrainConfig(lr=0.01, lr_scheduler="step").optimizer_hparams()["lr_scheduler"]
            'step'
        """
        return {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "lr_scheduler": self.lr_scheduler,
            "warmup_epochs": self.warmup_epochs,
            "max_epochs": self.max_epochs,
        }


def _grad_clip(text: str) -> float | None:
    value = float(text)
    return None if value == 0 else value


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Add the argument group ``training`` with the common flags to ``parser``.

    Packages change a default with ``parser.set_defaults(max_epochs=50, experiment_name="glacier")``.
    Every flag maps to the :class:`TrainConfig` field of the same name.

    Example:
        >>> parser = argparse.ArgumentParser(prog="glacier-train")
        >>> add_training_args(parser)
        >>> parser.parse_args(["--devices", "2", "--strategy", "ddp"]).devices
        '2'
    """
    d = TrainConfig()
    g = parser.add_argument_group("training", "common training options (eo_common.training)")
    g.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed for Python, NumPy and torch (default %(default)s)",
    )
    g.add_argument(
        "--max_epochs",
        type=int,
        default=d.max_epochs,
        help="number of training epochs (default %(default)s)",
    )
    g.add_argument(
        "--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)"
    )
    g.add_argument(
        "--weight_decay",
        type=float,
        default=d.weight_decay,
        help="weight decay (default %(default)s)",
    )
    g.add_argument(
        "--batch_size",
        type=int,
        default=d.batch_size,
        help="batch size per device (default %(default)s)",
    )
    g.add_argument(
        "--num_workers",
        type=int,
        default=d.num_workers,
        help="dataloader worker processes (default %(default)s)",
    )
    g.add_argument(
        "--accumulate_grad_batches",
        type=int,
        default=d.accumulate_grad_batches,
        help="optimizer step every N batches (default %(default)s)",
    )
    g.add_argument(
        "--grad_clip",
        type=_grad_clip,
        default=d.grad_clip,
        help="clip the gradient L2 norm to this value; 0 or absent disables (default %(default)s)",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="numeric precision (default %(default)s)",
    )
    g.add_argument(
        "--devices",
        default=d.devices,
        help="'auto', a device count (2, -1 = all) or a list '0,1' (default %(default)s)",
    )
    g.add_argument(
        "--num_nodes",
        type=int,
        default=d.num_nodes,
        help="number of machines for DDP (default %(default)s)",
    )
    g.add_argument(
        "--strategy",
        default=d.strategy,
        help="'auto', 'ddp', 'ddp_find_unused_parameters_true', ... (default %(default)s)",
    )
    g.add_argument(
        "--accelerator",
        default=d.accelerator,
        help="'auto', 'cpu', 'gpu', 'mps' (default %(default)s)",
    )
    g.add_argument(
        "--early_stop_patience",
        type=int,
        default=d.early_stop_patience,
        help="stop after N validation epochs without improvement; 0 disables (default %(default)s)",
    )
    g.add_argument(
        "--experiment_name",
        default=d.experiment_name,
        help="run folder name under --output_dir (default %(default)s)",
    )
    g.add_argument(
        "--output_dir",
        type=Path,
        default=d.output_dir,
        help="parent of run folders (default %(default)s)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=d.resume,
        metavar="CKPT",
        help="resume: no value = <run dir>/checkpoints/last.ckpt, 'best', or a checkpoint path",
    )
    g.add_argument(
        "--lr_scheduler",
        choices=SCHEDULERS,
        default=d.lr_scheduler,
        help="learning-rate schedule (default %(default)s)",
    )
    g.add_argument(
        "--warmup_epochs",
        type=int,
        default=d.warmup_epochs,
        help="epochs of linear lr warmup (default %(default)s)",
    )
    g.add_argument(
        "--max_bad_steps",
        type=int,
        default=d.max_bad_steps,
        help="stop after N consecutive steps with NaN/inf loss or gradients (default %(default)s)",
    )
