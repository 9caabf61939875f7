"""Errors a user can fix, and the one way every eolab command reports them.

A command that meets a fault the user can fix (a missing file, a wrong band count, a bad config value,
a corrupt checkpoint, an unwritable folder, an existing run folder) raises a :class:`UserError` (or one
of the standard exceptions listed in :data:`USER_FAULTS`). :func:`eo_common.command.Command` turns it
into one line on stderr, ``<command>: error: <message>``, and exit status 2 (:data:`EXIT_USER_ERROR`),
without a traceback. Anything else is a bug and keeps its traceback.

No torch import here: the command layer loads this module before any heavy import.

Example:
    >>> err = InputError("band count 4, expected 5", path="Band1/img001.tif")
    >>> str(err)
    'Band1/img001.tif: band count 4, expected 5'
    >>> format_user_error("glacier-train", err)
    'glacier-train: error: Band1/img001.tif: band count 4, expected 5'
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "EXIT_USER_ERROR",
    "EXIT_INTERRUPTED",
    "UserError",
    "ConfigError",
    "InputError",
    "CheckpointError",
    "RunFolderError",
    "NonFiniteRunError",
    "USER_FAULTS",
    "format_user_error",
    "check_writable_dir",
]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A fault the user can fix; the message says what and where (file, row, field).

    Args:
        message: what is wrong and, where useful, what to do about it.
        path: the file or folder concerned; prefixed to the message when given.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ConfigError(UserError, ValueError):
    """Invalid configuration: ``problems`` holds one ``"field: message"`` line per bad field."""

    def __init__(self, problems: list[str] | str, *, path: str | os.PathLike | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems), path=path)


class InputError(UserError, ValueError):
    """An input data file or folder is missing, malformed or inconsistent with the others."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, truncated, corrupt, or was written by another command/package."""


class RunFolderError(UserError):
    """The output folder cannot be used: it holds a run already, or it is not writable."""


class NonFiniteRunError(UserError, RuntimeError):
    """Training produced no usable step (NaN/inf everywhere); the message names the likely cause."""


#: Standard exceptions that are user faults when they escape a command (a missing input file, a
#: folder without permission). ``ValueError`` is included because input validation across the
#: packages and the libraries they use (rasterio, numpy) reports bad values with it.
USER_FAULTS: tuple[type[BaseException], ...] = (
    UserError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
    ValueError,
)


def format_user_error(prog: str, err: BaseException) -> str:
    """The single line printed for a user fault: ``<prog>: error: <message>`` (first line only)."""
    if isinstance(err, OSError) and err.filename is not None and not isinstance(err, UserError):
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err).strip() or type(err).__name__
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its own last line
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and not last.startswith(" ") else last
    first = text.splitlines()[0] if text else type(err).__name__
    if len(text.splitlines()) > 1:
        first += " (...)"
    return f"{prog}: error: {first}"


def check_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Raise :class:`RunFolderError` unless files can be created in ``folder`` (or where it will be).

    The nearest existing ancestor is probed by creating and removing a temporary file, so read-only
    mounts, permissions and quotas are all caught (``os.access`` says yes to root everywhere).
    Nothing is left behind.

    Example:
        >>> try:
        ...     check_writable_dir("/dev/null/runs")
        ... except RunFolderError as err:
        ...     print(err)
        /dev/null/runs: output folder cannot be created: /dev/null is not a folder
    """
    import tempfile

    path = Path(folder).expanduser()
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"{what} cannot be created: {probe} is not a folder", path=path)
    try:
        fd, name = tempfile.mkstemp(prefix=".eolab-write-probe.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        where = "" if probe == path else f" (its nearest existing parent {probe} is not)"
        reason = exc.strerror or type(exc).__name__
        raise RunFolderError(
            f"{what} is not writable{where}: {reason}; choose another --output_dir", path=path
        ) from None
    return path
