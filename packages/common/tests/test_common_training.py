"""Tests of eo_common.training: seeding, schedules, NaN guard, flags, run folder, logging, resume."""

from __future__ import annotations

import argparse
import json
import math
import random
from importlib import metadata
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torchmetrics
from eo_common.training import (
    EOModule,
    NaNGuard,
    NonFiniteLossError,
    ResumeError,
    TrainConfig,
    WarmupReduceLROnPlateau,
    add_training_args,
    build_scheduler,
    build_trainer,
    derive_seed,
    flatten_metrics,
    parse_devices,
    prepare_run_dir,
    resume_checkpoint,
    seed_everything,
)
from sklearn.metrics import mean_absolute_error, mean_squared_error
from torch.utils.data import DataLoader, TensorDataset

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*number of training batches.*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*exists and is not empty.*"),
    pytest.mark.filterwarnings("ignore:.*treespec.*"),
]

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


# --------------------------------------------------------------------------- a tiny example model
class TinyRegressor(EOModule):
    """Two 3x3 convolutions (B, 1, 8, 8) -> (B, 1, 8, 8); loss = L1 + MSE, MSE/MAE as metrics."""

    def __init__(
        self,
        lr: float = 1e-2,
        weight_decay: float = 1e-2,
        lr_scheduler: str = "step",
        warmup_epochs: int = 1,
        max_epochs: int = 4,
        step_size: int = 1,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Conv2d(4, 1, 3, padding=1),
        )
        self.val_metrics = torchmetrics.MetricCollection(
            {"mse": torchmetrics.MeanSquaredError(), "mae": torchmetrics.MeanAbsoluteError()}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


def make_data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return x, 0.5 * x.roll(1, dims=-1) + 0.1


def loaders(x, y, batch_size=4, shuffle=True):
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)
    val = DataLoader(TensorDataset(x, y), batch_size=8)
    return train, val


def make_cfg(tmp_path: Path, **overrides) -> TrainConfig:
    base = dict(
        max_epochs=3,
        output_dir=tmp_path / "runs",
        experiment_name="tiny",
        accelerator="cpu",
        devices="1",
        num_workers=0,
        lr_scheduler="step",
    )
    base.update(overrides)
    return TrainConfig(**base)


def train(cfg: TrainConfig, module: L.LightningModule | None = None, data=None, **trainer_kwargs):
    """The flow a package CLI follows: seed, run folder, module, trainer, fit (with --resume)."""
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.output_dir, cfg.experiment_name, cfg.to_dict())
    module = module or TinyRegressor(max_epochs=cfg.max_epochs)
    x, y = data if data is not None else make_data()
    train_dl, val_dl = loaders(x, y)
    trainer = build_trainer(
        cfg, run_dir, monitor="val/loss", mode="min", **{**QUIET, **trainer_kwargs}
    )
    trainer.fit(module, train_dl, val_dl, ckpt_path=resume_checkpoint(run_dir, cfg.resume))
    return run_dir, module, trainer


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


# --------------------------------------------------------------------------- flags and config
CONTRACT_FLAGS = (
    "seed max_epochs lr weight_decay batch_size num_workers accumulate_grad_batches grad_clip "
    "precision devices num_nodes strategy accelerator early_stop_patience experiment_name "
    "output_dir resume lr_scheduler warmup_epochs max_bad_steps"
).split()


def test_training_args_match_the_contract_and_the_config_fields():
    parser = argparse.ArgumentParser()
    add_training_args(parser)
    group = next(g for g in parser._action_groups if g.title == "training")
    flags = {opt for action in group._group_actions for opt in action.option_strings}
    assert flags == {f"--{name}" for name in CONTRACT_FLAGS}
    assert [f.name for f in TrainConfig.__dataclass_fields__.values()] == CONTRACT_FLAGS
    args = parser.parse_args([])
    assert (
        TrainConfig.from_args(args) == TrainConfig()
    )  # parser defaults are the dataclass defaults


