"""Stage 1's network: ``terramind_v1_{size}_generate`` (terratorch ``FULL_MODEL_REGISTRY``), S1GRD in, S2L2A out.

Generation samples discrete tokens and then runs a diffusion decoder, so no gradient flows through it:
it is used frozen, for precomputation only. :func:`build_generator` builds it from one weight source,
:func:`generate_optical` generates a batch (seeded, optionally under bf16/fp16 autocast), and
:func:`generation_benchmark` times batches of it (for ``benchmarks/``).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from torch import nn

from gac_pipeline.config import TERRAMIND_SIZES
from gac_pipeline.model import (
    crop_padding,
    hub_errors,
    import_terratorch,
    load_full_state_dict,
    pad_to_multiple,
    read_state_dict,
)

__all__ = [
    "AUTOCAST_DTYPES",
    "build_generator",
    "generate_optical",
    "tile_seed",
    "generation_benchmark",
]

GENERATOR_MULTIPLE = 32
"""Tile sides fed to the generate model are padded to a multiple of this (its diffusion U-Net needs 32)."""
AUTOCAST_DTYPES = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""``run.precision`` -> autocast dtype of stage-1 generation (None: float32)."""


def build_generator(
    size: str = "base",
    *,
    checkpoint: str | Path | None = None,
    pretrained: bool = False,
    random_init: bool = False,
    timesteps: int = 10,
    init_seed: int = 0,
) -> nn.Module:
    """Build ``terramind_v1_{size}_generate`` (S1GRD -> S2L2A, ``standardize=True``) in eval mode.

    Exactly one weight source must be chosen: ``checkpoint`` (a local state dict of the whole model,
    checked by :func:`load_full_state_dict`), ``pretrained`` (the Hugging Face hub) or ``random_init``
    (tests and demos: the images are meaningless; the zero-initialised output layers of the diffusion
    decoder get small random weights so that outputs vary with the input and seed instead of being one
    constant image).

    Raises:
        ValueError: unknown size or not exactly one weight source.
        CheckpointError: the checkpoint is missing, unreadable or not this model's weights; the hub
            weights cannot be fetched.
    """
    import_terratorch()
    from terratorch.registry import FULL_MODEL_REGISTRY

    if size not in TERRAMIND_SIZES:
        raise ValueError(f"model size must be one of {', '.join(TERRAMIND_SIZES)}, got {size!r}")
    sources = sum([checkpoint is not None, bool(pretrained), bool(random_init)])
    if sources != 1:
        raise ValueError("choose exactly one of --checkpoint PATH, --pretrained, --random_init")
    name = f"terramind_v1_{size}_generate"
    state = None
    if checkpoint is not None:  # read and checked before the (slow) build
        state = read_state_dict(checkpoint, name)
    torch.manual_seed(init_seed)
    with hub_errors(name, "checkpoint"):
        model = FULL_MODEL_REGISTRY.build(
            name,
            pretrained=bool(pretrained),
            modalities=["S1GRD"],
            output_modalities=["S2L2A"],
            standardize=True,
            timesteps=timesteps,
        )
    if state is not None:
        load_full_state_dict(model, state, checkpoint, name)
    if random_init:
        _perturb_zero_initialised(model, std=0.02)
    return model.eval().requires_grad_(False)


def _perturb_zero_initialised(model: nn.Module, std: float) -> int:
    """Fill weight tensors that are exactly zero after init with N(0, std^2) (random-init models only).

    The diffusion decoder zero-initialises its residual output convs, so a randomly initialised
    generator returns the same constant image (the pretraining mean) for every input and seed; with this
    noise its outputs depend on the input and the seed, which is what tests and demos need to exercise.
    """
    changed = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "norm" not in name and not p.any():
                p.normal_(0.0, std)
                changed += 1
    return changed


