"""The training run: build_trainer, RunCSVLogger, fit_run, summary.json, --resume, reruns, checkpoints."""

from __future__ import annotations

import json
import math
import re
from importlib import metadata
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from eo_common.errors import CheckpointError, InputError, RunFolderError
from eo_common.runs import config_hash, read_config, read_summary, resolved_config_dict
from eo_common.training import (
    NaNGuard,
    RunCSVLogger,
    build_trainer,
    load_checkpoint,
    seed_everything,
)
from eo_common.training.run import parse_devices
from eo_common_testdata_toy_training import (
    TOY_TRAIN,
    TinyRegressor,
    fit_plain,
    make_data,
    toy_config,
    toy_task,
    train,
)
from sklearn.metrics import mean_absolute_error, mean_squared_error

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*number of training batches.*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*treespec.*"),
]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- a finished run
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    cfg = toy_config(tmp / "runs", epochs=3, run_log=["csv", "tensorboard"])
    task = toy_task(cfg)
    seed_everything(0)
    summary = train(cfg, task=task)
    return cfg, cfg.run.run_dir, task, summary


def test_run_folder_layout_config_yaml_and_summary(trained_run):
    cfg, run_dir, _, summary = trained_run
    for rel in (
        "config.yaml",
        "summary.json",
        "metrics.csv",
        "training_curves.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (run_dir / rel).is_file(), rel
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    # config.yaml is the full resolved config (absolute paths)
    assert read_config(run_dir) == resolved_config_dict(cfg)
    assert read_summary(run_dir) == json.loads(json.dumps(summary, default=str))
    assert summary["schema"] == "eolab.summary/1" and summary["status"] == "finished"
    assert summary["command"] == "toy-train" and summary["seed"] == 0
    assert summary["config_hash"] == config_hash(cfg) and summary["error"] is None
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", summary["git_commit"])
    assert summary["versions"]["torch"] == metadata.version("torch")
    assert summary["versions"]["lightning"] == L.__version__
    assert summary["started"].endswith("+00:00") and summary["ended"] >= summary["started"]
    assert summary["device"].startswith("cpu") and summary["epochs_run"] == 3
    assert summary["monitor"] == "val/loss"
    for key in ("best_checkpoint", "last_checkpoint", "metrics_csv", "training_curves"):
        assert Path(summary["paths"][key]).is_file(), key


def test_summary_holds_the_best_epochs_metrics(trained_run):
    """summary.json's best epoch and headline metrics are those of metrics.csv's best val/loss."""
    _, run_dir, _, summary = trained_run
    df = pd.read_csv(run_dir / "metrics.csv")
    val = df[df["val/loss"].notna()]
    best = val.loc[val["val/loss"].idxmin()]
    assert summary["best_epoch"] == int(best["epoch"])
    assert summary["metrics"] == pytest.approx(
        {k: float(best[k]) for k in ("val/loss", "val/mse", "val/mae")}, rel=1e-12
    )


def test_every_loss_term_and_metric_is_in_metrics_csv(trained_run):
    _, run_dir, _, _ = trained_run
    df = pd.read_csv(run_dir / "metrics.csv")
    for stage in ("train", "val"):
        for col in (f"{stage}/loss", f"{stage}/loss_l1", f"{stage}/loss_mse"):
            assert df[col].notna().sum() == 3, col  # once per epoch
    for col in ("val/mse", "val/mae", "train/lr", "train/nonfinite_steps"):
        assert df[col].notna().sum() == 3, col
    assert sorted(df.loc[df["val/loss"].notna(), "epoch"]) == [0, 1, 2]
    rows = df[df["val/loss"].notna()]  # total = l1 + mse in every logged epoch
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
    # torchmetrics sums the 1024 errors in float32, in an order that depends on the CPU's kernels;
    # the bound of a float32 sum of n terms is n * 2**-24 = 6e-5 relative: 1e-4 holds on any CPU
    # and still catches any wrong reduction (those are off by far more)
    truth, guess = truth.astype(np.float64), guess.astype(np.float64)
    assert last["val/mse"] == pytest.approx(mean_squared_error(truth, guess), rel=1e-4)
    assert last["val/mae"] == pytest.approx(mean_absolute_error(truth, guess), rel=1e-4)


def test_best_checkpoint_holds_the_best_epoch(trained_run):
    _, run_dir, _, _ = trained_run
    df = pd.read_csv(run_dir / "metrics.csv")
    best_val = df["val/loss"].min()
    ckpt = load_checkpoint(run_dir / "checkpoints/best.ckpt", expect_keys=("state_dict", "epoch"))
    states = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert float(states[0]["best_model_score"]) == pytest.approx(best_val, rel=1e-6)
    assert ckpt["epoch"] == int(df.loc[df["val/loss"].idxmin(), "epoch"])
    last = load_checkpoint(run_dir / "checkpoints/last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 3 * 4  # 3 epochs of 4 batches


def test_learning_rate_in_metrics_csv_follows_the_schedule(trained_run):
    _, run_dir, _, _ = trained_run
    lrs = pd.read_csv(run_dir / "metrics.csv")["train/lr"].dropna().tolist()
    # lr 1e-2, 1 warmup epoch, then step decay by 0.5 every epoch
    np.testing.assert_allclose(lrs, [0.005, 0.01, 0.005], rtol=1e-9)


# --------------------------------------------------------------------------- resume
def test_resume_through_fit_run_equals_an_uninterrupted_run(tmp_path):
    """Shuffled loader, dropout, AdamW and a warmup+step schedule: --resume is bit-exact, and
    metrics.csv keeps the rows of the first part."""
    seed_everything(0)  # the initial weights (the command layer seeds before the work)
    full_task = toy_task(toy_config(tmp_path, "full", epochs=4))
    full = train(toy_config(tmp_path, "full", epochs=4), task=full_task)
    part_cfg = toy_config(tmp_path, "part", epochs=2)
    seed_everything(0)
    part_task = toy_task(part_cfg)
    train(part_cfg, task=part_task)
    run_dir = part_cfg.run.run_dir
    partial_weights = {k: v.clone() for k, v in part_task.state_dict().items()}
    rows_before = (run_dir / "metrics.csv").read_text().splitlines()
    started = read_summary(run_dir)["started"]
    resumed_cfg = toy_config(tmp_path, "part", epochs=4, run_resume=True)
    resumed_task = toy_task(resumed_cfg)
    resumed = train(resumed_cfg, task=resumed_task)
    for name, value in full_task.state_dict().items():
        assert torch.equal(value, resumed_task.state_dict()[name]), name
        assert not torch.equal(value, partial_weights[name]), name  # epochs 3-4 did train
    df = pd.read_csv(run_dir / "metrics.csv")
    assert df.loc[df["val/loss"].notna(), "epoch"].tolist() == [0, 1, 2, 3]
    assert df.loc[df["train/loss"].notna(), "epoch"].tolist() == [0, 1, 2, 3]
    full_df = pd.read_csv(tmp_path / "full" / "metrics.csv")
    np.testing.assert_array_equal(
        df["val/loss"].dropna().to_numpy(), full_df["val/loss"].dropna().to_numpy()
    )
    after = (run_dir / "metrics.csv").read_text().splitlines()
    assert after[1 : len(rows_before)] == rows_before[1:]  # epochs 0-1 rows kept as written
    assert resumed["metrics"] == full["metrics"] and resumed["best_epoch"] == full["best_epoch"]
    assert resumed["status"] == "finished" and resumed["started"] == started
    # the run's config.yaml says 4 epochs now; the 2-epoch one is kept beside it
    assert read_config(run_dir)["optim"]["epochs"] == 4
    assert (run_dir / "config.before-resume-1.yaml").is_file()


# --------------------------------------------------------------------------- failures and reruns
class FailsInEpoch1(TinyRegressor):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("boom in epoch 1")
        return super().training_step(batch, batch_idx)


def test_a_failed_fit_leaves_status_failed_with_the_error(tmp_path):
    cfg = toy_config(tmp_path, epochs=3)
    with pytest.raises(RuntimeError, match="boom in epoch 1"):
        train(cfg, task=FailsInEpoch1(**cfg.optim.hparams()))
    summary = read_summary(cfg.run.run_dir)
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: boom in epoch 1" and summary["ended"]
    df = pd.read_csv(cfg.run.run_dir / "metrics.csv")  # epoch 0 was logged and is kept
    assert df.loc[df["val/loss"].notna(), "epoch"].tolist() == [0]


def test_rerun_into_a_finished_run_keeps_every_byte(tmp_path, capsys):
    """Issue 10: without --resume nothing of a finished run changes; --overwrite with bad input
    neither; --resume with other settings is refused naming the field."""
    out = ["--output_dir", str(tmp_path / "runs"), "--name", "a", "--epochs", "2"]
    assert TOY_TRAIN(out) == 0
    run_dir = tmp_path / "runs" / "a"
    before = _files(run_dir)
    capsys.readouterr()
    assert TOY_TRAIN(out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a finished run of toy-train" in err[0]
    bad = tmp_path / "nan.pt"
    x, y = make_data()
    x[3, 0, 2, 2] = float("nan")
    torch.save((x, y), bad)
    assert TOY_TRAIN([*out, "--overwrite", "--data.root", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "toy.pt: toy inputs hold NaN/inf" in err[0]
    assert TOY_TRAIN([*out, "--overwrite", "--data.root", str(tmp_path / "missing.pt")]) == 2
    assert str(tmp_path / "missing.pt") in capsys.readouterr().err
    assert TOY_TRAIN([*out, "--resume", "--lr", "0.5"]) == 2
    assert "optim.lr (0.01 -> 0.5)" in capsys.readouterr().err
    assert _files(run_dir) == before


def test_config_yaml_repeats_the_run(tmp_path):
    """A run folder's config.yaml, given back with --config, gives the same metrics (same seed)."""
    assert TOY_TRAIN(["--output_dir", str(tmp_path / "r1"), "--epochs", "2", "--seed", "3"]) == 0
    again = ["--config", str(tmp_path / "r1" / "config.yaml"), "--output_dir", str(tmp_path / "r2")]
    assert TOY_TRAIN(again) == 0
    first, second = read_summary(tmp_path / "r1"), read_summary(tmp_path / "r2")
    assert first["config_hash"] == second["config_hash"]
    assert first["metrics"] == second["metrics"] and second["seed"] == 3


# --------------------------------------------------------------------------- checkpoints
def test_load_checkpoint_names_the_fault(tmp_path, trained_run):
    _, run_dir, _, _ = trained_run
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(truncated)
    assert str(truncated) in str(info.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"no \['state_dict'\]"):
        load_checkpoint(foreign, expect_keys=("state_dict",))
    assert isinstance(CheckpointError("x"), ValueError) and not isinstance(InputError("x"), OSError)


# --------------------------------------------------------------------------- the Trainer
def test_build_trainer_passes_the_flags_to_lightning(tmp_path):
    from lightning.pytorch.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
        TQDMProgressBar,
    )
    from lightning.pytorch.loggers import TensorBoardLogger

    cfg = toy_config(
        tmp_path,
        grad_clip=0.5,
        accumulate_grad_batches=3,
        early_stop_patience=4,
        max_bad_steps=7,
        epochs=9,
        run_precision="bf16-mixed",
        run_progress=True,
        run_log=["csv", "tensorboard"],
    )
    run_dir = tmp_path / "run"
    trainer = build_trainer(cfg.run, cfg.optim, run_dir, monitor="val/mcc", mode="max")
    assert trainer.gradient_clip_val == 0.5
    assert trainer.gradient_clip_algorithm == "norm"
    assert trainer.accumulate_grad_batches == 3
    assert trainer.precision == "bf16-mixed"
    assert trainer.max_epochs == 9 and trainer.num_devices == 1 and trainer.num_nodes == 1
    callbacks = {type(cb): cb for cb in trainer.callbacks}
    ckpts = {cb.filename: cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)}
    ckpt = ckpts["best"]
    assert (ckpt.monitor, ckpt.mode, Path(ckpt.dirpath)) == (
        "val/mcc",
        "max",
        run_dir / "checkpoints",
    )
    # last.ckpt at every validation, whether or not best.ckpt improved (Lightning 2.6's save_last
    # refreshes it only on improvement)
    assert ckpts["last"].monitor is None and Path(ckpts["last"].dirpath) == run_dir / "checkpoints"
    stop = callbacks[EarlyStopping]
    assert (stop.monitor, stop.patience, stop.mode) == ("val/mcc", 4, "max")
    assert callbacks[NaNGuard].max_bad_steps == 7
    assert LearningRateMonitor in callbacks and TQDMProgressBar in callbacks
    csv_logger = next(lg for lg in trainer.loggers if isinstance(lg, RunCSVLogger))
    tb_logger = next(lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger))
    assert csv_logger.path == run_dir / "metrics.csv"
    assert Path(tb_logger.log_dir) == run_dir / "tensorboard"
    quiet = toy_config(tmp_path, early_stop_patience=0, run_log=["csv"])
    no_stop = build_trainer(quiet.run, quiet.optim, run_dir, "val/loss", "min")
    assert not any(isinstance(cb, EarlyStopping) for cb in no_stop.callbacks)
    assert [type(lg) for lg in no_stop.loggers] == [RunCSVLogger]
    assert not any(isinstance(cb, TQDMProgressBar) for cb in no_stop.callbacks)
    with pytest.raises(ValueError, match="mode"):
        build_trainer(cfg.run, cfg.optim, run_dir, "val/loss", "lowest")  # type: ignore[arg-type]


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
    cfg = toy_config(tmp_path, run_devices="auto")
    trainer = build_trainer(cfg.run, cfg.optim, tmp_path / "run", "val/loss", "min")
    assert trainer.num_devices == 2 and trainer.num_nodes == 2
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert trainer.strategy.world_size == 4


def test_parse_devices():
    assert parse_devices("auto") == "auto"
    assert parse_devices("2") == 2 and parse_devices(3) == 3
    assert parse_devices("-1") == -1
    assert parse_devices("0,1") == [0, 1] and parse_devices([1]) == [1]
    assert parse_devices("[1]") == 1


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


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_gradient_clipping_and_accumulation_take_effect(tmp_path, clip):
    recorder = GradNormRecorder()
    module = TinyRegressor(dropout=0.0, lr_scheduler="none", warmup_epochs=0)
    x, y = make_data(16)
    _, trainer = fit_plain(
        tmp_path, module, x, y, [recorder], epochs=1, accumulate_grad_batches=2, grad_clip=clip
    )
    assert trainer.global_step == 2  # 4 batches, one optimizer step per 2
    assert len(recorder.norms) == 2
    if not clip:
        assert max(recorder.norms) > 0.05  # so that clipping below is observable
    else:
        assert max(recorder.norms) <= clip * (1 + 1e-4)
        assert not math.isclose(max(recorder.norms), 0.0)


def test_only_rank_0_applies_the_rerun_rule(tmp_path, monkeypatch):
    """Under torchrun (or Lightning's launcher re-running the command) the other ranks must not
    refuse the folder that rank 0 has just opened: they follow rank 0."""
    from eo_common.runs import RunFolder

    cfg = toy_config(tmp_path, epochs=1)
    folder = RunFolder.plan(cfg, "toy-train")
    folder.open()  # what rank 0 does before training: a "running" run now
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RunFolderError, match="already holds a running run"):
        RunFolder.plan(cfg, "toy-train")
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's subprocess launcher
    assert RunFolder.plan(cfg, "toy-train").mode == "new"
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RunFolderError):
        RunFolder.plan(cfg, "toy-train")
    resume = toy_config(tmp_path, epochs=1, run_resume=True)
    monkeypatch.setenv("RANK", "3")
    assert RunFolder.plan(resume, "toy-train").mode == "resume"
