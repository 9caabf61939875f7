"""The sweep file: read it, resolve its command, and refuse it before any trial when it is wrong.

A sweep file is YAML with these keys (only ``command``, ``objective`` and one of ``space`` / ``grid``
/ ``variants`` are required)::

    name: glacier_lr            # the study's name (default: the file's stem)
    command: glacier-train      # an installed console script that is an eolab Command, or module:attr
    base:                       # the command's config for every trial
      config: base.yaml         #   a config file of the command (or a list of them), relative to here
      optim: {epochs: 20}       #   and/or values, nested or dotted (optim.epochs: 20)
    space:                      # searched fields: Optuna samples them (TPE by default)
      optim.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
      data.crop_size: {type: int, low: 128, high: 256, step: 32}
      model.encoder_name: {type: categorical, choices: [resnet18, resnet34]}
      optim.T_0: {type: int, low: 5, high: 20, when: {optim.scheduler: cosine_restarts}}
    grid:                       # or: every combination, each run once
      loss.mcc_weight: [0.0, 0.3, 0.5]
    variants:                   # or: named configurations (an ablation), each run once
      full: {}
      no_glcm: {data.include_glcm: false}
    baseline: full              # variants: the reference of the paired deltas (default: the first)
    objective: {metric: val/mcc, direction: maximize}   # a metric the command declares it writes
    trials: 30                  # space: how many trials (grid/variants: one per point)
    seeds: 3                    # seeds per trial: base seed + 0, 1, 2 (or a list: [42, 123, 456])
    pruning: {type: median, warmup_epochs: 2, startup_trials: 3}   # or none (grid/variants default)
    sampler: tpe                # space: tpe (default) or random
    seed: 0                     # the sampler's seed
    output_dir: runs/sweeps/glacier_lr   # the sweep folder (default runs/sweeps/<name>; --out wins)

A shorthand ``field: [a, b, c]`` in ``space`` is a categorical choice. Fields that the sweep itself sets
(``run.output_dir``, ``run.name``, ``run.seed``, ``run.resume``, ``run.overwrite``, or the top-level
``output_dir``, ``seed``, ... of a command without a ``run`` group) cannot be searched.

Everything is checked before the first trial, with the command's own parser: the command exists and
is an eolab :class:`~eo_common.command.Command`; every field of ``base``, ``space``, ``grid`` and
``variants`` is one of its fields; every bound, choice and grid value parses as that field's type and
range; the objective metric is one the command declares (``Command(metrics=...)``). Each problem is
one line naming the key (:class:`~eo_common.errors.ConfigError`).

No Optuna, no torch here.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..command import Command
from ..errors import ConfigError
from .parts import SCALARS, Param, flatten, plain, read_pruning, read_space
from .resolve import find_sweep_file, list_presets, resolve_command
from .values import check_with_command, parse_trial_config, run_fields

__all__ = [
    "Param",
    "SweepSpec",
    "load_sweep",
    "spec_from_dict",
    "resolve_command",
    "find_sweep_file",
    "list_presets",
    "parse_trial_config",
]

TOP_KEYS = (
    "name", "description", "command", "base", "space", "grid", "variants", "baseline",
    "objective", "trials", "seeds", "pruning", "sampler", "seed", "output_dir",
)  # fmt: skip
SET_BY_SWEEP = {
    "run.output_dir": "the sweep puts each trial in <sweep>/trials/<number>",
    "run.name": "the sweep names each trial's folder",
    "run.seed": "use the sweep's seeds: key",
    "run.resume": "the sweep resumes retried trials itself",
    "run.overwrite": "a sweep never replaces a run",
}


@dataclass
class SweepSpec:
    """A validated sweep: what to run, over what, for which objective. See the module docstring."""

    name: str
    command: str
    base_files: list[Path]
    base_values: dict[str, Any]
    space: list[Param]
    grid: dict[str, list[Any]]
    variants: dict[str, dict[str, Any]]
    baseline: str | None
    metric: str
    direction: str
    trials: int
    seeds: list[int]
    pruning: dict[str, Any]
    sampler: str = "tpe"
    seed: int = 0
    output_dir: Path | None = None
    description: str = ""
    source: str = ""
    base_resolved: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def mode(self) -> str:
        """``space``, ``grid`` or ``variants``."""
        return "space" if self.space else "grid" if self.grid else "variants"

    def points(self) -> list[dict[str, Any]]:
        """Grid / variants: every point as ``{"label", "params" (Optuna), "overrides" (fields)}``."""
        if self.mode == "grid":
            keys = list(self.grid)
            out = []
            for combo in itertools.product(*(self.grid[k] for k in keys)):
                params = dict(zip(keys, combo))
                label = ",".join(f"{k}={v}" for k, v in params.items())
                out.append({"label": label, "params": params, "overrides": dict(params)})
            return out
        if self.mode == "variants":
            return [
                {"label": n, "params": {"variant": n}, "overrides": dict(o)}
                for n, o in self.variants.items()
            ]
        return []

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask Optuna's ``trial`` for this trial's field values (``{field: value}``)."""
        if self.mode == "variants":
            name = trial.suggest_categorical("variant", list(self.variants))
            return dict(self.variants[name])
        if self.mode == "grid":
            return {k: trial.suggest_categorical(k, list(v)) for k, v in self.grid.items()}
        chosen: dict[str, Any] = {}
        for param in self.space:
            if param.active({**self.base_resolved, **chosen}):
                chosen[param.key] = param.suggest(trial)
        return chosen

    def overrides_of(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Field values of a finished trial from its Optuna ``params``."""
        if self.mode == "variants":
            return dict(self.variants.get(str(params.get("variant")), {}))
        return dict(params)

    def as_dict(self) -> dict[str, Any]:
        """The resolved sweep (absolute paths), as written to ``<sweep>/sweep.yaml``."""
        out: dict[str, Any] = {
            "name": self.name,
            "command": self.command,
            "base": {
                "config": [str(p) for p in self.base_files],
                **{k: plain(v) for k, v in self.base_values.items()},
            },
        }
        if self.space:
            out["space"] = {p.key: p.as_dict() for p in self.space}
        if self.grid:
            out["grid"] = {k: list(v) for k, v in self.grid.items()}
        if self.variants:
            out["variants"] = {
                n: {k: plain(v) for k, v in o.items()} for n, o in self.variants.items()
            }
            out["baseline"] = self.baseline
        out.update(
            objective={"metric": self.metric, "direction": self.direction},
            trials=self.trials,
            seeds=list(self.seeds),
            pruning=dict(self.pruning),
            sampler=self.sampler,
            seed=self.seed,
        )
        if self.description:
            out["description"] = self.description
        return out

    def identity(self) -> str:
        """Hash of what makes the study what it is (everything but ``trials``)."""
        data = {k: v for k, v in self.as_dict().items() if k != "trials"}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_sweep(
    source: str | Path, *, sets: Sequence[str] = (), base_config: Path | None = None
) -> tuple[SweepSpec, Command]:
    """Read, resolve and validate a sweep file; raise :class:`ConfigError` listing every problem.

    Args:
        source: the file, or a preset ``PACKAGE:NAME``.
        sets: ``KEY=VALUE`` overrides of the base config (the value is read as YAML).
        base_config: a further config file of the command, applied after the file's own base.
    """
    import yaml

    path = find_sweep_file(source)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"sweep: {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep: {path}: expected a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    extra: dict[str, Any] = {}
    problems = []
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            problems.append(f"--set: expected KEY=VALUE, got {item!r}")
            continue
        extra[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    if problems:
        raise ConfigError(problems)
    return spec_from_dict(
        raw,
        origin=path.resolve().parent,
        default_name=path.stem,
        source=str(path),
        extra_base=extra,
        extra_files=[base_config] if base_config else [],
    )


def spec_from_dict(
    raw: Mapping[str, Any],
    *,
    origin: Path,
    default_name: str = "sweep",
    source: str = "",
    extra_base: Mapping[str, Any] | None = None,
    extra_files: Sequence[Path] = (),
) -> tuple[SweepSpec, Command]:
    """Validate a sweep mapping (relative paths are relative to ``origin``); see :func:`load_sweep`."""
    problems: list[str] = []
    for key in raw:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            problems.append(
                f"{key}: unknown key" + (f" (did you mean {close[0]}?)" if close else "")
            )
    if "command" not in raw or not isinstance(raw.get("command"), str):
        raise ConfigError([*problems, "command: required, the name of the command to sweep"])
    try:
        command = resolve_command(raw["command"])
    except ConfigError as err:
        raise ConfigError([*problems, *err.problems]) from None
    fields_of_run = run_fields(command)
    if not fields_of_run["output_dir"] or not fields_of_run["seed"]:
        problems.append(
            f"command: {command.prog} has no output folder and seed fields (run.output_dir, "
            "run.seed); a sweep runs commands that write a run folder"
        )
    set_by_sweep = {
        fields_of_run[c]: why
        for c, why in zip(
            ("output_dir", "name", "seed", "resume", "overwrite"), SET_BY_SWEEP.values()
        )
        if fields_of_run[c]
    }
    leaves = {leaf.key: leaf for leaf in command.leaves()}
    keys = set(leaves)

    def field_problem(where: str, key: str) -> str | None:
        if key in set_by_sweep:
            return f"{where}: {key} cannot be set here ({set_by_sweep[key]})"
        if key not in keys:
            close = difflib.get_close_matches(key, sorted(keys), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"{where}: {command.prog} has no field {key}{hint}"
        return None

    def rebase(key: str, value: Any) -> Any:
        leaf = leaves.get(key)
        if leaf is None or not leaf.is_path or value is None:
            return value
        if isinstance(value, list):
            return [rebase(key, v) for v in value]
        text = str(value)
        if (
            not text
            or "://" in text
            or text.startswith("/vsi")
            or Path(text).expanduser().is_absolute()
        ):
            return str(Path(text).expanduser()) if text.startswith("~") else value
        return str(origin / text)

    # base
    base = raw.get("base") or {}
    files: list[Path] = []
    values: dict[str, Any] = {}
    if isinstance(base, str):
        base = {"config": base}
    if not isinstance(base, Mapping):
        problems.append("base: expected a config file path or a mapping of the command's fields")
        base = {}
    base = dict(base)
    given = base.pop("config", None)
    for item in [given] if isinstance(given, str) else list(given or []):
        file = Path(str(item)).expanduser()
        file = file if file.is_absolute() else origin / file
        if not file.is_file():
            problems.append(f"base.config: {file}: no such file")
        files.append(file)
    files.extend(Path(p) for p in extra_files)
    for key, value in {**flatten(base, keys), **dict(extra_base or {})}.items():
        bad = field_problem(f"base.{key}", key)
        if bad and key == fields_of_run["seed"]:  # the base seed is where seeds start; allowed
            bad = None
        if bad:
            problems.append(bad)
        else:
            values[key] = rebase(key, value)

    # what varies
    modes = [m for m in ("space", "grid", "variants") if raw.get(m)]
    if len(modes) != 1:
        problems.append(
            "space/grid/variants: give exactly one of them"
            + (f" (got {', '.join(modes)})" if modes else "")
        )
    space = read_space(raw.get("space"), field_problem, problems)
    grid: dict[str, list[Any]] = {}
    if raw.get("grid") is not None:
        if not isinstance(raw["grid"], Mapping):
            problems.append("grid: expected a mapping field -> list of values")
        else:
            for key, vals in flatten(raw["grid"], keys).items():
                bad = field_problem(f"grid.{key}", key)
                if bad:
                    problems.append(bad)
                elif not isinstance(vals, list) or not vals:
                    problems.append(f"grid.{key}: expected a non-empty list of values")
                elif not all(isinstance(v, SCALARS) for v in vals):
                    problems.append(f"grid.{key}: values must be scalars (use variants: for lists)")
                else:
                    grid[key] = [rebase(key, v) for v in vals]
    variants: dict[str, dict[str, Any]] = {}
    if raw.get("variants") is not None:
        if not isinstance(raw["variants"], Mapping):
            problems.append("variants: expected a mapping name -> field values")
        else:
            for name, overrides in raw["variants"].items():
                if not re.fullmatch(r"[\w.+-]+", str(name)):
                    problems.append(f"variants.{name}: names are letters, digits, _ . + -")
                    continue
                if not isinstance(overrides or {}, Mapping):
                    problems.append(f"variants.{name}: expected a mapping of field values")
                    continue
                good = {}
                for key, value in flatten(overrides or {}, keys).items():
                    bad = field_problem(f"variants.{name}.{key}", key)
                    if bad:
                        problems.append(bad)
                    else:
                        good[key] = rebase(key, value)
                variants[str(name)] = good
    baseline = raw.get("baseline")
    if baseline is not None and str(baseline) not in variants:
        problems.append(f"baseline: {baseline!r} is not one of the variants {list(variants)}")
    if variants and baseline is None:
        baseline = next(iter(variants))

    # objective
    objective = raw.get("objective")
    metric, direction = "", "maximize"
    if not isinstance(objective, Mapping) or not objective.get("metric"):
        problems.append("objective: required, {metric: NAME, direction: maximize|minimize}")
    else:
        metric = str(objective["metric"])
        direction = {"max": "maximize", "min": "minimize"}.get(
            str(objective.get("direction", "maximize")), str(objective.get("direction"))
        )
        if direction not in ("maximize", "minimize"):
            problems.append(f"objective.direction: maximize or minimize, got {direction!r}")
        if not command.metrics:
            problems.append(
                f"objective.metric: {command.prog} does not declare the metrics it writes "
                "(Command(metrics=...)), so it cannot be optimised"
            )
        elif metric not in command.metrics:
            problems.append(
                f"objective.metric: {command.prog} writes {', '.join(command.metrics)}; "
                f"not {metric!r}"
            )
        for key in objective:
            if key not in ("metric", "direction"):
                problems.append(f"objective.{key}: unknown key (metric, direction)")

    points = len(list(itertools.product(*grid.values()))) if grid else len(variants)
    trials = raw.get("trials")
    if modes == ["space"]:
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            problems.append(f"trials: required with space:, a count >= 1, got {trials!r}")
    elif trials is not None and trials != points:
        problems.append(
            f"trials: grid/variants run each of their {points} points once; got {trials}"
        )
    seeds_raw = raw.get("seeds", 1)
    pruning = read_pruning(raw.get("pruning", "default"), modes == ["space"], problems)
    sampler = str(raw.get("sampler", "tpe"))
    if sampler not in ("tpe", "random"):
        problems.append(f"sampler: tpe or random, got {sampler!r}")
    sampler_seed = raw.get("seed", 0)
    if not isinstance(sampler_seed, int) or isinstance(sampler_seed, bool):
        problems.append(f"seed: an integer, got {sampler_seed!r}")
        sampler_seed = 0
    name = str(raw.get("name") or default_name)
    if not re.fullmatch(r"[\w.+-]+", name):
        problems.append(f"name: letters, digits, _ . + - only, got {name!r}")

    spec = SweepSpec(
        name=name,
        command=raw["command"],
        base_files=files,
        base_values=values,
        space=space,
        grid=grid,
        variants=variants,
        baseline=None if baseline is None else str(baseline),
        metric=metric,
        direction=direction,
        trials=int(trials) if modes == ["space"] and isinstance(trials, int) else points,
        seeds=[],
        pruning=pruning,
        sampler=sampler,
        seed=int(sampler_seed),
        output_dir=Path(raw["output_dir"]) if raw.get("output_dir") else None,
        description=str(raw.get("description") or ""),
        source=source,
    )
    problems += check_with_command(spec, command)
    base_seed = int(spec.base_resolved.get(fields_of_run["seed"] or "run.seed", 0) or 0)
    if isinstance(seeds_raw, bool) or not isinstance(seeds_raw, int | list):
        problems.append(f"seeds: a count or a list of integers, got {seeds_raw!r}")
    elif isinstance(seeds_raw, int):
        if seeds_raw < 1:
            problems.append(f"seeds: at least 1, got {seeds_raw}")
        spec.seeds = [base_seed + i for i in range(max(1, seeds_raw))]
    else:
        if not seeds_raw or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds_raw
        ):
            problems.append(f"seeds: a non-empty list of integers, got {seeds_raw!r}")
        elif len(set(seeds_raw)) != len(seeds_raw):
            problems.append(f"seeds: repeated seed in {seeds_raw}")
        spec.seeds = [int(s) for s in seeds_raw if isinstance(s, int)]
    if problems:
        raise ConfigError(problems)
    return spec, command
