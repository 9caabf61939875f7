"""Fake BigEarthNet v2 in the official LMDB layout (the one ``eo_common.benv2`` reads).

The layout of the BigEarthNet v2 release (and of configilm's BENv2 mock)::

    root/BigEarthNet-V2-LMDB/data.mdb, lock.mdb   LMDB; key = patch name (bytes), value = a
                                                  safetensors blob of that patch's bands:
        <S2 patch id>   B01..B12 without B10, uint16 at native size (10 m 120 px, 20 m 60 px,
                        60 m 20 px)
        <S1 name>       VV, VH, float32 backscatter in dB, 120 x 120
    root/metadata.parquet                         patch_id, labels (list of str), split, country,
                                                  s1_name, s2v1_name, contains_seasonal_snow,
                                                  contains_cloud_or_shadow
    root/metadata_for_patches_with_snow_cloud_or_shadow.parquet   (same columns, flagged patches)

Names follow the real ones: ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88`` and
``S1B_IW_GRDH_1SDV_20170612T165809_33UUP_37_88`` (tile, then the patch's column and row in the
tile's 1200 m grid). Values are random but in the real ranges; everything follows from ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

S2_RESOLUTION_M = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20,
    "B07": 20, "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20,
}  # fmt: skip
LABELS = ("Arable land", "Coniferous forest", "Inland waters", "Mixed forest", "Pastures")
TILES = (("Austria", "33UUP", "20170613T101031", "20170612T165809", "S2A", "S1B"),
         ("Finland", "35VNJ", "20171106T095211", "20171107T155426", "S2B", "S1A"))  # fmt: skip
SPLITS = ("train", "validation", "test")


def make_benv2_lmdb(root: str | Path, n: int = 6, seed: int = 0, flagged: int = 1) -> Path:
    """Write ``n`` fake S1/S2 pairs (splits and countries alternate); the last ``flagged`` ones go
    to the snow/cloud metadata file with their flags set. Returns ``root``."""
    import lmdb
    import pandas as pd
    from safetensors.numpy import save

    root = Path(root)
    lmdb_dir = root / "BigEarthNet-V2-LMDB"
    lmdb_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    env = lmdb.open(str(lmdb_dir), map_size=64 << 20)
    with env.begin(write=True) as txn:
        for i in range(n):
            country, tile, s2_time, s1_time, s2_sat, s1_sat = TILES[i % 2]
            col, row = 30 + i, 80 + 2 * i
            patch_id = f"{s2_sat}_MSIL2A_{s2_time}_N9999_R022_T{tile}_{col}_{row}"
            s1_name = f"{s1_sat}_IW_GRDH_1SDV_{s1_time}_{tile}_{col}_{row}"
            s2 = {
                band: rng.integers(1, 10000, size=(1200 // res, 1200 // res), dtype=np.uint16)
                for band, res in S2_RESOLUTION_M.items()
            }
            s1 = {
                pol: rng.uniform(-30.0, 0.0, size=(120, 120)).astype(np.float32)
                for pol in ("VV", "VH")
            }
            txn.put(patch_id.encode(), save(s2))
            txn.put(s1_name.encode(), save(s1))
            is_flagged = i >= n - flagged
            rows.append(
                {
                    "patch_id": patch_id,
                    "labels": list(rng.choice(LABELS, size=1 + i % 3, replace=False)),
                    "split": SPLITS[i % 3],
                    "country": country,
                    "s1_name": s1_name,
                    "s2v1_name": f"{s2_sat}_MSIL2A_{s2_time}_{col}_{row}",
                    "contains_seasonal_snow": is_flagged,
                    "contains_cloud_or_shadow": False,
                }
            )
    env.close()
    md = pd.DataFrame(rows)
    flags = md["contains_seasonal_snow"] | md["contains_cloud_or_shadow"]
    md[~flags].to_parquet(root / "metadata.parquet", index=False)
    md[flags].to_parquet(
        root / "metadata_for_patches_with_snow_cloud_or_shadow.parquet", index=False
    )
    return root


def read_back(root: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Every blob of the LMDB as ``{key: {band: array}}`` (the reference for the reader tests)."""
    import lmdb
    from safetensors.numpy import load

    env = lmdb.open(str(Path(root) / "BigEarthNet-V2-LMDB"), readonly=True, lock=False)
    with env.begin() as txn:
        out = {key.decode(): load(value) for key, value in txn.cursor()}
    env.close()
    return out
