"""DDP: a 2-process CPU (gloo) run through ``fit_run`` gives the same weights and validation metrics
as a 1-process run.

The 1-process reference runs inside pytest. The 2-process run is this file executed as a script under
``torchrun --standalone --nproc_per_node 2`` with the default ``--devices auto --strategy auto``:
:func:`eo_common.training.build_trainer` reads the process layout from torchrun's environment and
Lightning picks DDP with the gloo backend, as a user's ``torchrun ... glacier-train`` would.

Equivalence holds because: 16 samples, per-process batch 2 vs. batch 4 in one process; under DDP
Lightning shuffles the training set with a ``DistributedSampler`` (seed = ``--seed``, reshuffled per
epoch) that deals the permutation ``p`` out as ``p[r::2]`` to rank ``r``, so global batch ``k`` holds
``p[4k:4k+4]``; the 1-process run uses the same sampler with one replica, so it sees the same global
batches. No dropout or batch norm; gradients are averaged over ranks (= the mean over the global
batch); the streaming torchmetrics reduce their sum states over ranks before ``compute``.
One training target is NaN: the NaN guard must skip that global step on both ranks (only one of
them has the NaN loss), as the single process does. Both runs go through ``fit_run``, so the run
folder (config.yaml, summary.json) is written once, by rank 0.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import torchmetrics
from eo_common.runs import read_summary
from eo_common.training import EOModule, NaNGuard, fit_run, seed_everything
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

N_SAMPLES, GLOBAL_BATCH, EPOCHS = 16, 4, 2
NAN_SAMPLE = 5  # its training target is NaN
METRIC_KEYS = ("val/loss", "val/loss_l1", "val/loss_mse", "val/mse", "val/mae")


def _toy():
    """tests/data/toy_training.py (loaded by conftest.py, also when this file runs as a script)."""
    if "eo_common_testdata_toy_training" not in sys.modules:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        importlib.import_module("conftest")
    return sys.modules["eo_common_testdata_toy_training"]


class TinyConvRegressor(EOModule):
    """(B, 1, 8, 8) -> (B, 1, 8, 8); sum-based streaming MSE/MAE metrics (exact over DDP)."""

    def __init__(self, lr: float = 0.05, max_epochs: int = EPOCHS, **hparams):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 1, 3, padding=1),
        )
        self.val_metrics = torchmetrics.MetricCollection(
            {"mse": torchmetrics.MeanSquaredError(), "mae": torchmetrics.MeanAbsoluteError()}
        )

    def forward(self, x):
        return self.net(x)

    def compute_losses(self, batch, stage):
        x, y = batch
        pred = self(x)
        l1 = (pred - y).abs().mean()
        mse = ((pred - y) ** 2).mean()
        return l1 + mse, {"l1": l1, "mse": mse}

    def update_metrics(self, stage, batch, outputs):
        if stage == "val":
            self.val_metrics.update(outputs, batch[1])


class DDPData(L.LightningDataModule):
    """16 samples, one NaN training target; 1 process: the DistributedSampler Lightning itself puts
    in place under DDP, with a single replica."""

    def __init__(self, batch_size: int, seed: int, single: bool):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N_SAMPLES, 1, 8, 8, generator=g)
        self.y = 0.5 * self.x.roll(1, dims=-1) + 0.1
        self.batch_size, self.seed, self.single = batch_size, seed, single

    def train_dataloader(self):
        y_train = self.y.clone()
        y_train[NAN_SAMPLE] = float("nan")  # NaNGuard must skip the same global step on every rank
        dataset = TensorDataset(self.x, y_train)
        sampler = (
            DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=self.seed)
            if self.single
            else None
        )
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, shuffle=False)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)


def run_training(argv: list[str]) -> dict:
    """A training command's flow through fit_run; returns rank-0 metrics and final weights."""
    toy = _toy()
    defaults = ["--epochs", str(EPOCHS), "--scheduler", "none", "--warmup_epochs", "0"]
    cfg = toy.TOY_TRAIN.parse([*defaults, "--log", "[csv]", *argv])
    seed_everything(cfg.run.seed)  # as the command layer does before the work builds the model
    module = TinyConvRegressor(**cfg.optim.hparams())
    seen: dict = {}

    class Keep(L.Callback):
        def on_fit_end(self, trainer, pl_module):
            seen["trainer"] = trainer

    data = DDPData(cfg.data.batch_size, cfg.run.seed, single=cfg.run.devices == "1")
    fit_run(
        module,
        data,
        cfg,
        command="toy-train",
        monitor="val/loss",
        mode="min",
        extra_callbacks=[Keep()],
        enable_model_summary=False,
    )
    trainer = seen["trainer"]
    return {
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "metrics": {k: float(trainer.callback_metrics[k]) for k in METRIC_KEYS},
        "weights": {k: v.tolist() for k, v in module.state_dict().items()},
        "is_global_zero": trainer.is_global_zero,
        "skipped_steps": next(
            c for c in trainer.callbacks if isinstance(c, NaNGuard)
        ).total_bad_steps,
    }


def _compare(reference: dict, ddp: dict) -> None:
    assert ddp["world_size"] == 2 and reference["world_size"] == 1
    assert ddp["global_step"] == reference["global_step"] == EPOCHS * N_SAMPLES // GLOBAL_BATCH
    # one global batch per epoch holds the NaN sample; under DDP only one rank sees it
    assert ddp["skipped_steps"] == reference["skipped_steps"] == EPOCHS
    for key in METRIC_KEYS:  # float32 all-reduce sums in another order: 1e-5 relative
        assert ddp["metrics"][key] == pytest.approx(
            reference["metrics"][key], rel=1e-5, abs=1e-7
        ), key
    for name, value in reference["weights"].items():
        torch.testing.assert_close(
            torch.tensor(ddp["weights"][name]), torch.tensor(value), rtol=1e-5, atol=1e-6
        )


def _common_argv(out: Path, name: str) -> list[str]:
    return ["--output_dir", str(out), "--name", name, "--seed", "0", "--lr", "0.05"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    reference = run_training(
        _common_argv(tmp_path, "single") + ["--devices", "1", "--batch_size", str(GLOBAL_BATCH)]
    )

    result = tmp_path / "ddp.json"
    argv = _common_argv(tmp_path, "ddp") + ["--devices", "auto"]
    argv += ["--batch_size", str(GLOBAL_BATCH // 2)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    proc = subprocess.run(
        [*torchrun, str(Path(__file__).resolve()), str(result), *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, (
        f"torchrun DDP run failed after {elapsed:.0f} s:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    ddp = json.loads(result.read_text())
    _compare(reference, ddp)
    # both ranks trained; rank 0 wrote the run folder once
    summary = read_summary(tmp_path / "ddp")
    assert summary["status"] == "finished" and summary["seed"] == 0
    assert (tmp_path / "ddp" / "metrics.csv").is_file()
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
    config = (tmp_path / "ddp" / "config.yaml").read_text()
    assert "devices: auto" in config  # the layout came from torchrun


if __name__ == "__main__":
    # script mode for the DDP test: python test_common_training_ddp.py RESULT.json [training flags]
    torch.set_num_threads(1)
    outcome = run_training(sys.argv[2:])
    if outcome["is_global_zero"]:
        Path(sys.argv[1]).write_text(json.dumps(outcome))
