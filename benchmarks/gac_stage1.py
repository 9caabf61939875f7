"""Stage 1 (TerraMind S1 -> S2 generation) throughput, batched vs one tile at a time, and the resume cost.

Measured side by side in one run on this machine (CPU unless a GPU is present):

* tiles/s of ``gac-stage1`` (read tile, generate, write GeoTIFF, manifest) with ``terramind_v1_tiny_generate``
  (random weights: the cost is the same as with trained weights) at ``--timesteps`` diffusion steps, with
  ``--batch-size 1`` and ``--batch-size B`` on the same fake BigEarthNet v2 tiles;
* optionally (``--base``) the generation time of one tile with ``terramind_v1_base_generate`` at 10 steps;
* the resume cost: a rerun over a catalogue of 10,000 tiles that are all in the manifest (catalogue CSV read,
  manifest read, skip), which must take seconds, not minutes;
* the projection for 200,000 tiles from the measured tiles/s.

Run:  .venv/bin/python benchmarks/gac_stage1.py [--tiles 8] [--batch-size 4] [--timesteps 1] [--base]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _NoGeneration:
    def to(self, device):
        return self

    def parameters(self):
        raise AssertionError("resume benchmark: nothing may be generated")


def resume_cost(n_done: int, tmp: Path) -> float:
    """Seconds for a stage-1 rerun over ``n_done`` tiles that are all done."""
    from gac_pipeline.stage1 import Stage1Config, run_stage1

    out = tmp / "resume"
    out.mkdir()
    cat = tmp / "catalogue.csv"
    with open(cat, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patch_id", "s1_name", "split", "s2_dir", "s1_dir"])
        for i in range(n_done):
            pid = f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{i // 100}_{i % 100}"
            w.writerow(
                [
                    pid,
                    f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{i // 100}_{i % 100}",
                    "train",
                    "/x",
                    "/y",
                ]
            )
    with open(out / "manifest.shard0-of-1.jsonl", "w") as f:
        for i in range(n_done):
            f.write(json.dumps({"id": f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{i // 100}_{i % 100}",
                                "shard": 0, "seed": 123456789}) + "\n")  # fmt: skip
    cfg = Stage1Config(
        catalogue=cat, output_dir=out, model_size="tiny", random_init=True, progress=False
    )
    t = time.perf_counter()
    summary = run_stage1(cfg, generator=_NoGeneration(), log=lambda _m: None)
    seconds = time.perf_counter() - t
    assert summary.skipped == n_done and summary.generated == 0
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiles", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume-tiles", type=int, default=10_000)
    p.add_argument(
        "--base",
        action="store_true",
        help="also time one tile with terramind_v1_base_generate, 10 steps",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from eo_common.testing import make_fake_benv2
    from gac_pipeline.model import build_generator
    from gac_pipeline.stage1 import Stage1Config, run_stage1

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{args.threads}, device {device}; GPU: {torch.cuda.get_device_name() if device == 'cuda' else 'none'}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = make_fake_benv2(tmp / "benv2", n=args.tiles)
        t = time.perf_counter()
        gen = build_generator("tiny", random_init=True, timesteps=args.timesteps)
        print(f"build terramind_v1_tiny_generate (random init): {time.perf_counter() - t:.1f} s")
        rates = {}
        for bs in (1, args.batch_size):
            cfg = Stage1Config(
                data_dir=data, output_dir=tmp / f"bs{bs}", model_size="tiny", timesteps=args.timesteps,
                batch_size=bs, random_init=True, progress=False, device=device,
            )  # fmt: skip
            s = run_stage1(cfg, generator=gen, log=lambda _m: None)
            rates[bs] = s.generated / s.seconds
            print(f"stage 1, tiny, {args.timesteps} step(s), batch {bs}: {s.generated} tiles in {s.seconds:.1f} s "
                  f"= {rates[bs]:.3f} tiles/s ({s.seconds / s.generated:.2f} s/tile)")  # fmt: skip
        print(f"batched / one-at-a-time throughput ratio: {rates[args.batch_size] / rates[1]:.2f}x")
        best = max(rates.values())
        print(
            f"projection for 200,000 tiles at {best:.3f} tiles/s: {200_000 / best / 3600:.0f} h on this machine"
        )
        del gen
        seconds = resume_cost(args.resume_tiles, tmp)
        print(f"resume: rerun over {args.resume_tiles:,} done tiles took {seconds:.2f} s "
              f"({seconds / args.resume_tiles * 1e6:.0f} us per tile)")  # fmt: skip
        if args.base:
            import random

            t = time.perf_counter()
            base = build_generator("base", random_init=True, timesteps=10)
            print(f"build terramind_v1_base_generate: {time.perf_counter() - t:.1f} s")
            x = torch.randn(1, 2, 128, 128) * 4 - 14
            for _ in range(2):
                random.seed(0)
                t = time.perf_counter()
                with torch.no_grad():
                    base({"S1GRD": x}, timesteps=10)
                dt = time.perf_counter() - t
            print(
                f"base, 10 steps, 1 tile (128 px): {dt:.1f} s/tile -> 200,000 tiles: {200_000 * dt / 3600:.0f} h"
            )


if __name__ == "__main__":
    main()
