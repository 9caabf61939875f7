"""Sweeps and ablations on Optuna: many runs of one eolab command, and their comparison.

A sweep is a YAML file (see :mod:`eo_common.sweep.spec` and ``docs/running_experiments.md``)::

    command: glacier-train              # a console script (or module:attr) that is an eolab Command
    base:                               # the command's config: a file and/or values
      config: glacier_base.yaml
      optim.epochs: 20
    space:                              # searched fields (or grid: / variants:)
      optim.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
      loss.mcc_weight: {type: float, low: 0.0, high: 1.0}
    objective: {metric: val/mcc, direction: maximize}
    trials: 30
    seeds: 2                            # every trial runs seeds 0 and 1; mean and spread reported
    pruning: {type: median, warmup_epochs: 3}

``eolab sweep run sweep.yaml [--workers N | --gpus 0,1] [--storage URL]`` runs it, ``eolab sweep
report DIR`` writes the tables and plots, ``eolab runs compare RUN...`` compares run folders.

Modules:

* :mod:`~eo_common.sweep.spec` -- the sweep file: read, resolve the command, validate (no Optuna);
* :mod:`~eo_common.sweep.storage` -- the Optuna storage (embedded journal file or a URL), the study,
  dead-worker detection and retries;
* :mod:`~eo_common.sweep.worker` -- a worker: takes trials and runs each seed as the ordinary
  command in a subprocess;
* :mod:`~eo_common.sweep.launch` -- the subprocess entry that runs one trial's command;
* :mod:`~eo_common.sweep.pruning` -- the Lightning callback that reports each validation to Optuna;
* :mod:`~eo_common.sweep.report` and :mod:`~eo_common.sweep.ablation` -- ``eolab sweep report``;
* :mod:`~eo_common.sweep.cli` -- the ``eolab sweep`` and ``eolab runs`` commands.

Nothing here imports torch or Optuna at import time.
"""

from __future__ import annotations

__all__ = ["TRIAL_ENV"]

#: Environment variable that tells a trial's command which Optuna trial it runs (JSON), so that
#: :func:`eo_common.training.fit_run` adds the pruning callback.
TRIAL_ENV = "EOLAB_SWEEP_TRIAL"
