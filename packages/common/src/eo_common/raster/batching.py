"""How many tiles go through the model per forward call, and a batched predictor for torch modules.

:func:`sliding_window_predict` and :func:`predict_array_tiled` call ``predict_fn`` with ``N`` tiles at a
time when it takes a batch (``batched=True``, or a ``predict_fn.batched = True`` attribute). ``N`` is
``batch_size``, or with ``batch_size="auto"`` (:func:`resolve_batch_size`):

* on a CUDA device: one tile is run while the peak of allocated memory is recorded, and ``N`` is the
  number of such tiles that fit in :data:`AUTO_GPU_MEMORY_FRACTION` of the memory that
  :func:`torch.cuda.mem_get_info` reports free, at most :data:`AUTO_GPU_MAX_BATCH`;
* on the CPU: :data:`AUTO_CPU_BATCH` tiles. A CPU forward does not get faster per pixel beyond a
  couple of tiles (measured in ``docs/benchmarks.md``, 256 px tiles of a ResNet-18 U-Net, CPU seconds
  per megapixel, 1 thread: 2.34 at 1 tile, 2.18 at 2, 2.45 at 4, 2.66-2.99 at 8; 2.84-2.90 for one
  whole 1024 px image), while the memory grows with every tile, so the cap is 2.

Example:
    >>> import torch
    >>> net = torch.nn.Conv2d(4, 2, 3, padding=1).eval()
    >>> fn = torch_batch_predictor(net)
    >>> fn.batched, fn(np.zeros((3, 4, 8, 8), np.float32)).shape
    (True, (3, 2, 8, 8))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

__all__ = [
    "AUTO_CPU_BATCH",
    "AUTO_GPU_MAX_BATCH",
    "AUTO_GPU_MEMORY_FRACTION",
    "BatchSize",
    "is_batched",
    "resolve_batch_size",
    "torch_batch_predictor",
]

BatchSize = int | Literal["auto"]

#: tiles per forward that ``batch_size="auto"`` picks on the CPU
AUTO_CPU_BATCH = 2
#: largest number of tiles per forward that ``batch_size="auto"`` picks on a GPU
AUTO_GPU_MAX_BATCH = 128
#: share of the free GPU memory that ``batch_size="auto"`` plans to fill with tiles
AUTO_GPU_MEMORY_FRACTION = 0.6


def is_batched(predict_fn: Callable, batched: bool | None) -> bool:
    """Whether ``predict_fn`` takes ``(B, C, t, t)``: ``batched`` if given, else its ``batched`` attribute."""
    if batched is not None:
        return bool(batched)
    return bool(getattr(predict_fn, "batched", False))


def _cuda_device(device: Any) -> Any:
    """The torch CUDA device to size the batch for, or None for the CPU path."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of eo_common
        return None
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else None
    dev = torch.device(device)
    return dev if dev.type == "cuda" and torch.cuda.is_available() else None


def resolve_batch_size(
    batch_size: BatchSize,
    predict_fn: Callable[[np.ndarray], Any] | None = None,
    sample: np.ndarray | None = None,
    *,
    batched: bool = True,
    device: Any = None,
) -> int:
    """An integer number of tiles per forward call.

    Args:
        batch_size: a positive integer (returned as is) or ``"auto"``.
        predict_fn: the batched prediction function (used for the GPU probe).
        sample: one ``(C, t, t)`` float32 tile for the GPU probe.
        batched: whether ``predict_fn`` takes a batch; a per-tile function gets 1 (nothing to gain).
        device: where ``predict_fn`` computes (``"cuda"``, ``"cuda:1"``, ``"cpu"``, a torch device);
            None: CUDA when available.

    Returns:
        ``N >= 1``; always 1 for a per-tile function. ``"auto"``: :data:`AUTO_CPU_BATCH` on the CPU; on a
        GPU the tiles that fit in :data:`AUTO_GPU_MEMORY_FRACTION` of the free memory, measured by a
        one-tile probe (peak allocated bytes above the start), at most :data:`AUTO_GPU_MAX_BATCH`.

    Raises:
        ValueError: ``batch_size`` is neither a positive integer nor ``"auto"``.

    Example:
        >>> resolve_batch_size(8), resolve_batch_size(8, batched=False)
        (8, 1)
    """
    if batch_size != "auto" and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if not batched:
        return 1  # a per-tile function is called once per tile whatever N is
    if batch_size != "auto":
        return int(batch_size)
    cuda = _cuda_device(device)
    if cuda is None or predict_fn is None or sample is None:
        return AUTO_CPU_BATCH
    import torch

    torch.cuda.synchronize(cuda)
    start = torch.cuda.memory_allocated(cuda)
    torch.cuda.reset_peak_memory_stats(cuda)
    predict_fn(np.ascontiguousarray(sample[None], dtype=np.float32))
    torch.cuda.synchronize(cuda)
    per_tile = max(torch.cuda.max_memory_allocated(cuda) - start, 1)
    free, _ = torch.cuda.mem_get_info(cuda)
    fit = int(AUTO_GPU_MEMORY_FRACTION * free // per_tile)
    return max(1, min(AUTO_GPU_MAX_BATCH, fit))


def torch_batch_predictor(
    module: Any,
    device: Any = None,
    *,
    autocast_dtype: Any = None,
    channels_last: bool = True,
    weights: Any = None,
    output: Callable[[Any], Any] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A batched ``predict_fn`` for a torch module: ``(B, C, t, t)`` float32 -> ``(B, K, t, t)`` float32.

    Runs under :func:`torch.inference_mode` on ``device`` (None: the module's own device), optionally
    in autocast (e.g. ``torch.bfloat16``); ``output`` maps the module's output to the
    ``(B, K, t, t)`` tensor (e.g. ``lambda y: y.softmax(1)``). The returned function has
    ``batched = True`` so the sliding-window functions pass it whole batches.

    ``channels_last`` (default) converts the 4-D weights of ``weights`` (None: ``module`` itself when
    it is an :class:`torch.nn.Module`) to channels-last memory format **in place**, once, and every
    input batch likewise: the same numbers to float rounding, and the layout oneDNN (CPU) and cuDNN
    (tensor cores) convolve fastest. Measured on the CPU, 1 thread, 256 px tiles
    (``benchmarks/common_sliding_window.py``, ``docs/benchmarks.md``): a ResNet-18 U-Net 1.3x faster
    per pixel, the glacier ResNet-34 U-Net with scSE 1.1x.

    Example:
        >>> import torch
        >>> net = torch.nn.Conv2d(4, 2, 3, padding=1).eval()
        >>> y = torch_batch_predictor(net)(np.ones((1, 4, 8, 8), np.float32))
        >>> net.weight.is_contiguous(memory_format=torch.channels_last), y.shape
        (True, (1, 2, 8, 8))
    """
    import torch

    if device is None:
        params = list(module.parameters()) if isinstance(module, torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    if weights is None and isinstance(module, torch.nn.Module):
        weights = module
    if channels_last and weights is not None:
        weights.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(
            device, non_blocking=True
        )
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            y = module(x)
            if output is not None:
                y = output(y)
        return np.ascontiguousarray(y.float().cpu().numpy())

    predict.batched = True  # type: ignore[attr-defined]
    return predict
