"""Atomic file writes and a crash-tolerant manifest for resumable jobs.

Every file that a long job produces goes through :func:`atomic_write`: the bytes land in a temporary
file beside the target, are flushed to disk, and the temporary file is renamed over the target with
:func:`os.replace` (atomic on POSIX and Windows). A job killed mid-write therefore leaves either the
old file or no file, never a truncated one that a later run would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_temp_path",
    "current_umask",
    "atomic_save_json",
    "atomic_torch_save",
    "Manifest",
    "git_commit",
    "package_versions",
]


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter on POSIX)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_like_open(fd: int) -> None:
    """Give a ``mkstemp`` file (always 0600) the mode ``open()`` would: 0666 minus the umask, so
    colleagues in the group can read finished outputs on a shared machine."""
    if hasattr(os, "fchmod"):  # POSIX; Windows has no such permission bits
        os.fchmod(fd, 0o666 & ~current_umask())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    Args:
        path: final destination. Parent folders are created.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Example:
        >>> with atomic_write("out.txt", "w") as f:  # doctest: +SKIP
        ...     f.write("done")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        _chmod_like_open(fd)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary path beside ``path`` (same folder, so a rename is atomic).

    For writers that need a file name rather than a file object (rasterio, torch.save to path);
    the caller renames it with ``os.replace(tmp, path)`` once the write has succeeded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    try:
        _chmod_like_open(fd)
    finally:
        os.close(fd)
    return Path(tmp_name)


def atomic_save_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically. Non-JSON values (Paths, numpy scalars) are stringified."""

    def _default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent, default=_default)
        f.write("\n")
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and an atomic rename."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


class Manifest:
    """Append-only JSON-lines log of finished work items, for resumable jobs.

    Each line is ``{"id": <item id>, **info}``. Appends are flushed and fsynced, so after a crash the
    file holds every item whose output was completed before the crash, plus at most one torn last
    line, which :meth:`done_ids` ignores.

    Example:
        >>> m = Manifest(tmp_path / "manifest.jsonl")  # doctest: +SKIP
        >>> m.mark_done("tile_001", seconds=0.4)  # doctest: +SKIP
        >>> "tile_001" in m  # doctest: +SKIP
        True
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._cache: set[str] | None = None

    def records(self) -> list[dict[str, Any]]:
        """All complete records in file order (a torn last line is skipped)."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn line from a crash mid-append
                if isinstance(rec, dict) and "id" in rec:
                    out.append(rec)
        return out

    def done_ids(self) -> set[str]:
        """Ids of all finished items."""
        if self._cache is None:
            self._cache = {str(r["id"]) for r in self.records()}
        return set(self._cache)

    def __contains__(self, item_id: object) -> bool:
        if self._cache is None:
            self.done_ids()
        assert self._cache is not None
        return str(item_id) in self._cache

    def __len__(self) -> int:
        return len(self.done_ids())

    def mark_done(self, item_id: str, **info: Any) -> None:
        """Append one finished item (call only after its output file is in place)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"id": str(item_id), **info}, default=str)
        # a torn previous line must not swallow this record: start on a fresh line if needed
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(("\n" if needs_newline else "") + line + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._cache is not None:
            self._cache.add(str(item_id))


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current git commit hash (with ``-dirty`` when the tree has changes), or None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


_DEFAULT_PACKAGES = (
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "numpy",
    "rasterio",
    "segmentation-models-pytorch",
    "terratorch",
    "peft",
    "bitsandbytes",
    "eo-common",
    "cloud-removal",
    "gac-pipeline",
    "risk-mapping",
    "glacier-seg",
)


def package_versions(names: Iterable[str] | None = None) -> dict[str, str]:
    """Installed versions of ``names`` (default: the packages eolab runs on); absent ones omitted."""
    out = {}
    for name in names or _DEFAULT_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
