"""Stage 1 on the tiny random TerraMind: determinism, reruns, kills and resumes, bad tiles, sharding."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from eo_common.config import RunConfig
from eo_common.errors import RunFolderError
from gac_pipeline.cli import gac_stage1
from gac_pipeline.config import GeneratorModel, Stage1Config, Stage1Data
from gac_pipeline.data import build_catalogue, stage1_path
from gac_pipeline.stage1 import done_tile_ids, remove_stale_temps, run_stage1, shard_units


def _config(data, out, *, max_tiles=4, batch_size=2, seed=0, resume=False, **data_kw):
    return Stage1Config(
        data=Stage1Data(root=data, max_tiles=max_tiles, batch_size=batch_size, **data_kw),
        model=GeneratorModel(model_size="tiny", timesteps=1, random_init=True),
        run=RunConfig(output_dir=out, seed=seed, resume=resume, progress=False),
    )


def _quiet(_message: str) -> None:
    pass


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.tags(), src.crs


def _manifest_ids(out) -> list[str]:
    ids = []
    for p in sorted(Path(out).glob("manifest.*.jsonl")):
        ids += [json.loads(line)["id"] for line in p.read_text().splitlines() if line.strip()]
    return ids


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (hidden ones included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class _NoGeneration:
    """Stands in for the generator where nothing may be generated (a fully resumed run)."""

    def to(self, device):
        return self

    def parameters(self):
        raise AssertionError("a resumed run with every tile done must not generate")


@pytest.fixture(scope="module")
def reference(fake_benv2, tiny_generator, tmp_path_factory):
    """An uninterrupted run over the 6 tiles, batch 1 (what every resumed run must equal)."""
    out = tmp_path_factory.mktemp("stage1_reference")
    run_stage1(_config(fake_benv2, out, max_tiles=None, batch_size=1), tiny_generator, log=_quiet)
    return out


def test_shard_units_cover_every_tile_once():
    ids = list(range(103))
    for batch in (1, 4, 7):
        for shards in (1, 2, 3, 5):
            got = [t for s in range(shards) for u in shard_units(ids, batch, s, shards) for t in u]
            assert sorted(got) == ids
    with pytest.raises(ValueError, match="--shard"):
        shard_units(ids, 2, 2, 2)


def test_determinism_and_metadata(fake_benv2, tiny_generator, reference, tmp_path):
    lines = []
    a = run_stage1(_config(fake_benv2, tmp_path / "a", max_tiles=1, batch_size=1), tiny_generator,
                   log=lines.append)  # fmt: skip
    run_stage1(_config(fake_benv2, tmp_path / "c", max_tiles=1, seed=1), tiny_generator, log=_quiet)
    assert lines[-1] == f"Processed: 1/1 tiles, Errors: 0, Output dir: {tmp_path / 'a'}"
    assert a["status"] == "finished" and a["extra"]["generated"] == 1
    assert a["metrics"]["stage1/done"] == 1 and a["metrics"]["stage1/failed"] == 0
    assert tuple(a["metrics"]) == gac_stage1.metrics  # what gac-stage1 declares
    for record in build_catalogue(fake_benv2, max_tiles=1):
        xa, tags, crs = _read(stage1_path(tmp_path / "a", record.patch_id))
        xr, _, _ = _read(stage1_path(reference, record.patch_id))
        xc, _, _ = _read(stage1_path(tmp_path / "c", record.patch_id))
        assert xa.shape == (12, 120, 120) and xa.dtype == np.uint16
        np.testing.assert_array_equal(xa, xr)  # batch 1: a tile's output depends on tile + seed
        assert not np.array_equal(xa, xc)  # another seed -> another sample
        assert tags["GAC_RANDOM_INIT"] == "1" and tags["GAC_MODEL"] == "terramind_v1_tiny_generate"
        assert crs is not None and crs.to_epsg() in (32633, 32635)  # the tile's georeference


def test_rerun_into_a_finished_run_keeps_every_byte(fake_benv2, tiny_generator, tmp_path, capsys):
    out = tmp_path / "run"
    run_stage1(_config(fake_benv2, out, max_tiles=1), tiny_generator, log=_quiet)
    before = _snapshot(out)
    argv = ["--data-dir", str(fake_benv2), "--output-dir", str(out), "--max-tiles", "1",
            "--batch-size", "2", "--model-size", "tiny", "--timesteps", "1", "--random-init"]  # fmt: skip
    assert gac_stage1(argv) == 2  # plain rerun: refused
    assert "already holds a finished run of gac-stage1" in capsys.readouterr().err
    missing = ["--checkpoint", str(tmp_path / "missing.pt")]
    bad = [a for a in argv if a != "--random-init"] + missing
    assert gac_stage1([*bad, "--overwrite"]) == 2  # bad input + --overwrite: refused first
    assert "missing.pt" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_stale_temps_of_every_shape_go_on_resume(fake_benv2, tiny_generator, reference, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(reference, out)  # a finished run of the 6 tiles, batch 1
    ids = [r.patch_id for r in build_catalogue(fake_benv2)]
    # what kills leave behind: this release's one temp level, the previous release's two shapes
    # (the inner temp of its double write could not be parsed and stayed), a run-folder temp
    lost = ids[2]
    stage1_path(out, lost).unlink()
    manifest = out / "manifest.shard0-of-1.jsonl"
    manifest.write_text(
        "".join(ln for ln in manifest.read_text().splitlines(True) if lost not in ln)
    )
    planted = [
        out / "opt_v1" / f".{lost}.tif.k1ll3d.tmp",
        out / "opt_v1" / f".{ids[3]}.k1ll3d.tmp.tif",
        out / "opt_v1" / f"..{ids[4]}.k1ll3d.tmp.x9x9.tmp.tif",
        out / ".summary.json.z8z8.tmp",
    ]
    for p in planted:
        p.write_bytes(b"II*\x00 torn")
    resumed = run_stage1(_config(fake_benv2, out, max_tiles=None, batch_size=1, resume=True),
                         tiny_generator, log=_quiet)  # fmt: skip
    assert resumed["extra"]["generated"] == 1 and resumed["extra"]["skipped"] == 5
    assert not any(p.exists() for p in planted)
    assert not [p for p in out.rglob(".*") if p.is_file()]
    for tid in ids:
        np.testing.assert_array_equal(_read(stage1_path(out, tid))[0],
                                      _read(stage1_path(reference, tid))[0])  # fmt: skip
    # a tile of another shard is not this shard's to clean
    other = out / "opt_v1" / f".{ids[0]}.tif.busy.tmp"
    other.write_bytes(b"x")
    assert remove_stale_temps(out, ids[1:]) == [] and other.exists()
    again = run_stage1(_config(fake_benv2, out, max_tiles=None, batch_size=1, resume=True),
                       _NoGeneration(), log=_quiet)  # fmt: skip
    assert again["extra"]["skipped"] == 6 and again["extra"]["generated"] == 0


def test_bad_tile_is_counted_not_fatal(fake_benv2, tiny_generator, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(fake_benv2, root)
    records = build_catalogue(root, max_tiles=2)
    records[1].s1_band_path("VH").unlink()
    lines = []
    out = tmp_path / "out"
    summary = run_stage1(_config(root, out, max_tiles=2, batch_size=2), tiny_generator,
                         log=lines.append)  # fmt: skip
    assert summary["extra"]["errors"] == 1 and summary["extra"]["generated"] == 1
    assert summary["metrics"]["stage1/failed"] == 1 and summary["status"] == "finished"
    assert lines[-1] == f"Processed: 1/2 tiles, Errors: 1, Output dir: {out}"
    errors = (out / "errors.shard0-of-1.jsonl").read_text()
    assert records[1].patch_id in errors and "VH.tif" in errors
    assert not stage1_path(out, records[1].patch_id).exists()


def test_sharding_writes_each_tile_exactly_once(fake_benv2, tiny_generator, reference, tmp_path):
    out = tmp_path / "sharded"
    results = [
        run_stage1(
            _config(fake_benv2, out, max_tiles=2, batch_size=1, shard=i, num_shards=2, resume=True),
            tiny_generator,
            log=_quiet,
        )  # every shard passes --resume: the folder is shared
        for i in range(2)
    ]
    assert [r["extra"]["total"] for r in results] == [1, 1]
    assert [r["status"] for r in results] == ["running", "finished"]  # the last shard completes it
    ids = _manifest_ids(out)
    expected = sorted(r.patch_id for r in build_catalogue(fake_benv2, max_tiles=2))
    assert sorted(ids) == expected and len(ids) == len(set(ids))
    for tid in expected:  # batch 1: the same bytes as the unsharded run
        np.testing.assert_array_equal(_read(stage1_path(out, tid))[0],
                                      _read(stage1_path(reference, tid))[0])  # fmt: skip
    with pytest.raises(RunFolderError, match="other shards"):
        run_stage1(
            Stage1Config(data=Stage1Data(root=fake_benv2, shard=0, num_shards=2),
                         model=GeneratorModel(random_init=True),
                         run=RunConfig(output_dir=out, overwrite=True)),
            tiny_generator,
        )  # fmt: skip


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


def test_infinite_sar_pixels_are_missing_not_fatal(fake_benv2, tiny_generator, tmp_path):
    """+-inf in S1 used to reach TerraMind ("probability tensor contains either inf, nan")."""
    root = tmp_path / "data"
    shutil.copytree(fake_benv2, root)
    record = build_catalogue(root, max_tiles=1)[0]
    with rasterio.open(record.s1_band_path("VV"), "r+") as dst:
        vv = dst.read(1)
        vv[5, 5], vv[6, 7], vv[50, 60] = np.inf, -np.inf, np.nan
        dst.write(vv, 1)
    summary = run_stage1(_config(root, tmp_path / "o", max_tiles=1, batch_size=1), tiny_generator,
                         log=_quiet)  # fmt: skip
    assert summary["extra"]["generated"] == 1 and summary["extra"]["errors"] == 0
    assert np.isfinite(_read(stage1_path(tmp_path / "o", record.patch_id))[0]).all()


@pytest.mark.slow
def test_sigkill_mid_tiles_then_resume_equals_uninterrupted(fake_benv2, tiny_generator, reference,
                                                            tmp_path):  # fmt: skip
    out = tmp_path / "killed"
    argv = ["--data-dir", str(fake_benv2), "--output-dir", str(out), "--batch-size", "1",
            "--max-tiles", "4", "--model-size", "tiny", "--timesteps", "1", "--random-init", "--threads", "1",
            "--no-progress"]  # fmt: skip
    code = f"import sys; from gac_pipeline.cli import gac_stage1; sys.exit(gac_stage1({argv!r}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while len(done_tile_ids(out)) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, stderr
    assert 1 <= len(done_tile_ids(out)) < 4  # killed mid-way through the tiles
    cfg = gac_stage1.parse([*argv, "--resume"])
    resumed = run_stage1(cfg, tiny_generator, log=_quiet)
    assert resumed["status"] == "finished"
    ids = _manifest_ids(out)
    assert len(ids) == len(set(ids)) == 4  # every tile written once
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary file left
    for record in build_catalogue(fake_benv2, max_tiles=4):
        got, tags, _ = _read(stage1_path(out, record.patch_id))
        np.testing.assert_array_equal(got, _read(stage1_path(reference, record.patch_id))[0])
