"""Commands declared once as typed config: flags, ``--config``, ``--print_config``, validation, errors.

Every eolab console script is a :class:`Command`: a config dataclass (see :mod:`eo_common.config`)
plus the dotted name of the function that does the work. The command layer, built on jsonargparse,
gives each command without further code:

* one flag per config field, ``--group.field`` (e.g. ``--optim.lr``), plus the field name alone
  where it is unique in the command (``--lr``) and the aliases the field or command declares
  (``--batch_sz``); ``-`` and ``_`` are interchangeable in flag names; a boolean flag alone means
  true, ``--no_<flag>`` false;
* ``--config run.yaml`` (flags after it override the file; relative paths in the file are relative to
  the file's folder) and ``--print_config`` (the full resolved config as YAML, which ``--config``
  reads back unchanged);
* validation that names every bad field at once (unknown flags or keys, wrong types, values out of
  range, missing required values, cross-field rules), printed one line per field, exit status 2;
* for commands that write a run folder: the folder is checked (writable; an existing run is never
  modified unless ``--resume`` or ``--overwrite`` says so) before anything heavy is imported;
* the work function is imported only after all that, so ``--help`` and every config error come back
  in well under two seconds;
* a fault the user can fix (:data:`eo_common.errors.USER_FAULTS`) raised by the work becomes one
  line ``<prog>: error: <message>`` and exit status 2; ``EOLAB_DEBUG=1`` shows the traceback.

Example::

    # cloud_removal/cli.py
    cr_train = Command(
        "cr-train",
        CRTrainConfig,
        "cloud_removal.train:train",
        description="Train the SAR-guided cloud-removal network on SEN12MS-CR.",
        aliases={"--batch_sz": "data.batch_size", "--save_model_dir": "run.output_dir"},
    )
    # pyproject.toml:  cr-train = "cloud_removal.cli:cr_train"
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from .argv import clean_message, flatten, join_list_values, nest, normalize_argv, rebase
from .config import config_from_dict, config_problems, iter_leaves, mentions_path
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    USER_FAULTS,
    ConfigError,
    UserError,
    format_user_error,
)

__all__ = ["Command", "CommandGroup"]

_META_OPTIONS = {"--config", "--print_config", "--help", "-h"}


@dataclass
class _Leaf:
    key: str  # dotted key, e.g. "optim.lr"
    hint: Any
    default: Any
    meta: Mapping[str, Any]
    options: list[str]  # every flag spelling, canonical first

    @property
    def is_bool(self) -> bool:
        return self.hint is bool

    @property
    def is_list(self) -> bool:
        hints = [self.hint, *typing.get_args(self.hint)]
        return any(typing.get_origin(h) is list for h in hints)

    @property
    def is_path(self) -> bool:
        return mentions_path(self.hint) or bool(self.meta.get("path"))


def _default_of(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


class Command:
    """A console command declared by its config dataclass; call it with ``argv`` to run it.

    Args:
        prog: the command's name (``cr-train``).
        config: the config dataclass; nested dataclass fields become ``--help`` groups.
        run: ``"package.module:function"``; called with the config object once it is valid. What
            it returns (a dict) is printed as JSON on stdout.
        description: first paragraph of ``--help``.
        epilog: text after the flags in ``--help`` (examples).
        aliases: extra flag spellings of this command, ``{"--batch_sz": "data.batch_size"}``.
        defaults: this command's defaults where they differ from the dataclass',
            ``{"run.output_dir": "runs/cr_train", "optim.lr": 1e-4}``.
        run_folder: the command writes a run folder (``config.run``) and follows the rerun rule.
        metrics: the headline metric names its ``summary.json`` ``metrics`` holds (``"val/mcc"``,
            ``"val/kappa"``); each is also logged every validation under the same name. What
            ``eolab sweep`` may optimise and prune on.
        presets: named config files shipped with the package, ``{"--demo": Path(...)}``: the flag
            stands for ``--config <file>`` at its place on the command line (flags after it win).
    """

    def __init__(
        self,
        prog: str,
        config: type,
        run: str,
        *,
        description: str,
        epilog: str = "",
        aliases: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        run_folder: bool = True,
        metrics: Sequence[str] = (),
        presets: Mapping[str, str | os.PathLike] | None = None,
    ):
        if not is_dataclass(config):
            raise TypeError(f"{prog}: config must be a dataclass, got {config!r}")
        self.prog = prog
        self.config_cls = config
        self.run_target = run
        self.description = description
        self.epilog = epilog
        self.aliases = dict(aliases or {})
        self.defaults = dict(defaults or {})
        self.run_folder = run_folder
        self.metrics = tuple(metrics)
        self.presets = {
            "--" + k.lstrip("-").replace("-", "_"): Path(v) for k, v in (presets or {}).items()
        }
        if self.presets:
            listed = "; ".join(f"{k} = --config {v}" for k, v in self.presets.items())
            self.epilog = (self.epilog + "\n\n" if self.epilog else "") + f"presets: {listed}"
        self._leaves: list[_Leaf] | None = None

    # ------------------------------------------------------------------ declaration -> parser
    def leaves(self) -> list[_Leaf]:
        """Every config field with its flag spellings (canonical ``--group.field`` first)."""
        if self._leaves is not None:
            return self._leaves
        raw = list(iter_leaves(self.config_cls))
        unknown_defaults = set(self.defaults) - {k for k, _ in raw}
        unknown_aliases = {a: k for a, k in self.aliases.items() if k not in {k for k, _ in raw}}
        if unknown_defaults or unknown_aliases:
            raise TypeError(
                f"{self.prog}: defaults {sorted(unknown_defaults)} / aliases {unknown_aliases} "
                "name fields the config does not have"
            )
        hints = _all_hints(self.config_cls)
        counts: dict[str, int] = {}
        for key, _ in raw:
            short = key.rsplit(".", 1)[-1]
            counts[short] = counts.get(short, 0) + 1
        taken: set[str] = set(_META_OPTIONS)
        leaves = []
        for key, f in raw:
            options = [f"--{key}"]
            wanted = list(f.metadata.get("aliases", ()))
            wanted += [a for a, k in self.aliases.items() if k == key]
            short = key.rsplit(".", 1)[-1]
            if "." in key and counts[short] == 1:
                wanted.insert(0, f"--{short}")
            for alias in wanted:
                alias = "--" + alias.lstrip("-").replace("-", "_")
                if alias not in taken and alias not in options:
                    options.append(alias)
            taken.update(options)
            default = self.defaults[key] if key in self.defaults else _default_of(f)
            leaves.append(_Leaf(key, hints[key], default, f.metadata, options))
        self._leaves = leaves
        return leaves

    def build_parser(self) -> Any:
        """The jsonargparse parser of this command."""
        import argparse

        from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

        class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
            """jsonargparse's help, with the description and examples kept as written."""

        parser = ArgumentParser(
            prog=self.prog,
            description=self.description,
            epilog=self.epilog or None,
            exit_on_error=False,
            default_env=False,
            formatter_class=HelpFormatter,
        )
        parser.add_argument(
            "--config",
            action=ActionConfigFile,
            help="YAML file with any of the options below (as written by --print_config); "
            "flags given after it override it",
        )
        groups: dict[str, Any] = {}
        for top in fields(self.config_cls):
            hint = _all_hints(self.config_cls, shallow=True)[top.name]
            if isinstance(hint, type) and is_dataclass(hint):
                doc = (hint.__doc__ or "").strip().splitlines()[0] if hint.__doc__ else ""
                title, _, text = doc.partition(":")
                groups[top.name] = parser.add_argument_group(
                    top.name, text.strip() or title.strip() or None
                )
        own = parser.add_argument_group(self.prog, "options of this command")
        for leaf in self.leaves():
            group = groups.get(leaf.key.split(".", 1)[0], own) if "." in leaf.key else own
            help_text = str(leaf.meta.get("help", ""))
            if leaf.meta.get("required"):
                help_text += " [required]"
            if leaf.meta.get("positional"):
                many = typing.get_origin(leaf.hint) is list  # nargs="*" takes the item type
                group.add_argument(
                    leaf.key,
                    type=typing.get_args(leaf.hint)[0] if many else leaf.hint,
                    nargs="*" if many else "?",
                    default=leaf.default,
                    help=help_text,
                )
                continue
            kwargs: dict[str, Any] = {"type": leaf.hint, "default": leaf.default, "help": help_text}
            if leaf.is_bool:
                kwargs.update(nargs="?", const=True)
            group.add_argument(*leaf.options, **kwargs)
        return parser

    # ------------------------------------------------------------------ parsing
    def list_options(self) -> set[str]:
        """Flag spellings of the list-typed, non-positional fields."""
        return {
            option
            for leaf in self.leaves()
            if leaf.is_list and not leaf.meta.get("positional")
            for option in leaf.options
        }

    def bool_options(self) -> set[str]:
        return {o for leaf in self.leaves() if leaf.is_bool for o in leaf.options}

    def parse(self, argv: Sequence[str] | None = None) -> Any:
        """Parse flags and config files into the config object; raise :class:`ConfigError` listing
        every problem. ``--help`` and ``--print_config`` print and raise ``SystemExit(0)``."""
        argv = normalize_argv(sys.argv[1:] if argv is None else list(argv), self.bool_options())
        argv = join_list_values(argv, self.list_options())
        argv = [
            t
            for a in argv
            for t in (["--config", str(self.presets[a])] if a in self.presets else [a])
        ]
        parser = self.build_parser()
        try:
            ns = parser.parse_args(argv)
        except SystemExit:
            raise
        except Exception as exc:  # noqa: BLE001 - jsonargparse reports with several types
            raise ConfigError(self._diagnose(parser, argv, exc)) from None
        raw = ns.as_dict()
        files = [Path(str(p)) for p in (raw.pop("config", None) or [])]
        raw.pop("__path__", None)
        values = dict(flatten(raw, {leaf.key for leaf in self.leaves()}))
        self._resolve_file_paths(values, files, argv)
        try:
            cfg = config_from_dict(self.config_cls, nest(values))
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        problems = config_problems(cfg)
        if problems:
            raise ConfigError(problems)
        return cfg

    def _diagnose(self, parser: Any, argv: list[str], first: BaseException) -> list[str]:
        """Check each flag and each config-file key on its own, so that every bad one is named;
        then check ranges and rules on the values that were fine."""
        problems: list[str] = []
        known = {o for leaf in self.leaves() for o in leaf.options} | _META_OPTIONS
        chunks: list[list[str]] = []
        for token in argv:
            if token.startswith("--") or not chunks:
                chunks.append([token])
            else:
                chunks[-1].append(token)
        good_values: dict[str, Any] = {}
        good_chunks: list[str] = []
        for chunk in chunks:
            name = chunk[0].split("=", 1)[0]
            if name == "--config":
                value = chunk[0].split("=", 1)[1] if "=" in chunk[0] else (chunk[1:] or [""])[0]
                bad, good = self._diagnose_file(parser, value)
                problems.extend(bad)
                good_values.update(good)
                continue
            if name.startswith("--") and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{name}: unknown option{hint}")
                continue
            try:
                parser.parse_args(chunk)
            except SystemExit:
                raise
            except Exception as exc:  # noqa: BLE001
                problems.append(clean_message(str(exc)))
            else:
                good_chunks.extend(chunk)
        try:
            ns = parser.parse_args(good_chunks, namespace=parser.parse_object(nest(good_values)))
            values = dict(flatten(ns.as_dict(), {leaf.key for leaf in self.leaves()}))
            values.pop("config", None)
            values.pop("__path__", None)
            problems.extend(config_problems(config_from_dict(self.config_cls, nest(values))))
        except Exception:  # noqa: BLE001,S110 - best effort: the type errors are reported already
            pass
        return problems or [clean_message(str(first))]

    def _diagnose_file(self, parser: Any, path: str) -> tuple[list[str], dict[str, Any]]:
        """(problems, the good ``{dotted key: value}``) of one config file."""
        import yaml

        file = Path(path)
        if not file.is_file():
            return [f"--config: file {file} not found"], {}
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            return [f"{file}: not valid YAML ({str(exc).splitlines()[0]})"], {}
        if data is None:
            return [], {}
        if not isinstance(data, dict):
            return [f"{file}: expected a mapping of options, got {type(data).__name__}"], {}
        keys = {leaf.key for leaf in self.leaves()}
        problems, good = [], {}
        for key, value in flatten(data, keys):
            if key not in keys:
                close = difflib.get_close_matches(key, sorted(keys), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{key}: unknown key in {file}{hint}")
                continue
            try:
                parser.parse_object(nest({key: value}))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{clean_message(str(exc))} (in {file})")
            else:
                good[key] = rebase(value, file.resolve().parent) if self._is_path(key) else value
        return problems, good

    def _is_path(self, key: str) -> bool:
        return any(leaf.key == key and leaf.is_path for leaf in self.leaves())

    def _resolve_file_paths(
        self, values: dict[str, Any], files: list[Path], argv: list[str]
    ) -> None:
        """Relative paths read from a config file are relative to that file's folder."""
        if not files:
            return
        import yaml

        given = {t.split("=", 1)[0] for t in argv if t.startswith("--")}
        keys = {leaf.key for leaf in self.leaves()}
        file_keys = []
        for file in files:
            try:
                data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                data = {}
            file_keys.append(
                {k for k, _ in flatten(data, keys)} if isinstance(data, dict) else set()
            )
        for leaf in self.leaves():
            if not leaf.is_path or any(o in given for o in leaf.options):
                continue
            owners = [f for f, ks in zip(files, file_keys) if leaf.key in ks]
            if not owners or leaf.key not in values:
                continue
            base = owners[-1].resolve().parent
            values[leaf.key] = rebase(values[leaf.key], base)

    # ------------------------------------------------------------------ running
    def load_run(self) -> Callable[[Any], Any]:
        module, _, name = self.run_target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, argv: Sequence[str] | None = None) -> int:
        """Parse, check, run; return the exit status (0, 2 for a user fault, 130 interrupted)."""
        debug = os.environ.get("EOLAB_DEBUG", "") not in ("", "0")
        try:
            cfg = self.parse(argv)
            if self.run_folder:
                from .runs import RunFolder

                RunFolder.plan(cfg, self.prog)
            work = self.load_run()
            _seed_from(cfg)
            result = work(cfg)
        except ConfigError as err:
            lines = err.problems or [str(err)]
            for line in lines:
                print(f"{self.prog}: error: {line}", file=sys.stderr)
            print(f"{self.prog}: see '{self.prog} --help'", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"\n{self.prog}: interrupted; rerun with --resume to continue", file=sys.stderr)
            return EXIT_INTERRUPTED
        except USER_FAULTS as err:
            if debug:
                raise
            line = format_user_error(self.prog, err)
            if not isinstance(err, UserError):
                line += " (EOLAB_DEBUG=1 shows the traceback)"
            print(line, file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(result, Mapping):
            print(json.dumps(result, indent=2, default=str))
        elif isinstance(result, int):
            return result
        return 0


class CommandGroup:
    """A command with sub-commands (``eolab sweep run``): the first word picks the sub-command.

    Args:
        prog: the group's name.
        description: one line for ``--help``.
        commands: sub-command name -> :class:`Command` or :class:`CommandGroup` (with one line of
            help each as the second item: ``{"run": (Command(...), "run a sweep")}``).
    """

    def __init__(
        self,
        prog: str,
        description: str,
        commands: Mapping[str, tuple[Command | CommandGroup, str]],
    ):
        self.prog = prog
        self.description = description
        self.commands = dict(commands)

    def usage(self) -> str:
        width = max(len(n) for n in self.commands)
        lines = [f"usage: {self.prog} COMMAND [options]", "", self.description, "", "commands:"]
        lines += [f"  {n:<{width}}  {text}" for n, (_, text) in self.commands.items()]
        lines += ["", f"'{self.prog} COMMAND --help' explains each command."]
        return "\n".join(lines)

    def __call__(self, argv: Sequence[str] | None = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        if not argv or argv[0] in ("-h", "--help"):
            print(self.usage())
            return 0 if argv else EXIT_USER_ERROR
        name, rest = argv[0], argv[1:]
        if name not in self.commands:
            close = difflib.get_close_matches(name, list(self.commands), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            print(f"{self.prog}: error: unknown command {name!r}{hint}", file=sys.stderr)
            print(f"{self.prog}: commands: {', '.join(self.commands)}", file=sys.stderr)
            return EXIT_USER_ERROR
        return self.commands[name][0](rest)


# ---------------------------------------------------------------------------- small helpers


def _seed_from(cfg: Any) -> None:
    """Seed Python, NumPy and torch from ``cfg.run.seed`` before the work builds its model (which it
    does before ``fit_run`` seeds), so that one seed fixes the initial weights too."""
    seed = getattr(getattr(cfg, "run", None), "seed", None)
    if isinstance(seed, int) and not isinstance(seed, bool):
        from .training.seeding import seed_everything

        seed_everything(seed)


def _all_hints(cls: type, shallow: bool = False) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    if shallow:
        return hints
    out: dict[str, Any] = {}
    for f in fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            out.update({f"{f.name}.{k}": v for k, v in _all_hints(hint).items()})
        else:
            out[f.name] = hint
    return out
