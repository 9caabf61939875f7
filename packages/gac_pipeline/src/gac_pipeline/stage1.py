"""``gac-stage1``: precompute opt_v1 = TerraMind(S1) for every tile, resumable and sharded.

Work is cut into fixed *work units*: consecutive runs of ``--batch_size`` tiles in catalogue order
(sorted patch ids). Unit ``k`` belongs to shard ``k mod num_shards`` and is generated with the seed
:func:`gac_pipeline.generator.tile_seed` (run seed, first tile id of the unit). So the output of a tile
depends only on (tile, ``--seed``, ``--batch_size``, the catalogue), not on sharding or on how often the
run was interrupted; with ``--batch_size 1`` it depends on the tile and seed alone.

The run folder (``--output_dir``) holds::

    config.yaml, summary.json          the run's settings and its state (eo_common.runs)
    opt_v1/<patch_id>.tif              12-band GeoTIFF (S2 L2A DN, band order B01..B12 incl. B8A, no B10),
                                       the tile's georeference; tags record model, seed, timesteps and
                                       GAC_RANDOM_INIT=1 when the weights were random
    manifest.shard<i>-of-<n>.jsonl     done tiles (eo_common.io.Manifest), appended after each file is in place
    errors.shard<i>-of-<n>.jsonl       bad tiles with the reason (retried by --resume)
    catalogue.csv                      the tiles of this run
    summary.shard<i>-of-<n>.json       what each shard did (counts, generation seconds)

Reruns follow the rule of every eolab command: a folder that holds a run is not touched unless
``--resume`` (skip every tile listed in any ``manifest.*.jsonl``, so the shard count may change, and
delete the temporary files a killed run left) or ``--overwrite`` (replace the run once the inputs and
weights are checked; not with several shards, which share the folder). Every shard of a sharded run
passes ``--resume`` (on an empty folder it starts the run). Each file is written once, to a hidden
temporary name beside its target, then renamed: a kill leaves no partial GeoTIFF, only a temporary
file that the next ``--resume`` removes. Under ``torchrun`` every rank takes its own shard and GPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from eo_common.errors import InputError, RunFolderError
from eo_common.io import Manifest, atomic_save_json, atomic_write
from eo_common.runs import RunFolder
from tqdm.auto import tqdm

from gac_pipeline.config import Stage1Config
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

__all__ = [
    "run_stage1",
    "shard_units",
    "done_tile_ids",
    "remove_stale_temps",
    "write_opt_v1",
    "stage1_records",
]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _distributed_shard(shard: int, num_shards: int) -> tuple[int, int, int | None]:
    """Combine --shard/--num_shards with torchrun's RANK/WORLD_SIZE: (shard, num_shards, local_rank)."""
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
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"--shard must be in [0, --num_shards), got shard {shard} of {num_shards}")
    units = [list(records[i : i + batch_size]) for i in range(0, len(records), batch_size)]
    return units[shard::num_shards]


def done_tile_ids(output_dir: str | os.PathLike) -> set[str]:
    """Union of the done ids of every shard manifest in ``output_dir``."""
    done: set[str] = set()
    for path in sorted(Path(output_dir).glob("manifest.*.jsonl")):
        done |= Manifest(path).done_ids()
    return done


def _failed_tile_ids(output_dir: Path) -> set[str]:
    failed: set[str] = set()
    for path in sorted(output_dir.glob("errors.*.jsonl")):
        failed |= Manifest(path).done_ids()
    return failed


