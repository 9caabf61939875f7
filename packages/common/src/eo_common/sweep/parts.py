"""Pieces of a sweep file: dotted field names, searched parameters, the pruning setting. No Optuna."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Param", "flatten", "nest", "plain", "read_space", "read_pruning", "SCALARS"]

SCALARS = (str, int, float, bool, type(None))


def flatten(data: Mapping[str, Any], leaf_keys: set[str], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; a mapping stays whole where its key is a leaf.

    Example:
        >>> flatten({"optim": {"lr": 0.1}, "run.seed": 3}, {"optim.lr", "run.seed"})
        {'optim.lr': 0.1, 'run.seed': 3}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and full not in leaf_keys:
            out.update(flatten(value, leaf_keys, f"{full}."))
        else:
            out[full] = value
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``.

    Example:
        >>> nest({"optim.lr": 0.1, "run.seed": 3})
        {'optim': {'lr': 0.1}, 'run': {'seed': 3}}
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


@dataclass
class Param:
    """One searched field: ``float`` / ``int`` ranges (``log``, ``step``) or ``categorical`` choices,
    sampled only when every ``when`` condition holds (``{field: allowed values}``)."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the ``when`` conditions hold for the values chosen so far (and the base)."""
        return all(values.get(k) in allowed for k, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """The value Optuna's ``trial`` suggests for this field."""
        if self.kind == "float":
            return trial.suggest_float(
                self.key, float(self.low), float(self.high), log=self.log, step=self.step
            )
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out


def read_space(space_raw: Any, field_problem: Any, problems: list[str]) -> list[Param]:
    space: list[Param] = []
    if space_raw is None:
        return space
    if not isinstance(space_raw, Mapping):
        problems.append("space: expected a mapping field -> {type, low, high, ...}")
        return space
    for key, item in space_raw.items():
        where = f"space.{key}"
        bad = field_problem(where, str(key))
        if bad:
            problems.append(bad)
            continue
        if isinstance(item, list):
            item = {"type": "categorical", "choices": item}
        if not isinstance(item, Mapping):
            problems.append(f"{where}: expected {{type, low, high}} or a list of choices")
            continue
        kind = item.get("type")
        allowed = {"type", "low", "high", "log", "step", "choices", "when"}
        for k in item:
            if k not in allowed:
                problems.append(f"{where}.{k}: unknown key ({', '.join(sorted(allowed))})")
        when: dict[str, tuple[Any, ...]] = {}
        for wkey, wval in dict(item.get("when") or {}).items():
            bad = field_problem(f"{where}.when.{wkey}", str(wkey))
            if bad and not any(p.key == wkey for p in space):
                problems.append(bad)
            when[str(wkey)] = tuple(wval) if isinstance(wval, list) else (wval,)
        if kind == "categorical":
            choices = item.get("choices")
            if not isinstance(choices, list) or not choices:
                problems.append(f"{where}.choices: a non-empty list")
            elif not all(isinstance(c, SCALARS) for c in choices):
                problems.append(
                    f"{where}.choices: values must be scalars (use variants: for lists)"
                )
            else:
                space.append(Param(str(key), "categorical", choices=tuple(choices), when=when))
            continue
        if kind not in ("float", "int"):
            problems.append(f"{where}.type: float, int or categorical, got {kind!r}")
            continue
        low, high, step = item.get("low"), item.get("high"), item.get("step")
        log = bool(item.get("log", False))
        number = (int, float) if kind == "float" else (int,)
        ok = True
        for name, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, number):
                problems.append(
                    f"{where}.{name}: {'a number' if kind == 'float' else 'an integer'}, got {v!r}"
                )
                ok = False
        if step is not None and (
            isinstance(step, bool) or not isinstance(step, number) or step <= 0
        ):
            problems.append(
                f"{where}.step: a positive {'number' if kind == 'float' else 'integer'}, got {step!r}"
            )
            ok = False
        if not ok:
            continue
        if low > high:
            problems.append(f"{where}: low {low} > high {high}")
        elif log and low <= 0:
            problems.append(f"{where}: log scale needs low > 0, got {low}")
        elif log and step is not None:
            problems.append(f"{where}: step and log exclude each other")
        else:
            space.append(Param(str(key), kind, low, high, log, step, when=when))
    return space


def read_pruning(raw: Any, searching: bool, problems: list[str]) -> dict[str, Any]:
    default = {"type": "median", "warmup_epochs": 1, "startup_trials": 3}
    if raw == "default":
        return default if searching else {"type": "none"}
    if raw in (None, False, "none"):
        return {"type": "none"}
    if raw in (True, "median"):
        return default
    if not isinstance(raw, Mapping):
        problems.append(
            f"pruning: none, median or {{type, warmup_epochs, startup_trials}}, got {raw!r}"
        )
        return {"type": "none"}
    out = {**default, **dict(raw)}
    if out["type"] not in ("median", "none"):
        problems.append(f"pruning.type: median or none, got {out['type']!r}")
    for key in ("warmup_epochs", "startup_trials"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"pruning.{key}: an integer >= 0, got {v!r}")
    for key in out:
        if key not in default:
            problems.append(f"pruning.{key}: unknown key (type, warmup_epochs, startup_trials)")
    return out if out["type"] != "none" else {"type": "none"}
