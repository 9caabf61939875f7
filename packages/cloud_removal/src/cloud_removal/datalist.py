"""SEN12MS-CR data lists: the three styles in use, row validation, held-out validation scenes, and
``cr-make-datalist`` (a list from the official download tree). No torch import.

A data list has no header and one row per sample: ``split, s1_folder, s2_cloudfree_folder,
s2_cloudy_folder, filename`` with split 1 = train, 2 = val, 3 = test; folders are relative to the data
root (``--input_data_folder``). Three styles are read, comma- or tab-separated (detected per file):

======================  =================================================================================
style                   where the three files of a row are
======================  =================================================================================
official tree (eolab,   ``<s1_folder>/<filename>`` with ``_s1_`` in the name; the S2 files carry ``_s2_``
cr-make-datalist)       and ``_s2_cloudy_`` instead: ``ROIs1158_spring_s1/s1_101/ROIs1158_spring_s1_101_p12.tif``
                        -> ``ROIs1158_spring_s2/s2_101/ROIs1158_spring_s2_101_p12.tif`` and
                        ``ROIs1158_spring_s2_cloudy/s2_cloudy_101/ROIs1158_spring_s2_cloudy_101_p12.tif``
GLF-CR ``data.csv``     the *same* file name in the three folders: ``s1/ROIs1970_fall_139_p839.tif``,
                        ``s2_cloudfree/ROIs1970_fall_139_p839.tif``, ``s2_cloudy/ROIs1970_fall_139_p839.tif``
DSen2-CR                as GLF-CR, tab-separated (``datasetfilelist.csv``): ``s1``, ``s2_cloudFree``,
``datasetfilelist.csv`` ``s2_cloudy`` and ``ROIs1158_spring_101_0.tif``
======================  =================================================================================

Per row, the S2 file is ``<folder>/<filename with _s1_ -> _s2_ (_s2_cloudy_)>`` when the name holds
``_s1_`` and that file exists, else ``<folder>/<filename>``. :func:`resolve_rows` checks every row
when a dataset is built (before any model exists); a missing file is reported as
``<list> row <n>: missing <file>`` (the first one, with the number of further bad rows).

A list without validation rows (GLF-CR's ``data.csv`` is often used that way) gets a validation split
held out of the *training scenes*: :func:`holdout_scenes` takes ``val_fraction`` of the scenes (whole
scenes, so no scene is in two splits; at least one), chosen by the SHA-256 of the scene name, so the
choice is the same on every machine and for every seed. ``val_fraction`` 0 refuses such a list.
The scene of a row is ``<ROI>_<season>_<scene>`` read from its file name (all three styles name it),
else its S1 folder.

``cr-make-datalist`` (:func:`make_datalist`) splits by scene too: the scenes (``<season>/s1_<scene>``)
of every season found are shuffled with ``seed``; the first ``round(test_fraction x n)`` go to test,
the next ``round(val_fraction x n)`` to validation (at least one each when the fraction is > 0 and there
are 3 or more scenes), the rest to training.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eo_common.errors import InputError, check_writable_dir

from .config import SEASONS, CRMakeDatalistConfig

__all__ = [
    "CloudRemovalDataError",
    "CloudRemovalFileNotFoundError",
    "DataListRow",
    "Sample",
    "SPLITS",
    "split_code",
    "read_data_list",
    "scene_of",
    "holdout_scenes",
    "rows_of_split",
    "resolve_rows",
    "find_official_samples",
    "make_datalist",
]

SPLITS = {"train": 1, "val": 2, "validation": 2, "test": 3}
_SPLIT_NAMES = {1: "train", 2: "val", 3: "test"}


class CloudRemovalDataError(InputError):
    """Bad data list or sample file; the message names the file and the list row."""


class CloudRemovalFileNotFoundError(CloudRemovalDataError, FileNotFoundError):
    """A file named by the data list (or the list itself) does not exist."""


def split_code(split: str | int) -> int:
    """``"train"``/1, ``"val"``/``"validation"``/2, ``"test"``/3 -> 1, 2, 3.

    Example:
        >>> split_code("val"), split_code(3), split_code("1")
        (2, 3, 1)
    """
    key = str(split).strip().lower()
    if key in SPLITS:
        return SPLITS[key]
    if key in ("1", "2", "3"):
        return int(key)
    raise ValueError(f"unknown split {split!r}; use train/val/test or 1/2/3")


@dataclass(frozen=True)
class DataListRow:
    """One row of a data list; ``line`` is its 1-based line number in ``source``."""

    line: int
    split: int
    s1_folder: str
    s2_cloudfree_folder: str
    s2_cloudy_folder: str
    filename: str
    source: Path = Path("data.csv")

    @property
    def s1_filename(self) -> str:
        """The file name column (kept under its old name)."""
        return self.filename

    @property
    def where(self) -> str:
        return f"{self.source} row {self.line}"

    def candidates(self, root: Path) -> tuple[Path, list[Path], list[Path]]:
        """(S1 file, S2 clear candidates, S2 cloudy candidates) in the order they are tried."""
        name = self.filename
        clear = [root / self.s2_cloudfree_folder / name]
        cloudy = [root / self.s2_cloudy_folder / name]
        if "_s1_" in name:
            clear.insert(0, root / self.s2_cloudfree_folder / name.replace("_s1_", "_s2_"))
            cloudy.insert(0, root / self.s2_cloudy_folder / name.replace("_s1_", "_s2_cloudy_"))
        return root / self.s1_folder / name, clear, cloudy

    def paths(self, root: str | os.PathLike) -> tuple[Path, Path, Path]:
        """(S1, S2 clear, S2 cloudy): the first existing candidate of each (else the first one)."""
        s1, clear, cloudy = self.candidates(Path(root))
        pick = [next((p for p in c if p.is_file()), c[0]) for c in (clear, cloudy)]
        return s1, pick[0], pick[1]


@dataclass(frozen=True)
class Sample:
    """A validated row: its three files exist."""

    row: DataListRow
    s1: Path
    s2_clear: Path
    s2_cloudy: Path

    @property
    def name(self) -> str:
        return self.row.filename


def _delimiter(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return "\t" if "\t" in line else ","
    return ","


def read_data_list(path: str | os.PathLike, split: str | int | None = None) -> list[DataListRow]:
    """Read a data list (comma- or tab-separated, no header); optionally keep one split.

    A first line whose first column is ``split`` is taken as a header and skipped.

    Raises:
        CloudRemovalFileNotFoundError: the list does not exist.
        CloudRemovalDataError: a row without 5 columns or with a split other than 1/2/3 (the message
            names the file and the row).

    Example:
        >>> rows = read_data_list("data.csv", split="train")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise CloudRemovalFileNotFoundError(f"{path}: data list not found")
    want = split_code(split) if split is not None else None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CloudRemovalDataError(f"{path}: not a text data list ({exc.reason})") from None
    rows: list[DataListRow] = []
    for line, rec in enumerate(csv.reader(io.StringIO(text), delimiter=_delimiter(text)), start=1):
        if not rec or all(not c.strip() for c in rec):
            continue
        if line == 1 and rec[0].strip().lower() == "split":
            continue
        if len(rec) != 5:
            raise CloudRemovalDataError(
                f"{path} row {line}: expected 5 columns (split, s1_folder, s2_cloudfree_folder, "
                f"s2_cloudy_folder, filename), got {len(rec)}: {rec}"
            )
        code = rec[0].strip()
        if code not in ("1", "2", "3"):
            raise CloudRemovalDataError(
                f"{path} row {line}: split must be 1 (train), 2 (val) or 3 (test), got {rec[0]!r}"
            )
        row = DataListRow(line, int(code), *(c.strip() for c in rec[1:]), source=path)
        if want is None or row.split == want:
            rows.append(row)
    return rows