def remove_stale_temps(
    output_dir: str | os.PathLike, tile_ids: Sequence[str], *, everything: bool = False
) -> list[Path]:
    """Delete the temporary files a killed run left; return them.

    In ``opt_v1/``: every hidden file with ``.tmp`` in its name that belongs to one of ``tile_ids``
    (its name without leading dots starts with ``<tile id>.``), whatever its shape: this release's
    ``.<id>.tif.<random>.tmp``, and the previous release's ``.<id>.<r>.tmp.tif`` and
    ``..<id>.<r>.tmp.<r2>.tmp.tif``. With ``everything`` (no other shard can be writing), every
    hidden temporary file of the folder and of ``opt_v1/``.
    """
    root = Path(output_dir)
    mine = set(tile_ids)
    removed = []
    for folder in (root / "opt_v1", root):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            name = entry.name
            if not name.startswith(".") or ".tmp" not in name or not entry.is_file():
                continue
            tile = name.lstrip(".").split(".")[0]
            if everything or (folder.name == "opt_v1" and tile in mine):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def write_opt_v1(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    crs,
    transform,
    tags: dict[str, str],
    dtype: str = "uint16",
) -> Path:
    """Write one opt_v1 GeoTIFF atomically: encoded with its tags in memory (rasterio), then one
    temporary file beside the target (:func:`eo_common.io.atomic_write`) renamed over it.

    Args:
        path: target ``.tif``.
        array: (12, H, W) S2 L2A DN (float); rounded and clipped to uint16, or kept as float32.
        crs, transform: the tile's georeference (``crs`` may be None).
        tags: GeoTIFF metadata tags.
        dtype: ``"uint16"`` or ``"float32"``.
    """
    from rasterio.io import MemoryFile

    if dtype == "uint16":
        array = np.clip(np.rint(array), 0, 65535).astype(np.uint16)
    elif dtype == "float32":
        array = np.asarray(array, dtype=np.float32)
    else:
        raise ValueError(f"--output_dtype must be uint16 or float32, got {dtype!r}")
    count, height, width = array.shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": count,
        "dtype": array.dtype.name, "crs": crs, "transform": transform, "compress": "deflate",
        "predictor": 2 if array.dtype.kind in "iu" else 3,
    }  # fmt: skip
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(array)
            for i, band in enumerate(S2_BANDS[:count], start=1):
                dst.set_band_description(i, band)
            dst.update_tags(**tags)
        data = memory.read()
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def stage1_records(cfg: Stage1Config) -> list[TileRecord]:
    """The catalogue of a stage-1 run; :class:`InputError` (one line) when it holds no tile."""
    data = cfg.data
    if data.catalogue is not None:
        records = load_catalogue(data.catalogue)[: data.max_tiles]
        where = Path(data.catalogue)
    else:
        split = None if data.split == "all" else data.split
        records = build_catalogue(data.root, split, data.max_tiles)
        where = Path(data.root) / "metadata.parquet"
    if not records:
        raise InputError(f"no tiles to generate (split {data.split!r})", path=where)
    return records


def _device(cfg: Stage1Config, local_rank: int | None) -> torch.device:
    accelerator = cfg.run.accelerator
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator == "mps":
        return torch.device("mps")
    if torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank or 0}")
    if accelerator in ("gpu", "cuda"):
        raise InputError(f"run.accelerator: {accelerator} asked for, but torch sees no CUDA GPU")
    return torch.device("cpu")


def _tags(cfg: Stage1Config) -> dict[str, str]:
    model = cfg.model
    source = model.weight_source
    return {
        "GAC_STAGE": "opt_v1",
        "GAC_MODEL": f"terramind_v1_{model.model_size}_generate",
        "GAC_TIMESTEPS": str(model.timesteps),
        "GAC_SEED": str(cfg.run.seed),
        "GAC_BATCH_SIZE": str(cfg.data.batch_size),
        "GAC_RANDOM_INIT": "1" if source == "random" else "0",
        "GAC_WEIGHTS": str(model.checkpoint) if source == "file" else source,
    }


def build_stage1_generator(cfg: Stage1Config) -> torch.nn.Module:
    """The TerraMind generate model of a stage-1 config, from its weight source (default: hub)."""
    from gac_pipeline.generator import build_generator

    model = cfg.model
    source = model.weight_source
    return build_generator(
        model.model_size,
        checkpoint=model.checkpoint if source == "file" else None,
        pretrained=source == "hub",
        random_init=source == "random",
        timesteps=model.timesteps,
        init_seed=cfg.run.seed,
    )


def _generate_units(
    cfg: Stage1Config,
    units: list[list[TileRecord]],
    done: set[str],
    generator: torch.nn.Module,
    out: Path,
    tag: str,
    shard: int,
    log: Callable[[str], None],
) -> tuple[list[str], int, float]:
    """Generate and write the unfinished tiles of ``units``: (ids generated, bad tiles, seconds)."""
    from gac_pipeline.generator import generate_optical, tile_seed

    manifest = Manifest(out / f"manifest.{tag}.jsonl")
    errors_log = Manifest(out / f"errors.{tag}.jsonl")
    tags = _tags(cfg)
    todo = sum(1 for u in units for r in u if r.patch_id not in done)
    generated: list[str] = []
    errors = 0
    t0 = time.perf_counter()
    bar = tqdm(total=todo, unit="tile", desc=f"stage1 {tag}", disable=not cfg.run.progress)
    for unit in units:
        tiles = []
        for record in unit:
            try:
                tiles.append(read_tile(record))
            except BadTileError as exc:
                errors += 1
                errors_log.mark_done(record.patch_id, error=str(exc))
                log(f"bad tile skipped: {exc}")
                bar.update(record.patch_id not in done)
        if not tiles:
            continue
        s1 = torch.from_numpy(np.stack([t.s1 for t in tiles]))
        seed = tile_seed(cfg.run.seed, unit[0].patch_id)
        opt_v1 = generate_optical(
            generator, s1, timesteps=cfg.model.timesteps, seed=seed, precision=cfg.run.precision
        ).numpy()
        for tile, arr in zip(tiles, opt_v1, strict=True):
            if tile.patch_id in done:
                continue  # regenerated only because a unit-mate was missing; the file is identical
            write_opt_v1(
                stage1_path(out, tile.patch_id), arr, crs=tile.crs, transform=tile.transform,
                tags=tags, dtype=cfg.model.output_dtype,
            )  # fmt: skip
            manifest.mark_done(tile.patch_id, shard=shard, seed=seed)
            generated.append(tile.patch_id)
            bar.update(1)
    bar.close()
    return generated, errors, time.perf_counter() - t0


