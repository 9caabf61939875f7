"""Training throughput at 256 x 256: data loading vs model step, measured side by side.

Loader: the real training input path of ``glacier-train`` (in-memory 512 x 512 tiles with 7
channels incl. cached GLCM, weighted tile draws, class-balanced 256 px crops, flips/rotations,
collation) iterated without a model, for ``num_workers`` 0 and 2. Model: U-Net (resnet34, scSE,
7 channels) forward + loss (focal + Dice + MCC) + backward + AdamW step on a fixed batch.
Data loading is not the bottleneck when loader samples/s exceeds model samples/s.

Fake GlacierHack tiles (the organisers' layout, uint16 Landsat-8 DN, from the package's test-data
generator ``packages/glacier_seg/tests/data/glacierhack.py``) are used so the run needs no download.

    python benchmarks/glacier_train_throughput.py [--batch_size 4] [--steps 5] [--encoder resnet34]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch
from glacier_seg.config import LossConfig, ModelConfig
from glacier_seg.data import GlacierTileDataset, Normalizer, collate, load_tiles
from glacier_seg.layout import find_tiles
from glacier_seg.model import build_loss, build_model
from glacier_seg.sampling import (
    ClassBalancedCropSampler,
    WeightedTileSampler,
    image_sampling_weights,
)
from glacier_seg.texture import GLCMConfig
from torch.utils.data import DataLoader

_GENERATOR = Path(__file__).resolve().parents[1] / "packages/glacier_seg/tests/data/glacierhack.py"


def _fake_data():
    """The package's fake-data generator module (it lives beside the tests, not in a package)."""
    spec = importlib.util.spec_from_file_location("glacier_fake_data", _GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loader_rate(dataset, weights, batch_size: int, batches: int, workers: int) -> float:
    sampler = WeightedTileSampler(weights, num_samples=batch_size * (batches + 1), seed=0)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate
    )
    it = iter(loader)
    next(it)  # worker start-up and first batch not counted
    t0 = time.perf_counter()
    n = 0
    for batch in it:
        n += batch["image"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed model steps (after 1 warm-up)")
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 on a shared CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = _fake_data().make_organisers_train(f"{tmp}/gh", n=4, size=512, seed=0)
        t0 = time.perf_counter()
        arrays = load_tiles(find_tiles(root), glcm=GLCMConfig(), cache_dir=f"{tmp}/cache")
        t_glcm = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_tiles(find_tiles(root), glcm=GLCMConfig(), cache_dir=f"{tmp}/cache")
        t_cached = time.perf_counter() - t0
        dataset = GlacierTileDataset(
            arrays,
            Normalizer(),
            crop_size=256,
            crop_sampler=ClassBalancedCropSampler(256, 0.5),
            augment=True,
        )
        weights = image_sampling_weights([a.mask for a in arrays], 2.0, 1.0)
        rates = {w: loader_rate(dataset, weights, args.batch_size, args.batches, w) for w in (0, 2)}

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder_name=args.encoder), in_channels=7)
    criterion = build_loss(LossConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, 7, 256, 256)
    y = torch.randint(0, 4, (args.batch_size, 256, 256))
    model.train()
    times = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        loss, _ = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - t0)
    model_rate = args.batch_size * len(times) / sum(times)

    print(
        f"CPU only, {torch.get_num_threads()} torch threads (shared machine); batch {args.batch_size}, 256x256, 7 channels"
    )
    print(
        f"read + GLCM of 4 tiles 512x512: {t_glcm:.2f} s first time, {t_cached:.2f} s from the cache"
    )
    print(f"loader, num_workers=0: {rates[0]:8.1f} samples/s")
    print(f"loader, num_workers=2: {rates[2]:8.1f} samples/s")
    print(
        f"model step ({args.encoder} U-Net scSE, fwd+loss+bwd+AdamW): {model_rate:8.2f} samples/s"
    )
    print(
        f"loader / model (workers=0): {rates[0] / model_rate:.0f}x -> data loading is "
        f"{'not ' if rates[0] > model_rate else ''}the bottleneck"
    )


if __name__ == "__main__":
    main()
