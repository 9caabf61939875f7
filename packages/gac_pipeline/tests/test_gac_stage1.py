"""Stage 1 on the tiny random TerraMind: determinism, crash + resume, bad tiles, sharding."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from gac_pipeline.data import build_catalogue, stage1_path
from gac_pipeline.stage1 import Stage1Config, done_tile_ids, run_stage1, shard_units


def _config(data, out, **kw) -> Stage1Config:
    base = dict(data_dir=data, output_dir=out, model_size="tiny", timesteps=1, batch_size=2, seed=0,
                random_init=True, progress=False)  # fmt: skip
    return Stage1Config(**{**base, **kw})


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.tags(), src.crs


def _manifest_ids(out) -> list[str]:
    ids = []
    for p in sorted(out.glob("manifest.*.jsonl")):
        ids += [json.loads(line)["id"] for line in p.read_text().splitlines() if line.strip()]
    return ids


class _NoGeneration:
    """Stands in for the generator where nothing may be generated (a fully resumed run)."""

    def to(self, device):
        return self

    def parameters(self):
        raise AssertionError("a resumed run with every tile done must not generate")


def test_shard_units_cover_every_tile_once():
    ids = list(range(103))
    for batch in (1, 4, 7):
        for shards in (1, 2, 3, 5):
            got = [t for s in range(shards) for u in shard_units(ids, batch, s, shards) for t in u]
            assert sorted(got) == ids
    with pytest.raises(ValueError, match="--shard"):
        shard_units(ids, 2, 2, 2)


def test_determinism_and_metadata(fake_benv2, tiny_generator, tmp_path):
    lines = []
    a = run_stage1(
        _config(fake_benv2, tmp_path / "a", max_tiles=2), tiny_generator, log=lines.append
    )
    run_stage1(_config(fake_benv2, tmp_path / "b", max_tiles=2), tiny_generator, log=lambda _: None)
    run_stage1(
        _config(fake_benv2, tmp_path / "c", max_tiles=2, seed=1), tiny_generator, log=lambda _: None
    )
    assert lines[-1] == f"Processed: 2/2 tiles, Errors: 0, Output dir: {tmp_path / 'a'}"
    assert a.generated == 2 and a.errors == 0
    for record in build_catalogue(fake_benv2, max_tiles=2):
        xa, tags, crs = _read(stage1_path(tmp_path / "a", record.patch_id))
        xb, _, _ = _read(stage1_path(tmp_path / "b", record.patch_id))
        xc, _, _ = _read(stage1_path(tmp_path / "c", record.patch_id))
        assert xa.shape == (12, 120, 120) and xa.dtype == np.uint16
        np.testing.assert_array_equal(xa, xb)  # same tile + seed -> same output
        assert not np.array_equal(xa, xc)  # another seed -> another sample
        assert tags["GAC_RANDOM_INIT"] == "1" and tags["GAC_MODEL"] == "terramind_v1_tiny_generate"
        assert crs is not None and crs.to_epsg() in (32633, 32635)  # the tile's georeference


@pytest.mark.slow
def test_crash_then_resume_gives_each_tile_once(fake_benv2, tiny_generator, tmp_path, monkeypatch):
    import gac_pipeline.stage1 as stage1

    reference = tmp_path / "reference"
    run_stage1(_config(fake_benv2, reference, max_tiles=4), tiny_generator, log=lambda _: None)

    out = tmp_path / "crashed"
    real_write = stage1.write_raster
    calls = {"n": 0}

    def crashing_write(
        path, array, **kw
    ):  # dies on the 3rd file, after half of it reached the disk
        calls["n"] += 1
        if calls["n"] == 3:
            path.write_bytes(b"II*\x00 torn tiff")
            raise KeyboardInterrupt("simulated kill")
        return real_write(path, array, **kw)

    monkeypatch.setattr(stage1, "write_raster", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        run_stage1(_config(fake_benv2, out, max_tiles=4), tiny_generator, log=lambda _: None)
    monkeypatch.setattr(stage1, "write_raster", real_write)
    assert len(done_tile_ids(out)) == 2
    assert not list((out / "opt_v1").glob(".*"))  # the torn temporary file was removed
    third = build_catalogue(fake_benv2, max_tiles=4)[2].patch_id
    (out / "opt_v1" / f".{third}.k1ll3d.tmp.tif").write_bytes(
        b"II*\x00"
    )  # what a SIGKILL leaves behind

    lines = []
    summary = run_stage1(_config(fake_benv2, out, max_tiles=4), tiny_generator, log=lines.append)
    assert summary.skipped == 2 and summary.generated == 2 and summary.processed == 4
    ids = _manifest_ids(out)
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 4  # every tile exactly once
    for record in build_catalogue(fake_benv2, max_tiles=4):
        x, _, _ = _read(stage1_path(out, record.patch_id))  # opens: no corrupt file
        np.testing.assert_array_equal(x, _read(stage1_path(reference, record.patch_id))[0])
    assert not list((out / "opt_v1").glob(".*"))

    # a third run has nothing left to do and must not touch the generator
    again = run_stage1(_config(fake_benv2, out, max_tiles=4), _NoGeneration(), log=lambda _: None)
    assert again.skipped == 4 and again.generated == 0


def test_bad_tile_is_counted_not_fatal(fake_benv2, tiny_generator, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(fake_benv2, root)
    records = build_catalogue(root, max_tiles=3)
    records[1].s1_band_path("VH").unlink()
    lines = []
    out = tmp_path / "out"
    summary = run_stage1(
        _config(root, out, max_tiles=3, batch_size=3), tiny_generator, log=lines.append
    )
    assert summary.errors == 1 and summary.generated == 2
    assert lines[-1] == f"Processed: 2/3 tiles, Errors: 1, Output dir: {out}"
    errors = (out / "errors.shard0-of-1.jsonl").read_text()
    assert records[1].patch_id in errors and "VH.tif" in errors
    assert not stage1_path(out, records[1].patch_id).exists()


def test_sharding_writes_each_tile_exactly_once(fake_benv2, tiny_generator, tmp_path):
    out = tmp_path / "sharded"
    results = [
        run_stage1(
            _config(fake_benv2, out, max_tiles=4, batch_size=1, shard=i, num_shards=2),
            tiny_generator,
            log=lambda _: None,
        )  # fmt: skip
        for i in range(2)
    ]
    assert [r.total for r in results] == [2, 2]
    ids = _manifest_ids(out)
    expected = sorted(r.patch_id for r in build_catalogue(fake_benv2, max_tiles=4))
    assert sorted(ids) == expected and len(ids) == len(set(ids))
    assert sorted(p.stem for p in (out / "opt_v1").glob("*.tif")) == expected


def test_stage1_cli_errors_exit_2(tmp_path, capsys):
    from gac_pipeline.stage1 import main

    code = main(
        [
            "--data-dir",
            str(tmp_path / "missing"),
            "--random-init",
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "metadata.parquet" in capsys.readouterr().err


def test_torchrun_ranks_get_disjoint_shards(monkeypatch):
    from gac_pipeline.stage1 import _distributed_shard

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _distributed_shard(1, 3) == (1, 3, None)
    seen = set()
    for node_shard in range(2):  # two torchrun jobs (e.g. two nodes), 4 ranks each
        for rank in range(4):
            monkeypatch.setenv("WORLD_SIZE", "4")
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("LOCAL_RANK", str(rank))
            shard, num, local = _distributed_shard(node_shard, 2)
            assert num == 8 and local == rank
            seen.add(shard)
    assert seen == set(range(8))