def test_training_args_parse_into_config():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_root", default="x")  # a package's own flag is ignored by from_args
    add_training_args(parser)
    argv = (
        "--seed 3 --max_epochs 7 --lr 0.01 --weight_decay 0 --batch_size 2 --num_workers 0 "
        "--accumulate_grad_batches 4 --grad_clip 1.5 --precision bf16-mixed --devices 0,1 "
        "--num_nodes 2 --strategy ddp --accelerator cpu --early_stop_patience 0 "
        "--experiment_name exp --output_dir out --resume --lr_scheduler plateau --warmup_epochs 2 "
        "--max_bad_steps 5"
    ).split()
    cfg = TrainConfig.from_args(parser.parse_args(argv))
    assert cfg == TrainConfig(
        seed=3,
        max_epochs=7,
        lr=0.01,
        weight_decay=0.0,
        batch_size=2,
        num_workers=0,
        accumulate_grad_batches=4,
        grad_clip=1.5,
        precision="bf16-mixed",
        devices="0,1",
        num_nodes=2,
        strategy="ddp",
        accelerator="cpu",
        early_stop_patience=0,
        experiment_name="exp",
        output_dir=Path("out"),
        resume="last",
        lr_scheduler="plateau",
        warmup_epochs=2,
        max_bad_steps=5,
    )
    assert cfg.run_dir == Path("out/exp")
    assert parser.parse_args(["--resume", "a/b.ckpt"]).resume == "a/b.ckpt"
    assert parser.parse_args(["--grad_clip", "0"]).grad_clip is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "16"])
    assert cfg.optimizer_hparams() == {
        "lr": 0.01,
        "weight_decay": 0.0,
        "lr_scheduler": "plateau",
        "warmup_epochs": 2,
        "max_epochs": 7,
    }


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("precision", "16", "precision"),
        ("lr_scheduler", "linear", "lr_scheduler"),
        ("max_epochs", 0, "max_epochs"),
        ("experiment_name", "a/b", "experiment_name"),
        ("lr", 0.0, "lr"),
        ("devices", "two", "--devices"),
    ],
)
def test_train_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_parse_devices():
    assert parse_devices("auto") == "auto"
    assert parse_devices("2") == 2
    assert parse_devices("-1") == -1
    assert parse_devices("0,1") == [0, 1]
    assert parse_devices("[1]") == 1
    with pytest.raises(ValueError, match="--devices"):
        parse_devices("two")


# --------------------------------------------------------------------------- run folder, logging
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    cfg = make_cfg(tmp, max_epochs=3, experiment_name="tiny")
    run_dir, module, trainer = train(cfg)
    return cfg, run_dir, module, trainer


def test_run_dir_layout_and_config_json(trained_run):
    cfg, run_dir, _, _ = trained_run
    assert run_dir == cfg.output_dir / "tiny"
    for rel in ("config.json", "metrics.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run_dir / rel).is_file(), rel
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    record = json.loads((run_dir / "config.json").read_text())
    assert record["arguments"] == json.loads(json.dumps(cfg.to_dict()))
    assert isinstance(record["git_commit"], str) and len(record["git_commit"].split("-")[0]) == 40
    assert record["package_versions"]["torch"] == metadata.version("torch")
    assert record["package_versions"]["lightning"] == L.__version__
    assert record["timestamp"].endswith("+00:00")


def test_every_loss_term_and_metric_is_in_metrics_csv(trained_run):
    _, run_dir, _, _ = trained_run
    df = pd.read_csv(run_dir / "metrics.csv")
    for stage in ("train", "val"):
        for col in (f"{stage}/loss", f"{stage}/loss_l1", f"{stage}/loss_mse"):
            assert df[col].notna().sum() == 3, col  # once per epoch
    for col in ("val/mse", "val/mae", "train/lr", "train/nonfinite_steps"):
        assert df[col].notna().sum() == 3, col
    assert sorted(df.loc[df["val/loss"].notna(), "epoch"]) == [0, 1, 2]
    # total = l1 + mse in every logged epoch
    rows = df[df["val/loss"].notna()]
    np.testing.assert_allclose(
        rows["val/loss"], rows["val/loss_l1"] + rows["val/loss_mse"], rtol=1e-5
    )


def test_logged_validation_values_match_an_independent_computation(trained_run):
    _, run_dir, module, _ = trained_run
    x, y = make_data()
    module.eval()
    with torch.no_grad():
        pred = module(x)
    df = pd.read_csv(run_dir / "metrics.csv")
    last = df[df["val/loss"].notna()].iloc[-1]
    truth, guess = y.flatten().numpy(), pred.flatten().numpy()
    mse = mean_squared_error(truth, guess)
    mae = mean_absolute_error(truth, guess)
    assert last["val/mse"] == pytest.approx(mse, rel=1e-5)
    assert last["val/mae"] == pytest.approx(mae, rel=1e-5)
    assert last["val/loss"] == pytest.approx(mse + mae, rel=1e-5)


def test_best_checkpoint_holds_the_best_epoch(trained_run):
    _, run_dir, _, trainer = trained_run
    df = pd.read_csv(run_dir / "metrics.csv")
    best_val = df["val/loss"].min()
    ckpt = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=False)
    states = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert float(states[0]["best_model_score"]) == pytest.approx(best_val, rel=1e-6)
    best_epoch = int(df.loc[df["val/loss"].idxmin(), "epoch"])
    assert ckpt["epoch"] == best_epoch
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == trainer.global_step


