"""DataLoader settings that keep an accelerator fed, from a :class:`eo_common.config.DataConfig`.

:func:`loader_kwargs` turns the data section into keyword arguments for
:class:`torch.utils.data.DataLoader`:

* ``num_workers``: ``data.num_workers``, with -1 resolved by
  :func:`eo_common.config.default_num_workers` (one per core beyond the main process, at most 8);
* ``persistent_workers=True`` when there are workers (no worker start-up each epoch: on the 2-core
  VM a start costs more than 20 batches of the glacier loader, see ``docs/benchmarks.md``);
* ``pin_memory`` when CUDA is available (page-locked batches, asynchronous host-to-device copies);
* ``prefetch_factor`` batches per worker in flight (default 4; only with workers).

Exact resume with workers: :class:`eo_common.training.EpochSeed` re-seeds the *main* process every
epoch, but persistent workers keep their own random generators running from one epoch to the next,
so a worker's augmentation in epoch ``e`` would depend on the epochs before it (and after a
``--resume`` on the epoch the run restarted at), and any worker's on how many workers there are.
:class:`SeededSampler` removes the workers' generators from the picture: it pairs each index with
one seed fixed in the main process by the epoch's re-seed, and a dataset
draws a sample's randomness from :func:`sample_rng` of that ``(index, seed)`` key (and, with
``shuffle``, the order comes from the same seed). A sample then depends on ``(run seed, epoch,
index)`` only: the same for 0 or 8 workers, persistent or not, uninterrupted or resumed.

Example:
    >>> from eo_common.config import DataConfig
    >>> kw = loader_kwargs(DataConfig(batch_size=16, num_workers=2), pin_memory=False)
    >>> sorted(kw.items())  # doctest: +NORMALIZE_WHITESPACE
    [('batch_size', 16), ('num_workers', 2), ('persistent_workers', True),
     ('pin_memory', False), ('prefetch_factor', 4)]
    >>> loader_kwargs(DataConfig(num_workers=0), pin_memory=False)
    {'batch_size': 8, 'num_workers': 0, 'pin_memory': False}
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np

from eo_common.config import default_num_workers

__all__ = ["loader_kwargs", "resolve_workers", "SeededSampler", "sample_rng"]


def resolve_workers(num_workers: int) -> int:
    """``num_workers`` with -1 meaning :func:`eo_common.config.default_num_workers`.

    Raises:
        ValueError: below -1.
    """
    if num_workers < -1:
        raise ValueError(f"num_workers must be -1 (one per core) or >= 0, got {num_workers}")
    return default_num_workers() if num_workers == -1 else int(num_workers)


def loader_kwargs(
    data: Any = None,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int = 4,
    persistent_workers: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for :class:`torch.utils.data.DataLoader` from a data section.

    Args:
        data: a :class:`eo_common.config.DataConfig` (or any object with ``batch_size`` and
            ``num_workers``); None uses the explicit arguments only.
        batch_size, num_workers: override the data section (``num_workers=-1``: one per core).
        pin_memory: None: True exactly when :func:`torch.cuda.is_available`.
        prefetch_factor: batches each worker keeps ready (ignored without workers).
        persistent_workers: keep the workers alive between epochs (ignored without workers).

    Returns:
        ``batch_size``, ``num_workers``, ``pin_memory`` and, with workers, ``persistent_workers``
        and ``prefetch_factor`` (DataLoader rejects those two with ``num_workers=0``).
    """
    if batch_size is None:
        batch_size = int(getattr(data, "batch_size", 1) if data is not None else 1)
    if num_workers is None:
        num_workers = int(getattr(data, "num_workers", 0) if data is not None else 0)
    workers = resolve_workers(num_workers)
    if pin_memory is None:
        import torch

        pin_memory = bool(torch.cuda.is_available())
    kwargs: dict[str, Any] = {
        "batch_size": int(batch_size),
        "num_workers": workers,
        "pin_memory": bool(pin_memory),
    }
    if workers > 0:
        if prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
        kwargs["persistent_workers"] = bool(persistent_workers)
        kwargs["prefetch_factor"] = int(prefetch_factor)
    return kwargs


class SeededSampler:
    """Indices as ``(index, seed)`` keys, with one seed per pass from the main process's last re-seed.

    The pass seed is derived from :func:`torch.initial_seed` (the seed of the last
    ``torch.manual_seed``: :class:`eo_common.training.EpochSeed` re-seeds from ``(run seed, epoch)``
    at every epoch start) and the epoch given to :meth:`set_epoch` (Lightning calls it every
    epoch). It does not *draw* from the global generator: how many numbers were drawn before the pass
    starts differs between a new loader iterator (which draws its workers' base seed) and a
    persistent one (which does not), so a drawn seed would depend on the workers. With ``shuffle``
    the order is a permutation from the same seed; otherwise it is ``source``'s (e.g. a sampler
    with its own seeded generator). Give it as ``DataLoader(sampler=...)`` to a dataset whose
    ``__getitem__`` takes such keys through :func:`sample_rng`.

    Outside a training loop that re-seeds every epoch, every pass gets the same seed unless
    :meth:`set_epoch` is called.

    Args:
        source: the number of samples, or a sampler (any sized iterable of indices).
        shuffle: a new permutation every pass (instead of ``source``'s order).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> keys = list(SeededSampler(3))
        >>> [i for i, _ in keys], len({s for _, s in keys}), keys == list(SeededSampler(3))
        ([0, 1, 2], 1, True)
    """

    def __init__(self, source: int | Sized, shuffle: bool = False):
        self.source: Sized = range(source) if isinstance(source, int) else source
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def pass_seed(self) -> int:
        """The seed of the next pass: from ``torch.initial_seed()`` and the epoch."""
        import torch

        state = np.random.SeedSequence([torch.initial_seed(), self.epoch]).generate_state(1)
        return int(state[0])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = self.pass_seed()
        if self.shuffle:
            order = np.random.default_rng([seed, 1]).permutation(len(self.source)).tolist()
        else:
            order = [int(i) for i in self.source]
        return iter([(i, seed) for i in order])


def sample_rng(key: int | tuple[int, int]) -> tuple[int, np.random.Generator]:
    """``(index, generator)`` of a dataset key: a :class:`SeededSampler` key ``(index, seed)`` gives
    ``numpy.random.default_rng([seed, index])`` (the sample's own stream); a plain index gives a
    generator seeded by one draw from torch's global generator (the behaviour of a dataset used
    without the sampler: random, reproducible under a global seed, but tied to the process).

    Example:
        >>> i, rng = sample_rng((4, 123))
        >>> i, float(rng.uniform()) == float(sample_rng((4, 123))[1].uniform())
        (4, True)
    """
    if isinstance(key, tuple | list):
        index, seed = int(key[0]), int(key[1])
        return index, np.random.default_rng([seed, index])
    import torch

    return int(key), np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
