"""One seed for Python, NumPy and torch, plus a per-epoch reseed that makes resumed runs exact."""

from __future__ import annotations

import os
import random

import lightning as L
import numpy as np
import torch

__all__ = ["seed_everything", "derive_seed"]

_MAX_SEED = 2**32 - 1


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**32 - 1], got {seed}")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy, torch (CPU and every CUDA device) and dataloader workers.

    Calls :func:`lightning.seed_everything` with ``workers=True`` (so Lightning's worker init function
    gives every dataloader worker on every rank its own derived seed) and additionally seeds what that
    function leaves alone: every CUDA device explicitly, and ``PYTHONHASHSEED`` for child processes
    (hash randomisation of the running interpreter cannot be changed after start-up).

    Args:
        seed: integer in ``[0, 2**32 - 1]``.

    Example:
        >>> seed_everything(7); a = torch.rand(3)
        >>> seed_everything(7); b = torch.rand(3)
        >>> bool(torch.equal(a, b))
        True
    """
    seed = _check_seed(seed)
    L.seed_everything(seed, workers=True, verbose=False)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeding the legacy global generator is the point
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 32-bit seed derived from ``seed`` and integer ``keys`` (e.g. the epoch).

    Uses :class:`numpy.random.SeedSequence`, so ``derive_seed(0, 1)`` and ``derive_seed(1, 0)`` differ.

    Example:
        >>> derive_seed(0, 3) == derive_seed(0, 3) != derive_seed(0, 4)
        True
    """
    seed = _check_seed(seed)
    state = np.random.SeedSequence([seed, *[int(k) for k in keys]]).generate_state(
        1, dtype=np.uint32
    )
    return int(state[0])


def _reseed_all(seed: int) -> None:
    """Seed Python, NumPy and torch without touching environment variables or logging."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeding the legacy global generator is the point
    torch.manual_seed(seed)  # also seeds every CUDA device
