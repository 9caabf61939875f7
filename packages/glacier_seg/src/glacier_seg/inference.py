"""Checkpoints in, class probabilities out: what ``glacier-eval`` and ``glacier-predict`` share.

* :func:`load_model` reads a ``glacier-train`` checkpoint of any release (the GLCM setting and the
  fitted normaliser travel inside it) with one clear error for a missing, truncated or foreign file;
* :func:`iter_tiles` reads tiles (bands + GLCM) in ``num_workers`` loader processes;
* :func:`predict_tiles` runs one model or an ensemble (mean probabilities) over batches of tiles with
  optional flip TTA and multi-scale inference: whole tiles (tiles of one size batched together), or
  with ``window`` each tile in blended sliding windows (:func:`eo_common.raster.predict_array_tiled`),
  ``batch_size`` tiles or windows per forward pass (``"auto"``: from the free GPU memory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from eo_common.config import RunConfig
from eo_common.errors import CheckpointError, InputError
from eo_common.raster import predict_array_tiled, resolve_batch_size, torch_batch_predictor
from eo_common.raster.batching import BatchSize
from eo_common.training import load_checkpoint
from torch.utils.data import DataLoader, Dataset

from glacier_seg.data import Normalizer, TileArrays, load_tiles
from glacier_seg.layout import GlacierTile, canonical_key
from glacier_seg.model import NUM_CLASSES, padded_forward
from glacier_seg.task import GlacierTask
from glacier_seg.texture import GLCMConfig

__all__ = [
    "LoadedModel",
    "inference_device",
    "load_model",
    "check_same_inputs",
    "iter_tiles",
    "predict_probabilities",
    "predict_tile_probabilities",
    "predict_tiles",
    "resolve_tile_batch",
]


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: the task (eval mode), its GLCM setting, normaliser, split."""

    module: GlacierTask
    include_glcm: bool
    glcm: GLCMConfig
    normalizer: Normalizer
    path: Path
    val_tiles: list[str] | None = None

    @property
    def texture(self) -> GLCMConfig | None:
        return self.glcm if self.include_glcm else None


