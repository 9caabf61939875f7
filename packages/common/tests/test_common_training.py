"""Tests of eo_common.training that need no run folder: seeding, schedules, the EOModule API."""

from __future__ import annotations

import argparse
import math
import random

import lightning as L
import numpy as np
import pytest
import torch
import torchmetrics
from eo_common.training import (
    EOModule,
    WarmupReduceLROnPlateau,
    build_scheduler,
    derive_seed,
    flatten_metrics,
    seed_everything,
)
from eo_common_testdata_toy_training import TinyRegressor, fit_plain, make_data

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*number of training batches.*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*treespec.*"),
]


# --------------------------------------------------------------------------- seeding
def test_seed_everything_repeats_python_numpy_torch():
    def draw():
        legacy_numpy = np.random.rand(3).tolist()  # noqa: NPY002 - the global generator is seeded
        return random.random(), legacy_numpy, torch.rand(4), torch.randn(2, 2)

    seed_everything(123)
    a = draw()
    seed_everything(123)
    b = draw()
    seed_everything(124)
    c = draw()
    assert a[0] == b[0] and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert a[0] != c[0] and not torch.equal(a[2], c[2])


def test_seed_everything_rejects_bad_seeds():
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    with pytest.raises(TypeError, match="seed"):
        seed_everything(1.5)  # type: ignore[arg-type]


def test_derive_seed_is_deterministic_and_order_sensitive():
    assert derive_seed(0, 3) == derive_seed(0, 3)
    assert len({derive_seed(0, e) for e in range(50)}) == 50
    assert derive_seed(0, 1) != derive_seed(1, 0)


# --------------------------------------------------------------------------- schedulers
BASE_LR, WARMUP, EPOCHS, MIN_LR = 0.1, 2, 12, 0.001


def _expected_lr(name: str, e: int) -> float:
    """Hand-written closed forms: linear warmup lr*(e+1)/(W+1), then the named schedule."""
    if e < WARMUP:
        return BASE_LR * (e + 1) / (WARMUP + 1)
    t = e - WARMUP
    if name == "none":
        return BASE_LR
    if name == "step":  # step_size 3, gamma 0.5
        return BASE_LR * 0.5 ** (t // 3)
    if name == "cosine":
        return MIN_LR + (BASE_LR - MIN_LR) * (1 + math.cos(math.pi * t / (EPOCHS - WARMUP))) / 2
    if name == "cosine_restarts":  # T_0 = 2, T_mult = 2: cycles of 2, 4, 8 epochs
        t_i, t_cur = 2, t
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= 2
        return MIN_LR + (BASE_LR - MIN_LR) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
    raise AssertionError(name)


def _lr_curve(name: str, steps: int, **kwargs) -> tuple[list[float], dict]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=BASE_LR)
    config = build_scheduler(opt, name, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        config["scheduler"].step()
    return lrs, config


@pytest.mark.parametrize("name", ["none", "step", "cosine", "cosine_restarts"])
def test_scheduler_follows_warmup_then_named_curve(name):
    lrs, config = _lr_curve(
        name,
        EPOCHS,
        epochs=EPOCHS,
        warmup_epochs=WARMUP,
        step_size=3,
        gamma=0.5,
        T_0=2,
        T_mult=2,
        min_lr=MIN_LR,
    )
    expected = [_expected_lr(name, e) for e in range(EPOCHS)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9, atol=1e-12)
    assert config["interval"] == "epoch" and config["frequency"] == 1
    # warmup rises strictly, and the named schedule starts at the base lr
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(BASE_LR)


def test_scheduler_without_warmup_starts_at_base_lr_and_cosine_ends_at_min():
    lrs, _ = _lr_curve("cosine", 11, epochs=10, min_lr=MIN_LR)
    assert lrs[0] == pytest.approx(BASE_LR)
    assert lrs[10] == pytest.approx(MIN_LR)  # T_max = 10 epochs


def test_scheduler_per_step_scales_lengths_by_steps_per_epoch():
    steps_per_epoch = 4
    lrs, config = _lr_curve(
        "step", 6 * steps_per_epoch, steps_per_epoch=steps_per_epoch, warmup_epochs=1, step_size=2
    )
    assert config["interval"] == "step"
    warm = [BASE_LR * (s + 1) / (steps_per_epoch + 1) for s in range(steps_per_epoch)]
    after = [BASE_LR * 0.5 ** ((s // steps_per_epoch) // 2) for s in range(5 * steps_per_epoch)]
    np.testing.assert_allclose(lrs, warm + after, rtol=1e-9)


def test_plateau_scheduler_warms_up_then_decays_on_the_monitor():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=BASE_LR)
    config = build_scheduler(
        opt, "plateau", warmup_epochs=2, patience=1, gamma=0.5, monitor="val/mae", mode="min"
    )
    assert isinstance(config["scheduler"], WarmupReduceLROnPlateau)
    assert config["monitor"] == "val/mae" and config["interval"] == "epoch"
    # warmup metrics are ignored; 1.0 is best, 2 epochs without improvement (> patience) -> halve
    val = [5.0, 5.0, 1.0, 2.0, 2.0, 0.5, 0.6, 0.7]
    lrs = []
    for v in val:
        lrs.append(opt.param_groups[0]["lr"])
        config["scheduler"].step(v)
    lrs.append(opt.param_groups[0]["lr"])
    expected = [BASE_LR / 3, 2 * BASE_LR / 3] + [BASE_LR] * 3 + [BASE_LR / 2] * 3 + [BASE_LR / 4]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)


def test_plateau_scheduler_state_round_trips():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    sched = WarmupReduceLROnPlateau(opt, warmup_epochs=3, patience=0)
    sched.step(1.0)
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    sched2 = WarmupReduceLROnPlateau(opt2, warmup_epochs=3, patience=0)
    sched2.load_state_dict(state)
    assert sched2.warmup_done == 1 and sched2.base_lrs == [BASE_LR]


def test_build_scheduler_rejects_bad_arguments():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="lr_scheduler must be one of"):
        build_scheduler(opt, "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs > warmup_epochs"):
        build_scheduler(opt, "cosine", epochs=None)
    with pytest.raises(ValueError, match="warmup_epochs"):
        build_scheduler(opt, "step", warmup_epochs=-1)


# --------------------------------------------------------------------------- EOModule API
def test_eomodule_accepts_the_contract_signatures(tmp_path):
    """compute_losses(batch) without stage, 3-tuple outputs, and metric_update(stage, outputs, batch)."""
    seen = []

    class ContractStyle(TinyRegressor):
        def compute_losses(self, batch):
            x, y = batch
            pred = self(x)
            return ((pred - y) ** 2).mean(), {"mse": ((pred - y) ** 2).mean()}, pred * 0 + 7

        def update_metrics(self, stage, batch, outputs):  # back to the base: calls metric_update
            EOModule.update_metrics(self, stage, batch, outputs)

        def metric_update(self, stage, outputs, batch):
            seen.append((stage, outputs.requires_grad, float(outputs.mean())))

    x, y = make_data(8)
    module = ContractStyle(dropout=0.0)
    fit_plain(tmp_path, module, x, y, epochs=1, early_stop_patience=0)
    assert seen == [("train", False, 7.0)] * 2


def test_eomodule_validates_compute_losses_output():
    class Bad(TinyRegressor):
        def compute_losses(self, batch, stage):
            return torch.ones(3), {}

    with pytest.raises(TypeError, match="scalar"):
        Bad()._call_compute_losses((torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)), "train")

    class NotImplemented_(EOModule):
        pass

    with pytest.raises(NotImplementedError, match="compute_losses"):
        NotImplemented_()._call_compute_losses(torch.zeros(1), "train")


