"""Every GPU figure of issue 13 in one run (under 8 minutes on one GPU), printed side by side.

Sections (each times a few warm steps after a warm-up; a section that fails prints its error and the
rest still run):

1. cr-train samples/s: the cloud-removal network (``cloud_removal.model.build_model``), L1 loss,
   AdamW, in fp32, bf16-mixed (autocast), channels-last and ``torch.compile``;
2. cr-predict Mpx/s: the same network through :func:`eo_common.raster.predict_array_tiled` with a
   batched predictor (256 px tiles, 32 px overlap, ``batch_size="auto"``);
3. glacier-train and risk-train samples/s (``glacier_seg.model.build_model``,
   ``risk_mapping.model.build_model``), cross-entropy, AdamW, bf16-mixed on a GPU;
4. sliding-window tiles/s: a ResNet-18 U-Net through ``predict_array_tiled``, one tile per call vs
   ``batch_size="auto"`` (N from the free GPU memory);
5. stage 1 tiles/s: ``terramind_v1_base_generate`` at 10 diffusion steps
   (``gac_pipeline.generator.build_generator``, random weights: the cost does not depend on them), one
   tile vs a batch, and the projection to 200,000 tiles against the seed's 28 h on an RTX 4050;
6. stage 2 step time and memory with LoRA + int8 (``gac_pipeline.benchmark.stage2_step_benchmark``).

``--tiny`` runs everything on CPU-sized inputs (32-64 px, 1 step, TerraMind tiny at 1 step on 64 px,
the tiny Prithvi backbone, no ``torch.compile``) so the test suite can run the script in about a minute; its
numbers are not benchmarks. Models are built through the packages' public builders, imported inside
each section.

    uv run python benchmarks/gpu_suite.py            # on a GPU
    uv run python benchmarks/gpu_suite.py --tiny     # anywhere, smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED_STAGE1_HOURS = 28.0  # the researchers' stage 1: 200k tiles in 28 h on an RTX 4050
STAGE1_TILES = 200_000


@dataclass
class Sizes:
    cr_size: int
    cr_batch: int
    seg_size: int
    seg_batch: int
    scene: int
    steps: int
    terramind: str
    terramind_steps: int
    s1_batch: int
    prithvi: str
    s2_batch: int
    compile: bool
    tile: int = 256
    s1_size: int = 120
    glacier_encoder: str = "resnet34"
    risk_encoder: str = "resnet34"


FULL = Sizes(cr_size=256, cr_batch=16, seg_size=256, seg_batch=16, scene=2048, steps=10,
             terramind="base", terramind_steps=10, s1_batch=8, prithvi="prithvi_eo_v2_300",
             s2_batch=8, compile=True)  # fmt: skip
TINY = Sizes(cr_size=32, cr_batch=2, seg_size=64, seg_batch=2, scene=96, steps=1,
             terramind="tiny", terramind_steps=1, s1_batch=2, prithvi="prithvi_eo_tiny",
             s2_batch=1, compile=False, tile=32, s1_size=64, glacier_encoder="resnet18",
             risk_encoder="resnet18")  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], steps: int, device: torch.device) -> float:
    """Median seconds of ``steps`` calls after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_fn(model, make_batch, loss_fn, device, *, bf16=False, channels_last=False):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    inputs, target = make_batch()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(*inputs), target)
        loss.backward()
        opt.step()

    return step


# ----------------------------------------------------------------------------------------- sections
def cr_train(sz: Sizes, device: torch.device) -> list[tuple[str, str]]:
    from cloud_removal.model import build_model

    def make_batch():
        b, s = sz.cr_batch, sz.cr_size
        return [torch.rand(b, 13, s, s, device=device), torch.rand(b, 2, s, s, device=device)], (
            torch.rand(b, 13, s, s, device=device)
        )

    def loss(out, target):
        return (out.prediction.float() - target).abs().mean()

    rows = []
    variants = [
        ("fp32", {}),
        ("bf16-mixed", {"bf16": True}),
        ("channels-last", {"channels_last": True}),
    ]
    if sz.compile:
        variants.append(("torch.compile", {"compile": True}))
    for name, kw in variants:
        torch.manual_seed(0)
        model = build_model().to(device).train()
        if kw.pop("compile", False):
            model = torch.compile(model)
        step = train_step_fn(model, make_batch, loss, device, **kw)
        sec = timed(step, sz.steps, device)
        rows.append(
            (
                f"cr-train {name}",
                f"{sz.cr_batch / sec:.1f} samples/s ({sz.cr_size} px, batch {sz.cr_batch})",
            )
        )
    if not sz.compile:
        rows.append(
            ("cr-train torch.compile", "skipped (--tiny: compiling takes minutes on a CPU)")
        )
    return rows


