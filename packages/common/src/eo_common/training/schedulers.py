"""Learning-rate schedules by name, each with an optional linear warmup.

Every schedule is a stock :mod:`torch.optim.lr_scheduler` class; the warmup is a
:class:`~torch.optim.lr_scheduler.LinearLR` chained in front with
:class:`~torch.optim.lr_scheduler.SequentialLR` (for ``plateau``, :class:`WarmupReduceLROnPlateau`).

With base learning rate ``lr``, ``W = warmup_epochs`` and ``e`` the 0-based epoch:

* warmup, ``e < W``: ``lr * (e + 1) / (W + 1)`` (so it never starts at 0 and reaches ``lr`` at ``e = W``);
* then the named schedule runs with its own counter ``t = e - W`` starting at ``lr``:

  ============== ===================================================================================
  name           learning rate at ``t``
  ============== ===================================================================================
  none           ``lr``
  step           ``lr * gamma ** (t // step_size)``
  cosine         ``min_lr + (lr - min_lr) * (1 + cos(pi * t / (epochs - W))) / 2``
  cosine_restarts ``min_lr + (lr - min_lr) * (1 + cos(pi * t_cur / T_i)) / 2``, ``T_i = T_0 * T_mult**i``
  plateau        ``lr``, multiplied by ``gamma`` after ``patience`` epochs without improvement of
                 ``monitor`` (never below ``min_lr``)
  ============== ===================================================================================

With ``steps_per_epoch`` the schedule (except ``plateau``, which needs an epoch metric) is stepped every
optimizer step instead, and every length above (``W``, ``step_size``, ``epochs``, ``T_0``) is counted in
epochs and multiplied by ``steps_per_epoch``.
"""

from __future__ import annotations

from typing import Any, Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

__all__ = ["SCHEDULERS", "build_scheduler", "WarmupReduceLROnPlateau"]

SCHEDULERS = ("step", "plateau", "cosine", "cosine_restarts", "none")
LR_LOG_NAME = "train/lr"


class WarmupReduceLROnPlateau(ReduceLROnPlateau):
    """:class:`ReduceLROnPlateau` preceded by ``warmup_epochs`` epochs of linear warmup.

    During warmup the monitored metric is ignored and the learning rate of epoch ``e`` is
    ``base_lr * (e + 1) / (warmup_epochs + 1)``; from epoch ``warmup_epochs`` on it starts at
    ``base_lr`` and the plateau logic takes over. Stepped once per epoch with the metric, like its parent
    (Lightning does this when the scheduler config has ``"monitor"``).

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
        >>> s = WarmupReduceLROnPlateau(opt, warmup_epochs=2, factor=0.5, patience=0)
        >>> lrs = []
        >>> for loss in [9.0, 9.0, 1.0, 2.0]:
        ...     lrs.append(round(opt.param_groups[0]["lr"], 3)); s.step(loss)
        >>> lrs, round(opt.param_groups[0]["lr"], 3)
        ([0.1, 0.2, 0.3, 0.3], 0.15)
    """

    def __init__(self, optimizer: Optimizer, warmup_epochs: int = 0, **plateau_kwargs: Any):
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        super().__init__(optimizer, **plateau_kwargs)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_done = 0
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        if self.warmup_epochs > 0:
            self._set_warmup_lr(0)

    def _set_warmup_lr(self, epoch: int) -> None:
        factor = min(1.0, (epoch + 1) / (self.warmup_epochs + 1))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        if self.warmup_done < self.warmup_epochs:
            self.warmup_done += 1
            self.last_epoch += 1
            self._set_warmup_lr(self.warmup_done)
            return
        super().step(metrics)


