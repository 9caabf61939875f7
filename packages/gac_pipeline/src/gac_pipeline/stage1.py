"""``gac-stage1``: precompute opt_v1 = TerraMind(S1) for every tile, resumable and sharded.

Work is cut into fixed *work units*: consecutive runs of ``--batch-size`` tiles in catalogue order
(sorted patch ids). Unit ``k`` belongs to shard ``k mod num_shards`` and is generated with the seed
:func:`gac_pipeline.model.tile_seed` (run seed, first tile id of the unit). So the output of a tile depends
only on (tile, ``--seed``, ``--batch-size``, the catalogue), not on sharding or on how often the run was
interrupted; with ``--batch-size 1`` it depends on the tile and seed alone.

Outputs under ``--output-dir``::

    opt_v1/<patch_id>.tif              12-band GeoTIFF (S2 L2A DN, band order B01..B12 incl. B8A, no B10),
                                       tile georeference when known; tags record model, seed, timesteps and
                                       GAC_RANDOM_INIT=1 when the weights were random
    manifest.shard<i>-of-<n>.jsonl     done tiles (eo_common.io.Manifest), appended after each file is in place
    errors.shard<i>-of-<n>.jsonl       bad tiles with the reason (retried on the next run)
    catalogue.csv                      the tiles of this run
    summary.shard<i>-of-<n>.json       counts, tiles/s, config

A rerun skips every tile listed in any ``manifest.*.jsonl`` of the folder (so the shard count may change
between runs). Under ``torchrun`` every rank takes its own shard and its own GPU (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from eo_common.io import Manifest, atomic_save_json, atomic_temp_path
from eo_common.raster import write_raster
from tqdm.auto import tqdm

from gac_pipeline.data import (
    S2_BANDS,
    BadTileError,
    TileRecord,
    build_catalogue,
    load_catalogue,
    read_tile,
    save_catalogue,
    stage1_path,
)

__all__ = ["Stage1Config", "Stage1Summary", "shard_units", "run_stage1", "build_parser", "main"]


@dataclass
class Stage1Config:
    """Flags of ``gac-stage1`` (one field per flag)."""

    data_dir: Path | None = None
    output_dir: Path = Path("runs/gac_stage1")
    catalogue: Path | None = None
    split: str | None = None
    max_tiles: int | None = None
    model_size: str = "base"
    timesteps: int = 10
    batch_size: int = 8
    seed: int = 0
    checkpoint: Path | None = None
    pretrained: bool = False
    random_init: bool = False
    shard: int = 0
    num_shards: int = 1
    device: str = "auto"
    precision: str = "32"
    output_dtype: str = "uint16"
    overwrite: bool = False
    progress: bool = True


@dataclass
class Stage1Summary:
    """What one shard did: ``processed`` counts skipped (already done) plus newly generated tiles."""

    total: int
    processed: int
    generated: int
    skipped: int
    errors: int
    seconds: float
    output_dir: Path

    @property
    def tiles_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        return f"Processed: {self.processed}/{self.total} tiles, Errors: {self.errors}, Output dir: {self.output_dir}"


def _distributed_shard(shard: int, num_shards: int) -> tuple[int, int, int | None]:
    """Combine --shard/--num-shards with torchrun's RANK/WORLD_SIZE: (shard, num_shards, local_rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return shard, num_shards, None
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return shard * world + rank, num_shards * world, local_rank


