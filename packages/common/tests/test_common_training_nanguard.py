"""The NaN guard: skipped steps leave no trace (weights, optimizer state, BatchNorm statistics),
a run that never applies a step fails loudly, and non-finite losses stay visible."""

from __future__ import annotations

import lightning as L
import pandas as pd
import pytest
import torch
from eo_common.errors import NonFiniteRunError
from eo_common.losses import MCCLoss
from eo_common.runs import read_summary
from eo_common.training import NaNGuard, NonFiniteLossError
from eo_common_testdata_toy_training import (
    TinyRegressor,
    fit_plain,
    make_data,
    toy_config,
    toy_task,
    train,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*number of training batches.*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*treespec.*"),
    pytest.mark.filterwarnings("ignore:.*validation_step.*"),
]


# --------------------------------------------------------------------------- NaN guard
class WeightRecorder(L.Callback):
    """Parameters before and after every training batch."""

    def __init__(self):
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append([p.detach().clone() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append([p.detach().clone() for p in pl_module.parameters()])

    def changed(self, i: int) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(self.before[i], self.after[i]))


def nan_at(x: torch.Tensor, y: torch.Tensor, sample_indices) -> tuple[torch.Tensor, torch.Tensor]:
    y = y.clone()
    y[list(sample_indices)] = float("nan")
    return x, y


def test_nan_guard_skips_a_step_with_nan_loss(tmp_path):
    x, y = nan_at(*make_data(16), [9])  # batch 2 of 4 in every epoch has a NaN target
    recorder = WeightRecorder()
    module = TinyRegressor(dropout=0.0, lr_scheduler="none", warmup_epochs=0)
    with pytest.warns(UserWarning, match="NaNGuard: non-finite"):
        run_dir, trainer = fit_plain(
            tmp_path, module, x, y, [recorder], epochs=2, max_bad_steps=3, early_stop_patience=0
        )
    # AdamW with momentum and weight decay: only a real skip leaves the weights unchanged
    assert [recorder.changed(i) for i in range(8)] == [True, True, False, True] * 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    guard = next(cb for cb in trainer.callbacks if isinstance(cb, NaNGuard))
    assert guard.total_bad_steps == 2 and guard.consecutive_bad_steps == 0
    df = pd.read_csv(run_dir / "metrics.csv")
    assert df["train/nonfinite_steps"].dropna().tolist() == [1.0, 2.0]


def test_nan_guard_skips_a_step_with_finite_loss_but_infinite_gradient(tmp_path):
    class SqrtLoss(TinyRegressor):
        def compute_losses(self, batch, stage):
            x, y = batch
            err = ((self(x) - y) ** 2).mean()
            # sqrt'(0) = inf: a finite loss whose gradient is infinite on batch 1
            if bool((x[:, 0, 0, 0] == 99.0).any()):
                err = err + torch.sqrt(self.net[0].bias.sum() * 0)
            return err, {"mse": err}

    x, y = make_data(8)
    x[5, 0, 0, 0] = 99.0
    recorder = WeightRecorder()
    module = SqrtLoss(dropout=0.0, lr_scheduler="none", warmup_epochs=0)
    with pytest.warns(UserWarning, match="NaNGuard"):
        fit_plain(tmp_path, module, x, y, [recorder], epochs=1, early_stop_patience=0)
    assert [recorder.changed(i) for i in range(2)] == [True, False]


def test_nan_guard_stops_after_max_bad_steps_in_a_row(tmp_path):
    x, y = nan_at(*make_data(32), range(8, 32))  # 2 good batches, then only NaN
    recorder = WeightRecorder()
    module = TinyRegressor(dropout=0.0, lr_scheduler="none", warmup_epochs=0, lr=0.05)
    with pytest.raises(NonFiniteLossError) as info, pytest.warns(UserWarning):
        fit_plain(
            tmp_path, module, x, y, [recorder], epochs=5, max_bad_steps=3, early_stop_patience=0
        )
    err = info.value
    assert err.bad_steps == 3 and err.total_bad_steps == 3
    assert err.step == 4 and err.epoch == 0  # steps 0 and 1 trained, 2, 3, 4 skipped
    assert len(recorder.before) == 5 and len(recorder.after) == 4  # stopped inside batch 4
    assert [recorder.changed(i) for i in range(4)] == [True, True, False, False]
    # the last finite loss is the loss of batch 1, recomputed independently from its weights
    with torch.no_grad():
        for p, w in zip(module.parameters(), recorder.before[1]):
            p.copy_(w)
        pred = module(x[4:8])
        expected = ((pred - y[4:8]).abs().mean() + ((pred - y[4:8]) ** 2).mean()).item()
    assert err.last_finite_loss == pytest.approx(expected, rel=1e-5)
    assert err.last_finite_step == 1  # the global step at which that loss was computed
    message = str(err)
    for fragment in ("global step 4", "3 optimizer steps in a row", "--lr", "--grad_clip"):
        assert fragment in message


def test_nan_guard_reports_no_finite_loss_when_none_was_seen():
    err = NonFiniteLossError(
        step=2,
        epoch=0,
        bad_steps=3,
        total_bad_steps=3,
        last_finite_loss=None,
        last_finite_step=None,
        lr=1e-3,
        precision="16-mixed",
    )
    assert "no finite training loss" in str(err) and "--precision 32 or bf16-mixed" in str(err)
    with pytest.raises(ValueError, match="max_bad_steps"):
        NaNGuard(max_bad_steps=0)


# --------------------------------------------------------------------------- new in the run layer
class BufferRecorder(L.Callback):
    """BatchNorm running statistics before and after every training batch."""

    def __init__(self):
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _buffers(module):
        return {k: v.detach().clone() for k, v in module.named_buffers()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append(self._buffers(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(self._buffers(pl_module))


def test_a_skipped_step_leaves_batchnorm_statistics_untouched(tmp_path):
    """Issue 12: a batch with a NaN input must not reach running_mean/var (the BatchNorm update
    happens in the forward pass, before the loss is known); the other batches do update them."""
    x, y = make_data(16)
    x[9, 0, 3, 3] = float("nan")  # batch 2 of 4 in every epoch
    recorder = BufferRecorder()
    module = TinyRegressor(dropout=0.0, lr_scheduler="none", warmup_epochs=0, batch_norm=True)
    with pytest.warns(UserWarning, match="NaNGuard"):
        _, trainer = fit_plain(
            tmp_path, module, x, y, [recorder], epochs=1, max_bad_steps=3, early_stop_patience=0
        )
    names = ("net.1.running_mean", "net.1.running_var", "net.1.num_batches_tracked")
    for i in range(4):
        changed = [not torch.equal(recorder.before[i][n], recorder.after[i][n]) for n in names]
        assert changed == [i != 2] * 3, (i, changed)
    for name, value in module.named_buffers():
        assert torch.isfinite(value.float()).all(), name
    assert int(module.net[1].num_batches_tracked) == 3
    guard = next(cb for cb in trainer.callbacks if isinstance(cb, NaNGuard))
    assert guard.total_bad_steps == 1 and guard.good_steps == 3


def test_an_epoch_without_one_applied_step_fails_the_run(tmp_path):
    """Issue 11/12: every batch NaN (nodata stored as NaN): the guard never reaches max_bad_steps
    in a row within the epoch's 4 steps, yet the run must fail, and summary.json says so."""
    x, y = make_data(16)
    y[:, 0, 0, 0] = float("nan")  # NaN targets pass the input check; every loss is NaN
    cfg = toy_config(tmp_path, epochs=2, max_bad_steps=10)
    with pytest.raises(NonFiniteLossError) as info, pytest.warns(UserWarning, match="NaNGuard"):
        train(cfg, data=(x, y))
    err = info.value
    assert isinstance(err, NonFiniteRunError) and err.total_bad_steps == 4 and err.epoch == 0
    assert "every optimizer step of the epoch" in str(err)
    summary = read_summary(cfg.run.run_dir)
    assert summary["status"] == "failed" and "NonFiniteLossError" in summary["error"]


class SegmentationToy(TinyRegressor):
    """The toy network as a 2-class segmenter trained with the MCC loss."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net[-1] = torch.nn.Conv2d(4, 2, 3, padding=1)
        self.mcc = MCCLoss(num_classes=2)

    def compute_losses(self, batch, stage):
        x, y = batch
        loss = self.mcc(self(x), (y[:, 0] > 0.1).long())
        return loss, {"mcc": loss}


def test_a_nan_mcc_loss_is_seen_by_the_guard_and_not_reported_as_finite(tmp_path):
    """Issue 12: with a NaN logit the MCC loss was 1.0 (finite); the guard then took 1.0 for the
    last finite loss. Now the loss is NaN, and the last finite loss is the last real one."""
    x, y = make_data(16)
    x[8:, 0, 4, 4] = float("nan")  # batches 2 and 3 of 4
    module = SegmentationToy(dropout=0.0, lr_scheduler="none", warmup_epochs=0)
    with pytest.raises(NonFiniteLossError) as info, pytest.warns(UserWarning, match="NaNGuard"):
        fit_plain(tmp_path, module, x, y, epochs=1, max_bad_steps=2, early_stop_patience=0)
    err = info.value
    assert err.last_finite_step == 1 and err.last_finite_loss != pytest.approx(1.0)
    assert err.bad_steps == 2 and err.step == 3  # steps 2 and 3 skipped


def test_toy_task_uses_the_optim_group():
    cfg = toy_config("unused", lr=0.3, scheduler="cosine", epochs=7)
    task = toy_task(cfg)
    assert task.hparams["lr"] == 0.3 and task.hparams["lr_scheduler"] == "cosine"
    assert task.hparams["max_epochs"] == 7


class DivergesInValidation(TinyRegressor):
    """Finite training steps, NaN outputs in validation from epoch 1 on (a diverged network as
    validation sees it)."""

    def forward(self, x):
        out = super().forward(x)
        if not self.training and self.current_epoch >= 1:
            out = out * float("nan")
        return out


def test_a_nan_validation_metric_fails_the_run_instead_of_stopping_it_quietly(tmp_path):
    """EarlyStopping stops on a NaN monitor without an error, so the run used to end 'finished'
    with a useless best checkpoint (cr-train --lr 1e6); FiniteMonitor fails it with one line."""
    cfg = toy_config(tmp_path, epochs=4, early_stop_patience=2)
    with pytest.raises(NonFiniteRunError, match=r"val/loss is nan at epoch 1.*lower --lr"):
        train(cfg, task=DivergesInValidation(**cfg.optim.hparams(), step_size=1))
    summary = read_summary(cfg.run.run_dir)
    assert summary["status"] == "failed" and "val/loss is nan" in summary["error"]
