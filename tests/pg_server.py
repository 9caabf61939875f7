"""A throwaway PostgreSQL server for the multi-node sweep tests, from Debian's packages.

:func:`throwaway_postgres` finds ``initdb`` / ``pg_ctl`` (``/usr/lib/postgresql/<version>/bin`` or
``PATH``), installs the ``postgresql`` package with apt-get when they are missing and this is root,
creates a cluster in a fresh temporary folder owned by a non-root user (``postgres`` when running as
root: initdb refuses root), starts it on a free local port with trust authentication and its socket in
that folder, yields ``postgresql://eolab@127.0.0.1:<port>/postgres``, and stops and deletes it.

Raises :class:`Unavailable` with the reason when no server can be had; the test then skips, or fails
when ``EOLAB_REQUIRE_POSTGRES=1`` (set by ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here (the message says why)."""


def _binaries() -> tuple[str, str] | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        initdb, pg_ctl = Path(folder) / "initdb", Path(folder) / "pg_ctl"
        if initdb.is_file() and pg_ctl.is_file():
            return str(initdb), str(pg_ctl)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return (initdb, pg_ctl) if initdb and pg_ctl else None


def _install() -> None:
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("PostgreSQL is not installed (apt-get install postgresql needs root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise Unavailable(f"{' '.join(argv)} failed: {' '.join(tail)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a server, yield its URL, stop it and delete its files."""
    found = _binaries()
    if found is None:
        _install()
        found = _binaries()
        if found is None:
            raise Unavailable("the postgresql package installed no initdb/pg_ctl")
    initdb, pg_ctl = found
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="eolab-pg-"))
    if os.name == "posix" and os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise Unavailable("running as root and there is no 'postgres' user") from None
        os.chown(folder, user.pw_uid, user.pw_gid)
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(folder, ignore_errors=True)
            raise Unavailable("running as root and there is no runuser to start postgres as a user")
        as_user = [runuser, "-u", "postgres", "--"]
    data = folder / "data"
    port = _free_port()

    def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*as_user, *argv], capture_output=True, text=True, timeout=timeout, cwd=folder
        )

    try:
        done = run(
            [initdb, "-D", str(data), "-U", "eolab", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {(done.stderr or done.stdout).strip()[-300:]}")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = run(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(folder / "server.log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        )
        if done.returncode != 0:
            log = (
                (folder / "server.log").read_text(errors="replace")[-300:]
                if (folder / "server.log").exists()
                else ""
            )
            raise Unavailable(
                f"pg_ctl start failed: {(done.stderr or done.stdout).strip()[-200:]} {log}"
            )
        try:
            yield f"postgresql://eolab@127.0.0.1:{port}/postgres"
        finally:
            run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
