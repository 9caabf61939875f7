"""Cross-package rules of the monorepo: layering, package shape, CLIs and demo plug-ins."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {  # folder -> import name
    "common": "eo_common",
    "cloud_removal": "cloud_removal",
    "gac_pipeline": "gac_pipeline",
    "risk_mapping": "risk_mapping",
    "glacier_seg": "glacier_seg",
}
EXPERIMENTS = [p for p in PACKAGES if p != "common"]


def _imported_top_level_names(src: Path) -> set[str]:
    names: set[str] = set()
    for py in src.rglob("*.py"):
        tree = ast.parse(py.read_text(encoding="utf-8"), filename=str(py))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_packages_never_import_a_sibling(folder):
    """Packages depend on eo_common only; eo_common depends on none of them."""
    own = PACKAGES[folder]
    siblings = {name for f, name in PACKAGES.items() if f not in (folder, "common")}
    imported = _imported_top_level_names(ROOT / "packages" / folder / "src" / own)
    assert not (imported & siblings), (
        f"{own} imports sibling package(s) {sorted(imported & siblings)}"
    )


@pytest.mark.parametrize("folder", EXPERIMENTS)
def test_package_shape(folder):
    """Every experiment package has the same shape (STYLE.md) and a README that says something."""
    src = ROOT / "packages" / folder / "src" / PACKAGES[folder]
    for module in ("data.py", "model.py", "train.py", "evaluate.py", "predict.py", "demo.py"):
        assert (src / module).exists(), f"{folder}: missing {module}"
    readme = ROOT / "packages" / folder / "README.md"
    assert len(readme.read_text(encoding="utf-8").split()) > 100, f"{folder}: README is too thin"
    assert list((ROOT / "packages" / folder / "tests").glob("test_*.py")), f"{folder}: no tests"


def _console_scripts() -> list[tuple[str, str]]:
    out = []
    for folder in PACKAGES:
        meta = tomllib.loads((ROOT / "packages" / folder / "pyproject.toml").read_text())
        out += sorted(meta["project"].get("scripts", {}).items())
    return out


@pytest.mark.parametrize(("script", "target"), _console_scripts(), ids=lambda v: str(v))
def test_every_cli_explains_itself(script, target, capsys, monkeypatch):
    """Each console script resolves, and ``--help`` exits 0 with a description of its flags."""
    module_name, func_name = target.split(":")
    main = getattr(importlib.import_module(module_name), func_name)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    try:
        try:
            code = main(["--help"])  # a CommandGroup returns its status; argparse exits
        except TypeError:  # a main() that reads sys.argv itself
            code = main()
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and len(out.split()) > 20, f"{script} --help says too little"


def test_demos_are_registered_with_the_common_signature():
    demos = {ep.name: ep for ep in entry_points(group="eolab.demos")}
    assert set(demos) == {"cloud_removal", "gac_pipeline", "risk_mapping", "glacier_seg"}
    for name, ep in demos.items():
        fn = ep.load()
        params = inspect.signature(fn).parameters
        assert list(params)[0] == "out_dir", name
        for kw in ("seed", "budget_s"):
            assert kw in params and params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)


def test_lock_installs_from_the_public_registry_only():
    lock = (ROOT / "uv.lock").read_text()
    assert "file://" not in lock and "find-links" not in lock
    assert 'name = "torch"' in lock and 'name = "pydensecrf2"' in lock
    assert '"pydensecrf"' not in lock
