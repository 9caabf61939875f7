"""Stage 1 (TerraMind S1 -> S2 generation) at scale: batched vs one tile at a time, bf16, and resume cost.

Measured side by side in one run on this machine (CPU unless a GPU is present):

* generation alone (:func:`gac_pipeline.generator.generation_benchmark`): tiles/s of
  ``terramind_v1_{size}_generate`` (random weights: the same cost as trained ones) at ``--timesteps``
  diffusion steps, batch 1 vs ``--batch-size``, in fp32 and (``--bf16``) under bf16 autocast;
* ``gac-stage1`` end to end (read tile, generate, write GeoTIFF, manifest) on fake BigEarthNet v2 tiles,
  batch 1 vs ``--batch-size``;
* the resume cost: a ``--resume`` over a run whose every tile is done (catalogue CSV read, manifests
  read, the ``opt_v1/`` folder scanned for stale temporary files, every tile skipped, no model built)
  at 10,000 and 200,000 tiles;
* the projection for 200,000 tiles from the measured tiles/s.

Several GPUs: ``torchrun --nproc-per-node N $(which gac-stage1) --resume ...``; each rank takes shard
``shard * WORLD_SIZE + RANK`` and ``cuda:LOCAL_RANK`` (see the package README), so N GPUs give N times
the one-GPU tiles/s (no communication between ranks).

Run:  .venv/bin/python benchmarks/gac_stage1.py [--tiles 8] [--batch-size 4] [--timesteps 1] [--size tiny]
      [--bf16] [--resume-tiles 10000 200000]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


class _NoGeneration:
    def to(self, device):
        return self

    def parameters(self):
        raise AssertionError("resume benchmark: nothing may be generated")


def _fake_benv2(root: Path, n: int) -> Path:
    path = ROOT / "packages" / "gac_pipeline" / "tests" / "data" / "benv2.py"
    spec = importlib.util.spec_from_file_location("gac_fake_benv2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_fake_benv2(root, n=n)


def _stage1_config(out: Path, *, batch_size: int, resume: bool, **data):
    from eo_common.config import RunConfig
    from gac_pipeline.config import GeneratorModel, Stage1Config, Stage1Data

    return Stage1Config(
        data=Stage1Data(batch_size=batch_size, **data),
        model=GeneratorModel(model_size="tiny", timesteps=1, random_init=True),
        run=RunConfig(output_dir=out, resume=resume, progress=False),
    )


def resume_cost(n_done: int, tmp: Path) -> float:
    """Seconds for a ``--resume`` of a stage-1 run whose ``n_done`` tiles are all done."""
    from gac_pipeline.stage1 import run_stage1

    out = tmp / f"resume_{n_done}"
    (out / "opt_v1").mkdir(parents=True)
    cat = tmp / f"catalogue_{n_done}.csv"
    ids = [
        f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{i // 1000}_{i % 1000}"
        for i in range(n_done)
    ]
    with open(cat, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patch_id", "s1_name", "split", "s2_dir", "s1_dir"])
        for i, pid in enumerate(ids):
            w.writerow([pid, f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{i}", "train", "/x", "/y"])
    with open(out / "manifest.shard0-of-1.jsonl", "w") as f:
        for pid in ids:
            f.write(json.dumps({"id": pid, "shard": 0, "seed": 123456789}) + "\n")
    for pid in ids:  # the finished GeoTIFFs (empty here): the folder scan is part of the cost
        (out / "opt_v1" / f"{pid}.tif").touch()
    cfg = _stage1_config(out, batch_size=8, resume=True, catalogue=cat)
    t = time.perf_counter()
    summary = run_stage1(cfg, generator=_NoGeneration(), log=lambda _m: None)
    seconds = time.perf_counter() - t
    assert summary["extra"]["skipped"] == n_done and summary["extra"]["generated"] == 0
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiles", type=int, default=8, help="fake tiles for the end-to-end runs")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=1)
    p.add_argument("--size", default="tiny", help="terramind_v1_<size>_generate for generation")
    p.add_argument("--bf16", action="store_true", help="also generation under bf16 autocast")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume-tiles", type=int, nargs="+", default=[10_000, 200_000])
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from gac_pipeline.generator import build_generator, generation_benchmark
    from gac_pipeline.stage1 import run_stage1

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f}; device {device}; GPU: {gpu}")  # fmt: skip
    t = time.perf_counter()
    gen = build_generator(args.size, random_init=True, timesteps=args.timesteps)
    print(f"build terramind_v1_{args.size}_generate (random init): {time.perf_counter() - t:.1f} s")
    sizes = (1, args.batch_size)
    for precision in ("32", "bf16-mixed") if args.bf16 else ("32",):
        r = generation_benchmark(
            args.size, batch_sizes=sizes, timesteps=args.timesteps, precision=precision,
            device=device, generator=gen,
        )  # fmt: skip
        rates = r["tiles_per_s"]
        for bs in sizes:
            mem = f", peak {r['peak_gpu_mib'][bs]:.0f} MiB" if r["peak_gpu_mib"] else ""
            print(f"generation, {args.size}, {args.timesteps} step(s), {precision}, batch {bs}: "
                  f"{rates[bs]:.3f} tiles/s ({1 / rates[bs]:.2f} s/tile){mem}")  # fmt: skip
        print(f"  batched / one-at-a-time ({precision}): {rates[sizes[1]] / rates[1]:.2f}x; "
              f"200,000 tiles at the batched rate: {200_000 / rates[sizes[1]] / 3600:.1f} h")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.size == "tiny":
            data = _fake_benv2(tmp / "benv2", args.tiles)
            e2e = {}
            for bs in sizes:
                cfg = _stage1_config(tmp / f"bs{bs}", batch_size=bs, resume=False, root=data)
                cfg.model.timesteps = args.timesteps
                s = run_stage1(cfg, generator=gen, log=lambda _m: None)["extra"]
                e2e[bs] = s["generated"] / s["seconds"]
                print(f"gac-stage1 end to end, batch {bs}: {s['generated']} tiles in "
                      f"{s['seconds']:.1f} s = {e2e[bs]:.3f} tiles/s")  # fmt: skip
            print(f"  batched / one-at-a-time end to end: {e2e[sizes[1]] / e2e[1]:.2f}x")
        del gen
        for n in args.resume_tiles:
            seconds = resume_cost(n, tmp)
            print(f"resume over {n:,} done tiles: {seconds:.2f} s "
                  f"({seconds / n * 1e6:.0f} us per tile)")  # fmt: skip


if __name__ == "__main__":
    main()