def tile_seed(seed: int, first_tile_id: str) -> int:
    """A 63-bit seed for one work unit from the run seed and its first tile id (stable across runs)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{first_tile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def generate_optical(
    generator: nn.Module,
    s1_db: torch.Tensor,
    *,
    timesteps: int,
    seed: int,
    precision: str = "32",
) -> torch.Tensor:
    """Generate S2 L2A DN from S1 dB with a TerraMind generate model.

    Pads by reflection to a multiple of 32 and crops back: the TerraMind encoder needs multiples of 16 and
    the diffusion decoder of the generate model multiples of 32 (48, 80, 112 px fail inside its U-Net);
    120 -> 128 satisfies both. TerraMind draws its sampling seed from Python's ``random`` (and the
    diffusion noise from torch), so both are seeded.

    Args:
        generator: model from :func:`build_generator`, on its device.
        s1_db: (B, 2, H, W) VV, VH in dB (any device).
        timesteps: diffusion decoder steps.
        seed: the same seed and input give the same output.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (autocast on the generator's device).

    Returns:
        (B, 12, H, W) float32 S2 L2A digital numbers on the CPU, band order
        :data:`gac_pipeline.data.S2_BANDS`.
    """
    if s1_db.ndim != 4 or s1_db.shape[1] != 2:
        raise ValueError(f"s1_db must be (B, 2, H, W), got {tuple(s1_db.shape)}")
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {list(AUTOCAST_DTYPES)}, got {precision!r}")
    device = next(generator.parameters()).device
    padded, pads = pad_to_multiple(s1_db.to(device), GENERATOR_MULTIPLE)
    random.seed(seed)
    torch.manual_seed(seed)
    dtype = AUTOCAST_DTYPES[precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out = generator({"S1GRD": padded}, timesteps=timesteps)["S2L2A"]
    return crop_padding(out.float(), pads).cpu()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generation_benchmark(
    size: str = "base",
    *,
    batch_sizes: tuple[int, ...] = (1, 8),
    timesteps: int = 10,
    precision: str = "32",
    device: str | None = None,
    repeats: int = 2,
    tile: int = 120,
    generator: nn.Module | None = None,
) -> dict:
    """Tiles per second of :func:`generate_optical` at each batch size, side by side in one process.

    Random weights (``random_init``: the same cost as trained ones) and random S1 tiles of ``tile`` px
    (dB); one warm-up call per batch size, then ``repeats`` timed calls (CUDA synchronised).

    Args:
        size: ``terramind_v1_<size>_generate``.
        batch_sizes: tiles per generation call to compare.
        timesteps: diffusion decoder steps.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        device: ``"cuda"``, ``"cpu"``, ...; None: CUDA when available.
        repeats: timed calls per batch size.
        tile: tile side (px; BigEarthNet: 120, padded to 128 inside).
        generator: an already built generator (its build time is then not measured).

    Returns:
        ``{"model", "device", "precision", "timesteps", "build_s", "tiles_per_s": {bs: rate},
        "seconds_per_tile": {bs: s}, "peak_gpu_mib": {bs: MiB} (CUDA only)}``; the batched speed-up is
        ``tiles_per_s[max] / tiles_per_s[min]``.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    if generator is None:
        generator = build_generator(size, random_init=True, timesteps=timesteps)
    generator = generator.to(dev)
    out: dict = {
        "model": f"terramind_v1_{size}_generate",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "precision": precision,
        "timesteps": timesteps,
        "build_s": time.perf_counter() - t0,
        "tiles_per_s": {},
        "seconds_per_tile": {},
        "peak_gpu_mib": {},
    }
    rng = torch.Generator().manual_seed(0)
    for bs in batch_sizes:
        s1 = torch.randn(bs, 2, tile, tile, generator=rng) * 4 - 14
        generate_optical(generator, s1, timesteps=timesteps, seed=0, precision=precision)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        _sync(dev)
        t = time.perf_counter()
        for k in range(repeats):
            generate_optical(generator, s1, timesteps=timesteps, seed=k + 1, precision=precision)
        _sync(dev)
        seconds = (time.perf_counter() - t) / (repeats * bs)
        out["seconds_per_tile"][bs] = seconds
        out["tiles_per_s"][bs] = 1.0 / seconds
        if dev.type == "cuda":
            out["peak_gpu_mib"][bs] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out
