"""Tests of eo_common.testing: each fake generator writes its real layout exactly as documented.

DEPRECATED with eo_common.testing: the generators moved beside the tests of the packages that read
each layout; this file is deleted together with the module.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from eo_common.raster import check_same_grid, read_raster, stack_bands
from eo_common.testing import (
    BENV2_LABELS,
    BENV2_S2_RESOLUTION,
    GLACIERHACK_BAND_FILES,
    RISK_BAND_NAMES,
    SEN12MSCR_S2_BANDS,
    glacierhack_tile_ids,
    main,
    make_fake_benv2,
    make_fake_glacierhack,
    make_fake_risk_stack,
    make_fake_sen12mscr,
)


def _is_utm(crs) -> bool:
    epsg = crs.to_epsg()
    return epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760)


def _arrays_under(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): read_raster(p).array for p in sorted(root.rglob("*.tif"))}


# --------------------------------------------------------------------------------------------------
# SEN12MS-CR
# --------------------------------------------------------------------------------------------------
def test_sen12mscr_layout(tmp_path):
    root = make_fake_sen12mscr(tmp_path / "cr", n_per_split=(3, 1, 2), size=32, seed=1)
    assert root == tmp_path / "cr"
    with open(root / "data.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 6 and all(len(r) == 5 for r in rows)
    assert [r[0] for r in rows] == ["1", "1", "1", "2", "3", "3"]  # no header, split 1/2/3
    assert len({r[4] for r in rows}) == 6
    pattern = re.compile(r"(ROIs\d{4}_(spring|summer|fall|winter))_s1_(\d+)_p(\d+)\.tif")
    for _split, s1_dir, s2_dir, cloudy_dir, s1_file in rows:
        m = pattern.fullmatch(s1_file)
        assert m, s1_file
        roi, scene = m.group(1), m.group(3)
        assert s1_dir == f"{roi}_s1/s1_{scene}"
        assert s2_dir == f"{roi}_s2/s2_{scene}"
        assert cloudy_dir == f"{roi}_s2_cloudy/s2_cloudy_{scene}"
        s1_path = root / s1_dir / s1_file
        s2_path = root / s2_dir / s1_file.replace("_s1_", "_s2_")
        cloudy_path = root / cloudy_dir / s1_file.replace("_s1_", "_s2_cloudy_")
        check_same_grid([s1_path, s2_path, cloudy_path])
        s1 = read_raster(s1_path, expected_bands=2)
        assert s1.array.shape == (2, 32, 32) and s1.array.dtype == np.float32
        assert s1.band_names == ["VV", "VH"] and _is_utm(s1.crs)
        assert s1.transform.a == 10.0 and s1.transform.e == -10.0
        assert -32.5 <= s1.array.min() and s1.array.max() <= 0.0  # dB, not integers
        assert s1.array[0].mean() > s1.array[1].mean()  # VV brighter than VH
        clear = read_raster(s2_path, expected_bands=13)
        cloudy = read_raster(cloudy_path, expected_bands=13)
        assert clear.array.dtype == np.uint16 and cloudy.array.dtype == np.uint16
        assert clear.band_names == list(SEN12MSCR_S2_BANDS) == cloudy.band_names
        assert clear.array.max() <= 10000
        # clouds cover part of the scene and are brighter than the ground in the visible bands
        visible_gain = cloudy.array[1:4].astype(float).mean(0) - clear.array[1:4].mean(0)
        cloud_fraction = (visible_gain > 1000).mean()
        assert 0.05 < cloud_fraction < 0.9, cloud_fraction


# --------------------------------------------------------------------------------------------------
# BigEarthNet v2
# --------------------------------------------------------------------------------------------------
def test_benv2_layout(tmp_path):
    root = make_fake_benv2(tmp_path / "ben", n=6, seed=2)
    md = pd.read_parquet(root / "metadata.parquet")
    for column in ("patch_id", "labels", "split", "country", "s1_name"):
        assert column in md.columns
    schema = pq.read_schema(root / "metadata.parquet")
    assert schema.field("labels").type == pa.list_(pa.string())
    assert len(md) == 6 and md["patch_id"].is_unique
    assert sorted(md["split"].value_counts().items()) == [
        ("test", 2),
        ("train", 2),
        ("validation", 2),
    ]
    assert set(md["country"]) == {"Austria", "Finland"}
    for row in md.itertuples():
        assert 1 <= len(row.labels) and set(row.labels) <= set(BENV2_LABELS)
        assert all(isinstance(label, str) for label in row.labels)
        # s1_name and patch_id share the tile grid position (the last two numbers)
        assert row.s1_name.rsplit("_", 2)[1:] == row.patch_id.rsplit("_", 2)[1:]
        s2_dir = root / "BigEarthNet-S2" / row.patch_id.rsplit("_", 2)[0] / row.patch_id
        files = sorted(p.name for p in s2_dir.iterdir())
        assert files == sorted(f"{row.patch_id}_{b}.tif" for b in BENV2_S2_RESOLUTION)
        assert "B10" not in {f.rsplit("_", 1)[1][:-4] for f in files}
        bounds = set()
        for band, res in BENV2_S2_RESOLUTION.items():
            r = read_raster(s2_dir / f"{row.patch_id}_{band}.tif", expected_bands=1)
            assert r.array.shape == (1, 1200 // res, 1200 // res) and r.array.dtype == np.uint16
            assert _is_utm(r.crs) and r.transform.a == res
            bounds.add(tuple(r.bounds))
        assert len(bounds) == 1  # every band covers the same 1200 m patch
        # the S1 product folder is the S1 name without tile and grid position (as in the real v2)
        s1_dir = root / "BigEarthNet-S1" / row.s1_name.rsplit("_", 3)[0] / row.s1_name
        assert sorted(p.name for p in s1_dir.iterdir()) == [
            f"{row.s1_name}_VH.tif",
            f"{row.s1_name}_VV.tif",
        ]
        for pol in ("VV", "VH"):
            s1 = read_raster(s1_dir / f"{row.s1_name}_{pol}.tif", expected_bands=1)
            assert s1.array.shape == (1, 120, 120) and s1.array.dtype == np.float32
            assert -32.5 <= s1.array.min() and s1.array.max() <= 0.0
            assert tuple(s1.bounds) in bounds and s1.crs == r.crs


def test_benv2_bands_stack_back_to_10m(tmp_path):
    """The coarse bands are block means of a 10 m field: nearest upsampling gives their blocks back."""
    root = make_fake_benv2(tmp_path / "ben", n=1, seed=3)
    patch_dir = next((root / "BigEarthNet-S2").glob("*/*"))
    paths = [next(patch_dir.glob(f"*_{band}.tif")) for band in BENV2_S2_RESOLUTION]
    s = stack_bands(paths, reference=1, resampling="nearest")  # B02 is 10 m
    assert s.array.shape == (12, 120, 120)
    b01 = read_raster(paths[0]).array[0]
    np.testing.assert_array_equal(s.array[0], np.kron(b01, np.ones((6, 6), dtype=np.uint16)))


# --------------------------------------------------------------------------------------------------
# risk stack
# --------------------------------------------------------------------------------------------------
def test_risk_stack_layout(tmp_path):
    stack_path, labels_path = make_fake_risk_stack(tmp_path / "risk", size=64, bands=6, seed=4)
    assert (stack_path.name, labels_path.name) == ("stack.tif", "labels.tif")
    check_same_grid([stack_path, labels_path])
    stack = read_raster(stack_path, expected_bands=6)
    labels = read_raster(labels_path, expected_bands=1)
    assert stack.array.dtype == np.float32 and stack.nodata == -9999.0
    assert stack.band_names == list(RISK_BAND_NAMES) and _is_utm(stack.crs)
    assert labels.array.dtype == np.uint8 and labels.nodata == 255
    y = labels.array[0]
    assert set(np.unique(y)) == {0, 1, 2, 255}
    missing = (stack.array == -9999.0).any(axis=0)
    assert missing[0].all() and missing[-1].all() and missing[:, 0].all() and missing[:, -1].all()
    assert (stack.array[:, missing] == -9999.0).all()  # nodata in every band at once
    assert missing[2:-2, 2:-2].any()  # an interior hole as well
    assert (y[missing] == 255).all()
    assert ((y == 255) & ~missing).any()  # and some unlabelled valid pixels
    # the classes follow the features: high risk is steeper than low risk on average
    slope = stack.array[1]
    assert slope[y == 2].mean() > slope[y == 0].mean()
    counts = [(y == k).sum() for k in (0, 1, 2)]
    assert counts[0] > counts[1] > counts[2] > 0


def test_risk_stack_more_bands(tmp_path):
    stack_path, _ = make_fake_risk_stack(tmp_path / "risk", size=32, bands=8, seed=0)
    assert read_raster(stack_path).band_names == [*RISK_BAND_NAMES, "feature7", "feature8"]
    stack_path, _ = make_fake_risk_stack(tmp_path / "risk2", size=32, bands=2, seed=0)
    assert read_raster(stack_path).band_names == ["elevation", "slope"]


# --------------------------------------------------------------------------------------------------
# GlacierHack
# --------------------------------------------------------------------------------------------------
def test_glacierhack_layout(tmp_path):
    root = make_fake_glacierhack(tmp_path / "gh", n=3, size=32, seed=5)
    assert sorted(p.name for p in root.iterdir()) == [
        "Band1",
        "Band2",
        "Band3",
        "Band4",
        "Band5",
        "Label",
    ]
    ids = glacierhack_tile_ids(3)
    expected = {
        "Band1": "B2_B2_masked_{}.tif",
        "Band2": "B3_B3_masked_{}.tif",
        "Band3": "B4_B4_masked_{}.tif",
        "Band4": "B6_B6_masked_{}.tif",
        "Band5": "B10_B10_masked_{}.tif",
        "Label": "Y_output_resized_{}.tif",
    }
    assert {
        k: v.replace("_{}.tif", "") for k, v in expected.items() if k != "Label"
    } == GLACIERHACK_BAND_FILES
    for folder, template in expected.items():
        names = sorted(p.name for p in (root / folder).iterdir())
        assert names == sorted(template.format(f"{i:02d}") for i in ids)
    # pair by the trailing tile id, the way readers must do it
    for tile_id in ids:
        paths = [next((root / f).glob(f"*_{tile_id:02d}.tif")) for f in expected]
        assert all(re.search(r"_(\d+)\.tif$", p.name).group(1) == f"{tile_id:02d}" for p in paths)
        check_same_grid(paths)
        bands = [read_raster(p, expected_bands=1) for p in paths[:5]]
        label = read_raster(paths[5], expected_bands=1)
        for b in bands:
            assert b.array.shape == (1, 32, 32) and b.array.dtype == np.float32
        assert label.array.dtype == np.uint8 and label.nodata is None  # 255 is the lake class
        assert label.crs.to_epsg() == 32644 and label.transform.a == 30.0
        y = label.array[0]
        assert sorted(np.unique(y).tolist()) == [0, 85, 170, 255]  # all four classes in every tile
        # clean ice is brighter (blue) and colder (thermal) than the background
        assert bands[0].array[0][y == 85].mean() > bands[0].array[0][y == 0].mean() + 0.3
        assert bands[4].array[0][y == 85].mean() < bands[4].array[0][y == 0].mean() - 10


def test_generators_are_deterministic(tmp_path):
    a = _arrays_under(make_fake_glacierhack(tmp_path / "a", n=2, size=16, seed=7))
    b = _arrays_under(make_fake_glacierhack(tmp_path / "b", n=2, size=16, seed=7))
    c = _arrays_under(make_fake_glacierhack(tmp_path / "c", n=2, size=16, seed=8))
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    s1, _ = make_fake_risk_stack(tmp_path / "r1", size=16, seed=1)
    s2, _ = make_fake_risk_stack(tmp_path / "r2", size=16, seed=1)
    np.testing.assert_array_equal(read_raster(s1).array, read_raster(s2).array)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be an integer >= 8"):
        make_fake_glacierhack(tmp_path, size=4)
    with pytest.raises(ValueError, match="n_per_split"):
        make_fake_sen12mscr(tmp_path, n_per_split=(1, 1))
    with pytest.raises(ValueError, match="bands"):
        make_fake_risk_stack(tmp_path, bands=0)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def test_cli_writes_a_set_and_reports_errors(tmp_path, capsys):
    assert (
        main(["glacierhack", str(tmp_path / "gh"), "--n", "2", "--size", "16", "--seed", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert "wrote 12 files" in out and "Label/Y_output_resized_05.tif" in out
    with rasterio.open(tmp_path / "gh" / "Band4" / "B6_B6_masked_02.tif") as src:
        assert src.shape == (16, 16)
    assert main(["risk_stack", str(tmp_path / "rs"), "--size", "4"]) == 2
    assert "error: size must be" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["nonsense", str(tmp_path)])
    assert info.value.code == 2


def test_module_entry_help():
    result = subprocess.run(
        [sys.executable, "-m", "eo_common.testing", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert (
        "sen12mscr" in result.stdout
        and "glacierhack" in result.stdout
        and "--seed" in result.stdout
    )


def test_doctests():
    import doctest

    import eo_common.testing as testing_mod

    result = doctest.testmod(testing_mod)
    assert result.failed == 0 and result.attempted >= 1
