"""GlacierHack folders and files: finding them, pairing them by tile key, checking and reading them.

Three layouts are read (folder names in any case, band files GeoTIFF, masks GeoTIFF or PNG)::

    organisers (training)        participants (their Train/)          platform test data
    <root>/Band1/B2_B2_masked_07.tif   Train/Band1/B2_B2_masked_02_07.tif    <root>/Band1/img001.tif
    ...                                ...                                  ...
    <root>/Band5/B10_B10_masked_07.tif Train/Band5/B10_B10_masked_02_07.tif  <root>/Band5/img001.tif
    <root>/Label/Y_output_resized_07.tif Train/label/Y_output_resized_02_07.tif   (no labels)

Band1..Band5 are Landsat-8 B2, B3, B4, B6 (SWIR1), B10 (thermal), one band per file. File names differ
per folder; the **tile key** is the whole trailing group of numbers of the stem (``02_07``, ``07``,
``001``), and files are paired by it, never by sorted order (pairing by order is what turns a good model
into MCC ~0.03). Leading zeros do not matter for pairing (``_7`` pairs with ``_07``); outputs keep the
key as written in the Band1 file. Masks store 0/85/170/255 = background/glacier/debris/lake.

Nodata: a band pixel that is NaN, +-inf or the file's nodata value is missing; a pixel missing in any
band is *invalid*: it is left out of the loss, the metrics and the normalisation statistics.

Example:
    >>> tile_key_from_name("B2_B2_masked_02_07.tif"), tile_key_from_name("img001.tif")
    ('02_07', '001')
    >>> canonical_key("02_07"), canonical_key("007")
    ('2_7', '7')
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eo_common.errors import InputError

from glacier_seg.config import CLASS_NAMES

__all__ = [
    "CLASS_NAMES",
    "MASK_VALUES",
    "IGNORE_INDEX",
    "BAND_FOLDERS",
    "BAND_NAMES",
    "LABEL_FOLDERS",
    "PairingError",
    "LabelValueError",
    "GlacierTile",
    "PairingReport",
    "tile_key_from_name",
    "canonical_key",
    "tile_id_from_name",
    "scan_layout",
    "find_tiles",
    "check_tile_files",
    "mask_values_to_classes",
    "classes_to_mask_values",
    "read_mask_values",
    "read_label",
    "read_bands",
    "binary_mask_problem",
]

MASK_VALUES: tuple[int, ...] = (0, 85, 170, 255)
#: class value of invalid pixels (nodata input) in masks: left out of losses and metrics
IGNORE_INDEX = 255
BAND_FOLDERS: tuple[str, ...] = ("Band1", "Band2", "Band3", "Band4", "Band5")
BAND_NAMES: tuple[str, ...] = ("B2", "B3", "B4", "B6", "B10")
LABEL_FOLDERS: tuple[str, ...] = ("label", "labels")
_BAND_SUFFIXES = (".tif", ".tiff")
_LABEL_SUFFIXES = (".tif", ".tiff", ".png")
_TRAILING_KEY = re.compile(r"(\d+(?:_\d+)*)$")


class PairingError(InputError):
    """Band and label files that cannot be paired by tile key (the message lists every problem)."""


class LabelValueError(InputError):
    """A mask holds values other than 0/85/170/255 (or 0..3), or only 0 and 255 (binary)."""


def tile_key_from_name(name: str) -> str | None:
    """The tile key of a file name: the trailing numbers of its stem, as written (or None).

    Example:
        >>> tile_key_from_name("Y_output_resized_02_07.png"), tile_key_from_name("readme.tif")
        ('02_07', None)
    """
    match = _TRAILING_KEY.search(Path(name).stem)
    return match.group(1) if match else None


def canonical_key(key: str) -> str:
    """A tile key with the leading zeros of each number dropped (what pairing compares).

    Keys that are not numbers joined by ``_`` are returned as they are.

    Example:
        >>> canonical_key("02_07"), canonical_key("13"), canonical_key("a1")
        ('2_7', '13', 'a1')
    """
    parts = str(key).strip().split("_")
    if all(p.isdigit() for p in parts):
        return "_".join(str(int(p)) for p in parts)
    return str(key).strip()


def tile_id_from_name(name: str) -> str | None:
    """The canonical tile key of a file name (``B2_B2_masked_07.tif`` -> ``"7"``), or None.

    Example:
        >>> tile_id_from_name("B2_B2_masked_07.tif"), tile_id_from_name("Y_output_resized_02_07.tif")
        ('7', '2_7')
    """
    key = tile_key_from_name(name)
    return None if key is None else canonical_key(key)


@dataclass(frozen=True)
class GlacierTile:
    """One tile: its canonical id, its key as written in Band1, five band files and its mask (or None).

    Attributes:
        tile_id: canonical key (``"2_7"``), what pairing, splits and reports use.
        key: the key as written in the Band1 file name (``"02_07"``), what outputs are named after.
        band_paths: Band1..Band5 files.
        label_path: the mask file, or None for unlabelled tiles.
    """

    tile_id: str
    key: str
    band_paths: tuple[Path, ...]
    label_path: Path | None

    @property
    def band1_name(self) -> str:
        """File name of the tile's Band1 file (``img001.tif``): competition masks are named so."""
        return self.band_paths[0].name


