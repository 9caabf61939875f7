"""Settings shared by every test of the monorepo (pytest loads this file before any package's tests).

- Tests never reach a model hub: ``HF_HUB_OFFLINE=1`` (``.ci/run`` sets it too).
- ``postgres_url``: a throwaway PostgreSQL server for the multi-node sweep tests (``tests/pg_server.py``).
- torch runs on one intra-op thread. The tests use tiny tensors, CI machines have 2 cores, and some
  tests start subprocesses (DDP, CLIs): measured on the 2-core machine, 2 threads per process made
  small training steps 5-10x slower through oversubscription.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):  # noqa: ARG001 - pytest hook signature
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder in which nothing can be created, for this user.

    A read-only folder (mode 0555) for a normal user; root writes anywhere, so for root a folder of
    sysfs (which refuses new files even to root) is used. Skips where neither is available.
    """
    import tempfile
    from pathlib import Path

    candidates = []
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        candidates.append(folder)
    candidates.append(Path("/sys/kernel"))
    for folder in candidates:
        try:
            fd, name = tempfile.mkstemp(dir=folder)
        except OSError:
            yield folder
            if folder.is_relative_to(tmp_path):
                folder.chmod(0o755)
            return
        os.close(fd)
        os.unlink(name)
    pytest.skip("no unwritable folder for this user on this machine")


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server (one per test module), its URL ``postgresql://eolab@...``.

    Started from Debian's packages as a non-root user on a free local port and deleted afterwards
    (``tests/pg_server.py``). Skips where none can be started, fails when ``EOLAB_REQUIRE_POSTGRES=1``
    (``.ci/run`` sets it).
    """
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent / "tests" / "pg_server.py"
    spec = importlib.util.spec_from_file_location("eolab_pg_server", path)
    pg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pg)
    server = pg.throwaway_postgres()
    try:
        url = server.__enter__()
    except pg.Unavailable as exc:
        if os.environ.get("EOLAB_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"EOLAB_REQUIRE_POSTGRES=1 but no PostgreSQL server: {exc}")
        pytest.skip(f"no PostgreSQL server here: {exc}")
    yield url
    server.__exit__(None, None, None)