def inference_device(run: RunConfig) -> torch.device:
    """The device ``run.accelerator`` / ``run.devices`` name (first device of a list; auto: CUDA,
    then MPS, then CPU)."""
    accelerator = run.accelerator
    text = str(run.devices).strip().strip("[]")
    index = int(text.split(",")[0]) if text not in ("auto", "") and "," in text else 0
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError(
                f"run.accelerator: {accelerator} asked for, but no CUDA device is visible"
            )
        return torch.device(f"cuda:{index}")
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def _tuple_fields(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("distances", "angles_deg", "properties", "clip_percentiles")
    return {k: tuple(v) if k in keys and isinstance(v, list) else v for k, v in d.items()}


def _val_tiles(path: Path, data: dict[str, Any]) -> list[str] | None:
    if data.get("val_tiles"):
        return [str(v) for v in data["val_tiles"]]
    if data.get("val_ids"):  # first release: the ids given with --val_ids
        return [canonical_key(str(v)) for v in data["val_ids"]]
    summary = path.parent.parent / "summary.json"  # first release: <run>/checkpoints/x.ckpt
    if summary.is_file():
        import json

        record = json.loads(summary.read_text(encoding="utf-8"))
        tiles = record.get("val_tiles") or (record.get("extra") or {}).get("val_tiles")
        return [str(v) for v in tiles] if tiles else None
    return None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a ``glacier-train`` checkpoint (any release) for inference.

    The network is built from the checkpoint's hyper-parameters without fetching or reading its
    initial encoder weights (the trained weights are in the checkpoint).

    Raises:
        CheckpointError: missing, truncated or corrupt file, a checkpoint of another command, or
            weights that do not fit the network it describes (the message names the file).
    """
    path = Path(path)
    ckpt = load_checkpoint(path, expect_keys=("state_dict", "hyper_parameters"))
    hp = dict(ckpt["hyper_parameters"])
    if "model" not in hp or "loss" not in hp or "normalizer" not in (hp.get("data") or {}):
        raise CheckpointError(
            "not a glacier-train checkpoint (no model, loss or normaliser hyper-parameters)",
            path=path,
        )
    hp["model"] = dict(hp["model"], encoder_weights="none")
    try:
        module = GlacierTask(**hp)
    except Exception as exc:  # noqa: BLE001 - any failure means the hparams describe no network here
        raise CheckpointError(
            f"its hyper-parameters do not build a glacier network ({type(exc).__name__}: {exc})",
            path=path,
        ) from None
    result = module.load_state_dict(ckpt["state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"weights do not fit the network: {len(result.missing_keys)} missing "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]})",
            path=path,
        )
    module.eval().to(device)
    data = hp["data"]
    return LoadedModel(
        module=module,
        include_glcm=bool(data.get("include_glcm", False)),
        glcm=GLCMConfig(**_tuple_fields(dict(data.get("glcm") or {}))),
        normalizer=Normalizer.from_dict(data["normalizer"]),
        path=path,
        val_tiles=_val_tiles(path, data),
    )


def check_same_inputs(models: Sequence[LoadedModel]) -> None:
    """An ensemble must read the same channels (same GLCM setting); normalisers may differ."""
    first = models[0]
    for m in models[1:]:
        if m.include_glcm != first.include_glcm or (m.include_glcm and m.glcm != first.glcm):
            raise InputError(
                f"its input channels (GLCM setting) differ from those of {first.path}", path=m.path
            )


class _TileReader(Dataset):
    def __init__(self, tiles: Sequence[GlacierTile], kwargs: dict[str, Any]):
        self.tiles = list(tiles)
        self.kwargs = kwargs

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> TileArrays:
        return load_tiles([self.tiles[index]], **self.kwargs)[0]


def _keep(item: Any) -> Any:
    return item


def iter_tiles(
    tiles: Sequence[GlacierTile], num_workers: int = 0, **load_kwargs: Any
) -> Iterator[TileArrays]:
    """:func:`glacier_seg.data.load_tiles` one tile at a time, in order, read by ``num_workers``
    loader processes (0: in this process)."""
    if num_workers <= 0:
        for tile in tiles:
            yield load_tiles([tile], **load_kwargs)[0]
        return
    loader = DataLoader(
        _TileReader(tiles, load_kwargs), batch_size=None, num_workers=num_workers, collate_fn=_keep
    )
    yield from loader


@torch.no_grad()
def predict_probabilities(
    net: torch.nn.Module,
    images: torch.Tensor,
    tta: bool = False,
    scales: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Class probabilities of normalised tiles, averaged over flips and scales.

    Args:
        net: maps (B, C, h, w) -> (B, K, h, w) logits (h, w multiples of 32 after padding).
        images: (B, C, H, W) float32 (or one tile (C, H, W)).
        tta: average over identity, horizontal, vertical and both flips.
        scales: resize factors (bilinear input, bilinear logits back to (H, W)).

    Returns:
        (B, K, H, W) float32 probabilities ((K, H, W) for one tile).
    """
    single = images.ndim == 3
    x = images[None] if single else images
    height, width = x.shape[-2:]
    flips: list[tuple[int, ...]] = [()] + ([(-1,), (-2,), (-2, -1)] if tta else [])
    total = None
    count = 0
    for scale in scales:
        xs = (
            x
            if scale == 1.0
            else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        )
        for dims in flips:
            xin = torch.flip(xs, dims) if dims else xs
            logits = padded_forward(net, xin)
            logits = torch.flip(logits, dims) if dims else logits
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
            probs = logits.softmax(dim=1)
            total = probs if total is None else total + probs
            count += 1
    assert total is not None
    out = total / count
    return out[0] if single else out


def _batched_predictor(
    model: LoadedModel, tta: bool, scales: Sequence[float]
) -> Callable[[np.ndarray], np.ndarray]:
    """``(B, C, h, w)`` normalised float32 -> ``(B, K, h, w)`` probabilities of one model (numpy),
    on the model's device, the network in channels-last memory format (faster convolutions, see
    :func:`~eo_common.raster.torch_batch_predictor`); ``batched`` for :mod:`eo_common.raster`'s
    sliding-window functions."""
    net = model.module.net
    return torch_batch_predictor(
        lambda x: predict_probabilities(net, x, tta, scales), model.module.device, weights=net
    )


def resolve_tile_batch(
    models: Sequence[LoadedModel],
    sample: TileArrays,
    batch_size: BatchSize,
    tta: bool = False,
    scales: Sequence[float] = (1.0,),
    window: int = 0,
) -> int:
    """Tiles (or windows, ``window > 0``) per forward pass: ``batch_size``, or for ``"auto"`` the
    number :func:`eo_common.raster.resolve_batch_size` finds for one tile (or window) of ``sample``
    with TTA and scales (on a GPU: what fits in the free memory; on the CPU: 2)."""
    if batch_size != "auto":
        return resolve_batch_size(batch_size)
    m = models[0]
    x = m.normalizer(sample.image)
    if window:
        x = x[:, :window, :window]
    fn = _batched_predictor(m, tta, scales)
    return resolve_batch_size("auto", fn, x, device=m.module.device)


def _probability_sums(
    models: Sequence[LoadedModel],
    tiles: Sequence[TileArrays],
    tta: bool,
    scales: Sequence[float],
    batch_size: BatchSize,
    window: int,
    overlap: int,
) -> list[np.ndarray]:
    """Per tile, the sum over ``models`` of their (K, H, W) float32 probabilities."""
    if not tiles:
        return []
    n = resolve_tile_batch(models, tiles[0], batch_size, tta, scales, window)
    fns = [_batched_predictor(m, tta, scales) for m in models]
    out: list[np.ndarray] = []
    if window:
        for tile in tiles:
            total = None
            for m, fn in zip(models, fns):
                p = predict_array_tiled(
                    m.normalizer(tile.image), fn, out_bands=NUM_CLASSES, tile_size=window,
                    overlap=overlap, batch_size=n, stretch=32,  # U-Net: any multiple of 32
                )  # fmt: skip
                total = p if total is None else total + p
            out.append(total)
        return out
    start = 0
    while start < len(tiles):
        shape = tiles[start].image.shape
        stop = start + 1
        while stop < len(tiles) and stop - start < n and tiles[stop].image.shape == shape:
            stop += 1
        group = tiles[start:stop]
        total = None
        for m, fn in zip(models, fns):
            p = fn(np.stack([m.normalizer(t.image) for t in group]))
            total = p if total is None else total + p
        out.extend(total)
        start = stop
    return out


def predict_tile_probabilities(
    models: Sequence[LoadedModel],
    tiles: Sequence[TileArrays],
    tta: bool = False,
    scales: Sequence[float] = (1.0,),
    batch_size: BatchSize = 1,
    window: int = 0,
    overlap: int = 0,
) -> list[np.ndarray]:
    """Mean class probabilities over ``models``: one (K, H, W) float32 array per tile.

    Args:
        models: one model or an ensemble (the mean of their probabilities).
        tiles: tiles in memory (:func:`iter_tiles`); each model normalises them its own way.
        tta, scales: see :func:`predict_probabilities`.
        batch_size: tiles (or windows) per forward pass, or ``"auto"`` (:func:`resolve_tile_batch`).
            The probabilities do not depend on it beyond float32 rounding (batched convolutions sum
            in another order).
        window: 0: each tile whole in one forward pass, tiles of one size batched together. A
            side in px: each tile in windows of this size (:func:`eo_common.raster.predict_array_tiled`,
            cosine-blended over ``overlap`` px, reflect-padded when the tile is smaller), so tiles
            of any size go through with memory bounded by ``batch_size`` windows.
        overlap: overlap of neighbouring windows (px, < ``window``).
    """
    sums = _probability_sums(models, tiles, tta, scales, batch_size, window, overlap)
    return [s / np.float32(len(models)) for s in sums]


def predict_tiles(
    models: Sequence[LoadedModel],
    tiles: Sequence[TileArrays],
    tta: bool = False,
    scales: Sequence[float] = (1.0,),
    batch_size: BatchSize = 1,
    window: int = 0,
    overlap: int = 0,
) -> list[np.ndarray]:
    """Ensemble prediction: argmax of the models' summed probabilities -> (H, W) uint8 classes per
    tile (see :func:`predict_tile_probabilities` for the arguments)."""
    sums = _probability_sums(models, tiles, tta, scales, batch_size, window, overlap)
    return [s.argmax(0).astype(np.uint8) for s in sums]
