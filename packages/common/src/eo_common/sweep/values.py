"""A sweep trial's config, made and checked by the command's own parser."""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..command import Command
from ..config import config_to_dict
from ..errors import ConfigError
from .parts import Param, flatten, nest, plain

if TYPE_CHECKING:
    from .spec import SweepSpec

__all__ = ["config_argv", "parse_trial_config", "check_with_command", "run_fields", "run_values"]

#: what a sweep sets in each trial, by concept; a command has them as ``run.<x>`` or top-level ``<x>``
RUN_CONCEPTS = ("output_dir", "name", "seed", "resume", "overwrite", "progress")


def run_fields(command: Command) -> dict[str, str | None]:
    """The command's field for each of :data:`RUN_CONCEPTS` (``run.seed`` or ``seed``), or None."""
    keys = {leaf.key for leaf in command.leaves()}
    out: dict[str, str | None] = {}
    for concept in RUN_CONCEPTS:
        out[concept] = next((k for k in (f"run.{concept}", concept) if k in keys), None)
    return out


def run_values(
    command: Command, folder: Path, name: str, seed: int | None, *, resume: bool = False
) -> dict[str, Any]:
    """Field values that put a run in ``folder/name`` with ``seed`` (and resume it, quietly).

    Without a name field the run goes to ``folder/name`` as its output folder.
    """
    f = run_fields(command)
    values: dict[str, Any] = {}
    if f["name"]:
        values[f["output_dir"]] = str(folder.resolve())
        values[f["name"]] = name
    else:
        values[f["output_dir"]] = str((folder / name).resolve() if name else folder.resolve())
    if seed is not None:
        values[f["seed"]] = seed
    if f["resume"]:
        values[f["resume"]] = resume
    if f["progress"]:
        values[f["progress"]] = False
    return values


def config_argv(spec: SweepSpec, overrides: Mapping[str, Any], folder: Path) -> list[str]:
    """The command's arguments for the base config plus ``overrides`` (a YAML file in ``folder``)."""
    import uuid

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"values-{uuid.uuid4().hex[:12]}.yaml"
    data = nest({k: plain(v) for k, v in {**spec.base_values, **overrides}.items()})
    file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    argv = []
    for base in spec.base_files:
        argv += ["--config", str(base)]
    return argv + ["--config", str(file)]


def parse_trial_config(command: Command, spec: SweepSpec, overrides: Mapping[str, Any]) -> Any:
    """The command's config object for the base plus ``overrides``; :class:`ConfigError` if bad."""
    with tempfile.TemporaryDirectory(prefix="eolab-sweep-") as tmp:
        try:
            return command.parse(config_argv(spec, overrides, Path(tmp)))
        except ConfigError as err:
            lines = [re.sub(r" \(in [^)]*values-[0-9a-f]+\.yaml\)$", "", p) for p in err.problems]
            raise ConfigError(lines) from None


def check_with_command(spec: SweepSpec, command: Command) -> list[str]:
    """Parse the base and each bound, midpoint, choice, grid value and variant with the command's
    own parser; every problem as ``<where in the sweep file>: <what>``."""
    problems: list[str] = []
    try:
        cfg = parse_trial_config(command, spec, {})
    except ConfigError as err:
        return [f"base.{p}" if ":" in p.split(" ", 1)[0] else f"base: {p}" for p in err.problems]
    spec.base_resolved = flatten(config_to_dict(cfg), {leaf.key for leaf in command.leaves()})

    candidates: list[tuple[dict[str, str], dict[str, Any]]] = []  # (key -> label, overrides)
    numeric = [p for p in spec.space if p.kind != "categorical"]
    for which in ("low", "high"):
        candidates.append(
            (
                {p.key: f"space.{p.key} {which}" for p in numeric},
                {p.key: getattr(p, which) for p in numeric},
            )
        )
    floats = [p for p in spec.space if p.kind == "float"]
    if floats:
        mids = {p.key: _midpoint(p) for p in floats}
        candidates.append(({k: f"space.{k} value {v:g}" for k, v in mids.items()}, mids))
    cats = [p for p in spec.space if p.kind == "categorical"]
    for i in range(max((len(p.choices) for p in cats), default=0)):
        chosen = {p.key: p.choices[i] for p in cats if i < len(p.choices)}
        candidates.append(({k: f"space.{k} choice {v!r}" for k, v in chosen.items()}, chosen))
    for i in range(max((len(v) for v in spec.grid.values()), default=0)):
        chosen = {k: v[i] for k, v in spec.grid.items() if i < len(v)}
        candidates.append(({k: f"grid.{k} value {v!r}" for k, v in chosen.items()}, chosen))
    for name, overrides in spec.variants.items():
        candidates.append(({k: f"variants.{name}.{k}" for k in overrides}, overrides))
    named: set[str] = set()  # one problem per searched field is enough
    for labels, overrides in candidates:
        if not overrides:
            continue
        try:
            parse_trial_config(command, spec, overrides)
        except ConfigError as err:
            for line in err.problems:
                key, _, detail = line.partition(": ")
                label = labels.get(key)
                if label is None:
                    text = f"{next(iter(labels.values()))}: {line}"
                elif label.split(" ", 1)[0] in named:
                    continue
                else:
                    text = f"{label}: {detail}"
                    named.add(label.split(" ", 1)[0])
                if text not in problems:
                    problems.append(text)
    return problems


def _midpoint(param: Param) -> float:
    lo, hi = float(param.low), float(param.high)
    if param.log:
        return math.exp(math.log(lo) + 0.37 * (math.log(hi) - math.log(lo)))
    return lo + 0.37 * (hi - lo)