def shard_units(
    records: Sequence[TileRecord], batch_size: int, shard: int, num_shards: int
) -> list[list[TileRecord]]:
    """The work units (fixed runs of ``batch_size`` catalogue tiles) that belong to ``shard``.

    Example:
        >>> recs = list(range(10))  # any sequence works
        >>> shard_units(recs, 3, 0, 2), shard_units(recs, 3, 1, 2)
        ([[0, 1, 2], [6, 7, 8]], [[3, 4, 5], [9]])
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"--shard must be in [0, --num-shards), got shard {shard} of {num_shards}")
    units = [list(records[i : i + batch_size]) for i in range(0, len(records), batch_size)]
    return units[shard::num_shards]


def done_tile_ids(output_dir: Path) -> set[str]:
    """Union of the done ids of every shard manifest in ``output_dir``."""
    done: set[str] = set()
    for path in sorted(Path(output_dir).glob("manifest.*.jsonl")):
        done |= Manifest(path).done_ids()
    return done


def _remove_stale_temps(output_dir: Path, tile_ids: Sequence[str]) -> int:
    """Delete temporary files that a crashed run of this shard left beside its outputs."""
    folder = output_dir / "opt_v1"
    if not folder.is_dir():
        return 0
    mine = set(tile_ids)
    removed = 0
    for p in folder.glob(".*.tmp*"):
        stem = p.name[1:].split(".")[0]
        if stem in mine:
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def write_opt_v1(
    path: Path, array: np.ndarray, *, crs, transform, tags: dict[str, str], dtype: str = "uint16"
) -> Path:
    """Write one opt_v1 GeoTIFF atomically (temporary file + tags + ``os.replace``)."""
    import rasterio

    if dtype == "uint16":
        array = np.clip(np.rint(array), 0, 65535).astype(np.uint16)
    elif dtype == "float32":
        array = array.astype(np.float32)
    else:
        raise ValueError(f"--output-dtype must be uint16 or float32, got {dtype!r}")
    tmp = atomic_temp_path(path)
    try:
        write_raster(tmp, array, crs=crs, transform=transform, band_names=list(S2_BANDS))
        with rasterio.open(tmp, "r+") as dst:
            dst.update_tags(**tags)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _resolve_device(device: str, local_rank: int | None) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{local_rank or 0}")
        return torch.device("cpu")
    return torch.device(device)


def run_stage1(
    config: Stage1Config,
    generator: torch.nn.Module | None = None,
    log: Callable[[str], None] = print,
) -> Stage1Summary:
    """Generate opt_v1 for the tiles of one shard; skip tiles already done; count bad tiles.

    Args:
        config: :class:`Stage1Config`.
        generator: an already built TerraMind generate model (tests reuse one); None builds it from the
            config (``terramind_v1_{model_size}_generate``).
        log: where the final summary line goes.

    Returns:
        :class:`Stage1Summary` (its :meth:`~Stage1Summary.line` is printed at the end).
    """
    from gac_pipeline.model import build_generator, generate_optical, tile_seed

    t_start = time.perf_counter()
    out = Path(config.output_dir)
    shard, num_shards, local_rank = _distributed_shard(config.shard, config.num_shards)
    if config.catalogue is not None:
        records = load_catalogue(config.catalogue)
        if config.max_tiles is not None:
            records = records[: config.max_tiles]
    elif config.data_dir is not None:
        records = build_catalogue(config.data_dir, config.split, config.max_tiles)
    else:
        raise ValueError("give --data-dir (BigEarthNet v2 root) or --catalogue (a catalogue CSV)")
    units = shard_units(records, config.batch_size, shard, num_shards)
    mine = [r for u in units for r in u]
    tag = f"shard{shard}-of-{num_shards}"
    out.mkdir(parents=True, exist_ok=True)
    if shard == 0:
        save_catalogue(records, out / "catalogue.csv")
    manifest = Manifest(out / f"manifest.{tag}.jsonl")
    errors_log = Manifest(out / f"errors.{tag}.jsonl")
    done = set() if config.overwrite else done_tile_ids(out)
    _remove_stale_temps(out, [r.patch_id for r in mine])
    todo_units = [
        [r for r in u] for u in units if config.overwrite or any(r.patch_id not in done for r in u)
    ]
    skipped = sum(1 for r in mine if r.patch_id in done)

    device = _resolve_device(config.device, local_rank)
    if generator is None and todo_units:
        generator = build_generator(
            config.model_size,
            checkpoint=config.checkpoint,
            pretrained=config.pretrained,
            random_init=config.random_init,
            timesteps=config.timesteps,
            init_seed=config.seed,
        )
    if generator is not None:
        generator = generator.to(device)
    tags = {
        "GAC_STAGE": "opt_v1",
        "GAC_MODEL": f"terramind_v1_{config.model_size}_generate",
        "GAC_TIMESTEPS": str(config.timesteps),
        "GAC_SEED": str(config.seed),
        "GAC_BATCH_SIZE": str(config.batch_size),
        "GAC_RANDOM_INIT": "1" if config.random_init else "0",
        "GAC_WEIGHTS": str(config.checkpoint)
        if config.checkpoint
        else ("hub" if config.pretrained else "random"),
    }
    autocast_dtype = {"bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16, "16": torch.float16,
                      "16-mixed": torch.float16}.get(str(config.precision))  # fmt: skip
    generated = errors = 0
    t_gen = time.perf_counter()
    bar = tqdm(
        total=len(mine) - skipped, unit="tile", desc=f"stage1 {tag}", disable=not config.progress,
        dynamic_ncols=True,
    )  # fmt: skip
    for unit in todo_units:
        tiles = []
        for record in unit:
            try:
                tiles.append(read_tile(record))
            except BadTileError as exc:
                errors += 1
                errors_log.mark_done(record.patch_id, error=str(exc))
                bar.write(f"bad tile skipped: {exc}")
                if record.patch_id not in done:
                    bar.update(1)
        if not tiles:
            continue
        s1 = torch.from_numpy(np.stack([t.s1 for t in tiles]))
        seed = tile_seed(config.seed, unit[0].patch_id)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            opt_v1 = generate_optical(generator, s1, timesteps=config.timesteps, seed=seed).numpy()
        for tile, arr in zip(tiles, opt_v1, strict=True):
            if tile.patch_id in done and not config.overwrite:
                continue  # regenerated only because a unit-mate was missing; the file on disk is identical
            write_opt_v1(
                stage1_path(out, tile.patch_id), arr, crs=tile.crs, transform=tile.transform, tags=tags,
                dtype=config.output_dtype,
            )  # fmt: skip
            manifest.mark_done(tile.patch_id, shard=shard, seed=seed)
            generated += 1
            bar.update(1)
        elapsed = time.perf_counter() - t_gen
        bar.set_postfix(tiles_per_s=f"{generated / elapsed:.3f}" if elapsed > 0 else "-")
    bar.close()
    summary = Stage1Summary(
        total=len(mine),
        processed=skipped + generated,
        generated=generated,
        skipped=skipped,
        errors=errors,
        seconds=time.perf_counter() - t_gen,
        output_dir=out,
    )
    summary_path = out / f"summary.{tag}.json"
    previous = (
        json.loads(summary_path.read_text())
        if summary_path.exists() and not config.overwrite
        else {}
    )
    atomic_save_json(
        {
            **{k: v for k, v in asdict(summary).items()},
            # generation totals over every run of this shard (a resumed run adds to them)
            "total_generated": int(previous.get("total_generated", 0)) + generated,
            "total_generation_seconds": float(previous.get("total_generation_seconds", 0.0))
            + summary.seconds,
            "tiles_per_second": summary.tiles_per_second,
            "wall_seconds": time.perf_counter() - t_start,
            "shard": shard,
            "num_shards": num_shards,
            "config": asdict(config),
        },
        summary_path,
    )
    if skipped:
        log(f"Resumed: {skipped} tiles already done were skipped; generated now: {generated}")
    log(summary.line())
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gac-stage1",
        description="Stage 1: generate opt_v1 (S2 L2A) from S1 with a TerraMind any-to-any model, for every "
        "tile, resumable (a rerun skips done tiles) and sharded (--shard/--num-shards or torchrun).",
    )
    src = p.add_argument_group("data")
    src.add_argument(
        "--data-dir", type=Path, help="BigEarthNet v2 root (metadata.parquet, BigEarthNet-S1/-S2)"
    )
    src.add_argument(
        "--catalogue", type=Path, help="catalogue CSV of tiles (instead of --data-dir)"
    )
    src.add_argument(
        "--split", default=None, help="train, validation (val), test or all (default all)"
    )
    src.add_argument(
        "--max-tiles", type=int, default=None, help="only the first N tiles (sorted by id)"
    )
    src.add_argument("--output-dir", type=Path, default=Path("runs/gac_stage1"))
    m = p.add_argument_group("model")
    m.add_argument("--model-size", default="base", choices=["tiny", "small", "base", "large"])
    m.add_argument(
        "--timesteps", type=int, default=10, help="diffusion decoder steps (TerraMind default 50)"
    )
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument(
        "--seed", type=int, default=0, help="same tile + seed (+ batch size) -> same output"
    )
    w = m.add_mutually_exclusive_group(required=True)
    w.add_argument("--checkpoint", type=Path, help="local TerraMind state dict (.pt)")
    w.add_argument(
        "--pretrained", action="store_true", help="download weights from the Hugging Face hub"
    )
    w.add_argument(
        "--random-init", action="store_true",
        help="random weights (tests and demos only: outputs are meaningless and flagged GAC_RANDOM_INIT=1)",
    )  # fmt: skip
    r = p.add_argument_group("run")
    r.add_argument("--shard", type=int, default=0, help="this process's shard index")
    r.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="total shards (multiplied by torchrun's world size)",
    )
    r.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (torchrun: cuda:LOCAL_RANK)"
    )
    r.add_argument("--precision", default="32", choices=["32", "bf16", "16"], help="autocast dtype")
    r.add_argument("--output-dtype", default="uint16", choices=["uint16", "float32"])
    r.add_argument(
        "--overwrite", action="store_true", help="regenerate tiles already in the manifest"
    )
    r.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(ns: argparse.Namespace) -> Stage1Config:
    return Stage1Config(
        data_dir=ns.data_dir, output_dir=ns.output_dir, catalogue=ns.catalogue, split=ns.split,
        max_tiles=ns.max_tiles, model_size=ns.model_size, timesteps=ns.timesteps, batch_size=ns.batch_size,
        seed=ns.seed, checkpoint=ns.checkpoint, pretrained=ns.pretrained, random_init=ns.random_init,
        shard=ns.shard, num_shards=ns.num_shards, device=ns.device, precision=ns.precision,
        output_dtype=ns.output_dtype, overwrite=ns.overwrite, progress=not ns.no_progress,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        run_stage1(config_from_args(ns))
    except (ValueError, FileNotFoundError) as exc:
        print(f"gac-stage1: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