def test_learning_rate_in_metrics_csv_follows_the_schedule(trained_run):
    _, run_dir, _, _ = trained_run
    df = pd.read_csv(run_dir / "metrics.csv")
    lrs = df["train/lr"].dropna().tolist()
    # TinyRegressor: lr 1e-2, 1 warmup epoch, then step decay by 0.5 every epoch
    np.testing.assert_allclose(lrs, [0.005, 0.01, 0.005], rtol=1e-9)


def test_prepare_run_dir_keeps_the_previous_config(tmp_path):
    run_dir = prepare_run_dir(tmp_path, "exp", {"lr": 1})
    first = json.loads((run_dir / "config.json").read_text())
    prepare_run_dir(tmp_path, "exp", {"lr": 2})
    backups = sorted(run_dir.glob("config.*.json"))
    assert len(backups) == 1
    assert json.loads(backups[0].read_text()) == first
    assert json.loads((run_dir / "config.json").read_text())["arguments"] == {"lr": 2}
    with pytest.raises(ValueError, match="experiment_name"):
        prepare_run_dir(tmp_path, "../escape", {})


def test_prepare_run_dir_writes_nothing_on_other_ranks(tmp_path, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    run_dir = prepare_run_dir(tmp_path, "exp", {"lr": 1})
    assert run_dir.is_dir() and not (run_dir / "config.json").exists()


# --------------------------------------------------------------------------- resume
def test_resume_checkpoint_paths_and_errors(tmp_path):
    run_dir = tmp_path / "runs" / "x"
    assert resume_checkpoint(run_dir, None) is None
    assert resume_checkpoint(run_dir, False) is None
    with pytest.raises(ResumeError, match="last.ckpt"):
        resume_checkpoint(run_dir, True)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        resume_checkpoint(run_dir, str(tmp_path / "missing.ckpt"))
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in ("last", "best"):
        (run_dir / "checkpoints" / f"{name}.ckpt").write_bytes(b"x")
    assert resume_checkpoint(run_dir, True) == str(run_dir / "checkpoints/last.ckpt")
    assert resume_checkpoint(run_dir, "last") == str(run_dir / "checkpoints/last.ckpt")
    assert resume_checkpoint(run_dir, "best") == str(run_dir / "checkpoints/best.ckpt")
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"x")
    assert resume_checkpoint(run_dir, str(other)) == str(other)