def run_stage1(
    cfg: Stage1Config,
    generator: torch.nn.Module | None = None,
    log: Callable[[str], None] = _stderr,
) -> dict:
    """Generate opt_v1 for the tiles of one shard; skip finished tiles on ``--resume``; count bad tiles.

    Inputs (catalogue, weights) are checked before the run folder is touched.

    Args:
        cfg: :class:`gac_pipeline.config.Stage1Config`.
        generator: an already built TerraMind generate model (tests reuse one); None builds it from
            ``cfg.model`` (only when there is something to generate).
        log: where progress lines go (stderr).

    Returns:
        The run's ``summary.json`` record: ``metrics`` ``stage1/tiles`` (catalogue), ``stage1/done``,
        ``stage1/failed`` (bad tiles not done), ``stage1/tiles_per_s`` (this shard, this call);
        ``extra`` this shard's ``total``, ``generated``, ``skipped``, ``errors``, ``seconds``.
    """
    folder = RunFolder.plan(cfg, "gac-stage1")
    shard, num_shards, local_rank = _distributed_shard(cfg.data.shard, cfg.data.num_shards)
    if num_shards > 1 and folder.mode == "overwrite":
        raise RunFolderError(
            "--overwrite would delete the tiles of the other shards sharing this folder; remove "
            "the folder (or choose another) and start every shard with --resume",
            path=folder.path,
        )
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    records = stage1_records(cfg)
    units = shard_units(records, cfg.data.batch_size, shard, num_shards)
    mine = [r.patch_id for u in units for r in u]
    done = done_tile_ids(folder.path) if folder.mode == "resume" else set()
    todo_units = [u for u in units if any(r.patch_id not in done for r in u)]
    device = _device(cfg, local_rank)
    if generator is None and todo_units:
        generator = build_stage1_generator(
            cfg
        )  # bad weights fail here, before the folder is touched
    out = folder.open()
    tag = f"shard{shard}-of-{num_shards}"
    if shard == 0 and not (folder.mode == "resume" and (out / "catalogue.csv").is_file()):
        save_catalogue(records, out / "catalogue.csv")  # a resumed run has the same catalogue
    removed = remove_stale_temps(out, mine, everything=num_shards == 1)
    if removed:
        log(f"removed {len(removed)} temporary file(s) of a killed run")
    skipped = sum(1 for t in mine if t in done)
    new_ids: list[str] = []
    errors, seconds = 0, 0.0
    if todo_units:
        new_ids, errors, seconds = _generate_units(
            cfg, todo_units, done, generator.to(device), out, tag, shard, log
        )
    generated = len(new_ids)
    shard_path = out / f"summary.{tag}.json"
    previous = json.loads(shard_path.read_text()) if shard_path.exists() else {}
    shard_summary = {
        "shard": shard, "num_shards": num_shards, "total": len(mine), "generated": generated,
        "skipped": skipped, "errors": errors, "seconds": seconds,
        # generation totals over every run of this shard (a resumed run adds to them)
        "total_generated": int(previous.get("total_generated", 0)) + generated,
        "total_generation_seconds": float(previous.get("total_generation_seconds", 0.0)) + seconds,
    }  # fmt: skip
    atomic_save_json(shard_summary, shard_path)
    # with one shard nobody else writes here: what was done plus what this call generated
    all_done = done_tile_ids(out) if num_shards > 1 else done | set(new_ids)
    failed = _failed_tile_ids(out) - all_done
    complete = len(all_done) + len(failed) >= len(records)
    if skipped:
        log(f"Resumed: {skipped} tiles already done were skipped; generated now: {generated}")
    log(f"Processed: {skipped + generated}/{len(mine)} tiles, Errors: {errors}, Output dir: {out}")
    return folder.finish(
        status="finished" if complete else "running",
        metrics={
            "stage1/tiles": len(records),
            "stage1/done": len(all_done),
            "stage1/failed": len(failed),
            "stage1/tiles_per_s": generated / seconds if seconds > 0 else None,
        },
        paths={"opt_v1": out / "opt_v1", "catalogue": out / "catalogue.csv"},
        device=str(device),
        extra={
            k: shard_summary[k]
            for k in ("shard", "num_shards", "total", "generated", "skipped", "errors", "seconds")
        },  # fmt: skip
    )
