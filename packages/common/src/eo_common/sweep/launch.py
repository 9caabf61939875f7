"""The process of one trial seed: ``python -m eo_common.sweep.launch COMMAND --config FILE``.

It runs the ordinary command (the same :class:`~eo_common.command.Command` object its console script
runs, with the same argument handling, run folder, ``summary.json`` and exit status), so a trial's
folder is exactly what ``COMMAND --config <trial>/config.yaml`` makes by hand.

Before that, on Linux, it asks the kernel to send it SIGTERM when its worker dies
(``PR_SET_PDEATHSIG``), so a killed worker leaves no orphan training behind; if the worker is already
gone it stops at once.
"""

from __future__ import annotations

import os
import signal
import sys

from .pruning import active_trial


def _die_with_parent(parent: int | None) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:  # the worker died before prctl
        raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    """Run ``argv[0]`` (a console script name or ``module:attr``) with the rest of ``argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m eo_common.sweep.launch COMMAND [ARGS...]", file=sys.stderr)
        return 2
    info = active_trial() or {}
    _die_with_parent(info.get("parent_pid"))
    from ..errors import ConfigError
    from .resolve import resolve_command

    try:
        command = resolve_command(argv[0])
    except ConfigError as err:
        print(f"eolab sweep: error: {err}", file=sys.stderr)
        return 2
    sys.argv = [command.prog, *argv[1:]]
    return command(argv[1:])


if __name__ == "__main__":  # pragma: no cover - the subprocess entry
    raise SystemExit(main())