@pytest.mark.slow
def test_resume_after_two_epochs_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    """Shuffled loader, dropout, AdamW and a warmup+step schedule: resume must be bit-exact."""
    _, full, _ = train(make_cfg(tmp_path, max_epochs=4, experiment_name="full"))
    _, part, _ = train(make_cfg(tmp_path, max_epochs=2, experiment_name="part"))
    partial_weights = {k: v.clone() for k, v in part.state_dict().items()}
    run_dir, resumed, trainer = train(
        make_cfg(tmp_path, max_epochs=4, experiment_name="part", resume="last")
    )
    assert trainer.current_epoch == 4
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
        assert not torch.equal(value, partial_weights[name]), name  # epochs 3-4 did train
    # metrics.csv: each epoch once, the first two from the first run, kept across the resume
    df = pd.read_csv(run_dir / "metrics.csv")
    assert df.loc[df["val/loss"].notna(), "epoch"].tolist() == [0, 1, 2, 3]
    assert df.loc[df["train/loss"].notna(), "epoch"].tolist() == [0, 1, 2, 3]
    full_df = pd.read_csv(tmp_path / "runs/full/metrics.csv")
    np.testing.assert_array_equal(
        df["val/loss"].dropna().to_numpy(), full_df["val/loss"].dropna().to_numpy()
    )


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


def _fit_plain(cfg, module, x, y, callbacks, shuffle=False):
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.output_dir, cfg.experiment_name, cfg.to_dict())
    train_dl = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=shuffle)
    trainer = build_trainer(
        cfg, run_dir, "train/loss", "min", extra_callbacks=callbacks, limit_val_batches=0, **QUIET
    )
    trainer.fit(module, train_dl)
    return run_dir, trainer


def test_nan_guard_skips_a_step_with_nan_loss(tmp_path):
    x, y = nan_at(*make_data(16), [9])  # batch 2 of 4 in every epoch has a NaN target
    recorder = WeightRecorder()
    cfg = make_cfg(tmp_path, max_epochs=2, max_bad_steps=3, early_stop_patience=0)
    module = TinyRegressor(dropout=0.0, lr_scheduler="none", warmup_epochs=0)
    with pytest.warns(UserWarning, match="NaNGuard: non-finite"):
        run_dir, trainer = _fit_plain(cfg, module, x, y, [recorder])
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
    cfg = make_cfg(tmp_path, max_epochs=1, early_stop_patience=0)
    module = SqrtLoss(dropout=0.0, lr_scheduler="none", warmup_epochs=0)
    with pytest.warns(UserWarning, match="NaNGuard"):
        _fit_plain(cfg, module, x, y, [recorder])
    assert [recorder.changed(i) for i in range(2)] == [True, False]


def test_nan_guard_stops_after_max_bad_steps_in_a_row(tmp_path):
    x, y = nan_at(*make_data(32), range(8, 32))  # 2 good batches, then only NaN
    recorder = WeightRecorder()
    cfg = make_cfg(tmp_path, max_epochs=5, max_bad_steps=3, early_stop_patience=0, lr=0.05)
    module = TinyRegressor(dropout=0.0, lr_scheduler="none", warmup_epochs=0, lr=0.05)
    with pytest.raises(NonFiniteLossError) as info, pytest.warns(UserWarning):
        _fit_plain(cfg, module, x, y, [recorder])
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


