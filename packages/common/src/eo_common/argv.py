"""How eolab reads a command line before jsonargparse does: one spelling for flags, space-separated
lists, readable error lines, and the small dict helpers of the command layer.

* ``--a-b`` and ``--a_b`` are the same flag; ``--no_x`` / ``--no-x`` means ``--x=false``
  (:func:`normalize_argv`);
* a list option takes space-separated values, a YAML list or one value (:func:`join_list_values`);
* jsonargparse's multi-line messages become ``key: what is wrong`` (:func:`clean_message`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["normalize_argv", "join_list_values", "clean_message", "nest", "flatten", "rebase"]


def normalize_argv(argv: Sequence[str], bool_options: set[str]) -> list[str]:
    """Spell flags one way: ``--a-b`` -> ``--a_b``; ``--no_x`` / ``--no-x`` -> ``--x=false``.

    Only option names are touched (not values, nor anything after ``--``).

    Example:
        >>> normalize_argv(["--data-dir", "a-b", "--no-augment", "--x=1-2"], {"--augment"})
        ['--data_dir', 'a-b', '--augment=false', '--x=1-2']
    """
    out: list[str] = []
    rest = False
    for token in argv:
        if rest or not token.startswith("--") or token == "--":
            rest = rest or token == "--"
            out.append(token)
            continue
        name, eq, value = token.partition("=")
        name = "--" + name[2:].replace("-", "_")
        if name.startswith("--no_") and name not in bool_options:
            positive = "--" + name[len("--no_") :]
            if positive in bool_options and not eq:
                out.append(f"{positive}=false")
                continue
        out.append(name + eq + value)
    return out


def join_list_values(argv: Sequence[str], list_options: set[str]) -> list[str]:
    """``--only a b`` -> ``--only=["a", "b"]`` for list-typed options (argparse ``nargs="+"`` style).

    Every :class:`Command` applies it to its list options, so ``--checkpoints a.ckpt b.ckpt``,
    ``--checkpoints [a.ckpt,b.ckpt]`` and ``--checkpoints a.ckpt`` all mean a list.

    The values after a list option, up to the next ``--option``, become one YAML list; a value
    written as a list already (``--only [a,b]``) is left as it is. A list option given again adds
    to the list (jsonargparse's ``--option+``): ``--seeds 0 --seeds 1`` is ``[0, 1]``, where
    jsonargparse alone would keep only the last; the first occurrence replaces the value of a
    config file, as every flag does.

    Example:
        >>> join_list_values(["--only", "a", "b", "--seed", "1"], {"--only"})
        ['--only=["a", "b"]', '--seed', '1']
        >>> join_list_values(["--only=a"], {"--only"})
        ['--only=["a"]']
        >>> join_list_values(["--seeds", "0", "--seeds", "[1,2]"], {"--seeds"})
        ['--seeds=["0"]', '--seeds+=[1,2]']
    """
    out: list[str] = []
    seen: set[str] = set()
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, value = token.partition("=")
        key = "--" + name[2:].replace("-", "_") if name.startswith("--") else name
        if key not in list_options:
            out.append(token)
            i += 1
            continue
        if eq:
            values, i = [value], i + 1
        else:
            values, i = [], i + 1
            while i < len(tokens) and not tokens[i].startswith("--"):
                values.append(tokens[i])
                i += 1
        flag = f"{key}+" if key in seen else key
        seen.add(key)
        if len(values) == 1 and values[0].lstrip().startswith("["):
            out.append(f"{flag}={values[0]}")
        else:
            out.append(f"{flag}={json.dumps(values)}")
    return out


def clean_message(text: str) -> str:
    """jsonargparse's multi-line messages as ``key: what is wrong`` lines."""
    text = str(text).strip()
    match = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.S)
    if match:
        key, rest = match.groups()
        lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
        detail = lines[0] if lines else "invalid value"
        detail = re.sub(r"<class '(\w+)'>", r"\1", detail)
        detail = re.sub(r"typing\.Literal\[(.*)\]", r"one of [\1]", detail)
        expected = re.match(r"Expected an? (.*?)\. Got value: (.*)", detail)
        if expected:
            detail = f"expected {expected.group(1)}, got {expected.group(2)!r}"
        return f"{key}: {detail}"
    match = re.match(r"Unrecognized arguments:\s*(.*)", text, re.S)
    if match:
        return f"unknown argument(s): {match.group(1).strip()}"
    return text.splitlines()[0] if text else "invalid arguments"


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def flatten(data: Mapping[str, Any], leaf_keys: set[str], prefix: str = ""):
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and full not in leaf_keys:
            yield from flatten(value, leaf_keys, f"{full}.")
        else:
            yield full, value


def rebase(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [rebase(v, base) for v in value]
    if isinstance(value, str | Path) and str(value) and "://" not in str(value):
        path = Path(value)
        if not path.is_absolute() and not str(value).startswith("/vsi"):
            return type(value)(base / path) if isinstance(value, Path) else str(base / path)
    return value
