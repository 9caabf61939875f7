"""eo_common.benv2 on a fake BigEarthNet v2 LMDB in the official layout (tests/data/benv2_lmdb.py):
no real sample needed. The real 24-pair sample is read in test_common_samples.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from eo_common.benv2 import (
    BENV2_S1_BANDS,
    BENV2_S2_BANDS,
    export_benv2_geotiff_layout,
    read_benv2_lmdb,
)
from eo_common.raster import read_raster
from eo_common_testdata_benv2_lmdb import S2_RESOLUTION_M, make_benv2_lmdb, read_back


@pytest.fixture(scope="module")
def fake_benv2(tmp_path_factory):
    return make_benv2_lmdb(tmp_path_factory.mktemp("benv2"), n=6, seed=1)


def test_reader_returns_every_pair_with_its_blobs_and_metadata(fake_benv2):
    blobs = read_back(fake_benv2)
    patches = list(read_benv2_lmdb(fake_benv2))
    assert len(patches) == 6 and [p.patch_id for p in patches] == sorted(
        p.patch_id for p in patches
    )
    md = pd.concat(
        [pd.read_parquet(f) for f in sorted(fake_benv2.glob("metadata*.parquet"))]
    ).set_index("patch_id")
    for patch in patches:
        row = md.loc[patch.patch_id]
        assert patch.s1_name == row["s1_name"] and patch.split == row["split"]
        assert patch.labels == list(row["labels"]) and patch.country == row["country"]
        assert patch.snow == bool(row["contains_seasonal_snow"])
        assert patch.s1.dtype == np.float32 and patch.s1.shape == (2, 120, 120)
        for i, pol in enumerate(BENV2_S1_BANDS):
            np.testing.assert_array_equal(patch.s1[i], blobs[patch.s1_name][pol])
        assert list(patch.s2) == list(BENV2_S2_BANDS)
        for band, arr in patch.s2.items():
            assert arr.dtype == np.uint16 and arr.shape == (1200 // S2_RESOLUTION_M[band],) * 2
            np.testing.assert_array_equal(arr, blobs[patch.patch_id][band])
        assert patch.mgrs_tile in ("33UUP", "35VNJ")
        assert patch.grid_index() == tuple(int(v) for v in patch.patch_id.rsplit("_", 2)[1:])
    assert sum(p.snow for p in patches) == 1  # the flagged patch comes from the second file
    assert {p.split for p in read_benv2_lmdb(fake_benv2, split="test")} == {"test"}


def test_reader_names_what_is_missing(tmp_path, fake_benv2):
    with pytest.raises(FileNotFoundError, match="data.mdb"):
        list(read_benv2_lmdb(tmp_path))
    broken = make_benv2_lmdb(tmp_path / "broken", n=2, seed=2, flagged=0)
    md = pd.read_parquet(broken / "metadata.parquet")
    md.loc[0, "s1_name"] = "S1A_IW_GRDH_1SDV_20990101T000000_33UUP_1_1"
    md.to_parquet(broken / "metadata.parquet", index=False)
    with pytest.raises(KeyError, match="S1A_IW_GRDH_1SDV_20990101T000000_33UUP_1_1"):
        list(read_benv2_lmdb(broken))


def test_export_writes_the_official_geotiff_layout(tmp_path, fake_benv2):
    dest = export_benv2_geotiff_layout(tmp_path / "tif", root=fake_benv2, max_patches=2)
    patches = list(read_benv2_lmdb(fake_benv2))[:2]
    md = pd.read_parquet(dest / "metadata.parquet")
    assert sorted(md["patch_id"]) == sorted(p.patch_id for p in patches)
    for patch in patches:
        s2_dir = dest / "BigEarthNet-S2" / patch.s2_product / patch.patch_id
        assert sorted(p.name for p in s2_dir.iterdir()) == sorted(
            f"{patch.patch_id}_{b}.tif" for b in BENV2_S2_BANDS
        )
        b05 = read_raster(s2_dir / f"{patch.patch_id}_B05.tif")
        np.testing.assert_array_equal(b05.array[0], patch.s2["B05"])
        assert b05.transform.a == 20.0
        s1_dir = dest / "BigEarthNet-S1" / patch.s1_product / patch.s1_name
        vh = read_raster(s1_dir / f"{patch.s1_name}_VH.tif")
        assert vh.array.dtype == np.float32
        np.testing.assert_array_equal(vh.array[0], patch.s1[1])
