"""Callbacks: the NaN/inf guard, and the per-epoch reseed and plateau-step repair that make resumed
runs exact."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from ..errors import NonFiniteRunError
from .seeding import _reseed_all, derive_seed

__all__ = ["NaNGuard", "NonFiniteLossError", "EpochSeed", "FiniteMonitor", "PlateauResume"]


class NonFiniteLossError(NonFiniteRunError):
    """Training was stopped because the loss or the gradients stayed NaN/inf.

    Attributes:
        step: global optimizer step at which training stopped.
        epoch: epoch at which training stopped.
        bad_steps: the number of consecutive skipped steps that triggered the stop.
        total_bad_steps: skipped steps over the whole run.
        last_finite_loss: the last finite training loss seen, or None if there was none.
    """

    def __init__(
        self,
        *,
        step: int,
        epoch: int,
        bad_steps: int,
        total_bad_steps: int,
        last_finite_loss: float | None,
        last_finite_step: int | None,
        lr: float | None = None,
        precision: str | None = None,
        all_skipped: bool = False,
    ):
        self.step = step
        self.epoch = epoch
        self.bad_steps = bad_steps
        self.total_bad_steps = total_bad_steps
        self.last_finite_loss = last_finite_loss
        self.last_finite_step = last_finite_step
        last = (
            f"last finite training loss {last_finite_loss:.6g} at step {last_finite_step}"
            if last_finite_loss is not None
            else "no finite training loss was ever seen"
        )
        hints = []
        if lr is not None:
            hints.append(f"lower --lr (now {lr:.3g})")
        hints.append("set --grad_clip (e.g. 1.0)")
        if precision is not None and "16" in str(precision):
            hints.append(f"train with --precision 32 or bf16-mixed instead of {precision}")
        hints.append("check the inputs and targets for NaN/nodata values")
        what = (
            f"every optimizer step of the epoch had a NaN/inf loss or gradient "
            f"({total_bad_steps} skipped, none applied)"
            if all_skipped
            else f"the loss or a gradient was NaN/inf for {bad_steps} optimizer steps in a row "
            f"({total_bad_steps} skipped in total)"
        )
        super().__init__(
            f"Training stopped at global step {step} (epoch {epoch}): {what}; {last}. Try to: "
            + "; ".join(hints)
            + "."
        )


def _loss_from_outputs(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


class NaNGuard(L.Callback):
    """Skip optimizer steps whose loss or gradients are NaN/inf; stop after ``max_bad_steps`` in a row.

    Every optimizer step (in ``on_before_optimizer_step``, after backward and before gradient clipping)
    the guard checks the training losses of the micro-batches that fed the step and the total gradient
    norm. When any is non-finite it sets every gradient of the optimizer to ``None``, so the stock
    optimizers (SGD, Adam, AdamW, ...) leave the parameters, their momentum and their weight decay
    untouched for that step; the step is counted, a warning is printed and the running total is
    logged as ``train/nonfinite_steps``. A finite step resets the consecutive counter. After
    ``max_bad_steps`` *consecutive* bad steps it raises :class:`NonFiniteLossError` (isolated spikes are
    tolerated, a diverged run is not).

    A skipped step leaves *no* state behind: the module's buffers (BatchNorm running statistics and
    batch counters, updated during the forward pass before the loss is known) are snapshot at the
    first micro-batch of each optimizer step and restored when the step is skipped. A training that
    ends without a single finite step (every batch NaN, e.g. nodata stored as NaN) raises
    :class:`NonFiniteLossError` at the end of the epoch instead of leaving a run that looks finished.

    Under DDP the decision is reduced over ranks (any rank bad = every rank skips), so ranks stay in
    step. With ``precision="16-mixed"`` the gradient scaler already skips steps with inf gradients and
    lowers its scale (routine at the start of training), so there only a non-finite *loss* counts.

    Args:
        max_bad_steps: consecutive bad optimizer steps tolerated before stopping (>= 1).

    Example:
        >>> trainer = L.Trainer(callbacks=[NaNGuard(max_bad_steps=5)])  # doctest: +SKIP
    """

    def __init__(self, max_bad_steps: int = 10):
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps = int(max_bad_steps)
        self.consecutive_bad_steps = 0
        self.total_bad_steps = 0
        self.last_finite_loss: float | None = None
        self.last_finite_step: int | None = None
        self._bad_loss_pending = False
        self._batch_step = 0
        self.good_steps = 0
        self._buffers: dict[str, torch.Tensor] | None = None
        self._buffers_step: int | None = None

    # state survives --resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "consecutive_bad_steps": self.consecutive_bad_steps,
            "total_bad_steps": self.total_bad_steps,
            "last_finite_loss": self.last_finite_loss,
            "last_finite_step": self.last_finite_step,
            "good_steps": self.good_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in self.state_dict():
            if key in state_dict:
                setattr(self, key, state_dict[key])

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step
        if self._buffers_step != trainer.global_step:  # first micro-batch of this optimizer step
            self._buffers = {
                name: buf.detach().clone()
                for name, buf in pl_module.named_buffers()
                if buf is not None
            }
            self._buffers_step = trainer.global_step

    def _restore_buffers(self, pl_module: L.LightningModule) -> None:
        if not self._buffers:
            return
        with torch.no_grad():
            for name, buf in pl_module.named_buffers():
                saved = self._buffers.get(name)
                if saved is not None and saved.shape == buf.shape:
                    buf.copy_(saved)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            self._bad_loss_pending = True

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = _loss_from_outputs(outputs)
        if loss is not None and loss.numel() == 1:
            value = float(loss.detach())
            if math.isfinite(value):
                self.last_finite_loss = value
                self.last_finite_step = self._batch_step

    @staticmethod
    def _grads(optimizer: Optimizer) -> list[torch.Tensor]:
        return [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        bad = self._bad_loss_pending
        self._bad_loss_pending = False
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        grads = self._grads(optimizer)
        if not bad and scaler is None and grads:
            total_norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            bad = not bool(torch.isfinite(total_norm))
        bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))

        if bad:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self._restore_buffers(pl_module)
            self.consecutive_bad_steps += 1
            self.total_bad_steps += 1
            rank_zero_warn(
                f"NaNGuard: non-finite loss or gradient at global step {trainer.global_step}; "
                f"optimizer step skipped ({self.consecutive_bad_steps}/{self.max_bad_steps} in a row)."
            )
        else:
            self.consecutive_bad_steps = 0
            self.good_steps += 1
        pl_module.log(
            "train/nonfinite_steps",
            float(self.total_bad_steps),
            on_step=False,
            on_epoch=True,
            reduce_fx="max",
            batch_size=1,
        )
        if self.consecutive_bad_steps >= self.max_bad_steps:
            lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
            raise self._error(trainer, lr=float(lr) if lr is not None else None)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.good_steps == 0 and self.total_bad_steps > 0:
            raise self._error(trainer, all_skipped=True)

    def _error(self, trainer: L.Trainer, **details: Any) -> NonFiniteLossError:
        return NonFiniteLossError(
            step=trainer.global_step,
            epoch=trainer.current_epoch,
            bad_steps=self.consecutive_bad_steps,
            total_bad_steps=self.total_bad_steps,
            last_finite_loss=self.last_finite_loss,
            last_finite_step=self.last_finite_step,
            precision=str(trainer.precision),
            **details,
        )


def _dataloaders(obj: Any) -> list[DataLoader]:
    """The DataLoaders in ``obj``: one, or a (nested) list, tuple or dict of them."""
    if isinstance(obj, DataLoader):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        return [loader for item in obj for loader in _dataloaders(item)]
    return []


class EpochSeed(L.Callback):
    """Reseed Python, NumPy and torch at the start of every training epoch from ``(seed, epoch)``.

    Lightning checkpoints do not hold random-number-generator states, so after ``--resume`` the
    shuffling, dropout and augmentation of the next epoch would differ from an uninterrupted run. With
    this callback the randomness of epoch ``e`` depends only on ``derive_seed(seed, e)``, so a run
    stopped after epoch 2 and resumed ends with exactly the weights of an uninterrupted run (given
    deterministic kernels, ``num_workers=0`` or non-persistent workers).

    Lightning creates the training dataloader iterator *before* ``on_train_epoch_start`` on the first
    epoch of a fit call and *after* it on later epochs. Creating a single-process iterator draws its
    base seed from the global generator (the sampler itself is read lazily, at the first batch), so a
    later epoch's draws after the reseed are shifted by one; and a persistent multi-process iterator
    asks its sampler for the first indices when it is made, before the reseed and before Lightning's
    ``set_epoch``. So on the first epoch of every fit call (``on_train_start`` marks it) the callback
    calls :func:`iter` on each training :class:`~torch.utils.data.DataLoader` after the reseed, as
    Lightning does on later epochs: a throwaway single-process iterator (the same one draw), or the
    reset of the persistent workers' iterator (the indices again, from the reseeded state). Exact
    resume therefore needs ``num_workers=0`` or persistent workers (what
    :func:`eo_common.loading.loader_kwargs` sets); non-persistent workers are left alone.

    Example:
        >>> trainer = L.Trainer(callbacks=[EpochSeed(seed=0)])  # doctest: +SKIP
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._first_epoch_of_fit = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_epoch_of_fit = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _reseed_all(derive_seed(self.seed, trainer.current_epoch))
        if not self._first_epoch_of_fit:
            return  # Lightning makes (or resets) the iterator after this hook
        self._first_epoch_of_fit = False
        for loader in _dataloaders(trainer.train_dataloader):
            if loader.num_workers == 0 or loader.persistent_workers:
                iter(loader)


