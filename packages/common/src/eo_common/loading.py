"""DataLoader settings that keep an accelerator fed, from a :class:`eo_common.config.DataConfig`.

:func:`loader_kwargs` turns the data section into keyword arguments for
:class:`torch.utils.data.DataLoader`:

* ``num_workers``: ``data.num_workers``, with -1 resolved by
  :func:`eo_common.config.default_num_workers` (one per core beyond the main process, at most 8);
* ``persistent_workers=True`` when there are workers (no worker start-up each epoch: on the 2-core
  VM a start costs more than 20 batches of the glacier loader, see ``docs/benchmarks.md``);
* ``pin_memory`` when CUDA is available (page-locked batches, asynchronous host-to-device copies);
* ``prefetch_factor`` batches per worker in flight (default 4; only with workers).

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

from typing import Any

from eo_common.config import default_num_workers

__all__ = ["loader_kwargs", "resolve_workers"]


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
