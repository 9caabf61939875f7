"""Stage 2 training step time and model-state memory with and without LoRA, int8 weights and 8-bit AdamW.

Four configurations of the same Prithvi backbone + head, side by side in one run:

1. full fine-tuning: every backbone weight trainable, float32, AdamW (the baseline LoRA avoids);
2. LoRA (rank ``--rank``) on the attention projections, frozen float32 backbone, AdamW;
3. LoRA + int8 frozen linear layers (``--load-in-8bit``, bitsandbytes);
4. LoRA + int8 + 8-bit AdamW (``--optim adamw8bit``).

For each: seconds per optimiser step (forward + backward + step, batch ``--batch-size`` of 120x120 tiles,
median of ``--steps`` after one warm-up step) and the model-state memory counted from the actual tensors:
weights (int8 layers at 1 byte per weight plus their scales), gradients (trainable parameters only) and
optimiser state (summed over ``optimizer.state`` after a step). Activations are not included (on a GPU,
``torch.cuda.max_memory_allocated`` is reported as well).

Run:  .venv/bin/python benchmarks/gac_stage2.py [--backbone prithvi_eo_v2_300] [--batch-size 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    total = sum(tensor_bytes(p) for p in model.parameters())
    for (
        m
    ) in model.modules():  # bitsandbytes int8 layers keep their row scales beside the int8 weight
        scb = getattr(getattr(m, "weight", None), "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += tensor_bytes(scb)
    return total + sum(tensor_bytes(b) for b in model.buffers())


def optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        tensor_bytes(v)
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )


def run_config(name: str, backbone: str, rank: int, lora: bool, int8: bool, optim8: bool, full: bool,
               batch: int, steps: int, device: str) -> dict:  # fmt: skip
    from gac_pipeline.losses import build_stage2_loss
    from gac_pipeline.model import Stage2Config, Stage2Refiner

    model = Stage2Refiner(
        Stage2Config(
            backbone=backbone, lora_rank=rank, use_lora=lora, load_in_8bit=int8, init_seed=0
        )
    ).to(device)
    if full:
        model.backbone.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    if optim8:
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(params, lr=1e-4)
    else:
        opt = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = build_stage2_loss(lpips_weight=0.0).to(device)
    x = torch.rand(batch, 12, 120, 120, device=device)
    y = torch.rand(batch, 12, 120, 120, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t)
    out = {
        "name": name,
        "trainable": sum(p.numel() for p in params),
        "total": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times),
        "weights_mb": weight_bytes(model) / 2**20,
        "grads_mb": sum(tensor_bytes(p) for p in params) / 2**20,
        "optim_mb": optimizer_bytes(opt) / 2**20,
    }
    out["state_mb"] = out["weights_mb"] + out["grads_mb"] + out["optim_mb"]
    if device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backbone", default="prithvi_eo_v2_300")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, device {device}"
    )
    configs = [
        ("full fine-tune fp32 + AdamW", dict(lora=False, int8=False, optim8=False, full=True)),
        (f"LoRA r={args.rank} fp32 + AdamW", dict(lora=True, int8=False, optim8=False, full=False)),
        (f"LoRA r={args.rank} int8 + AdamW", dict(lora=True, int8=True, optim8=False, full=False)),
        (
            f"LoRA r={args.rank} int8 + AdamW8bit",
            dict(lora=True, int8=True, optim8=True, full=False),
        ),
    ]
    rows = []
    for name, kw in configs:
        rows.append(run_config(name, args.backbone, args.rank, batch=args.batch_size, steps=args.steps,
                               device=device, **kw))  # fmt: skip
        r = rows[-1]
        print(f"{name}: {r['step_s']:.2f} s/step, trainable {r['trainable']:,}/{r['total']:,}, "
              f"state {r['state_mb']:.0f} MiB", flush=True)  # fmt: skip
    base = rows[0]
    print(
        f"\n{args.backbone}, batch {args.batch_size} x 12 x 120 x 120, median of {args.steps} steps"
    )
    print(
        "| configuration | trainable params | s/step | x full | weights MiB | grads MiB | optimiser MiB | state MiB | x full |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['trainable']:,} | {r['step_s']:.2f} | {r['step_s'] / base['step_s']:.2f} | "
              f"{r['weights_mb']:.0f} | {r['grads_mb']:.1f} | {r['optim_mb']:.1f} | {r['state_mb']:.0f} | "
              f"{r['state_mb'] / base['state_mb']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