# --------------------------------------------------------------------------- trainer flags
def test_build_trainer_passes_the_flags_to_lightning(tmp_path):
    from lightning.pytorch.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
        TQDMProgressBar,
    )
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    cfg = make_cfg(
        tmp_path,
        grad_clip=0.5,
        accumulate_grad_batches=3,
        precision="bf16-mixed",
        early_stop_patience=4,
        max_bad_steps=7,
        max_epochs=9,
    )
    run_dir = tmp_path / "run"
    trainer = build_trainer(cfg, run_dir, monitor="val/mcc", mode="max")
    assert trainer.gradient_clip_val == 0.5
    assert trainer.gradient_clip_algorithm == "norm"
    assert trainer.accumulate_grad_batches == 3
    assert trainer.precision == "bf16-mixed"
    assert trainer.max_epochs == 9 and trainer.num_devices == 1 and trainer.num_nodes == 1
    callbacks = {type(cb): cb for cb in trainer.callbacks}
    ckpt = callbacks[ModelCheckpoint]
    assert (ckpt.monitor, ckpt.mode, Path(ckpt.dirpath)) == (
        "val/mcc",
        "max",
        run_dir / "checkpoints",
    )
    assert ckpt.save_last and ckpt.filename == "best"
    stop = callbacks[EarlyStopping]
    assert (stop.monitor, stop.patience, stop.mode) == ("val/mcc", 4, "max")
    assert callbacks[NaNGuard].max_bad_steps == 7
    assert LearningRateMonitor in callbacks and TQDMProgressBar in callbacks
    csv_logger = next(lg for lg in trainer.loggers if isinstance(lg, CSVLogger))
    tb_logger = next(lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger))
    assert Path(csv_logger.experiment.metrics_file_path) == run_dir / "metrics.csv"
    assert Path(tb_logger.log_dir) == run_dir / "tensorboard"
    no_stop = build_trainer(make_cfg(tmp_path, early_stop_patience=0), run_dir, "val/loss", "min")
    assert not any(isinstance(cb, EarlyStopping) for cb in no_stop.callbacks)
    with pytest.raises(ValueError, match="mode"):
        build_trainer(cfg, run_dir, "val/loss", "lowest")  # type: ignore[arg-type]


def test_build_trainer_reads_the_topology_under_torchrun(tmp_path, monkeypatch):
    from lightning.fabric.plugins.environments import TorchElasticEnvironment
    from lightning.pytorch.utilities import rank_zero_only

    env = {
        "TORCHELASTIC_RUN_ID": "test",
        "RANK": "0",
        "GROUP_RANK": "0",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "2",
        "WORLD_SIZE": "4",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29555")
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # restored afterwards
    trainer = build_trainer(make_cfg(tmp_path, devices="auto"), tmp_path / "run", "val/loss", "min")
    assert trainer.num_devices == 2 and trainer.num_nodes == 2
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert trainer.strategy.world_size == 4


class GradNormRecorder(L.Callback):
    """Gradient L2 norm used by each optimizer step (after clipping).

    Lightning zeroes gradients at the start of the next accumulation cycle, so after the batch that
    stepped the optimizer the (clipped) gradients are still in place.
    """

    def __init__(self):
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            self.norms.append(float(torch.nn.utils.get_total_norm(grads)))


@pytest.mark.parametrize("clip", [None, 0.05])
def test_gradient_clipping_and_accumulation_take_effect(tmp_path, clip):
    recorder = GradNormRecorder()
    cfg = make_cfg(tmp_path, max_epochs=1, accumulate_grad_batches=2, grad_clip=clip)
    module = TinyRegressor(dropout=0.0, lr_scheduler="none", warmup_epochs=0)
    x, y = make_data(16)
    _, trainer = _fit_plain(cfg, module, x, y, [recorder])
    assert trainer.global_step == 2  # 4 batches, one optimizer step per 2
    assert len(recorder.norms) == 2
    if clip is None:
        assert max(recorder.norms) > 0.05  # so that clipping below is observable
    else:
        assert max(recorder.norms) <= clip * (1 + 1e-4)


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

    cfg = make_cfg(tmp_path, max_epochs=1, early_stop_patience=0)
    x, y = make_data(8)
    module = ContractStyle(dropout=0.0)
    _fit_plain(cfg, module, x, y, [])
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
    cfg = make_cfg(tmp_path, max_epochs=3, accumulate_grad_batches=2, early_stop_patience=0)
    x, y = make_data(16)  # 4 batches, accumulation 2 -> 2 optimizer steps per epoch
    _, trainer = _fit_plain(cfg, PerStep(), x, y, [recorder])
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


@pytest.mark.parametrize("name", ["seeding", "schedulers", "config", "module", "run"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    mod = importlib.import_module(f"eo_common.training.{name}")
    extraglobs = {"torch": torch, "torchmetrics": torchmetrics, "L": L, "argparse": argparse}
    result = doctest.testmod(mod, extraglobs=extraglobs, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