def test_eomodule_captures_forward_outputs_detached():
    module = TinyRegressor(dropout=0.0)
    x, y = make_data(4)
    total, parts, outputs = module._call_compute_losses((x, y), "val")
    assert set(parts) == {"l1", "mse"} and total.requires_grad
    assert torch.equal(outputs, module(x).detach()) and not outputs.requires_grad


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)],
)
def test_configure_optimizers_reads_hparams(name, cls):
    class WithOptimizer(TinyRegressor):
        def __init__(self, optimizer, **kwargs):
            super().__init__(**kwargs)
            self.save_hyperparameters()

    module = WithOptimizer(
        optimizer=name, lr=0.3, weight_decay=0.01, lr_scheduler="cosine", max_epochs=5
    )
    config = module.configure_optimizers()
    opt = config["optimizer"]
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["weight_decay"] == 0.01
    assert config["lr_scheduler"]["name"] == "train/lr"
    sched = config["lr_scheduler"]["scheduler"]  # 1 warmup epoch, then cosine over 4 epochs
    assert isinstance(sched, torch.optim.lr_scheduler.SequentialLR)
    cosine = sched._schedulers[1]
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR) and cosine.T_max == 4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * 0.5)  # warmup epoch 0 of 1


class LRRecorder(L.Callback):
    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_scheduler_interval_step_updates_the_lr_every_optimizer_step(tmp_path):
    class PerStep(TinyRegressor):
        def __init__(self):
            super().__init__(lr=0.1, lr_scheduler="step", warmup_epochs=1, step_size=1, dropout=0.0)
            self.hparams["scheduler_interval"] = "step"

    recorder = LRRecorder()
    x, y = make_data(16)  # 4 batches, accumulation 2 -> 2 optimizer steps per epoch
    _, trainer = fit_plain(
        tmp_path,
        PerStep(),
        x,
        y,
        [recorder],
        epochs=3,
        accumulate_grad_batches=2,
        early_stop_patience=0,
    )
    assert trainer.global_step == 6
    # warmup over 2 steps: 0.1/3, 0.2/3; then decay by 0.5 every 2 steps; lr is read per batch
    per_step = [0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.05, 0.05]
    np.testing.assert_allclose(recorder.lrs, [lr for lr in per_step for _ in range(2)], rtol=1e-9)


def test_configure_optimizers_rejects_unknown_optimizer():
    class WithOptimizer(TinyRegressor):
        def __init__(self, optimizer):
            super().__init__()
            self.save_hyperparameters()

    with pytest.raises(ValueError, match="optimizer must be one of"):
        WithOptimizer("lamb").configure_optimizers()


def test_flatten_metrics_keeps_scalars_only():
    flat = flatten_metrics(
        {
            "mcc": 0.5,
            "n": 3,
            "arr": np.float32(0.25),
            "one": torch.tensor([2.0]),
            "per_class": {"ice": {"f1": torch.tensor(0.75), "support": 10}},
            "confusion_matrix": [[1, 0], [0, 1]],
            "matrix": torch.eye(2),
            "note": "text",
        }
    )
    assert flat == {
        "mcc": 0.5,
        "n": 3.0,
        "arr": 0.25,
        "one": 2.0,
        "per_class/ice/f1": 0.75,
        "per_class/ice/support": 10.0,
    }


@pytest.mark.parametrize("name", ["seeding", "schedulers", "module", "run"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    mod = importlib.import_module(f"eo_common.training.{name}")
    extraglobs = {"torch": torch, "torchmetrics": torchmetrics, "L": L, "argparse": argparse}
    result = doctest.testmod(mod, extraglobs=extraglobs, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
