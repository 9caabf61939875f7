"""Build a small SEN12MS-CR-layout dataset from the real sample data (demo and end-to-end tests).

What the data are:

* **Real S1 + S2 pairs**: the 24 BigEarthNet v2 patches of the ``benv2_mock`` sample (Austria tile
  T33UUP, June 2017; Finland tile T35VNJ, November 2017), 120 x 120 px at 10 m. S1 VV/VH in dB are
  used as they are (float32). The S2 L2A bands are resampled to the 10 m grid (bilinear; 20 m and
  60 m bands) and stored as the clear target. BigEarthNet's split is kept: train -> 1, validation -> 2,
  test -> 3. Three patches are flagged "cloud or shadow" in BigEarthNet's metadata; they stay in
  (``samples_manifest.json`` lists the flags).
* **Top-of-atmosphere level**: BigEarthNet v2 S2 is L2A (surface reflectance), SEN12MS-CR and the
  L1C scene are L1C (top of atmosphere), which is brighter by the path radiance, most in the blue
  (about 900 DN in B01 and B02 of the scene). Trained on L2A targets, a model predicts L2A levels
  wherever the cloud hides the surface and paints thick clouds of an L1C scene black. So the
  BigEarthNet bands are brought to an approximate TOA level by the reverse of dark-object
  subtraction (Chavez 1988): each band gets ``offset_b = max(0, p1(L1C scene)_b - p1(BigEarthNet)_b)``
  added, the difference of the 1st percentiles (the dark objects) of the real L1C scene and of all
  BigEarthNet patches, in reflectance (:func:`fit_toa_offsets`; the offsets are in the manifest).
  A first-order haze model, a modelling choice.
* **The missing 13th band**: BigEarthNet v2 S2 is L2A and has no B10 (cirrus). SEN12MS-CR files have
  13 bands, so B10 is *derived*: a ridge regression (scikit-learn, alpha 1e-3, reflectance units)
  of B10 on the other 12 bands, fitted on every 60 m pixel of the real 13-band L1C scene
  (``s2_scene``) and applied to the TOA-level bands; the fitted coefficients and R^2 are stored in the
  manifest. B10 is tiny over clear land (median 11 DN in the scene) so the choice hardly matters for
  clear targets; the simulated clouds then raise it like other bands.
* **Real 13-band L1C tiles**: ``scene_tiles`` random 120 x 120 windows of the ``s2_scene`` Sentinel-2
  L1C scene (EPSG:32618; all bands resampled bilinearly to 10 m), train split only. That scene has no
  Sentinel-1 acquisition, so its S1 is **simulated** from the clear optical (:func:`simulate_sar`):
  a land/water backscatter model driven by NDVI and NDWI plus 4.4-look gamma speckle. These tiles
  never enter the validation or test split, so every reported metric uses real SAR, and none of them
  overlaps the ``cr-predict`` scene crop.
* **Clouds are simulated** on every cloudy image with the procedural cloud + haze + shadow model of
  :mod:`cloud_removal.clouds` (seeded; ``train_draws`` independent draws per training patch, one per
  validation/test patch, each a separate CSV row with its own ``s2_cloudy`` folder).
* A larger georeferenced scene for ``cr-predict``: a ``predict_size`` square crop of the real scene,
  with simulated clouds and simulated S1, under ``predict/``.

Layout written (GLF-CR data list, no header: split, s1_folder, s2_cloudfree_folder, s2_cloudy_folder,
s1_filename)::

    <dest>/data.csv
    <dest>/ROIs1001_summer_s1/s1_1/ROIs1001_summer_s1_1_p<i>.tif         (2 bands float32 dB)
    <dest>/ROIs1001_summer_s2/s2_1/ROIs1001_summer_s2_1_p<i>.tif         (13 bands uint16 DN)
    <dest>/ROIs1001_summer_s2_cloudy/s2_cloudy_1_d<k>/ROIs1001_summer_s2_cloudy_1_p<i>.tif
    <dest>/samples_manifest.json, <dest>/predict/scene_{s2_cloudy,s2_clear,s1}.tif

ROI ids: 1001 = BigEarthNet Austria (T33UUP, summer), 1002 = BigEarthNet Finland (T35VNJ, fall),
1003 = the L1C scene. Austrian patches carry their real UTM georeference (origins measured on the
BigEarthNet v1 examples); Finnish ones have none (10 m grid at 0, 0).

Example:
    >>> root = build_sample_dataset("runs/cr_samples")  # doctest: +SKIP
    >>> (root / "data.csv").read_text().splitlines()[0]  # doctest: +SKIP
    '1,ROIs1001_summer_s1/s1_1,ROIs1001_summer_s2/s2_1,ROIs1001_summer_s2_cloudy/s2_cloudy_1_d0,...'
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine
from eo_common.benv2 import BENV2_S2_BANDS, benv1_tile_origins, read_benv2_lmdb
from eo_common.io import atomic_save_json, atomic_write
from eo_common.raster import stack_bands, write_raster
from eo_common.samples import sample_path
from scipy import ndimage

from .clouds import S2_BANDS, CloudParams, simulate_clouds
from .config import SamplesConfig

__all__ = [
    "build_sample_dataset",
    "simulate_sar",
    "fit_b10_regression",
    "fit_toa_offsets",
    "load_scene",
    "default_sample_root",
    "SPLIT_CODES",
]

SPLIT_CODES = {"train": 1, "validation": 2, "test": 3}
_COMPLETE = ".complete"
_VERSION = "cr-samples-v2"


def default_sample_root() -> Path:
    """Where the demo keeps the built dataset: ``<eo_common data_root>/cloud_removal_samples``."""
    from eo_common.samples import data_root

    return data_root() / "cloud_removal_samples"


def load_scene(root: Path | None = None) -> tuple[np.ndarray, object, Affine]:
    """The real 13-band L1C scene on its 10 m grid: (13, H, W) uint16 DN, CRS, transform."""
    root = Path(root) if root is not None else sample_path("s2_scene")
    paths = [root / f"s2_{b}.tif" for b in S2_BANDS]
    ref = S2_BANDS.index("B02")
    r = stack_bands(paths, reference=ref, resampling="bilinear")
    return r.array, r.crs, r.transform


def fit_b10_regression(scene_root: Path | None = None, alpha: float = 1e-3) -> dict:
    """Ridge regression of B10 on the 12 other bands (reflectance) over the scene's 60 m pixels.

    Returns ``{"bands", "coef", "intercept", "r2", "n_pixels"}``.
    """
    from sklearn.linear_model import Ridge

    root = Path(scene_root) if scene_root is not None else sample_path("s2_scene")
    others = [b for b in S2_BANDS if b != "B10"]
    paths = [root / f"s2_{b}.tif" for b in others] + [root / "s2_B10.tif"]
    r = stack_bands(paths, reference=len(paths) - 1, resampling="average")
    x = r.array[:-1].reshape(len(others), -1).T.astype(np.float64) / 1e4
    y = r.array[-1].reshape(-1).astype(np.float64) / 1e4
    model = Ridge(alpha=alpha).fit(x, y)
    return {
        "bands": others,
        "coef": model.coef_.tolist(),
        "intercept": float(model.intercept_),
        "r2": float(model.score(x, y)),
        "n_pixels": int(len(y)),
    }


def _benv2_bands(s2: dict[str, np.ndarray], size: int = 120) -> np.ndarray:
    """BENv2 band dict (native sizes) -> (12, size, size) float32 L2A reflectance, BENV2 band order."""
    out = []
    for b in BENV2_S2_BANDS:
        a = torch.from_numpy(s2[b].astype(np.float32) / 1e4)[None, None]
        if a.shape[-1] != size:
            a = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False)
        out.append(a[0, 0].numpy())
    return np.stack(out).astype(np.float32)


def fit_toa_offsets(l2a: list[np.ndarray], scene_dn: np.ndarray) -> dict[str, float]:
    """Per-band reflectance added to BigEarthNet L2A to reach the L1C scene's TOA level.

    ``offset_b = max(0, p1(scene_b) - p1(L2A_b))`` (1st percentiles: the dark objects), the reverse of
    dark-object subtraction.

    Args:
        l2a: BigEarthNet patches, each (12, H, W) reflectance in :data:`BENV2_S2_BANDS` order.
        scene_dn: the L1C scene (13, H, W) DN in :data:`S2_BANDS` order.
    """
    stack = np.concatenate([p.reshape(len(BENV2_S2_BANDS), -1) for p in l2a], axis=1)
    out = {}
    for k, band in enumerate(BENV2_S2_BANDS):
        toa = float(np.percentile(scene_dn[S2_BANDS.index(band)], 1)) / 1e4
        out[band] = max(0.0, toa - float(np.percentile(stack[k], 1)))
    return out


def _benv2_to_13(l2a: np.ndarray, b10: dict, offsets: dict[str, float]) -> np.ndarray:
    """(12, H, W) L2A reflectance -> (13, H, W) approximate TOA reflectance with derived B10."""
    bands = {b: l2a[k] + offsets[b] for k, b in enumerate(BENV2_S2_BANDS)}
    coef = np.asarray(b10["coef"], dtype=np.float32)
    stack = np.stack([bands[b] for b in b10["bands"]])
    bands["B10"] = np.clip(np.tensordot(coef, stack, axes=1) + b10["intercept"], 0.0, None)
    return np.stack([bands[b] for b in S2_BANDS]).astype(np.float32)


def simulate_sar(
    reflectance: np.ndarray, rng: np.random.Generator, looks: float = 4.4
) -> np.ndarray:
    """Simulated Sentinel-1 VV/VH (2, H, W) in dB from clear 13-band reflectance (documented model).

    Mean backscatter: water (NDWI = (B03 - B08)/(B03 + B08), weight ``sigmoid(20 (NDWI - 0.1))``)
    VV -22 dB, VH -28 dB; land VV ``-12 + 4 NDVI+`` dB and VH ``-20 + 6 NDVI+`` dB with
    ``NDVI+ = clip(NDVI, 0, 1)``; smoothed by a 3 x 3 mean; then multiplicative gamma speckle with
    ``looks`` equivalent looks (Sentinel-1 IW GRD: about 4.4) in linear power.
    """
    b03, b04, b08 = (reflectance[S2_BANDS.index(b)] for b in ("B03", "B04", "B08"))
    eps = 1e-6
    ndvi = np.clip((b08 - b04) / (b08 + b04 + eps), 0.0, 1.0)
    ndwi = (b03 - b08) / (b03 + b08 + eps)
    water = 1.0 / (1.0 + np.exp(-20.0 * (ndwi - 0.1)))
    vv = water * -22.0 + (1 - water) * (-12.0 + 4.0 * ndvi)
    vh = water * -28.0 + (1 - water) * (-20.0 + 6.0 * ndvi)
    out = []
    for db in (vv, vh):
        lin = 10.0 ** (ndimage.uniform_filter(db, 3) / 10.0)
        lin = lin * rng.gamma(looks, 1.0 / looks, size=lin.shape)
        out.append(10.0 * np.log10(np.maximum(lin, 1e-6)))
    return np.stack(out).astype(np.float32)


def _to_dn(reflectance: np.ndarray) -> np.ndarray:
    return np.clip(np.round(reflectance * 1e4), 0, 65535).astype(np.uint16)


class _Writer:
    """Writes one SEN12MS-CR sample (three GeoTIFFs) and its CSV row."""

    def __init__(self, root: Path):
        self.root = root
        self.rows: list[list[object]] = []
        self.records: list[dict] = []

    def add(
        self,
        *,
        split: int,
        roi: str,
        scene: int,
        patch: int,
        draws: list[tuple[np.ndarray, dict]],
        clear: np.ndarray,
        s1_db: np.ndarray,
        crs,
        transform: Affine,
        info: dict,
    ) -> None:
        s1_folder = f"{roi}_s1/s1_{scene}"
        s2_folder = f"{roi}_s2/s2_{scene}"
        fname = f"{roi}_s1_{scene}_p{patch}.tif"
        write_raster(
            self.root / s1_folder / fname,
            s1_db.astype(np.float32),
            crs=crs,
            transform=transform,
            band_names=["VV", "VH"],
        )
        write_raster(
            self.root / s2_folder / fname.replace("_s1_", "_s2_"),
            _to_dn(clear),
            crs=crs,
            transform=transform,
            band_names=list(S2_BANDS),
        )
        for k, (cloudy, params) in enumerate(draws):
            cloudy_folder = f"{roi}_s2_cloudy/s2_cloudy_{scene}_d{k}"
            write_raster(
                self.root / cloudy_folder / fname.replace("_s1_", "_s2_cloudy_"),
                _to_dn(cloudy),
                crs=crs,
                transform=transform,
                band_names=list(S2_BANDS),
            )
            self.rows.append([split, s1_folder, s2_folder, cloudy_folder, fname])
            self.records.append(
                {
                    "row": len(self.rows),
                    "split": split,
                    "s1_filename": fname,
                    "cloud_draw": k,
                    "clouds": params,
                    **info,
                }
            )


def build_sample_dataset(
    dest: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    train_draws: int = 3,
    scene_tiles: int = 16,
    tile_size: int = 120,
    predict_size: int = 512,
    cloud_params: CloudParams | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Build the sample dataset (see the module docstring); idempotent and crash-safe.

    Everything is written into a temporary folder beside ``dest`` and renamed into place, followed by
    a ``.complete`` marker; a complete ``dest`` built with the same arguments is reused as is.

    Args:
        dest: output folder (default :func:`default_sample_root`).
        seed: seeds cloud draws, scene-tile positions and SAR speckle.
        train_draws: cloud realisations per training patch.
        scene_tiles: 13-band L1C scene tiles added to the training split.
        tile_size: side of the tiles (BigEarthNet patches are 120).
        predict_size: side of the cloudy scene crop written for ``cr-predict`` (0: none).
        cloud_params: ranges of the cloud model.
        overwrite: rebuild even when a complete copy exists.

    Returns:
        ``dest``.
    """
    dest = Path(dest) if dest is not None else default_sample_root()
    key = (
        f"{_VERSION} seed={seed} train_draws={train_draws} scene_tiles={scene_tiles} "
        f"tile_size={tile_size} predict_size={predict_size} clouds={cloud_params}"
    )
    marker = dest / _COMPLETE
    if not overwrite and marker.exists() and marker.read_text().strip() == key:
        return dest
    rng = np.random.default_rng(seed)
    params = cloud_params or CloudParams()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        w = _Writer(tmp)
        log = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
        b10 = fit_b10_regression()
        log(f"B10 regression on the L1C scene: R^2 = {b10['r2']:.3f} over {b10['n_pixels']} pixels")
        try:
            origins = benv1_tile_origins()
        except Exception:  # noqa: BLE001 - georeference is optional
            origins = {}
        scene, scene_crs, scene_transform = load_scene()
        patches = list(read_benv2_lmdb())
        l2a = [_benv2_bands(p.s2, tile_size) for p in patches]
        offsets = fit_toa_offsets(l2a, scene)
        log("TOA offsets (DN): " + ", ".join(f"{b} {v * 1e4:.0f}" for b, v in offsets.items()))
        patch_no = {"ROIs1001_summer": 0, "ROIs1002_fall": 0, "ROIs1003_scene": 0}
        for p, bands in zip(patches, l2a):
            roi = "ROIs1001_summer" if p.country == "Austria" else "ROIs1002_fall"
            patch_no[roi] += 1
            clear = _benv2_to_13(bands, b10, offsets)
            split = SPLIT_CODES[p.split]
            n_draws = train_draws if split == 1 else 1
            draws = []
            for _ in range(n_draws):
                sim = simulate_clouds(clear, rng, params)
                draws.append(
                    (sim.cloudy, sim.params | {"intensity_mean": float(sim.intensity.mean())})
                )
            crs, transform = None, Affine(10.0, 0, 0, 0, -10.0, 0)
            if p.mgrs_tile in origins:
                epsg, x0, y0 = origins[p.mgrs_tile]
                col, row = p.grid_index()
                crs = f"EPSG:{epsg}"
                transform = Affine(10.0, 0, x0 + 1200.0 * col, 0, -10.0, y0 - 1200.0 * row)
            w.add(
                split=split,
                roi=roi,
                scene=1,
                patch=patch_no[roi],
                draws=draws,
                clear=clear,
                s1_db=p.s1,
                crs=crs,
                transform=transform,
                info={
                    "source": "BigEarthNet v2 (real S1 + S2 L2A at TOA level, derived B10, "
                    "simulated clouds)",
                    "patch_id": p.patch_id,
                    "s1_name": p.s1_name,
                    "bigearthnet_cloud_or_shadow": p.cloud_or_shadow,
                    "snow": p.snow,
                },
            )
        log(f"wrote {len(w.rows)} rows from BigEarthNet v2")

        crs, transform = scene_crs, scene_transform
        _, sh, sw = scene.shape
        psize = min(predict_size, sh, sw)
        py0, px0 = (sh - psize) // 2, (sw - psize) // 2

        def outside_predict(r: int, c: int) -> bool:
            y, x = r * tile_size, c * tile_size
            return (
                not predict_size
                or y + tile_size <= py0
                or y >= py0 + psize
                or x + tile_size <= px0
                or x >= px0 + psize
            )

        grid = [
            (r, c)
            for r in range(sh // tile_size)
            for c in range(sw // tile_size)
            if outside_predict(r, c)
        ]
        picks = rng.choice(len(grid), size=min(scene_tiles, len(grid)), replace=False)
        for i in sorted(int(k) for k in picks):
            r, c = grid[i]
            y0, x0 = r * tile_size, c * tile_size
            clear = scene[:, y0 : y0 + tile_size, x0 : x0 + tile_size].astype(np.float32) / 1e4
            sim = simulate_clouds(clear, rng, params)
            patch_no["ROIs1003_scene"] += 1
            w.add(
                split=1,
                roi="ROIs1003_scene",
                scene=1,
                patch=patch_no["ROIs1003_scene"],
                draws=[(sim.cloudy, sim.params)],
                clear=clear,
                s1_db=simulate_sar(clear, rng),
                crs=crs,
                transform=transform @ Affine.translation(x0, y0),
                info={
                    "source": "real S2 L1C scene (13 bands), simulated S1, simulated clouds",
                    "window_row_col": [y0, x0],
                },
            )
        log(f"wrote {patch_no['ROIs1003_scene']} L1C scene tiles (train)")

        if predict_size:
            size, y0, x0 = psize, py0, px0
            clear = scene[:, y0 : y0 + size, x0 : x0 + size].astype(np.float32) / 1e4
            sim = simulate_clouds(clear, rng, params, coverage=0.4)
            t = transform @ Affine.translation(x0, y0)
            pdir = tmp / "predict"
            write_raster(
                pdir / "scene_s2_cloudy.tif",
                _to_dn(sim.cloudy),
                crs=crs,
                transform=t,
                band_names=list(S2_BANDS),
            )
            write_raster(
                pdir / "scene_s2_clear.tif",
                _to_dn(clear),
                crs=crs,
                transform=t,
                band_names=list(S2_BANDS),
            )
            write_raster(
                pdir / "scene_s1.tif",
                simulate_sar(clear, rng),
                crs=crs,
                transform=t,
                band_names=["VV", "VH"],
            )

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(w.rows)
        with atomic_write(tmp / "data.csv", "w") as f:
            f.write(buf.getvalue())
        atomic_save_json(
            {
                "version": _VERSION,
                "seed": seed,
                "b10_regression": b10,
                "toa_offsets": offsets,
                "cloud_params": vars(params),
                "rows": w.records,
            },
            tmp / "samples_manifest.json",
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        (dest / _COMPLETE).write_text(key + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def build(cfg: SamplesConfig) -> dict[str, str]:
    """``python -m cloud_removal.samples``: build the sample dataset (the work of the command)."""
    root = build_sample_dataset(
        cfg.dest,
        seed=cfg.seed,
        train_draws=cfg.train_draws,
        scene_tiles=cfg.scene_tiles,
        overwrite=cfg.overwrite,
    )
    return {"sample_dataset": str(root)}


if __name__ == "__main__":
    from .cli import build_samples

    raise SystemExit(build_samples())
