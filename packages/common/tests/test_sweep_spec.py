"""The sweep file: refused before any trial when wrong (one line per problem), read right when not."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from eo_common.errors import ConfigError
from eo_common.sweep.ablation import ablation_rows, paired_delta
from eo_common.sweep.spec import load_sweep

SUPPORT = Path(__file__).parent / "sweep_support"


@pytest.fixture(autouse=True)
def toys_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(SUPPORT))


def eolab_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=str(SUPPORT) + (os.pathsep + path if path else ""))


def write(tmp_path: Path, data: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


GOOD = {
    "command": "eolab_sweep_toys:quad",
    "base": {"optim": {"epochs": 2}, "data.delay_s": 0.0},
    "space": {
        "model.x": {"type": "float", "low": -2, "high": 3},
        "model.y": {"type": "int", "low": 0, "high": 4, "step": 2},
        "model.kind": ["a", "b"],
        "optim.T_0": {
            "type": "int",
            "low": 5,
            "high": 20,
            "when": {"optim.scheduler": "cosine_restarts"},
        },
    },
    "objective": {"metric": "val/score", "direction": "max"},
    "trials": 4,
    "seeds": 3,
}


def test_every_problem_is_one_line_naming_the_field_and_nothing_is_written(tmp_path):
    bad = dict(GOOD)
    bad["base"] = {"optim": {"epochs": 2}, "model.z": 3}
    bad["space"] = {
        "model.x": {"type": "float", "low": -20, "high": 3},  # below the field's min (-10)
        "model.y": {"type": "float", "low": 0, "high": 3},  # a float range on an int field
        "model.kind": ["a", "d"],  # not a choice of the field
        "model.xx": {"type": "float", "low": 0, "high": 1},  # no such field
        "run.seed": [1, 2],  # set by the sweep
        "optim.lr": {"type": "float", "low": 0, "high": 1, "log": True},
    }
    bad["objective"] = {"metric": "val/iou", "direction": "maximize"}
    path = write(tmp_path, bad)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "eo_common.cli", "sweep", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        env=eolab_env(),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("eolab sweep run: error: ")]
    got = [ln.split("error: ", 1)[1] for ln in lines]
    expected_starts = [
        "base.model.z: toy-quad has no field model.z",
        "space.model.xx: toy-quad has no field model.xx",
        "space.run.seed: run.seed cannot be set here",
        "space.optim.lr: log scale needs low > 0",
        "objective.metric: toy-quad writes val/score, val/loss; not 'val/iou'",
        "space.model.x low: must be >= -10",
        "space.model.y value",
        "space.model.kind choice 'd'",
    ]
    for start in expected_starts:
        assert sum(g.startswith(start) for g in got) == 1, (start, got)
    assert len(got) == len(expected_starts)
    assert not out.exists()


def test_unknown_command_and_command_without_declared_metrics(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, {**GOOD, "command": "toy-quadd"}))
    assert err.value.problems == ["command: 'toy-quadd' is not an installed console script"]
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, {**GOOD, "command": "eolab"}))  # a console script, not a Command
    assert err.value.problems[0].startswith(
        "command: eolab (eo_common.cli:main) is not an eolab Command"
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, {**GOOD, "command": "eolab_sweep_toys:nothing"}))
    assert err.value.problems[0].startswith("command: cannot import eolab_sweep_toys:nothing")


def test_grid_variants_and_structure_problems(tmp_path):
    data = {k: v for k, v in GOOD.items() if k not in ("space", "trials")}
    data["grid"] = {"model.y": [0, 1.5], "model.kind": ["a", ["b"]]}
    data["variants"] = {"full": {}}
    data["pruning"] = {"type": "hyperband"}
    data["seeds"] = [1, 1]
    data["trails"] = 3
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, data))
    problems = err.value.problems
    assert "trails: unknown key (did you mean trials?)" in problems
    assert "space/grid/variants: give exactly one of them (got grid, variants)" in problems
    assert "grid.model.kind: values must be scalars (use variants: for lists)" in problems
    assert "pruning.type: median or none, got 'hyperband'" in problems
    assert "seeds: repeated seed in [1, 1]" in problems
    assert any(p.startswith("grid.model.y value 1.5: expected int") for p in problems), problems
    data = {k: v for k, v in GOOD.items() if k not in ("space", "trials")}
    data["variants"] = {"full": {}, "no_bonus": {"model": {"use_bonus": "maybe"}}}
    data["baseline"] = "fulll"
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, data))
    assert "baseline: 'fulll' is not one of the variants ['full', 'no_bonus']" in err.value.problems
    assert any(p.startswith("variants.no_bonus.model.use_bonus: ") for p in err.value.problems)


def test_a_good_sweep_reads_as_written(tmp_path):
    import optuna

    spec, command = load_sweep(write(tmp_path, GOOD), sets=["run.seed=10", "model.use_bonus=false"])
    assert command.prog == "toy-quad" and spec.mode == "space" and spec.trials == 4
    assert spec.direction == "maximize" and spec.metric == "val/score"
    assert spec.seeds == [10, 11, 12]  # seeds start at the base seed
    assert spec.base_values == {
        "optim.epochs": 2,
        "data.delay_s": 0.0,
        "run.seed": 10,
        "model.use_bonus": False,
    }
    assert spec.pruning == {"type": "median", "warmup_epochs": 1, "startup_trials": 3}
    # conditional field: sampled only when its condition holds (base scheduler is cosine)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    chosen = spec.suggest(study.ask())
    assert set(chosen) == {"model.x", "model.y", "model.kind"}
    assert -2 <= chosen["model.x"] <= 3 and chosen["model.y"] in (0, 2, 4)
    spec.base_resolved["optim.scheduler"] = "cosine_restarts"
    assert "optim.T_0" in spec.suggest(study.ask())
    # the resolved copy reads back to the same sweep
    copy = write(tmp_path, spec.as_dict(), "copy.yaml")
    again, _ = load_sweep(copy)
    assert again.identity() == spec.identity() and again.seeds == spec.seeds


def test_variants_points_and_paths_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "data").mkdir()
    data = {k: v for k, v in GOOD.items() if k not in ("space", "trials")}
    data["base"] = {"data": {"root": "data"}}
    data["variants"] = {
        "full": {},
        "no_bonus": {"model.use_bonus": False},
        "kind_c": {"model": {"kind": "c"}},
    }
    spec, _ = load_sweep(write(tmp_path, data))
    assert spec.base_values["data.root"] == str(tmp_path / "data")
    assert spec.mode == "variants" and spec.trials == 3 and spec.baseline == "full"
    assert [p["label"] for p in spec.points()] == ["full", "no_bonus", "kind_c"]
    assert spec.points()[2]["overrides"] == {"model.kind": "c"}
    assert spec.pruning == {"type": "none"}  # an ablation runs every variant in full


def test_paired_delta_matches_scipy_and_the_noise_verdict():
    from scipy.stats import ttest_rel

    base = {0: 30.0, 1: 30.4, 2: 29.8, 3: 30.1}
    clear = {0: 29.0, 1: 29.45, 2: 28.75, 3: 29.1}  # about -1 on every seed
    noisy = {0: 30.9, 1: 29.6, 2: 30.5, 3: 29.5}  # +0.9, -0.8, +0.7, -0.6
    pair = paired_delta(clear, base)
    assert pair["n"] == 4
    assert pair["delta"] == pytest.approx(sum(clear[s] - base[s] for s in base) / 4)
    assert pair["p"] == pytest.approx(ttest_rel(list(clear.values()), list(base.values())).pvalue)
    rows = {
        r["variant"]: r
        for r in ablation_rows(
            {"full": base, "c": clear, "n": noisy, "one": {0: 31.0}}, "full", "maximize"
        )
    }
    assert rows["full"]["verdict"] == "baseline"
    assert rows["c"]["verdict"] == "worse"
    assert rows["n"]["verdict"] == "within seed noise"
    assert rows["one"]["verdict"] == "one seed: noise unknown"
    assert rows["c"]["sd"] == pytest.approx(
        float(__import__("numpy").std(list(clear.values()), ddof=1))
    )
    minimize = {
        r["variant"]: r for r in ablation_rows({"full": base, "c": clear}, "full", "minimize")
    }
    assert minimize["c"]["verdict"] == "better"
    same = paired_delta({0: 1.5, 1: 2.5}, {0: 1.0, 1: 2.0})  # identical differences: no spread
    assert same["p"] == 0.0 and math.isclose(same["delta"], 0.5)


def test_unreachable_storage_is_one_line(tmp_path):
    path = write(tmp_path, GOOD)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "eo_common.cli", "sweep", "run", str(path), "--out", str(out),
         "--storage", "postgresql://eolab:secret@127.0.0.1:1/none"],
        capture_output=True, text=True, env=eolab_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "eolab sweep run: error: --storage postgresql://eolab:***@127.0.0.1:1/none: cannot connect"
    )
    assert "secret" not in done.stderr and not out.exists()


def test_presets_resolve_and_parse_as_package_sweep_files():
    from eo_common.sweep.spec import find_sweep_file, list_presets

    names = dict(list_presets())
    for name in ("cloud_removal:ablation", "glacier_seg:ablation", "glacier_seg:decision_tree"):
        assert name in names
        assert find_sweep_file(name) == names[name]
        data = yaml.safe_load(names[name].read_text())
        assert data["command"] in ("cr-train", "glacier-train") and data["objective"]["metric"]
    with pytest.raises(ConfigError, match="no preset glacier_seg:ablatio"):
        find_sweep_file("glacier_seg:ablatio")


def test_a_sweep_folder_of_another_sweep_is_refused_before_anything_is_written(tmp_path, capsys):
    from eo_common.sweep.cli import sweep_run

    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.yaml").write_text(yaml.safe_dump({"name": "other", "command": "x"}))
    before = sorted(p.name for p in out.iterdir())
    assert sweep_run([str(write(tmp_path, GOOD)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds another sweep (differs in " in err[0] and "--out" in err[0]
    assert sorted(p.name for p in out.iterdir()) == before
    assert sweep_run([str(write(tmp_path, GOOD)), "--out", str(out), "--gpus", "0,x"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "eolab sweep run: error: --gpus: comma-separated GPU ids like 0,1,2, got '0,x'"
    )


def test_run_fields_of_a_command_with_or_without_a_run_group(tmp_path):
    from dataclasses import dataclass

    from eo_common.command import Command
    from eo_common.config import opt
    from eo_common.sweep.values import run_fields, run_values
    from eolab_sweep_toys import quad

    @dataclass
    class Flat:  # a risk-pipeline-like config: the run settings at the top level
        output_dir: Path = opt(Path("out"), help="output folder")
        seed: int = opt(0, help="seed")
        resume: bool = opt(False, help="resume")

    flat = Command("flat", Flat, "x:y", description="d", run_folder=False)
    assert run_fields(flat) == {
        "output_dir": "output_dir", "name": None, "seed": "seed",
        "resume": "resume", "overwrite": None, "progress": None,
    }  # fmt: skip
    folder = tmp_path / "trials"
    assert run_values(flat, folder, "0003", 7, resume=True) == {
        "output_dir": str((folder / "0003").resolve()), "seed": 7, "resume": True,
    }  # fmt: skip
    assert run_values(quad, folder, "0003_s1", 1) == {
        "run.output_dir": str(folder.resolve()), "run.name": "0003_s1", "run.seed": 1,
        "run.resume": False, "run.progress": False,
    }  # fmt: skip


def test_run_only_some_variants_with_other_seeds(tmp_path, capsys):
    """``--variants`` and ``--seeds`` pick part of a preset from the command line: refused in one
    line before anything is written when wrong; otherwise the sweep holds exactly those."""
    from eo_common.sweep.cli import sweep_run
    from eo_common.sweep.launcher import _select

    data = {
        "command": "eolab_sweep_toys:quad",
        "base": {"optim.epochs": 1, "model.x": 1.0, "model.y": 2},
        "variants": {"base": {}, "b_kind": {"model.kind": "b"}, "c_kind": {"model.kind": "c"}},
        "objective": {"metric": "val/score", "direction": "maximize"},
        "seeds": 3,
    }
    sweep = write(tmp_path, data, "ablation.yaml")
    out = tmp_path / "out"
    for args, message in (
        (["--variants", "[b_kind,c_kind]"], "--variants: include the baseline 'base'"),
        (["--variants", "[base,d_kind]"], "--variants: no variant ['d_kind'] in this sweep"),
        (["--seeds", "[1,1]"], "--seeds: repeated seed in [1, 1]"),
    ):
        assert sweep_run([str(sweep), "--out", str(out), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()
    spec, _ = load_sweep(sweep)
    assert spec.seeds == [0, 1, 2] and spec.trials == 3
    _select(spec, [3, 4], ["base", "b_kind"])
    assert [p["label"] for p in spec.points()] == ["base", "b_kind"]
    assert spec.seeds == [3, 4] and spec.trials == 2 and spec.baseline == "base"
    assert spec.as_dict()["variants"] == {"base": {}, "b_kind": {"model.kind": "b"}}
    grid = {**{k: v for k, v in data.items() if k != "variants"}, "grid": {"model.y": [1, 2]}}
    assert sweep_run([str(write(tmp_path, grid)), "--out", str(out), "--variants", "[a]"]) == 2
    assert "--variants: a grid sweep has no named variants" in capsys.readouterr().err


def test_repeated_list_flags_add_up():
    """``--seeds 0 --seeds 1`` is [0, 1] (jsonargparse alone keeps the last); ``--set`` likewise."""
    from eo_common.sweep.cli import sweep_run

    cfg = sweep_run.parse(["s.yaml", "--seeds", "0", "--seeds", "1", "2", "--seeds", "[3]"])
    assert cfg.seeds == [0, 1, 2, 3]
    cfg = sweep_run.parse(["s.yaml", "--set", "a=1", "--set=b.c=[1, 2]", "--variants", "v"])
    assert cfg.set == ["a=1", "b.c=[1, 2]"] and cfg.variants == ["v"] and cfg.seeds == []