class PlateauResume(L.Callback):
    """Makes a ``ReduceLROnPlateau`` schedule resume exactly where an uninterrupted run would be.

    Lightning steps a plateau schedule at the very end of an epoch, *after* validation, where the
    checkpoint (``last.ckpt``, written by ``ModelCheckpoint`` when validation ends) has already been
    saved; and when a run resumes from such a checkpoint Lightning skips that step, because the
    monitored value is not in the checkpoint. The resumed schedule is then one step behind: its
    ``last_epoch`` is one less and the last epoch's metric never reached ``best`` /
    ``num_bad_epochs``, so learning-rate cuts come an epoch late.

    This callback stores the monitored value in the checkpoint when the plateau step of the current
    epoch is still due (the epoch's last training batch is done, the schedule has not yet been
    stepped for it), and applies that step when the run resumes (``on_train_start``, after the
    scheduler state is restored). If a resumed epoch ends while Lightning still counts as restarting
    (a checkpoint from mid-epoch), it performs the epoch-end step Lightning leaves out. Only
    epoch-interval plateau schedules with frequency 1 are touched.

    Example:
        >>> trainer = L.Trainer(callbacks=[PlateauResume()])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    @staticmethod
    def _plateau(trainer: L.Trainer) -> Any:
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        for config in trainer.lr_scheduler_configs:
            if (
                isinstance(config.scheduler, ReduceLROnPlateau)
                and config.interval == "epoch"
                and config.frequency == 1
                and config.monitor
            ):
                return config
        return None

    def _monitor_value(self, trainer: L.Trainer, key: str) -> float | None:
        value = trainer.callback_metrics.get(key)
        return None if value is None else float(value)

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        config = self._plateau(trainer) if trainer is not None else None
        # due: the epoch's training is complete (its validation has run) but not yet its plateau step
        if config is None or not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return {"pending": None}
        value = self._monitor_value(trainer, config.monitor)
        due = config.scheduler.last_epoch == trainer.current_epoch
        pending = (
            {"epoch": trainer.current_epoch, "value": value} if due and value is not None else None
        )
        return {"pending": pending}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict.get("pending")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending, self.pending = self.pending, None
        config = self._plateau(trainer)
        if pending is None or config is None:
            return
        if config.scheduler.last_epoch == pending["epoch"]:
            config.scheduler.step(pending["value"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        config = self._plateau(trainer)
        if config is None or not trainer.fit_loop.restarting:
            return  # Lightning performs the step itself
        value = self._monitor_value(trainer, config.monitor)
        if value is not None and config.scheduler.last_epoch == trainer.current_epoch:
            config.scheduler.step(value)


class FiniteMonitor(L.Callback):
    """Fail the run when the monitored validation metric is NaN/inf.

    A diverged network gives NaN outputs and a NaN validation metric; Lightning's ``EarlyStopping``
    then stops training quietly and the run would end as "finished" with a useless best checkpoint.
    This callback raises :class:`~eo_common.errors.NonFiniteRunError` instead (one line for the user,
    ``summary.json`` status ``failed``), naming the metric, the epoch and what to try. It checks at the
    end of each training epoch (after that epoch's validation), after :class:`NaNGuard` when it comes
    later in the callback list.

    Args:
        monitor: the metric the run selects its best checkpoint by (``"val/psnr"``).

    Example:
        >>> trainer = L.Trainer(callbacks=[FiniteMonitor("val/mcc")])  # doctest: +SKIP
    """

    def __init__(self, monitor: str):
        self.monitor = monitor
        self._validated: float | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking and value is not None:
            self._validated = float(value)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # at the end of the epoch (its validation has run), after the NaN guard's own check: a run
        # that never took a finite step is reported as such, not as a NaN metric. Only a value
        # produced by validation counts (a training metric averages skipped steps in).
        value, self._validated = self._validated, None
        if value is None or math.isfinite(value):
            return
        lr = trainer.optimizers[0].param_groups[0].get("lr") if trainer.optimizers else None
        hint = f"lower --lr (now {lr:.3g}); " if lr is not None else ""
        raise NonFiniteRunError(
            f"{self.monitor} is {value} at epoch {trainer.current_epoch}: the network's "
            f"outputs are NaN/inf (training diverged). Try to: {hint}set --grad_clip (e.g. 1.0); "
            "check the inputs for NaN/nodata values."
        )
