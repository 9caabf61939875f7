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

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_config(name: str, backbone: str, rank: int, lora: bool, int8: bool, optim8: bool, full: bool,
               batch: int, steps: int, device: str) -> dict:  # fmt: skip
    from gac_pipeline.benchmark import stage2_step_benchmark

    r = stage2_step_benchmark(
        backbone, lora=lora, rank=rank, int8=int8, optim8=optim8, full=full, batch=batch,
        steps=steps, device=device,
    )  # fmt: skip
    return {"name": name, **r}


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
              f"state {r['state_mib']:.0f} MiB", flush=True)  # fmt: skip
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
              f"{r['weights_mib']:.0f} | {r['grads_mib']:.1f} | {r['optim_mib']:.1f} | {r['state_mib']:.0f} | "
              f"{r['state_mib'] / base['state_mib']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
