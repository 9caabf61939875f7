"""Sample-data fetching (offline, on locally built archives) and the BigEarthNet v2 readers (real data)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from eo_common import benv2, samples
from eo_common.benv2 import export_benv2_geotiff_layout, read_benv2_lmdb
from eo_common.samples import (
    SamplesMissingError,
    SampleSource,
    require_samples,
    sample_path,
)


def _make_wheel(path: Path) -> str:
    """A wheel-like zip with one wanted member, one unwanted, and a nested tar.bz2."""
    nested = io.BytesIO()
    with tarfile.open(fileobj=nested, mode="w:bz2") as t:
        data = b"nested-bytes"
        info = tarfile.TarInfo("Inner/a.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/data/keep_me.tif", b"raster-bytes")
        z.writestr("pkg/data/skip_me.py", b"print()")
        z.writestr("pkg/inner.tar.bz2", nested.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_source(tmp_path, monkeypatch):
    """A SampleSource whose file is already in _downloads, so fetch needs no network."""
    root = tmp_path / "cache"
    (root / "_downloads").mkdir(parents=True)
    wheel = root / "_downloads" / "pkg-1.0-py3-none-any.whl"
    digest = _make_wheel(wheel)
    src = SampleSource(
        key="toy",
        package="pkg==1.0",
        registry="pypi-wheel",
        filename=wheel.name,
        sha256=digest,
        members={r"^pkg/data/(?P<f>.+\.tif)$": r"\g<f>"},
        nested_tar=("pkg/inner.tar.bz2",),
        description="toy",
        license="none",
    )
    monkeypatch.setattr(samples, "SOURCES", (src,))
    monkeypatch.setenv("EOLAB_DATA", str(root))
    return root, src


def test_fetch_extracts_only_wanted_members_and_is_idempotent(local_source, monkeypatch):
    root, src = local_source
    have = samples.fetch(progress=False)
    folder = have["toy"]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".complete",
        "Inner/a.txt",
        "keep_me.tif",
    ]
    assert (folder / "keep_me.tif").read_bytes() == b"raster-bytes"
    assert sample_path("toy") == folder
    # second run: no download, no extraction (both would fail now)
    monkeypatch.setattr(samples, "_download", lambda *a, **k: pytest.fail("downloaded again"))
    monkeypatch.setattr(samples, "_extract", lambda *a, **k: pytest.fail("extracted again"))
    assert samples.fetch(progress=False) == {"toy": folder}
    index = (root / "SAMPLES.json").read_text()
    assert "keep_me.tif" in index and src.sha256 in index


def test_half_written_folder_is_not_trusted(local_source):
    root, _ = local_source
    folder = root / "toy"
    folder.mkdir()
    (folder / "keep_me.tif").write_bytes(b"trunc")  # a crash before the .complete marker
    with pytest.raises(SamplesMissingError, match="eolab samples fetch"):
        sample_path("toy")
    samples.fetch(progress=False)
    assert (folder / "keep_me.tif").read_bytes() == b"raster-bytes"


class _Index:
    """A local package index (simple API, PEP 691 JSON or PEP 503 HTML) serving one file."""

    def __init__(self, filename: str, payload: bytes, *, style: str = "json", auth: str = ""):
        self.filename = filename
        self.payload = payload
        self.style = style
        self.auth = auth  # "user:token" the server demands, "" for none
        self.stated_sha256: str | None = hashlib.sha256(payload).hexdigest()
        self.requests: list[str] = []
        self.stall = None  # a threading.Event: serve half of the file, set it, then hang
        self.release = None

    def serve(self):
        import base64
        import http.server
        import threading

        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                index.requests.append(self.path)
                if index.auth:
                    expected = "Basic " + base64.b64encode(index.auth.encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self.send_response(401)
                        self.end_headers()
                        return
                if self.path == "/simple/pkg/":
                    frag = f"#sha256={index.stated_sha256}" if index.stated_sha256 else ""
                    if index.style == "json":
                        hashes = {"sha256": index.stated_sha256} if index.stated_sha256 else {}
                        files = [
                            {
                                "filename": index.filename,
                                "url": f"/files/{index.filename}",
                                "hashes": hashes,
                            }
                        ]
                        body = json.dumps({"meta": {"api-version": "1.0"}, "files": files})
                        kind = "application/vnd.pypi.simple.v1+json"
                    else:
                        body = (
                            f'<html><body><a href="../../files/{index.filename}{frag}">'
                            f"{index.filename}</a></body></html>"
                        )
                        kind = "text/html"
                    data = body.encode()
                elif self.path == f"/files/{index.filename}" and index.stall is not None:
                    half = len(index.payload) // 2  # send half, then hang (a download in flight)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(index.payload)))
                    self.end_headers()
                    self.wfile.write(index.payload[:half])
                    self.wfile.flush()
                    index.stall.set()
                    index.release.wait(30)
                    return
                elif self.path == f"/files/{index.filename}":
                    data, kind = index.payload, "application/octet-stream"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def local_index(local_source, monkeypatch):
    """Serve the toy wheel from a local index named by PIP_INDEX_URL; no subprocess allowed."""
    root, src = local_source
    wheel = root / "_downloads" / src.filename
    index = _Index(src.filename, wheel.read_bytes())
    server = index.serve()
    host, port = server.server_address[:2]
    index.url = f"http://{host}:{port}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", index.url)
    monkeypatch.setattr(
        samples.subprocess, "run", lambda *a, **k: pytest.fail(f"subprocess run: {a}")
    )
    yield root, src, index
    server.shutdown()


@pytest.mark.parametrize("style", ["json", "html"])
def test_corrupt_download_is_replaced_from_the_index_without_pip(local_index, style, monkeypatch):
    root, src, index = local_index
    index.style = style
    index.auth = "alice:s3cret"
    monkeypatch.setenv("PIP_INDEX_URL", index.url.replace("http://", "http://alice:s3cret@"))
    wheel = root / "_downloads" / src.filename
    good = wheel.read_bytes()
    wheel.write_bytes(b"corrupt")
    samples.fetch(progress=False)
    assert wheel.read_bytes() == good
    assert index.requests == ["/simple/pkg/", f"/files/{src.filename}"]


def test_hash_mismatch_from_registry_is_refused(local_index):
    root, src, index = local_index
    (root / "_downloads" / src.filename).unlink()
    index.payload = b"tampered"
    index.stated_sha256 = None  # the index states no hash: the download itself is checked
    with pytest.raises(samples.SampleFetchError, match="does not match"):
        samples.fetch(progress=False)
    assert not (root / "_downloads" / src.filename).exists()
    assert not (root / "toy").exists()
    assert not list((root / "_downloads").iterdir())  # no temporary file left either


def test_index_stating_another_hash_is_refused_before_download(local_index):
    root, src, index = local_index
    (root / "_downloads" / src.filename).unlink()
    index.stated_sha256 = "0" * 64
    with pytest.raises(samples.SampleFetchError, match="index states sha256 0000"):
        samples.fetch(progress=False)
    assert index.requests == ["/simple/pkg/"]


def test_unreachable_index_is_one_line_exit_2(local_source, monkeypatch, capsys):
    import socket

    from eo_common import cli

    root, src = local_source
    (root / "_downloads" / src.filename).unlink()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    assert cli.main(["samples", "fetch", "--dest", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read the package index page" in err[0]
    assert "PIP_INDEX_URL" in err[0]


def test_index_url_follows_the_environment(monkeypatch):
    for var in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        monkeypatch.delenv(var, raising=False)
    assert samples.index_url() == "https://pypi.org/simple"
    monkeypatch.setenv("UV_INDEX_URL", "https://mirror.example/simple/")
    assert samples.index_url() == "https://mirror.example/simple"
    monkeypatch.setenv("PIP_INDEX_URL", "https://pip.example/simple")
    assert samples.index_url() == "https://pip.example/simple"


def test_fetch_killed_mid_download_leaves_nothing_trusted_and_resumes(local_index, tmp_path):
    """SIGKILL a real `fetch` process while the file is half downloaded: no target file appears,
    the next fetch removes the killed one's temporary folder and completes."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    root, src, index = local_index
    (root / "_downloads" / src.filename).unlink()
    index.stall, index.release = threading.Event(), threading.Event()
    code = (
        "import sys; from eo_common import samples; from eo_common.samples import SampleSource\n"
        f"samples.SOURCES = (SampleSource(**{dict(vars(src))!r}),)\n"
        f"samples.fetch({str(root)!r}, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    try:
        assert index.stall.wait(60), "the fetch never started downloading"
        deadline = time.monotonic() + 10
        while not list((root / "_downloads").glob(f".dl-{proc.pid}-*/{src.filename}")):
            assert time.monotonic() < deadline, "no partial download on disk"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        index.release.set()
        if proc.poll() is None:
            proc.kill()
    stale = list((root / "_downloads").glob(".dl-*"))
    assert len(stale) == 1 and not (root / "_downloads" / src.filename).exists()
    assert not (root / "toy").exists()
    index.stall = None
    have = samples.fetch(progress=False)
    assert sample_path("toy") == have["toy"] and not stale[0].exists()
    assert (root / "_downloads" / src.filename).read_bytes() == index.payload


def test_unknown_key_is_a_clear_error(local_source):
    with pytest.raises(ValueError, match="unknown sample set"):
        samples.fetch(keys=["nope"], progress=False)


def test_sources_match_the_documented_hashes():
    by_key = {s.key: s for s in samples.SOURCES}
    assert by_key["benv2_mock"].sha256.startswith("54e8c2424c55")
    assert by_key["s2_scene"].sha256 == by_key["landsat8_scene"].sha256  # one sdist, two sets
    assert all(len(s.sha256) == 64 for s in samples.SOURCES)


@pytest.mark.samples
def test_benv2_lmdb_real_sample():
    require_samples("benv2_mock")
    patches = list(read_benv2_lmdb())
    assert len(patches) == 24
    assert sorted({p.split for p in patches}) == ["test", "train", "validation"]
    assert {s: sum(p.split == s for p in patches) for s in ("train", "validation", "test")} == {
        "train": 8,
        "validation": 8,
        "test": 8,
    }
    for p in patches:
        assert p.s1.dtype == np.float32 and p.s1.shape == (2, 120, 120)
        assert p.s1.min() < -5 and not np.allclose(p.s1, np.round(p.s1))  # real dB, not integers
        assert set(p.s2) == set(benv2.BENV2_S2_BANDS) and "B10" not in p.s2
        assert p.s2["B02"].shape == (120, 120) and p.s2["B05"].shape == (60, 60)
        assert p.s2["B01"].shape == (20, 20) and p.s2["B02"].dtype == np.uint16
    assert sum(p.snow for p in patches) == 3 and sum(p.cloud_or_shadow for p in patches) == 3
    assert len(list(read_benv2_lmdb(split="test"))) == 8


@pytest.mark.samples
def test_benv1_tile_origin_matches_its_own_patches():
    require_samples("benv1_example")
    origins = benv2.benv1_tile_origins()
    assert origins["33UUP"] == (32633, 300000.0, 5400000.0)
    # tile 29UPU has two example patches: both must give the same origin (consistency of the rule)
    import rasterio

    root = sample_path("benv1_example")
    for name in (
        "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85",
        "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55",
    ):
        col, row = map(int, name.rsplit("_", 2)[1:])
        with rasterio.open(root / "BigEarthNet-S1-Example" / name / f"{name}_VV.tif") as ds:
            epsg, x0, y0 = origins["29UPU"]
            assert (ds.transform.c, ds.transform.f) == (x0 + 1200 * col, y0 - 1200 * row)


@pytest.mark.samples
def test_export_benv2_geotiff_layout(tmp_path):
    require_samples("benv2_mock", "benv1_example")
    pytest.importorskip("eo_common.raster")
    import pandas as pd
    import rasterio

    dest = export_benv2_geotiff_layout(tmp_path / "BENv2")
    md = pd.read_parquet(dest / "metadata.parquet")
    assert len(md) == 24
    originals = {p.patch_id: p for p in read_benv2_lmdb()}
    for row in md.itertuples():
        p = originals[row.patch_id]
        s2_dir = dest / "BigEarthNet-S2" / p.s2_product / p.patch_id
        assert len(list(s2_dir.glob("*.tif"))) == 12
        with rasterio.open(s2_dir / f"{p.patch_id}_B05.tif") as ds:
            assert ds.shape == (60, 60) and ds.dtypes[0] == "uint16"
            np.testing.assert_array_equal(ds.read(1), p.s2["B05"])
            if row.georeferenced:
                assert ds.crs.to_epsg() == 32633 and ds.transform.a == 20.0
        vv = dest / "BigEarthNet-S1" / p.s1_product / p.s1_name / f"{p.s1_name}_VV.tif"
        with rasterio.open(vv) as ds:
            assert ds.dtypes[0] == "float32"
            np.testing.assert_array_equal(ds.read(1), p.s1[0])
    # the Austrian tile 33UUP is anchored by a georeferenced v1 example patch; 35VNJ is not
    tiles = md["patch_id"].str.extract(r"_T(\d{2}[A-Z]{3})_")[0]
    assert (md["georeferenced"] == (tiles == "33UUP")).all() and md["georeferenced"].sum() == 21
