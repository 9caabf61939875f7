"""The risk config on the shared command layer: old files, seed commands, flags, every bad field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from eo_common.errors import ConfigError
from risk_mapping.cli import risk_evaluate, risk_pipeline, risk_validate_config
from risk_mapping.config import RiskConfig

DATA = Path(__file__).resolve().parent / "data"
PACKAGE = Path(__file__).resolve().parents[1]
RELEASE_CONFIG = DATA / "configs" / "release_0_1_0_config.yaml"
RESEARCHERS_CONFIG = DATA / "configs" / "researchers_v25.yaml"


def test_release_config_file_parses_unchanged(tmp_path):
    """The config.yaml of release 0.1.0, byte for byte, with relative paths from its folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(RELEASE_CONFIG, folder / "config.yaml")
    cfg = risk_pipeline.parse(["--config", str(folder / "config.yaml"), "--no_file_check"])
    assert cfg.output_dir == folder / "runs/risk_v25" and cfg.seed == 0
    assert cfg.dataset.stack == folder / "data/stack.tif"
    assert cfg.dataset.labels == folder / "data/labels.tif"
    assert cfg.training.epochs == 100 and cfg.training.use_focal_loss is True
    assert cfg.training.augmentation.brightness == 0.1
    assert cfg.inference.ensemble_seeds == [0, 1, 2] and cfg.inference.crf.workers == 2
    assert cfg.evaluation.targets.kappa == 0.48
    # the mapping onto the shared groups
    optim, run = cfg.optim, cfg.run
    assert (optim.epochs, optim.lr, optim.early_stop_patience, optim.scheduler) == (
        100,
        0.0003,
        15,
        "cosine",
    )
    assert run.output_dir == cfg.output_dir and run.accelerator == "auto"


def test_package_and_researchers_configs_parse(tmp_path):
    cfg = risk_pipeline.parse(["--config", str(PACKAGE / "config.yaml"), "--no_file_check"])
    assert cfg.model.encoder == "efficientnet-b4" and cfg.dataset.kinds == []
    cfg = risk_pipeline.parse(["--config", str(RESEARCHERS_CONFIG), "--no_file_check"])
    assert cfg.model.dropout_prob == 0.4 and cfg.dataset.oversample_target_fraction == 0.075
    assert cfg.training.class_weights == [0.4, 2.5, 2.0] and cfg.training.focal_gamma == 2.5
    assert cfg.training.coral_weight == 0.3 and cfg.optim.epochs == 60
    crf = cfg.inference.crf
    assert (crf.iterations, crf.spatial_weight, crf.compat_spatial, crf.compat_bilateral) == (
        8,
        5.0,
        5.0,
        15.0,
    )


