"""Config validation: every problem is listed with its field; the CLI exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from risk_mapping.config import (
    ConfigError,
    PipelineConfig,
    config_from_dict,
    load_config,
    main,
    validate_config,
)

PACKAGE_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def _fields(problems) -> list[str]:
    return [p.field for p in problems]


def test_valid_config_has_no_problem(raw_config):
    assert validate_config(raw_config) == []
    cfg = config_from_dict(raw_config)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.dataset.tile_size == 32 and cfg.model.encoder == "resnet18"
    assert cfg.inference.crf.iterations == 3


@pytest.mark.parametrize(
    ("section", "patch", "field", "words"),
    [
        ("dataset", {"colour": 3}, "dataset.colour", "unknown key"),
        ("training", {"epochs": "ten"}, "training.epochs", "expected int"),
        ("training", {"use_focal_loss": 1}, "training.use_focal_loss", "expected bool"),
        ("model", {"dropout_prob": 1.5}, "model.dropout_prob", "above the maximum"),
        (
            "dataset",
            {"oversample_target_fraction": -0.1},
            "dataset.oversample_target_fraction",
            "below the minimum",
        ),
        ("training", {"class_weights": [1.0, 2.0]}, "training.class_weights", "expected 3 values"),
        ("inference", {"crf": {"iterations": 0}}, "inference.crf.iterations", "below the minimum"),
        ("inference", {"head": "median"}, "inference.head", "one of"),
        ("model", {"encoder": "efficientnet-b44"}, "model.encoder", "not an encoder known"),
        ("dataset", {"stack": "does/not/exist.tif"}, "dataset.stack", "input file not found"),
        ("dataset", {"overlap": 32}, "dataset.overlap", "smaller than dataset.tile_size"),
        ("dataset", {"tile_size": 48, "overlap": 8}, "dataset.tile_size", "multiple of 32"),
        (
            "inference",
            {"uncertainty": "mc_variance"},
            "inference.uncertainty",
            "mc_dropout_samples",
        ),
    ],
)
def test_each_bad_field_is_named(config_factory, section, patch, field, words):
    raw = config_factory(**{section: patch})
    problems = validate_config(raw)
    assert field in _fields(problems), problems
    message = next(str(p) for p in problems if p.field == field)
    assert words in message


def test_all_problems_listed_at_once(config_factory):
    raw = config_factory(
        dataset={"labels": "missing_labels.tif", "tile_size": -1},
        model={"encoder": "not-an-encoder"},
        training={"lr": "fast"},
        unknown_section={"a": 1},
    )
    fields = _fields(validate_config(raw))
    for expected in (
        "unknown_section",
        "dataset.labels",
        "dataset.tile_size",
        "model.encoder",
        "training.lr",
    ):
        assert expected in fields
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="my.yaml")
    assert str(info.value).startswith("my.yaml: ")
    assert len(info.value.problems) == len(fields)


def test_missing_required_inputs():
    fields = _fields(validate_config({}))
    assert "dataset.stack" in fields and "dataset.labels" in fields


def test_smp_encoder_names_are_accepted(config_factory):
    for name in ("efficientnet-b4", "resnet50", "resnet18"):
        assert validate_config(config_factory(model={"encoder": name})) == []


def test_relative_paths_resolve_against_config_folder(risk_stack, tmp_path):
    stack, labels = risk_stack
    folder = stack.parent
    path = folder / "relative.yaml"
    path.write_text(
        yaml.safe_dump(
            {"dataset": {"stack": stack.name, "labels": labels.name}, "output_dir": "out"}
        )
    )
    cfg = load_config(path)
    assert Path(cfg.dataset.stack) == stack and Path(cfg.output_dir) == folder / "out"


def test_cli_exit_codes(raw_config, tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(raw_config))
    assert main([str(good)]) == 0
    bad_raw = dict(raw_config, training={"epochs": 0, "patience": "x"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_raw))
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "training.epochs" in err and "training.patience" in err
    assert main([str(tmp_path / "absent.yaml")]) == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: [unclosed")
    assert main([str(broken)]) == 2


def test_package_example_config_is_valid():
    assert PACKAGE_CONFIG.is_file()
    raw = yaml.safe_load(PACKAGE_CONFIG.read_text())
    assert validate_config(raw, base_dir=PACKAGE_CONFIG.parent, check_files=False) == []