def _id_sort_key(tile_id: str) -> tuple[Any, ...]:
    parts = tile_id.split("_")
    if all(p.isdigit() for p in parts):
        return (0, *[int(p) for p in parts])
    return (1, math.inf, tile_id)


@dataclass
class PairingReport:
    """Which tile keys each folder holds, and what cannot be paired.

    Attributes:
        root: the data set root.
        folders: expected folder name (``Band1`` .. ``Label``) -> the folder found, in any case.
        files: expected folder name -> {canonical key -> path}.
        problems_found: missing or ambiguous folders, names without a key, duplicate keys.
        paired_ids: keys present in every required folder (sorted numerically).
        unpaired: key -> folders that lack it.
    """

    root: Path
    folders: dict[str, Path]
    files: dict[str, dict[str, Path]]
    problems_found: list[str]
    paired_ids: list[str]
    unpaired: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not (self.problems_found or self.unpaired)

    def problems(self) -> list[str]:
        """One line per problem (empty when :attr:`ok`)."""
        lines = list(self.problems_found)
        lines += [
            f"tile {tid}: no file in {', '.join(folders)}" for tid, folders in self.unpaired.items()
        ]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "n_paired": len(self.paired_ids),
            "paired_ids": self.paired_ids,
            "folders": {k: str(v) for k, v in self.folders.items()},
            "files_per_folder": {k: len(v) for k, v in self.files.items()},
            "problems": self.problems(),
        }


def _find_folder(root: Path, names: tuple[str, ...]) -> tuple[Path | None, str | None]:
    """The sub-folder of ``root`` whose name is one of ``names`` in any case (or a problem line)."""
    wanted = {n.lower() for n in names}
    found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in wanted)
    if len(found) > 1:
        return None, f"ambiguous folders {', '.join(p.name for p in found)} in {root}: keep one"
    return (found[0], None) if found else (None, None)


def _hint(root: Path) -> str:
    subs = [p.name for p in root.iterdir() if p.is_dir() and p.name.lower() in ("train", "test")]
    return f" (found {', '.join(subs)}/ inside: pass that folder as --data_root)" if subs else ""


