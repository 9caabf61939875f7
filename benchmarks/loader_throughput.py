"""Input pipelines: loader samples/s against model samples/s, scaling with workers, packed vs GeoTIFF.

Side by side in one run, with the DataLoader settings of :func:`eo_common.loading.loader_kwargs`
(persistent workers, prefetch 4; no pinned memory without CUDA):

* **cloud removal**: ``cloud_removal.data.SEN12MSCRDataset`` over 256 x 256 SEN12MS-CR triplets
  (13-band uint16 S2 + 2-band float32 S1 + 13-band cloudy S2, DEFLATE GeoTIFFs in the GLF-CR layout,
  written by ``packages/cloud_removal/tests/data/sen12mscr.py``), full 256 px tiles, no random crop (the
  same samples every epoch, so they can be packed), and the same samples packed once with
  :func:`eo_common.packing.pack_dataset` and read back through :class:`~eo_common.packing.PackedDataset`;
* **BigEarthNet v2 pairs**: ``gac_pipeline.data.PairedTileDataset`` (S1 VV/VH + 12 S2 bands at
  10/20/60 m resampled to 120 px, one GeoTIFF per band), GeoTIFF vs packed;
* **risk tiles**: ``risk_mapping.data.TileDataset`` (already in memory after ``risk-prepare``: 64 px,
  6 bands, flips and rotations);
* model samples/s on this machine: a training step of each package's network at the same size
  (``cloud_removal.model.build_model`` at 256 px, ``risk_mapping.model.build_model`` at 64 px), batch
  ``--batch``. The glacier loader is measured by ``benchmarks/glacier_train_throughput.py``.

Loader throughput is measured over ``--epochs`` passes after a warm-up pass (the page cache then holds
the files, as on a training machine with enough memory; the first pass is reported separately).

    uv run python benchmarks/loader_throughput.py [--workers 0 1 2 4 8] [--samples 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def loader_rate(dataset, workers: int, batch: int, epochs: int) -> tuple[float, float]:
    """(first pass samples/s, best later pass samples/s) through a DataLoader."""
    from eo_common.loading import loader_kwargs
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, shuffle=True, **loader_kwargs(batch_size=batch, num_workers=workers)
    )
    rates = []
    for _ in range(epochs + 1):
        n, t0 = 0, time.perf_counter()
        for b in loader:
            first = b[0] if isinstance(b, list | tuple) else next(iter(b.values()))
            n += len(first)
        rates.append(n / (time.perf_counter() - t0))
    del loader
    return rates[0], max(rates[1:])


def model_rate(build, make_batch, loss_fn, steps: int = 2) -> float:
    model = build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs, target = make_batch()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(*inputs), target).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(target) / (time.perf_counter() - t0)


def _test_data(package: str, module: str):
    """A package's fake-data generator (``packages/<package>/tests/data/<module>.py``, torchgeo style)."""
    import importlib.util

    path = (
        Path(__file__).resolve().parents[1]
        / "packages"
        / package
        / "tests"
        / "data"
        / f"{module}.py"
    )
    spec = importlib.util.spec_from_file_location(f"{package}_test_data_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cloud_removal(tmp: Path, args) -> tuple[list, float]:
    from cloud_removal.data import SEN12MSCRDataset
    from cloud_removal.model import build_model
    from eo_common.packing import PackedDataset, pack_dataset

    make_official = _test_data("cloud_removal", "sen12mscr").make_official

    root = make_official(tmp / "sen12mscr", n_per_split=(args.samples, 1, 1), size=256)
    ds = SEN12MSCRDataset(root, split="train", load_size=256, crop_size=256, train=False)
    t0 = time.perf_counter()
    packed = PackedDataset(pack_dataset(ds, tmp / "cr_packed", progress=False))
    pack_s = time.perf_counter() - t0
    rows = [("cloud removal", "packing once", f"{pack_s:.1f} s for {len(ds)} samples")]
    for name, d in (("GeoTIFF", ds), ("packed", packed)):
        for w in args.workers:
            first, best = loader_rate(d, w, args.batch, args.epochs)
            rows.append(("cloud removal", f"{name}, {w} workers", f"{best:.1f} samples/s (first pass {first:.1f})"))  # fmt: skip
            print(rows[-1], loadavg(), flush=True)
    rate = model_rate(
        build_model,
        lambda: ([torch.rand(args.batch, 13, 256, 256), torch.rand(args.batch, 2, 256, 256)],
                 torch.rand(args.batch, 13, 256, 256)),
        lambda out, y: (out.prediction - y).abs().mean(),
    )  # fmt: skip
    rows.append(("cloud removal", "model train step (CPU, 256 px)", f"{rate:.2f} samples/s"))
    print(rows[-1], flush=True)
    return rows, rate


def benv2(tmp: Path, args) -> list:
    from eo_common.packing import PackedDataset, pack_dataset
    from gac_pipeline.data import PairedTileDataset, build_catalogue

    root = _test_data("gac_pipeline", "benv2").make_fake_benv2(tmp / "benv2", n=args.samples)
    ds = PairedTileDataset(build_catalogue(root, None), None, cache=False)
    packed = PackedDataset(pack_dataset(ds, tmp / "benv2_packed", progress=False))
    rows = []
    for name, d in (("GeoTIFF", ds), ("packed", packed)):
        for w in args.workers:
            first, best = loader_rate(d, w, args.batch, args.epochs)
            rows.append(("BENv2 pairs", f"{name}, {w} workers", f"{best:.1f} samples/s (first pass {first:.1f})"))  # fmt: skip
            print(rows[-1], loadavg(), flush=True)
    return rows


def risk(args) -> list:
    import numpy as np
    from risk_mapping.config import AugmentationConfig
    from risk_mapping.config import ModelConfig as RiskModel
    from risk_mapping.data import TileDataset, TileSet
    from risk_mapping.model import build_model

    n = max(args.samples * 4, 64)
    rng = np.random.default_rng(0)
    tiles = TileSet(rng.normal(size=(n, 6, 64, 64)).astype(np.float32),
                    rng.integers(0, 3, (n, 64, 64)).astype(np.uint8), [f"t{i}" for i in range(n)])  # fmt: skip
    ds = TileDataset(tiles, AugmentationConfig(), optical_bands=[0, 1, 2])
    rows = []
    for w in args.workers:
        first, best = loader_rate(ds, w, args.batch, args.epochs)
        rows.append(("risk tiles", f"in memory, {w} workers", f"{best:.1f} samples/s (first pass {first:.1f})"))  # fmt: skip
        print(rows[-1], loadavg(), flush=True)
    rate = model_rate(
        lambda: build_model(RiskModel(), 6),
        lambda: ([torch.rand(args.batch, 6, 64, 64)], torch.randint(0, 3, (args.batch, 64, 64))),
        lambda out, y: torch.nn.functional.cross_entropy(out["logits"], y),
    )
    rows.append(("risk tiles", "model train step (CPU, 64 px, resnet34)", f"{rate:.2f} samples/s"))
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    p.add_argument("--samples", type=int, default=64, help="samples per data set")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2, help="timed passes after the first")
    p.add_argument(
        "--only", nargs="*", choices=["cr", "benv2", "risk"], default=["cr", "benv2", "risk"]
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{os.cpu_count()} CPU cores visible, load average {loadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="loader_bench_") as tmp:
        tmp = Path(tmp)
        if "cr" in args.only:
            rows += cloud_removal(tmp, args)[0]
        if "benv2" in args.only:
            rows += benv2(tmp, args)
        if "risk" in args.only:
            rows += risk(args)
    print(
        f"\nload average at end {loadavg()}; batch {args.batch}, best of {args.epochs} warm passes\n"
    )
    print("| data | loader | samples/s |\n|---|---|---|")
    for data, what, value in rows:
        print(f"| {data} | {what} | {value} |")


if __name__ == "__main__":
    main()
