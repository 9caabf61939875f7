"""Cross-package rules of the monorepo: layering, package shape, CLIs and demo plug-ins."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
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


@pytest.mark.parametrize("folder", EXPERIMENTS)
def test_package_has_the_full_shape(folder):
    """config.py and cli.py (no torch) beside data, model, task, train, evaluate, predict, demo."""
    src = ROOT / "packages" / folder / "src" / PACKAGES[folder]
    for module in ("config.py", "cli.py", "task.py"):
        assert (src / module).exists(), f"{folder}: missing {module}"
    for module in ("config.py", "cli.py"):
        tree = ast.parse((src / module).read_text(encoding="utf-8"))
        top = {
            (n.module or "").split(".")[0]
            if isinstance(n, ast.ImportFrom)
            else a.name.split(".")[0]
            for n in tree.body
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        }
        heavy = top & {
            "torch",
            "lightning",
            "torchvision",
            "segmentation_models_pytorch",
            "terratorch",
        }
        assert not heavy, f"{folder}/{module} imports {sorted(heavy)} at module level"


def _py_files() -> list[Path]:
    return sorted((ROOT / "packages").glob("*/src/*/**/*.py"))


def test_no_source_file_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _py_files()
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, f"split these files by job: {long}"


def _module_graph(src: Path, name: str) -> dict[str, set[str]]:
    """Module -> the package's own modules it imports at module level."""
    graph: dict[str, set[str]] = {}
    for py in (src / name).rglob("*.py"):
        mod = ".".join(py.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        package = mod if py.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for node in ast.parse(py.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                if target.split(".")[0] == name:
                    deps.add(target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == name}
        graph[mod] = deps
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        if state.get(m) == 1:
            return [*stack, m]
        if state.get(m) == 2 or m not in graph:
            return None
        state[m] = 1
        for d in sorted(graph[m]):
            found = visit(d, [*stack, m])
            if found:
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        found = visit(m, [])
        if found:
            return found
    return None


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_no_import_cycles(folder):
    """Module-level imports between a package's own modules form no cycle."""
    graph = _module_graph(ROOT / "packages" / folder / "src", PACKAGES[folder])
    cycle = _find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize(("script", "target"), _console_scripts(), ids=lambda v: str(v))
def test_help_imports_nothing_heavy(script, target):
    """--help is answered before torch or Lightning is imported (so it comes back in well under 2 s)."""
    module_name, attr = target.split(":")
    code = (
        "import sys, importlib\n"
        f"cmd = getattr(importlib.import_module({module_name!r}), {attr!r})\n"
        "try:\n    cmd(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'rasterio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, f"{script} --help imported {out.stdout.split('HEAVY')[-1]}"


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    graph = _module_graph(ROOT / "packages" / "common" / "src", "eo_common")
    assert "eo_common.raster.io" in graph["eo_common.raster.stack"]
    assert (
        "eo_common.io" in graph["eo_common.runs"] and "eo_common.config" in graph["eo_common.runs"]
    )


def _commands() -> list[tuple[str, object]]:
    from eo_common.command import Command

    out = []
    for script, target in _console_scripts():
        module_name, attr = target.split(":")
        cmd = getattr(importlib.import_module(module_name), attr)
        if isinstance(cmd, Command):
            out.append((script, cmd))
    return out


@pytest.mark.parametrize(("script", "cmd"), _commands(), ids=lambda v: str(getattr(v, "prog", v)))
def test_print_config_round_trips_through_config(script, cmd, tmp_path, capsys, monkeypatch):
    """``X --print_config > a.yaml && X --config a.yaml --print_config`` prints the same YAML."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cmd.parse(["--print_config"])
    assert stop.value.code == 0
    first = capsys.readouterr().out
    assert len(first.splitlines()) > 3, f"{script} printed no config"
    (tmp_path / "a.yaml").write_text(first)
    with pytest.raises(SystemExit):
        cmd.parse(["--config", str(tmp_path / "a.yaml"), "--print_config"])
    assert capsys.readouterr().out == first
