"""Settings shared by every test of the monorepo (pytest loads this file before any package's tests).

- Tests never reach a model hub: ``HF_HUB_OFFLINE=1`` (``.ci/run`` sets it too).
- torch runs on one intra-op thread. The tests use tiny tensors, CI machines have 2 cores, and some
  tests start subprocesses (DDP, CLIs): measured on the 2-core machine, 2 threads per process made
  small training steps 5-10x slower through oversubscription.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):  # noqa: ARG001 - pytest hook signature
    import torch

    torch.set_num_threads(1)