def cr_predict(sz: Sizes, device: torch.device) -> list[tuple[str, str]]:
    from cloud_removal.model import build_model
    from eo_common.raster import predict_array_tiled, torch_batch_predictor

    torch.manual_seed(0)
    model = build_model().to(device).eval()

    class Split(torch.nn.Module):
        def forward(self, x):
            return model(x[:, :13], x[:, 13:]).prediction

    tile = sz.tile
    fn = torch_batch_predictor(Split(), device,
                               autocast_dtype=torch.bfloat16 if device.type == "cuda" else None)  # fmt: skip
    scene = np.random.default_rng(0).random((15, sz.scene, sz.scene), dtype=np.float32)
    kw = dict(out_bands=13, tile_size=tile, overlap=tile // 8, batch_size="auto", device=device)
    sec = timed(lambda: predict_array_tiled(scene, fn, **kw), 1, device)
    mpx = sz.scene**2 / 1e6
    return [("cr-predict", f"{mpx / sec:.3g} Mpx/s ({sz.scene}^2 scene, tile {tile}, bf16 on GPU)")]


def _glacier_model(encoder: str, in_channels: int) -> torch.nn.Module:
    """``glacier_seg.model.build_model``: ``(cfg, in_channels)`` with the config in ``glacier_seg.config``
    (current), or ``(cfg)`` with ``in_channels`` in the model config (before the command layer)."""
    import inspect

    from glacier_seg.model import build_model

    try:
        from glacier_seg.config import ModelConfig
    except ImportError:
        from glacier_seg.model import ModelConfig
    if "in_channels" in inspect.signature(build_model).parameters:
        return build_model(ModelConfig(encoder_name=encoder), in_channels)
    return build_model(ModelConfig(encoder_name=encoder, in_channels=in_channels))


def seg_train(sz: Sizes, device: torch.device) -> list[tuple[str, str]]:
    rows = []
    bf16 = device.type == "cuda"

    def ce(logits, target):
        logits = logits["logits"] if isinstance(logits, dict) else logits
        return torch.nn.functional.cross_entropy(logits.float(), target)

    def batch(channels, classes):
        def make():
            b, s = sz.seg_batch, sz.seg_size
            x = torch.rand(b, channels, s, s, device=device)
            return [x], torch.randint(0, classes, (b, s, s), device=device)

        return make

    torch.manual_seed(0)
    model = _glacier_model(sz.glacier_encoder, 7).to(device).train()
    sec = timed(train_step_fn(model, batch(7, 4), ce, device, bf16=bf16), sz.steps, device)
    rows.append(
        (
            "glacier-train",
            f"{sz.seg_batch / sec:.1f} samples/s ({sz.glacier_encoder} U-Net, 7 ch, {sz.seg_size} px)",
        )
    )

    from risk_mapping.config import ModelConfig as RiskModel
    from risk_mapping.model import build_model as build_risk

    torch.manual_seed(0)
    model = build_risk(RiskModel(encoder=sz.risk_encoder), 6).to(device).train()
    sec = timed(train_step_fn(model, batch(6, 3), ce, device, bf16=bf16), sz.steps, device)
    rows.append(
        (
            "risk-train",
            f"{sz.seg_batch / sec:.1f} samples/s ({sz.risk_encoder} U-Net + attention, 6 ch, {sz.seg_size} px)",
        )
    )
    return rows


def sliding_window(sz: Sizes, device: torch.device) -> list[tuple[str, str]]:
    import segmentation_models_pytorch as smp
    from eo_common.raster import (
        predict_array_tiled,
        resolve_batch_size,
        tile_offsets,
        torch_batch_predictor,
    )

    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=2).to(device).eval()
    fn = torch_batch_predictor(net, device)
    tile = sz.tile
    scene = np.random.default_rng(1).random((4, sz.scene, sz.scene), dtype=np.float32)
    n_tiles = len(tile_offsets(sz.scene, tile, tile // 8)) ** 2
    n_auto = resolve_batch_size("auto", fn, scene[:, :tile, :tile], device=device)
    rows = []
    for label, bs in (("1 tile per call", 1), (f"auto = {n_auto} tiles per call", n_auto)):
        kw = dict(out_bands=2, tile_size=tile, overlap=tile // 8, batch_size=bs, batched=True)
        sec = timed(lambda kw=kw: predict_array_tiled(scene, fn, **kw), 1, device)
        rows.append(
            (
                f"sliding window, {label}",
                f"{n_tiles / sec:.1f} tiles/s ({n_tiles} tiles of {tile} px)",
            )
        )
    return rows


def stage1(sz: Sizes, device: torch.device) -> list[tuple[str, str]]:
    from gac_pipeline.benchmark import generation_benchmark
    from gac_pipeline.generator import build_generator

    t0 = time.perf_counter()
    gen = build_generator(sz.terramind, random_init=True, timesteps=sz.terramind_steps)
    built = time.perf_counter() - t0
    rows = [(f"stage 1 build terramind_v1_{sz.terramind}_generate", f"{built:.1f} s")]
    precisions = ["32", "bf16-mixed"] if device.type == "cuda" else ["32"]
    for precision in precisions:
        res = generation_benchmark(
            sz.terramind,
            batch_sizes=(1, sz.s1_batch),
            timesteps=sz.terramind_steps,
            precision=precision,
            device=str(device),
            repeats=sz.steps,
            tile=sz.s1_size,
            generator=gen,
        )
        for b, rate in res["tiles_per_s"].items():
            hours = STAGE1_TILES / rate / 3600
            rows.append((
                f"stage 1 {sz.terramind}, {sz.terramind_steps} steps, batch {b}, {precision}",
                f"{rate:.3g} tiles/s ({sz.s1_size} px) -> 200k tiles in {hours:.1f} h (seed: "
                f"{SEED_STAGE1_HOURS:.0f} h, {SEED_STAGE1_HOURS / hours:.1f}x)",
            ))  # fmt: skip
    return rows


def stage2(sz: Sizes, device: torch.device) -> list[tuple[str, str]]:
    from gac_pipeline.benchmark import stage2_step_benchmark

    torch.manual_seed(0)
    res = stage2_step_benchmark(
        sz.prithvi,
        lora=True,
        rank=8,
        int8=True,
        batch=sz.s2_batch,
        steps=sz.steps,
        device=str(device),
    )
    mem = (
        f"peak {res['cuda_peak_mib']:.0f} MiB allocated"
        if "cuda_peak_mib" in res
        else f"model state {res['state_mib']:.0f} MiB (GPU memory: n/a on CPU)"
    )
    return [
        (
            f"stage 2 {sz.prithvi} LoRA r8 + int8",
            f"{res['step_s']:.3f} s/step, batch {sz.s2_batch}, {res['trainable']:,} trainable, {mem}",
        )
    ]


SECTIONS = {
    "cr_train": cr_train,
    "cr_predict": cr_predict,
    "seg_train": seg_train,
    "sliding_window": sliding_window,
    "stage1": stage1,
    "stage2": stage2,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true", help="CPU-sized smoke run (not a benchmark)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sz = TINY if args.tiny else FULL
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"gpu_suite: device {device} (GPU: {gpu}), {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{platform.machine()}, {'TINY smoke sizes, not benchmark figures' if args.tiny else 'full sizes'}")  # fmt: skip
    start = time.perf_counter()
    results: list[tuple[str, str]] = []
    failed = 0
    for name in args.only or list(SECTIONS):
        t0 = time.perf_counter()
        try:
            rows = SECTIONS[name](sz, device)
        except Exception as exc:  # noqa: BLE001 - one failing section must not hide the others
            failed += 1
            rows = [(name, f"FAILED: {type(exc).__name__}: {exc}")]
            traceback.print_exc()
        results.extend(rows)
        for label, value in rows:
            print(f"  {label}: {value}", flush=True)
        print(f"  ({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    total = time.perf_counter() - start
    width = max(len(label) for label, _ in results)
    print(f"\n| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|---|")
    for label, value in results:
        print(f"| {label:<{width}} | {value} |")
    print(f"\ntotal {total:.0f} s on {device} ({gpu}); {failed} section(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
