"""``EOModule``: the LightningModule base class every eolab package trains with."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from .schedulers import build_scheduler

__all__ = ["EOModule", "OPTIMIZERS", "STAGES", "flatten_metrics"]

OPTIMIZERS = ("adamw", "adam", "sgd")
STAGES = ("train", "val", "test")


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested metric dicts into ``{"a/b": float}``, keeping scalars only.

    Python numbers, NumPy scalars and one-element tensors/arrays are kept; lists, matrices, strings
    and None (e.g. a confusion matrix) are dropped.

    Example:
        >>> flatten_metrics({"mcc": 0.5, "per_class": {"ice": {"f1": torch.tensor(0.25)}},
        ...                  "confusion_matrix": [[1, 0], [0, 1]]})
        {'mcc': 0.5, 'per_class/ice/f1': 0.25}
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, prefix=f"{name}/"))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, int | float | np.number):
            out[name] = float(value)
        elif isinstance(value, np.ndarray) and value.size == 1:
            out[name] = float(value.item())
        elif isinstance(value, Tensor) and value.numel() == 1:
            out[name] = float(value.item())
    return out


def _batch_size(batch: Any) -> int | None:
    """Length of the first tensor found in ``batch`` (tensor, sequence or mapping)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else None
    if isinstance(batch, Mapping):
        items: Iterable[Any] = batch.values()
    elif isinstance(batch, list | tuple):
        items = batch
    else:
        return None
    for item in items:
        size = _batch_size(item)
        if size is not None:
            return size
    return None