def scan_layout(root: str | Path, require_labels: bool = True) -> PairingReport:
    """Index every folder of a GlacierHack root by tile key; never raises on pairing problems.

    Args:
        root: folder holding Band1..Band5 (and a ``label`` folder when ``require_labels``).
        require_labels: whether the label folder takes part in the pairing.

    Raises:
        InputError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("GlacierHack folder not found", path=root)
    expected: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
        (f, (f,), _BAND_SUFFIXES) for f in BAND_FOLDERS
    ]
    if require_labels:
        expected.append(("Label", LABEL_FOLDERS, _LABEL_SUFFIXES))
    folders: dict[str, Path] = {}
    files: dict[str, dict[str, Path]] = {}
    problems: list[str] = []
    missing = []
    for name, spellings, suffixes in expected:
        folder, problem = _find_folder(root, spellings)
        files[name] = {}
        if problem:
            problems.append(problem)
        if folder is None:
            if not problem:
                missing.append(name if name != "Label" else "label (or Label, labels)")
            continue
        folders[name] = folder
        index: dict[str, Path] = {}
        for f in sorted(folder.iterdir()):
            if f.name.startswith(".") or f.suffix.lower() not in suffixes:
                continue
            tid = tile_id_from_name(f.name)
            if tid is None:
                problems.append(f"no tile key (trailing number) in file name {f}")
                continue
            if tid in index:
                problems.append(
                    f"{folder.name}: {index[tid].name} and {f.name} have the same tile key {tid}"
                )
                continue
            index[tid] = f
        files[name] = index
    if missing:
        problems.insert(0, f"missing folder(s) {', '.join(missing)} in {root}{_hint(root)}")
    present = [n for n, _, _ in expected if n in folders]
    all_ids = set().union(*(set(files[n]) for n in present)) if present else set()
    unpaired = {
        tid: [n for n in present if tid not in files[n]]
        for tid in sorted(all_ids, key=_id_sort_key)
        if any(tid not in files[n] for n in present)
    }
    paired = sorted((t for t in all_ids if t not in unpaired), key=_id_sort_key)
    return PairingReport(root, folders, files, problems, paired, unpaired)


def find_tiles(root: str | Path, require_labels: bool = True) -> list[GlacierTile]:
    """Every tile of a GlacierHack root, bands and mask paired by tile key.

    Raises:
        InputError: ``root`` does not exist.
        PairingError: a folder is missing or ambiguous, a name carries no key, a key occurs twice in
            a folder, or some keys lack a file in some folder; the message lists every problem.
    """
    report = scan_layout(root, require_labels)
    if not report.ok:
        raise PairingError(
            "cannot pair the tiles by key: " + "; ".join(report.problems()), path=report.root
        )
    if not report.paired_ids:
        raise PairingError(f"no tiles in {', '.join(BAND_FOLDERS)}", path=report.root)
    tiles = []
    for tid in report.paired_ids:
        bands = tuple(report.files[f][tid] for f in BAND_FOLDERS)
        tiles.append(
            GlacierTile(
                tile_id=tid,
                key=tile_key_from_name(bands[0].name) or tid,
                band_paths=bands,
                label_path=report.files["Label"][tid] if require_labels else None,
            )
        )
    return tiles


def _open(path: Path) -> Any:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"not a readable raster ({exc})", path=path) from None


def _same_transform(a: Any, b: Any) -> bool:
    scale = max(abs(a.a), abs(a.e), 1e-300)
    return all(abs(x - y) <= 1e-6 * scale for x, y in zip(tuple(a)[:6], tuple(b)[:6]))


def check_tile_files(tile: GlacierTile) -> None:
    """Refuse a tile whose files do not belong together, naming the file.

    Every band file must hold exactly one band (GlacierHack stores one Landsat-8 band per file; a
    multi-band file would silently lose its other bands), and share Band1's size, CRS and transform.
    A georeferenced mask must share them too (a PNG mask only the size).

    Raises:
        InputError: the first file that breaks a rule, with what differs.
    """
    ref = None
    for folder, path in zip(BAND_FOLDERS, tile.band_paths):
        with _open(path) as src:
            meta = (src.count, src.height, src.width, src.crs, src.transform)
        count, height, width, crs, transform = meta
        if count != 1:
            raise InputError(
                f"holds {count} bands; a {folder} file holds one band "
                f"(Landsat-8 {BAND_NAMES[BAND_FOLDERS.index(folder)]})",
                path=path,
            )
        if ref is None:
            ref = meta
            continue
        if (height, width) != ref[1:3]:
            raise InputError(
                f"size {height}x{width} differs from {tile.band_paths[0].name} {ref[1]}x{ref[2]} "
                f"(tile {tile.key})",
                path=path,
            )
        if crs != ref[3]:
            raise InputError(
                f"CRS {crs} differs from {tile.band_paths[0].name} ({ref[3]}); reproject it onto "
                "the Band1 grid",
                path=path,
            )
        if not _same_transform(transform, ref[4]):
            raise InputError(
                f"transform {tuple(transform)[:6]} differs from {tile.band_paths[0].name} "
                f"{tuple(ref[4])[:6]} (another grid)",
                path=path,
            )
    if tile.label_path is not None and ref is not None:
        with _open(tile.label_path) as src:
            height, width, crs, transform = src.height, src.width, src.crs, src.transform
        if (height, width) != ref[1:3]:
            raise InputError(
                f"mask size {height}x{width} differs from the bands' {ref[1]}x{ref[2]}",
                path=tile.label_path,
            )
        if crs is not None and (crs != ref[3] or not _same_transform(transform, ref[4])):
            raise InputError(
                f"mask grid ({crs}, {tuple(transform)[:6]}) differs from {tile.band_paths[0].name}",
                path=tile.label_path,
            )


def read_mask_values(path: str | Path) -> np.ndarray:
    """The stored values of a mask file (GeoTIFF or PNG) as (H, W) uint8.

    A grey PNG saved as RGB(A) is accepted when its colour bands are equal.
    """
    path = Path(path)
    with _open(path) as src:
        data = src.read()
    if (
        data.shape[0] in (3, 4)
        and np.array_equal(data[0], data[1])
        and np.array_equal(data[0], data[2])
    ):
        data = data[:1]
    if data.shape[0] != 1:
        raise LabelValueError(f"a mask has one band, this file has {data.shape[0]}", path=path)
    if data.dtype.kind == "f" or int(data.min()) < 0 or int(data.max()) > 255:
        raise LabelValueError(
            f"mask values must be integers 0..255, got {data.dtype} in [{data.min()}, {data.max()}]",
            path=path,
        )
    return data[0].astype(np.uint8)


def mask_values_to_classes(
    mask: np.ndarray, source: str | Path = "mask", binary: str = "four_class"
) -> np.ndarray:
    """Map stored mask values 0/85/170/255 to classes 0..3 (background, glacier, debris, lake).

    A mask holding only 0..3 is accepted as classes. With ``binary="glacier"`` a 0/255 mask reads
    255 as glacier. Anything else raises.

    Raises:
        LabelValueError: values outside both conventions; names ``source`` and the values.

    Example:
        >>> mask_values_to_classes(np.array([[0, 85], [170, 255]])).tolist()
        [[0, 1], [2, 3]]
        >>> mask_values_to_classes(np.array([[0, 255]]), binary="glacier").tolist()
        [[0, 1]]
    """
    values = np.unique(mask)
    if binary == "glacier":
        if not np.isin(values, (0, 255)).all():
            raise LabelValueError(
                f"--binary_masks glacier: expected only 0 and 255, got {values[:10].tolist()}",
                path=source,
            )
        return (np.asarray(mask) == 255).astype(np.uint8)
    if np.isin(values, MASK_VALUES).all():
        lut = np.zeros(256, dtype=np.uint8)
        lut[list(MASK_VALUES)] = np.arange(len(MASK_VALUES), dtype=np.uint8)
        return lut[np.asarray(mask).astype(np.int64)]
    if np.isin(values, np.arange(len(CLASS_NAMES))).all():
        return np.asarray(mask).astype(np.uint8)
    unexpected = [v.item() for v in values if v not in MASK_VALUES]
    raise LabelValueError(
        f"unexpected mask values {unexpected[:10]} (expected 0/85/170/255 or 0..3)", path=source
    )


def binary_mask_problem(values_per_mask: dict[Path, set[int]], root: Path) -> str | None:
    """A message when every mask holds only 0 and 255 (a binary data set), else None.

    A four-class data set holds glacier (85) somewhere; one whose masks all hold just 0 and 255 is
    almost surely a binary glacier mask that would otherwise be read as background/lake.
    """
    if not values_per_mask:
        return None
    union = set().union(*values_per_mask.values())
    if union <= {0, 255} and 255 in union:
        return (
            f"every mask in {root} holds only 0 and 255: binary masks? GlacierHack masks are "
            "four-class (0/85/170/255 = background/glacier/debris/lake); pass --binary_masks glacier "
            "to read 255 as glacier, or --binary_masks four_class to read 255 as lake"
        )
    return None


def read_label(path: str | Path, binary: str = "four_class") -> np.ndarray:
    """Read a mask file (GeoTIFF or PNG) as classes 0..3, (H, W) uint8."""
    return mask_values_to_classes(read_mask_values(path), path, binary)


def read_bands(tile: GlacierTile) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """The five bands of a tile as (5, H, W) float32 with NaN at invalid pixels, the (H, W) validity
    mask, and Band1's CRS and transform.

    A value is missing when it is NaN, +-inf or the file's nodata value; a pixel is valid when no
    band is missing there.
    """
    arrays = []
    crs = transform = None
    for path in tile.band_paths:
        with _open(path) as src:
            band = src.read(1).astype(np.float32)
            nodata = src.nodata
            if crs is None and transform is None:
                crs, transform = src.crs, src.transform
        bad = ~np.isfinite(band)
        if nodata is not None and not math.isnan(nodata):
            bad |= band == np.float32(nodata)
        band[bad] = np.nan
        arrays.append(band)
    bands = np.stack(arrays)
    valid = np.isfinite(bands).all(axis=0)
    bands[:, ~valid] = np.nan  # a pixel missing in one band is missing in all
    return bands, valid, crs, transform


def classes_to_mask_values(classes: np.ndarray) -> np.ndarray:
    """Classes 0..3 -> uint8 0/85/170/255, the values the competition reads.

    Example:
        >>> classes_to_mask_values(np.array([0, 1, 2, 3])).tolist()
        [0, 85, 170, 255]
    """
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= len(MASK_VALUES)):
        raise ValueError(f"classes must lie in 0..3, got [{classes.min()}, {classes.max()}]")
    return np.asarray(MASK_VALUES, dtype=np.uint8)[classes.astype(np.int64)]
