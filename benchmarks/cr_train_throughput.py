"""Training throughput and peak memory of the cloud-removal network, measured side by side.

For 128 x 128 crops and batch 1, 4 and 8: one training step (forward, L1 loss, backward, AdamW step)
of the default ``CloudRemovalCrossAttention`` (6.14 M parameters, every enhancement on) in three
variants: eager, ``torch.compile`` (inductor) and channels-last memory format. Each (variant, batch)
runs in its own subprocess so its peak resident memory (VmHWM minus the resident memory just before
the first step) is its own. Reports samples/s (median over the timed steps) and the ratio to eager.

On CUDA (``--device cuda``) it uses bf16 autocast and reports ``torch.cuda.max_memory_allocated``.

Usage::

    python benchmarks/cr_train_throughput.py --threads 1 --steps 3 --out runs/bench/cr_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _memory import proc_status_mib


def worker(
    variant: str, batch: int, size: int, steps: int, warmup: int, threads: int, device: str
) -> dict:
    import torch
    from cloud_removal.model import CloudRemovalCrossAttention, ModelConfig

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CloudRemovalCrossAttention(ModelConfig()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    optical = torch.rand(batch, 13, size, size, device=device)
    sar = torch.rand(batch, 2, size, size, device=device)
    target = torch.rand(batch, 13, size, size, device=device)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        optical = optical.contiguous(memory_format=torch.channels_last)
        sar = sar.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(model) if variant == "compile" else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if autocast is not None:
            with autocast:
                loss = (fn(optical, sar).prediction.float() - target).abs().mean()
        else:
            loss = (fn(optical, sar).prediction - target).abs().mean()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    base = proc_status_mib("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    peak_mib = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else proc_status_mib("VmHWM") - base
    )
    return {
        "variant": variant,
        "batch": batch,
        "size": size,
        "step_s": med,
        "samples_per_s": batch / med,
        "warmup_s": first,
        "peak_mem_mib": peak_mib,
        "device": device,
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--variants", default="eager,compile,channels_last")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/cr_train_throughput.json"))
    ap.add_argument("--worker", nargs=2, metavar=("VARIANT", "BATCH"), help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.worker:
        res = worker(
            ns.worker[0], int(ns.worker[1]), ns.size, ns.steps, ns.warmup, ns.threads, ns.device
        )
        print("RESULT " + json.dumps(res))
        return 0
    results = []
    for batch in [int(b) for b in ns.batches.split(",")]:
        for variant in ns.variants.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                variant,
                str(batch),
                "--size",
                str(ns.size),
                "--steps",
                str(ns.steps),
                "--warmup",
                str(ns.warmup),
                "--threads",
                str(ns.threads),
                "--device",
                ns.device,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                results.append({"variant": variant, "batch": batch, "error": err})
                print(f"batch {batch} {variant:14s} FAILED: {err}", flush=True)
                continue
            r = json.loads(line[0][7:])
            results.append(r)
            print(
                f"batch {batch} {variant:14s} {r['samples_per_s']:7.3f} samples/s  step {r['step_s']:.2f} s  "
                f"peak +{r['peak_mem_mib']:.0f} MiB  (warmup {r['warmup_s']:.1f} s)",
                flush=True,
            )
    eager = {r["batch"]: r for r in results if r.get("variant") == "eager" and "error" not in r}
    for r in results:
        if "error" not in r and r["batch"] in eager:
            r["speedup_vs_eager"] = r["samples_per_s"] / eager[r["batch"]]["samples_per_s"]
            r["memory_vs_eager"] = r["peak_mem_mib"] / max(eager[r["batch"]]["peak_mem_mib"], 1e-9)
    print(
        "\n| batch | variant | samples/s | x eager | peak MiB | x eager |\n|---:|---|---:|---:|---:|---:|"
    )
    for r in results:
        if "error" in r:
            print(f"| {r['batch']} | {r['variant']} | failed: {r['error'][:60]} | | | |")
        else:
            print(
                f"| {r['batch']} | {r['variant']} | {r['samples_per_s']:.3f} | {r.get('speedup_vs_eager', 1):.2f} | "
                f"{r['peak_mem_mib']:.0f} | {r.get('memory_vs_eager', 1):.2f} |"
            )
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(
        json.dumps(
            {"results": results, "args": {k: v for k, v in vars(ns).items() if k != "out"}},
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
