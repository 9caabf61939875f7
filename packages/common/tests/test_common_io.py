"""Atomic writes and the resumable-work manifest."""

from __future__ import annotations

import json

import pytest
from eo_common.io import Manifest, atomic_save_json, atomic_write, git_commit, package_versions


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target, "w") as f:
        f.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half of the second")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"  # the old file survives
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temp file left behind


def test_atomic_write_rejects_append_mode(tmp_path):
    with pytest.raises(ValueError, match="modes"), atomic_write(tmp_path / "x", "a"):
        pass


def test_atomic_save_json_handles_numpy_and_paths(tmp_path):
    import numpy as np

    out = atomic_save_json(
        {"a": np.float32(1.5), "p": tmp_path, "v": np.arange(3)}, tmp_path / "x.json"
    )
    assert json.loads(out.read_text()) == {"a": 1.5, "p": str(tmp_path), "v": [0, 1, 2]}


def test_manifest_survives_a_torn_last_line(tmp_path):
    m = Manifest(tmp_path / "manifest.jsonl")
    m.mark_done("a", seconds=1.0)
    m.mark_done("b")
    with open(m.path, "a") as f:
        f.write('{"id": "c", "sec')  # crash in the middle of an append
    fresh = Manifest(m.path)
    assert fresh.done_ids() == {"a", "b"}
    fresh.mark_done("d")  # must start on a new line, not glue onto the torn one
    assert Manifest(m.path).done_ids() == {"a", "b", "d"}
    assert "d" in fresh and "c" not in fresh and len(fresh) == 3
    assert [r["id"] for r in fresh.records()] == ["a", "b", "d"]


def test_manifest_of_missing_file_is_empty(tmp_path):
    assert Manifest(tmp_path / "none.jsonl").done_ids() == set()


def test_provenance_helpers():
    versions = package_versions(["numpy", "definitely-not-installed-xyz"])
    assert "numpy" in versions and "definitely-not-installed-xyz" not in versions
    commit = git_commit()
    assert commit is None or len(commit.split("-")[0]) == 40
