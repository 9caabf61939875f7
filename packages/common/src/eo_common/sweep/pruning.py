"""Pruning: each validation of a trial's training goes to Optuna, which may stop the trial early.

A sweep runs each trial as the ordinary command in a subprocess and names the trial in the
environment variable :data:`eo_common.sweep.TRIAL_ENV` (JSON: storage, study, trial id, objective
metric, pruner). :func:`eo_common.training.fit_run` asks :func:`trial_callbacks` for its callbacks, so
every training command built on ``fit_run`` is prunable without code of its own; outside a sweep the
list is empty and nothing here (nor Optuna) is imported.

:class:`SweepPruning` uses only Lightning's public ``Callback`` API. After each validation (not the
sanity check) rank 0 reports the objective metric to the trial as the intermediate value of that epoch
and asks the study's pruner; the decision is broadcast to every rank and, if the trial is to be
pruned, the callback sets ``trainer.should_stop`` (the way ``EarlyStopping`` stops) and records
``eolab_pruned`` on the trial. The run then ends normally: its folder keeps the best checkpoint and a
finished ``summary.json``, and the worker marks the trial pruned. (optuna-integration's
``PyTorchLightningPruningCallback`` was not used: it needs the ``optuna.Trial`` object of the process
running ``study.optimize`` -- here the training runs in another process -- reads Lightning's private
``trainer._accelerator_connector``, and raises ``TrialPruned`` inside ``fit``, which would leave the
run folder as a failed run.)

Only the first seed of a trial reports (steps = its epochs): pruning compares trials on the same seed,
and a trial that survives its first seed runs its other seeds in full.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from . import TRIAL_ENV

__all__ = ["active_trial", "trial_callbacks", "PRUNED_ATTR"]

PRUNED_ATTR = "eolab_pruned"


def active_trial() -> dict[str, Any] | None:
    """The sweep trial this process runs (the parsed :data:`TRIAL_ENV`), or None."""
    text = os.environ.get(TRIAL_ENV, "")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def trial_callbacks() -> list[Any]:
    """``[SweepPruning(...)]`` inside a sweep trial that reports (its first seed), else ``[]``."""
    info = active_trial()
    if not info or not info.get("report") or info.get("pruning", {}).get("type") == "none":
        return []
    return [_make_callback(info)]


def _make_callback(info: dict[str, Any]) -> Any:
    import lightning as L

    class SweepPruning(L.Callback):
        """Reports ``metric`` after each validation and stops the run when Optuna prunes it."""

        def __init__(self, info: dict[str, Any]):
            self.info = info
            self.metric = str(info["metric"])
            self._study: Any = None
            self._storage: Any = None

        def _connect(self) -> None:
            if self._study is not None:
                return
            from pathlib import Path

            import optuna

            from .storage import make_pruner, open_storage, quiet_optuna

            quiet_optuna()
            self._storage = open_storage(self.info["storage"], Path(self.info["sweep_dir"]))
            self._study = optuna.load_study(
                study_name=self.info["study"],
                storage=self._storage,
                pruner=make_pruner(self.info["pruning"]),
            )

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            stop = False
            value = trainer.callback_metrics.get(self.metric)
            if trainer.is_global_zero and value is not None:
                number = float(value)
                if math.isfinite(number):
                    self._connect()
                    tid = int(self.info["trial_id"])
                    step = int(trainer.current_epoch)
                    self._storage.set_trial_intermediate_value(tid, step, number)
                    stop = bool(self._study.pruner.prune(self._study, self._storage.get_trial(tid)))
                    if stop:
                        self._storage.set_trial_user_attr(
                            tid, PRUNED_ATTR, {"epoch": step, "value": number}
                        )
            stop = bool(trainer.strategy.broadcast(stop))
            if stop:
                trainer.should_stop = True

    return SweepPruning(info)
