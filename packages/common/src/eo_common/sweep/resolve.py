"""Finding what a sweep file names: its command (a console script or module:attr) and presets."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ..command import Command
from ..errors import ConfigError

__all__ = ["resolve_command", "find_sweep_file", "list_presets"]

_PRESET = re.compile(r"[A-Za-z_]\w*(\.\w+)*:[\w.-]+")


def resolve_command(name: str) -> Command:
    """The :class:`Command` of a console script (``glacier-train``) or of ``module:attribute``.

    Raises:
        ConfigError: ``command: ...`` when it is not installed or not an eolab Command.
    """
    import importlib
    from importlib.metadata import entry_points

    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"command: cannot import {name} ({exc})") from None
        where = name
    else:
        found = list(entry_points(group="console_scripts", name=name))
        if not found:
            names = sorted({ep.name for ep in entry_points(group="console_scripts")})
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"command: {name!r} is not an installed console script{hint}")
        try:
            obj = found[0].load()
        except Exception as exc:  # noqa: BLE001 - a broken package must not give a traceback here
            raise ConfigError(f"command: {name} cannot be loaded ({exc})") from None
        where = f"{name} ({found[0].value})"
    if not isinstance(obj, Command):
        raise ConfigError(
            f"command: {where} is not an eolab Command (declared with eo_common.command.Command)"
        )
    return obj


def find_sweep_file(source: str | Path) -> Path:
    """A sweep file path, or a preset ``PACKAGE:NAME`` (``<package>/sweeps/<NAME>.yaml``)."""
    import importlib.util
    from importlib import resources

    path = Path(source).expanduser()
    if path.is_file():
        return path
    text = str(source)
    if _PRESET.fullmatch(text) and not path.exists():
        package, _, name = text.partition(":")
        if importlib.util.find_spec(package.split(".")[0]) is not None:
            candidate = resources.files(package).joinpath("sweeps", f"{name}.yaml")
            if candidate.is_file():
                return Path(str(candidate))
        names = [p for p, _ in list_presets()]
        close = difflib.get_close_matches(text, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"sweep: no preset {text}{hint}; 'eolab sweep presets' lists them")
    raise ConfigError(f"sweep: {path}: no such file (nor a preset PACKAGE:NAME)")


def list_presets() -> list[tuple[str, Path]]:
    """``[("glacier_seg:ablation", path), ...]``: the sweep files shipped in eolab packages."""
    from importlib import resources
    from importlib.metadata import entry_points

    packages = {"eo_common"} | {
        ep.value.split(":")[0].split(".")[0] for ep in entry_points(group="eolab.demos")
    }
    out = []
    for package in sorted(packages):
        try:
            folder = resources.files(package).joinpath("sweeps")
        except (ModuleNotFoundError, TypeError):
            continue
        if not folder.is_dir():
            continue
        for item in sorted(folder.iterdir(), key=lambda p: p.name):
            if item.name.endswith(".yaml"):
                out.append((f"{package}:{item.name[:-5]}", Path(str(item))))
    return out