def build_scheduler(
    optimizer: Optimizer,
    name: Literal["step", "plateau", "cosine", "cosine_restarts", "none"],
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    warmup_epochs: int = 0,
    step_size: int = 10,
    gamma: float = 0.5,
    patience: int = 5,
    T_0: int = 10,
    T_mult: int = 1,
    min_lr: float = 0.0,
    monitor: str = "val/loss",
    mode: Literal["min", "max"] = "min",
) -> dict[str, Any]:
    """Build a learning-rate schedule by name and return Lightning's ``lr_scheduler`` config dict.

    The formulas are in the module docstring. The returned dict has ``scheduler``, ``interval``
    (``"epoch"``, or ``"step"`` when ``steps_per_epoch`` is given), ``frequency`` 1, ``name``
    ``"train/lr"`` (the key :class:`~lightning.pytorch.callbacks.LearningRateMonitor` logs) and, for
    ``plateau``, ``monitor``.

    Args:
        optimizer: the optimizer whose ``lr`` of each param group is the base learning rate.
        name: ``"step"``, ``"plateau"``, ``"cosine"``, ``"cosine_restarts"`` or ``"none"``.
        epochs: total training epochs including warmup; required for ``cosine``.
        steps_per_epoch: step the schedule per optimizer step (lengths are still given in epochs).
        warmup_epochs: epochs of linear warmup before the named schedule (0 = none).
        step_size: ``step``: epochs between decays.
        gamma: ``step`` and ``plateau``: multiplicative decay factor.
        patience: ``plateau``: epochs without improvement before decaying.
        T_0: ``cosine_restarts``: length of the first cycle in epochs.
        T_mult: ``cosine_restarts``: growth factor of each following cycle.
        min_lr: floor of ``cosine``, ``cosine_restarts`` and ``plateau``.
        monitor: ``plateau``: logged metric to watch.
        mode: ``plateau``: ``"min"`` when lower ``monitor`` is better, else ``"max"``.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> cfg = build_scheduler(opt, "step", warmup_epochs=1, step_size=2, gamma=0.5)
        >>> lrs = []
        >>> for _ in range(5):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 4)); opt.step(); cfg["scheduler"].step()
        >>> lrs
        [0.05, 0.1, 0.1, 0.05, 0.05]
    """
    if name not in SCHEDULERS:
        raise ValueError(f"lr_scheduler must be one of {SCHEDULERS}, got {name!r}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1 or None, got {steps_per_epoch}")

    config: dict[str, Any] = {"frequency": 1, "name": LR_LOG_NAME}
    if name == "plateau":
        # plateau needs an epoch-level metric, so it is always stepped per epoch
        config["scheduler"] = WarmupReduceLROnPlateau(
            optimizer,
            warmup_epochs=warmup_epochs,
            mode=mode,
            factor=gamma,
            patience=patience,
            min_lr=min_lr,
        )
        config["interval"] = "epoch"
        config["monitor"] = monitor
        return config

    unit = steps_per_epoch or 1
    config["interval"] = "step" if steps_per_epoch else "epoch"
    warmup = warmup_epochs * unit
    main: LRScheduler
    if name == "none":
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif name == "step":
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        main = StepLR(optimizer, step_size=step_size * unit, gamma=gamma)
    elif name == "cosine":
        if epochs is None or epochs <= warmup_epochs:
            raise ValueError(
                f"lr_scheduler 'cosine' needs epochs > warmup_epochs, got epochs={epochs}, "
                f"warmup_epochs={warmup_epochs}"
            )
        main = CosineAnnealingLR(optimizer, T_max=(epochs - warmup_epochs) * unit, eta_min=min_lr)
    else:  # cosine_restarts
        if T_0 < 1 or T_mult < 1:
            raise ValueError(f"cosine_restarts needs T_0 >= 1 and T_mult >= 1, got {T_0}, {T_mult}")
        main = CosineAnnealingWarmRestarts(optimizer, T_0=T_0 * unit, T_mult=T_mult, eta_min=min_lr)

    if warmup == 0:
        config["scheduler"] = main
        return config
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    config["scheduler"] = SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    return config