def test_seed_commands_parse(tmp_path, monkeypatch):
    """shared/notes/SEED_COMMANDS.md, risk section, with every flag kept and paths replaced."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(RESEARCHERS_CONFIG, tmp_path / "config.yaml")
    for name in ("stack.tif", "labels.tif"):
        (tmp_path / name).write_bytes(b"")
    # python -m src.main_pipeline --force_recreate   (reads ./config.yaml)
    cfg = risk_pipeline.parse(["--force_recreate"])
    assert cfg.force_recreate is True and cfg.model.encoder == "efficientnet-b4"
    assert cfg.dataset.stack == tmp_path / "stack.tif"
    # python -m src.evaluate --model_path ... --test_data_path ... --output_dir ... --compare_baseline
    for path in ("artifacts/experiments/best_model.pth", "outputs/evaluation_v2/v2_metrics.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    (tmp_path / "artifacts/tiles/test").mkdir(parents=True)
    cfg = risk_evaluate.parse(
        [
            "--model_path",
            "artifacts/experiments/best_model.pth",
            "--test_data_path",
            "artifacts/tiles/test",
            "--output_dir",
            "outputs/evaluation_v2.5",
            "--compare_baseline",
            "outputs/evaluation_v2/v2_metrics.json",
        ]
    )
    assert cfg.model_path == Path("artifacts/experiments/best_model.pth")
    assert cfg.run.run_dir == Path("outputs/evaluation_v2.5") and cfg.crf is True


def test_flags_override_the_file_and_print_config_round_trips(tmp_path, capsys):
    args = ["--config", str(RESEARCHERS_CONFIG), "--no_file_check"]
    cfg = risk_pipeline.parse(args + ["--training.lr", "1e-4", "--run.seed", "42", "--no_tta"])
    assert cfg.training.lr == 1e-4 and cfg.seed == 42 and cfg.inference.tta is False
    assert cfg.training.epochs == 60  # from the file
    with pytest.raises(SystemExit):
        risk_pipeline.parse(args + ["--epochs", "7", "--print_config"])
    first = capsys.readouterr().out
    (tmp_path / "a.yaml").write_text(first)
    assert yaml.safe_load(first)["training"]["epochs"] == 7
    with pytest.raises(SystemExit):
        risk_pipeline.parse(["--config", str(tmp_path / "a.yaml"), "--print_config"])
    assert capsys.readouterr().out == first
    again = risk_pipeline.parse(["--config", str(tmp_path / "a.yaml"), "--no_file_check"])
    assert again.training.epochs == 7 and again.model == cfg.model


def test_every_bad_key_type_and_range_named_at_once(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "dataset: {stack: /nope.tif, labels: /nope2.tif, colour: 3, overlap: 32, tile_size: 32,"
        " test_fraction: 0}\n"
        "training: {epochs: ten, use_focal_loss: 1, class_weights: [1.0, 2.0]}\n"
        "model: {dropout_prob: 1.5}\n"
        "inference: {head: median, uncertainty: mc_variance, crf: {iterations: 0}}\n"
    )
    with pytest.raises(ConfigError) as err:
        risk_pipeline.parse(["--config", str(bad), "--training.lr", "x"])
    problems = "\n".join(err.value.problems)
    for words in (
        "dataset.colour: unknown key",
        "training.epochs: expected int",
        "training.use_focal_loss: expected bool",
        "inference.head: expected one of",
        "training.lr: expected float",
        "model.dropout_prob: must be <= 0.9",
        "inference.crf.iterations: must be >= 1",
        "dataset.overlap: must be smaller than dataset.tile_size",
        "dataset.test_fraction: is 0 but evaluation.split is 'test'",
        "training.class_weights: expected 3 values",
        "inference.uncertainty: 'mc_variance' needs",
        "dataset.stack: input file not found: /nope.tif",
        "dataset.labels: input file not found: /nope2.tif",
    ):
        assert words in problems, words
    # the console script: one line per problem, exit 2, no traceback
    assert risk_pipeline(["--config", str(bad)]) == 2
    err_text = capsys.readouterr().err
    assert "risk-pipeline: error: dataset.colour" in err_text and "Traceback" not in err_text


def test_other_rules(config_factory, helpers):
    build_config = helpers.build_config
    with pytest.raises(ConfigError) as err:
        build_config(
            config_factory(
                dataset={"kinds": ["categorical", "continuous"], "resampling": ["bilinear"]},
                stages="prepare,fly",
            )
        )
    text = "\n".join(err.value.problems)
    assert "dataset.kinds: 2 value(s) for 1 stack file(s)" in text
    assert "stages: unknown stage(s) ['fly']" in text
    with pytest.raises(ConfigError, match="dataset.resampling: 'bilinear' for categorical"):
        build_config(config_factory(dataset={"kinds": ["categorical"], "resampling": ["bilinear"]}))
    with pytest.raises(ConfigError, match="training.accelerator: 'cpu' contradicts"):
        build_config(dict(config_factory(training={"accelerator": "cpu"}), accelerator="cuda"))
    assert build_config(config_factory(training={"accelerator": "cpu"})).run.accelerator == "cpu"


@pytest.mark.parametrize("flag", [[], ["--no_open_rasters"]])
def test_validate_config_cli(raw_config, tmp_path, capsys, flag):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(raw_config))
    assert risk_validate_config([str(good), *flag]) == 0
    assert '"valid": true' in capsys.readouterr().out
    assert risk_validate_config(["--config", str(tmp_path / "absent.yaml")]) == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: [unclosed")
    assert risk_validate_config([str(broken)]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(raw_config, training={"epochs": 0, "patience": "x"})))
    assert risk_validate_config([str(bad), *flag]) == 2
    err = capsys.readouterr().err
    assert "training.epochs" in err and "training.patience" in err


def test_validate_config_opens_the_rasters(risk_stack, mixed_sources, tmp_path, capsys, helpers):
    """Configs that the release printed OK for and that then failed in prepare."""
    make_raw_config = helpers.make_raw_config
    stack, labels = risk_stack
    m = mixed_sources
    raw = make_raw_config(
        [m["dem"], m["slope"], m["landcover"]],
        m["labels"],
        tmp_path / "run",
        dataset={"nodata": [1e6, None, None], "band_names": ["a", "b"], "optical_bands": [7]},
        inference={"crf": {"image_bands": [0, 1, 9]}},
    )
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert risk_validate_config([str(path)]) == 2
    err = capsys.readouterr().err
    for words in (
        "landcover.tif: CRS EPSG:3035 differs from the reference grid of",
        "dataset.reproject: true",
        "labels.tif: grid differs from",
        "dataset.align_rasters: true",
        "dataset.nodata: 1000000.0 does not fit dem.tif",
        "dataset.band_names: 2 name(s) for 3 stack band(s)",
        "dataset.optical_bands: band(s) [7] do not exist",
        "inference.crf.image_bands: band(s) [9] do not exist",
    ):
        assert words in err, words
    # label values and blocks per split, from the files
    bad_labels = tmp_path / "labels7.tif"
    import rasterio
    from eo_common.raster import write_raster

    with rasterio.open(labels) as src:
        values = src.read(1)
        values[5, 5] = 7
        write_raster(bad_labels, values, crs=src.crs, transform=src.transform, nodata=255)
    raw = make_raw_config(stack, bad_labels, tmp_path / "run", dataset={"block_size": 128})
    raw["model"]["encoder"] = "resnet181"
    path.write_text(yaml.safe_dump(raw))
    assert risk_validate_config([str(path)]) == 2
    err = capsys.readouterr().err
    assert "found [7]" in err and "labels7.tif" in err
    assert "none goes to validation" in err
    assert "model.encoder: 'resnet181' is not an encoder" in err and "did you mean" in err


def test_config_module_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, risk_mapping.config, risk_mapping.cli, risk_mapping.config_rules; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shared_groups_are_not_duplicated():
    """Each shared concept has one field: run fields at the top level, training keys -> optim."""
    from dataclasses import fields

    from eo_common.config import RunConfig

    names = {f.name for f in fields(RiskConfig)}
    assert {f.name for f in fields(RunConfig)} <= names and not {"run", "optim", "data"} & names
    cfg = RiskConfig()
    cfg.training.epochs, cfg.training.patience = 3, 0
    assert cfg.optim.epochs == 3 and cfg.optim.early_stop_patience == 0
    assert cfg.optim.hparams()["lr_scheduler"] == cfg.training.lr_scheduler


def test_ablation_preset_variants_parse(risk_stack):
    """Every variant of the sweep preset is a valid risk-pipeline config (what `eolab sweep` checks
    with the command's own parser before any trial)."""
    from importlib import resources

    preset = yaml.safe_load(
        resources.files("risk_mapping").joinpath("sweeps", "ablation.yaml").read_text()
    )
    assert preset["command"] == "risk-pipeline" and preset["seeds"] == [42, 123, 456]
    assert preset["objective"]["metric"] == "test/kappa_crf"
    stack, labels = risk_stack

    def nest(flat: dict) -> dict:
        out: dict = {}
        for key, value in flat.items():
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    for name, overrides in preset["variants"].items():
        values = {**preset["base"], **overrides, "dataset.stack": str(stack),
                  "dataset.labels": str(labels)}  # fmt: skip
        path = stack.parent / f"variant_{name}.yaml"
        path.write_text(yaml.safe_dump(nest(values)))
        cfg = risk_pipeline.parse(["--config", str(path), "--seed", "123"])
        for key, value in overrides.items():
            section, *rest = key.split(".")
            obj = getattr(cfg, section)
            for part in rest:
                obj = getattr(obj, part)
            assert obj == value, (name, key)
    # a sweep trial's values file sets the run fields under `run:` (run.output_dir, run.seed, ...)
    trial = stack.parent / "trial_values.yaml"
    trial.write_text(yaml.safe_dump({"run": {"output_dir": "/tmp/trials", "name": "0003",
                                             "seed": 456}}))  # fmt: skip
    cfg = risk_pipeline.parse(["--config", str(path), "--config", str(trial)])
    assert cfg.run.run_dir == Path("/tmp/trials/0003") and cfg.seed == 456