def _detach(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, Mapping):
        return {k: _detach(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(_detach(v) for v in value))
    if isinstance(value, list | tuple):
        return type(value)(_detach(v) for v in value)
    return value


class EOModule(L.LightningModule):
    """LightningModule that logs every loss term and metric the same way in every package.

    A subclass implements

    * ``forward(x)``;
    * ``compute_losses(batch, stage) -> (total, parts)`` where ``total`` is the scalar loss to
      optimise and ``parts`` maps term names to scalar tensors (e.g. the output of
      :class:`eo_common.losses.WeightedSum`). The ``stage`` argument (``"train"``, ``"val"``,
      ``"test"``) may be left out of the signature. It may return a third element, the model
      outputs, which are passed to the metric hooks; without it they receive the output of the last
      ``self(...)`` call made inside ``compute_losses`` (detached), or None;
    * optionally ``update_metrics(stage, batch, outputs)`` (alias ``metric_update(stage, outputs,
      batch)``) to feed streaming metrics, and ``compute_metrics(stage) -> dict`` returning the metrics
      of the whole epoch. By default ``compute_metrics`` calls ``self.<stage>_metrics.compute()``
      and resets it afterwards when such an attribute exists (e.g. a ``torchmetrics.MetricCollection``
      or an :mod:`eo_common.metrics` object); nested dicts are flattened to ``a/b`` names and
      non-scalars (confusion matrices) are skipped.

    Logged names (all ``on_epoch``, ``sync_dist=True``): ``{stage}/loss`` (the total),
    ``{stage}/loss_{name}`` for each term, and ``{stage}/{metric}`` once per epoch. Metrics must be
    synchronised over DDP ranks by the metric object itself (torchmetrics does this in ``compute``);
    ``sync_dist`` then averages identical values.

    ``configure_optimizers`` reads ``self.hparams`` (save them with ``self.save_hyperparameters()``):

    ============== ============= ==================================================================
    hparam          default       meaning
    ============== ============= ==================================================================
    optimizer       ``"adamw"``   ``"adamw"``, ``"adam"`` or ``"sgd"`` (``momentum`` 0.9, ``nesterov``)
    lr              ``1e-3``      base learning rate
    weight_decay    ``0.0``       weight decay
    lr_scheduler    ``"none"``    see :func:`build_scheduler` (``step``, ``plateau``, ``cosine``, ...)
    warmup_epochs   ``0``         linear warmup epochs
    max_epochs      trainer's     epochs for ``cosine``
    step_size, gamma, T_0, T_mult, min_lr   scheduler settings of :func:`build_scheduler`
    lr_patience     ``5``         ``plateau`` patience
    monitor, mode   ``"val/loss"``, ``"min"``  metric watched by ``plateau``
    scheduler_interval ``"epoch"`` ``"step"`` steps the schedule every optimizer step (lengths
                                  still in epochs; not for ``plateau``)
    ============== ============= ==================================================================

    Subclasses overriding ``on_{stage}_epoch_end`` must call ``super()`` so metrics get logged.

    Example:
        >>> class Regressor(EOModule):
        ...     def __init__(self, lr=1e-3, lr_scheduler="cosine", max_epochs=10):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        ...         self.net = torch.nn.Conv2d(3, 1, 3, padding=1)
        ...         self.val_metrics = torchmetrics.MeanSquaredError()
        ...     def forward(self, x):                        # (B, 3, H, W) -> (B, 1, H, W)
        ...         return self.net(x)
        ...     def compute_losses(self, batch, stage):
        ...         x, y = batch
        ...         pred = self(x)
        ...         l1 = torch.nn.functional.l1_loss(pred, y)
        ...         mse = torch.nn.functional.mse_loss(pred, y)
        ...         return l1 + 0.5 * mse, {"l1": l1, "mse": mse}
        ...     def update_metrics(self, stage, batch, outputs):
        ...         if stage == "val":
        ...             self.val_metrics.update(outputs, batch[1])
        >>> # logs train/loss, train/loss_l1, train/loss_mse, val/loss, ..., val/MeanSquaredError
    """

    def __init__(self) -> None:
        super().__init__()
        self._capturing_outputs = False
        self._captured_outputs: Any = None
        self.register_forward_hook(self._capture_outputs_hook)

    # ----------------------------------------------------------------- hooks for subclasses
    def compute_losses(self, batch: Any, stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(total, {term: value})`` for one batch; see the class docstring."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_losses(batch, stage)"
        )

    def update_metrics(self, stage: str, batch: Any, outputs: Any) -> None:
        """Feed streaming metrics with one batch (default: calls :meth:`metric_update`)."""
        self.metric_update(stage, outputs, batch)

    def metric_update(self, stage: str, outputs: Any, batch: Any) -> None:
        """Alias hook of :meth:`update_metrics` with the argument order of the API contract."""

    def compute_metrics(self, stage: str) -> Mapping[str, Any]:
        """Metrics of the finished epoch of ``stage`` (default: ``self.<stage>_metrics.compute()``)."""
        metrics = getattr(self, f"{stage}_metrics", None)
        if metrics is None or not hasattr(metrics, "compute"):
            return {}
        if hasattr(metrics, "update_count") and getattr(metrics, "update_count", 1) == 0:
            return {}  # torchmetrics object that saw no batch this epoch
        result = metrics.compute()
        if isinstance(result, Mapping):
            return result
        return {type(metrics).__name__: result}

    def reset_metrics(self, stage: str) -> None:
        """Reset streaming metric state after logging (default: ``self.<stage>_metrics.reset()``)."""
        metrics = getattr(self, f"{stage}_metrics", None)
        if metrics is not None and hasattr(metrics, "reset"):
            metrics.reset()

    def batch_size_of(self, batch: Any) -> int | None:
        """Number of samples in ``batch`` for loss averaging (default: first tensor's length)."""
        return _batch_size(batch)

    # ----------------------------------------------------------------- plumbing
    def _capture_outputs_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._capturing_outputs:
            self._captured_outputs = _detach(output)

    def _call_compute_losses(self, batch: Any, stage: str) -> tuple[Tensor, dict[str, Tensor], Any]:
        params = inspect.signature(self.compute_losses).parameters.values()
        takes_stage = (
            any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "stage" for p in params)
            or len(params) >= 2
        )
        self._capturing_outputs, self._captured_outputs = True, None
        try:
            result = (
                self.compute_losses(batch, stage) if takes_stage else self.compute_losses(batch)
            )
        finally:
            self._capturing_outputs = False
        if not isinstance(result, tuple) or len(result) not in (2, 3):
            raise TypeError(
                f"{type(self).__name__}.compute_losses must return (total, parts) or "
                f"(total, parts, outputs), got {type(result).__name__}"
            )
        total, parts = result[0], result[1]
        outputs = _detach(result[2]) if len(result) == 3 else self._captured_outputs
        self._captured_outputs = None
        if not isinstance(total, Tensor) or total.numel() != 1:
            raise TypeError(f"{type(self).__name__}.compute_losses: total must be a scalar tensor")
        if not isinstance(parts, Mapping):
            raise TypeError(
                f"{type(self).__name__}.compute_losses: parts must be a dict of tensors"
            )
        return total.reshape(()), dict(parts), outputs

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        total, parts, outputs = self._call_compute_losses(batch, stage)
        batch_size = self.batch_size_of(batch)
        log = {"on_step": False, "on_epoch": True, "sync_dist": True, "batch_size": batch_size}
        self.log(f"{stage}/loss", total.detach(), prog_bar=stage != "train", **log)
        for name, value in parts.items():
            value = value.detach() if isinstance(value, Tensor) else torch.as_tensor(float(value))
            self.log(f"{stage}/loss_{name}", value.float().mean(), **log)
        if stage == "train":  # per-step loss in the progress bar only
            self.log(
                "loss", total.detach(), prog_bar=True, logger=False, on_step=True, on_epoch=False
            )
        with torch.no_grad():
            self.update_metrics(stage, batch, outputs)
        return total

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = flatten_metrics(self.compute_metrics(stage))
        for name, value in metrics.items():
            if not math.isfinite(value):
                rank_zero_warn(f"{stage}/{name} is {value} at epoch {self.current_epoch}")
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, sync_dist=True)
        self.reset_metrics(stage)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._shared_step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.reset_metrics("val")
            return
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ----------------------------------------------------------------- optimisation
    def optimizer_parameters(self) -> Any:
        """Parameters (or param groups) to optimise (default: those with ``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _optimizer_steps_per_epoch(self) -> int:
        """Optimizer steps per epoch of the attached trainer (accumulation and devices included)."""
        if self._trainer is None:
            raise RuntimeError("scheduler_interval='step' needs the module attached to a Trainer")
        trainer = self.trainer
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise ValueError("scheduler_interval='step' needs a Trainer with max_epochs >= 1")
        return max(1, math.ceil(trainer.estimated_stepping_batches / trainer.max_epochs))

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        name = str(hp.get("optimizer", "adamw")).lower()
        lr = float(hp.get("lr", 1e-3))
        weight_decay = float(hp.get("weight_decay", 0.0))
        params = self.optimizer_parameters()
        optimizer: torch.optim.Optimizer
        if name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        elif name == "adam":
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        elif name == "sgd":
            optimizer = torch.optim.SGD(
                params,
                lr=lr,
                weight_decay=weight_decay,
                momentum=float(hp.get("momentum", 0.9)),
                nesterov=bool(hp.get("nesterov", False)),
            )
        else:
            raise ValueError(f"hparam optimizer must be one of {OPTIMIZERS}, got {name!r}")

        max_epochs = hp.get("max_epochs")
        if max_epochs is None and self._trainer is not None:
            max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs < 0:
            max_epochs = None
        steps_per_epoch = None
        interval = str(hp.get("scheduler_interval", "epoch"))
        if interval == "step":
            steps_per_epoch = self._optimizer_steps_per_epoch()
        elif interval != "epoch":
            raise ValueError(
                f"hparam scheduler_interval must be 'epoch' or 'step', got {interval!r}"
            )
        scheduler = build_scheduler(
            optimizer,
            str(hp.get("lr_scheduler", "none")),
            epochs=max_epochs,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=int(hp.get("warmup_epochs", 0)),
            step_size=int(hp.get("step_size", 10)),
            gamma=float(hp.get("gamma", 0.5)),
            patience=int(hp.get("lr_patience", 5)),
            T_0=int(hp.get("T_0", 10)),
            T_mult=int(hp.get("T_mult", 1)),
            min_lr=float(hp.get("min_lr", 0.0)),
            monitor=str(hp.get("monitor", "val/loss")),
            mode=hp.get("mode", "min"),
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