_SCENE = re.compile(r"^(ROIs\d+_[A-Za-z]+)_(?:s1_|s2_|s2_cloudy_)?(\d+)_p?\d+\.tiff?$")


def scene_of(row: DataListRow) -> str:
    """The scene a row belongs to: ``ROIs1158_spring_101`` from any of the three name styles.

    Example:
        >>> scene_of(DataListRow(1, 1, "s1", "s2", "s2c", "ROIs1970_fall_139_p839.tif"))
        'ROIs1970_fall_139'
        >>> scene_of(DataListRow(1, 1, "a/s1_7", "b", "c", "ROIs1158_spring_s1_7_p3.tif"))
        'ROIs1158_spring_7'
    """
    match = _SCENE.match(row.filename)
    if match:
        return f"{match.group(1)}_{match.group(2)}"
    return row.s1_folder


def holdout_scenes(scenes: Iterable[str], fraction: float) -> set[str]:
    """The scenes held out for validation: ``max(1, round(fraction x n))`` of them, by SHA-256 order.

    Example:
        >>> sorted(holdout_scenes(["a", "b", "c", "d"], 0.25)) == sorted(holdout_scenes(["d", "c", "b", "a"], 0.25))
        True
    """
    unique = sorted(set(scenes), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    n = max(1, round(fraction * len(unique)))
    return set(unique[:n])


def rows_of_split(
    rows: list[DataListRow], split: str | int, val_fraction: float, source: Path
) -> list[DataListRow]:
    """The rows of one split; without validation rows, ``val_fraction`` of the training scenes
    form the validation split (see the module docstring)."""
    code = split_code(split)
    if any(r.split == 2 for r in rows) or code == 3:
        return [r for r in rows if r.split == code]
    train = [r for r in rows if r.split == 1]
    scenes = {scene_of(r) for r in train}
    if val_fraction <= 0:
        raise CloudRemovalDataError(
            f"{source}: no validation rows (split 2); add some, or set --val_fraction (e.g. 0.1) to "
            "hold out training scenes for validation"
        )
    if len(scenes) < 2:
        raise CloudRemovalDataError(
            f"{source}: no validation rows (split 2) and only {len(scenes)} training scene(s) to "
            "hold one out from; add validation rows"
        )
    held = holdout_scenes(scenes, val_fraction)
    keep = (lambda r: scene_of(r) in held) if code == 2 else (lambda r: scene_of(r) not in held)
    return [replace(r, split=code) for r in train if keep(r)]


def resolve_rows(rows: list[DataListRow], root: str | os.PathLike) -> list[Sample]:
    """Check that the three files of every row exist; return the rows with their paths.

    Raises:
        CloudRemovalFileNotFoundError: ``<list> row <n>: missing <file>`` for the first bad row, with
            the number of further bad rows.
    """
    root = Path(root)
    samples: list[Sample] = []
    bad: list[str] = []
    for row in rows:
        s1, clear, cloudy = row.candidates(root)
        found = [s1 if s1.is_file() else None]
        found += [next((p for p in c if p.is_file()), None) for c in (clear, cloudy)]
        if None in found:
            want = [s1, clear[0], cloudy[0]][found.index(None)]
            bad.append(f"{row.where}: missing {want}")
            continue
        samples.append(Sample(row, *found))  # type: ignore[arg-type]
    if bad:
        more = f" (and {len(bad) - 1} more row(s) with missing files)" if len(bad) > 1 else ""
        raise CloudRemovalFileNotFoundError(bad[0] + more)
    return samples


# --------------------------------------------------------------------------- cr-make-datalist
_OFFICIAL = re.compile(r"^(ROIs\d+_[A-Za-z]+)_s1_(\d+)_p(\d+)\.tif$")


def find_official_samples(root: str | os.PathLike) -> list[tuple[str, str, int, Path]]:
    """Every S1 patch of an official SEN12MS-CR tree: ``(season, scene, patch, s1 path)``, sorted.

    Seasons are the ``<ROIs..._season>_s1`` folders found under ``root`` (any of :data:`SEASONS`
    or others named the same way).
    """
    root = Path(root)
    if not root.is_dir():
        raise CloudRemovalFileNotFoundError(f"{root}: data folder not found")
    out = []
    for season_dir in sorted(root.glob("ROIs*_s1")):
        if not season_dir.is_dir():
            continue
        for path in sorted(season_dir.glob("s1_*/*.tif")):
            match = _OFFICIAL.match(path.name)
            if match and path.parent.name == f"s1_{match.group(2)}":
                out.append((match.group(1), match.group(2), int(match.group(3)), path))
    out.sort(key=lambda t: (t[0], int(t[1]), t[2]))
    return out


def _assign_scenes(scenes: list[str], val: float, test: float, seed: int) -> dict[str, int]:
    order = sorted(set(scenes))
    random.Random(seed).shuffle(order)
    n = len(order)

    def count(fraction: float) -> int:
        k = round(fraction * n)
        return max(1, k) if fraction > 0 and n >= 3 else k

    n_test, n_val = count(test), count(val)
    split = {s: 3 for s in order[:n_test]}
    split.update({s: 2 for s in order[n_test : n_test + n_val]})
    split.update({s: 1 for s in order[n_test + n_val :]})
    return split


def make_datalist(cfg: CRMakeDatalistConfig) -> dict[str, Any]:
    """Write a data list for an official SEN12MS-CR download tree (see the module docstring).

    Every S1 patch needs its S2 clear and cloudy files; the first missing one is reported. The list
    is written atomically; an existing list is kept unless ``overwrite``.

    Returns:
        ``{"data_list", "rows", "scenes", "seasons", "train", "val", "test"}`` (counts of rows).
    """
    from eo_common.io import atomic_write

    root = Path(cfg.root)  # type: ignore[arg-type]
    out = Path(cfg.out) if cfg.out is not None else root / "data.csv"
    if out.exists() and not cfg.overwrite:
        raise CloudRemovalDataError(f"{out}: the data list exists; pass --overwrite to replace it")
    check_writable_dir(out.parent, "folder of the data list")
    found = find_official_samples(root)
    if not found:
        raise CloudRemovalDataError(
            f"{root}: no SEN12MS-CR patches found (expected <season>_s1/s1_<scene>/"
            f"<season>_s1_<scene>_p<patch>.tif, seasons like {', '.join(SEASONS)})"
        )
    rows, missing = [], []
    for season, scene, _patch, s1 in found:
        name = s1.name
        s2 = f"{season}_s2/s2_{scene}"
        s2c = f"{season}_s2_cloudy/s2_cloudy_{scene}"
        for folder, fname in (
            (s2, name.replace("_s1_", "_s2_")),
            (s2c, name.replace("_s1_", "_s2_cloudy_")),
        ):
            if not (root / folder / fname).is_file():
                missing.append(root / folder / fname)
        rows.append((f"{season}_{scene}", s1.parent.relative_to(root).as_posix(), s2, s2c, name))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CloudRemovalFileNotFoundError(
            f"{missing[0]}: missing (the S1 patch of the same name has no S2 counterpart){more}"
        )
    split = _assign_scenes([r[0] for r in rows], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    counts = {1: 0, 2: 0, 3: 0}
    for scene, *cols in rows:
        writer.writerow([split[scene], *cols])
        counts[split[scene]] += 1
    with atomic_write(out, "w") as f:
        f.write(buf.getvalue())
    return {
        "data_list": str(out),
        "rows": len(rows),
        "scenes": len(split),
        "seasons": sorted({r[0].rsplit("_", 1)[0] for r in rows}),
        **{_SPLIT_NAMES[k]: v for k, v in counts.items()},
    }
