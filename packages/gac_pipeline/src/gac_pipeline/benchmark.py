"""Plain functions that time the pipeline's networks, for ``benchmarks/`` scripts (CPU or GPU).

* :func:`gac_pipeline.generator.generation_benchmark` (re-exported here): stage-1 tiles/s of a TerraMind
  generate model at several batch sizes, fp32 / bf16 / fp16 autocast;
* :func:`stage2_step_benchmark`: seconds per stage-2 optimiser step and the model-state memory of one
  configuration (full fine-tuning, LoRA, int8 frozen layers, 8-bit AdamW).

Each builds its model with random weights (the same cost as trained ones) and returns a dict of
figures; nothing is written to disk.
"""

from __future__ import annotations

import statistics
import time

import torch

from gac_pipeline.generator import generation_benchmark

__all__ = ["generation_benchmark", "stage2_step_benchmark", "tensor_bytes", "weight_bytes"]


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers, int8 layers at 1 byte per weight plus their row scales."""
    total = sum(tensor_bytes(p) for p in model.parameters())
    for m in model.modules():  # bitsandbytes int8 layers keep their row scales beside the weight
        scb = getattr(getattr(m, "weight", None), "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += tensor_bytes(scb)
    return total + sum(tensor_bytes(b) for b in model.buffers())


def stage2_step_benchmark(
    backbone: str = "prithvi_eo_v2_300",
    *,
    lora: bool = True,
    rank: int = 8,
    int8: bool = False,
    optim8: bool = False,
    full: bool = False,
    batch: int = 2,
    steps: int = 3,
    device: str | None = None,
    precision: str = "32",
) -> dict:
    """One stage-2 configuration: median seconds per optimiser step (forward, L1 + MS-SSIM loss,
    backward, step) on ``batch`` random 12 x 120 x 120 tiles after one warm-up step, and memory.

    Args:
        backbone: terratorch Prithvi backbone.
        lora, rank: LoRA adapters of this rank on the attention projections.
        int8: frozen linear layers in int8 (bitsandbytes).
        optim8: bitsandbytes AdamW8bit instead of torch AdamW.
        full: every backbone weight trainable (the baseline LoRA avoids).
        batch, steps: tiles per step, timed steps.
        device: None: CUDA when available.
        precision: ``"32"`` or ``"bf16-mixed"`` (autocast).

    Returns:
        ``{"trainable", "total", "step_s", "weights_mib", "grads_mib", "optim_mib", "state_mib"}``
        plus ``"cuda_peak_mib"`` on a GPU (activations included there).
    """
    from gac_pipeline.losses import build_stage2_loss
    from gac_pipeline.model import RefinerConfig, Stage2Refiner

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = RefinerConfig(backbone=backbone, lora_rank=rank, use_lora=lora, load_in_8bit=int8)
    model = Stage2Refiner(config).to(dev)
    if full:
        model.backbone.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    if optim8:
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(params, lr=1e-4)
    else:
        opt = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = build_stage2_loss(lpips_weight=0.0).to(dev)
    x = torch.rand(batch, 12, 120, 120, device=dev)
    y = torch.rand(batch, 12, 120, 120, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss, _ = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i > 0:
            times.append(time.perf_counter() - t)
    optim_bytes = sum(
        tensor_bytes(v)
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )
    out = {
        "trainable": sum(p.numel() for p in params),
        "total": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times),
        "weights_mib": weight_bytes(model) / 2**20,
        "grads_mib": sum(tensor_bytes(p) for p in params) / 2**20,
        "optim_mib": optim_bytes / 2**20,
    }
    out["state_mib"] = out["weights_mib"] + out["grads_mib"] + out["optim_mib"]
    if dev.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out
