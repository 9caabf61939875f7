"""The demo plug-ins and ``eolab demo``'s report: each package registers ``run_demo`` in ``eolab.demos``.

``eo_common`` discovers demos through entry points only, so it never imports a sibling package.

:func:`run_demos` runs the registered demos (or some of them) and writes ``REPORT.md`` and
``report.json`` into the output folder. A report already there is *merged into*, never replaced: each
demo owns one section (in ``REPORT.md`` between ``<!-- eolab-demo: NAME -->`` and
``<!-- /eolab-demo -->``, in ``report.json`` under ``demos.NAME``), and a run replaces the sections of
the demos it ran and keeps every other one. So ``eolab demo --only glacier_seg`` after a full
``eolab demo`` updates the glacier section and leaves the three others as they were.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DEMO_GROUP",
    "EXPECTED_DEMOS",
    "DemoResult",
    "DemoFunction",
    "DemoFailures",
    "discover_demos",
    "run_demos",
    "read_report_sections",
    "REPORT_NAME",
    "REPORT_JSON_NAME",
]

DEMO_GROUP = "eolab.demos"
#: the demos of the four experiment packages; one that is not installed gets a note in the report
EXPECTED_DEMOS = ("cloud_removal", "gac_pipeline", "risk_mapping", "glacier_seg")
REPORT_NAME = "REPORT.md"
REPORT_JSON_NAME = "report.json"
REPORT_SCHEMA = "eolab.demo-report/2"

_SECTION = re.compile(
    r"^<!-- eolab-demo: (?P<name>[\w.-]+) -->\n(?P<body>.*?)^<!-- /eolab-demo -->$", re.M | re.S
)
# REPORT.md of the first release (no markers): sections start with "## ", and name their demo in
# "*Package `NAME`; ran ...*" (finished demos) or in the heading (failed and missing ones).
_OLD_PACKAGE_LINE = re.compile(r"^\*Package `(?P<name>[\w.-]+)`; ran", re.M)
_OLD_HEADING = re.compile(r"^## (?P<name>[\w.-]+)\n\n(The demo failed|This package has no)", re.M)


@dataclass
class DemoResult:
    """What a package demo hands back to ``eolab demo`` for the report.

    Attributes:
        title: a heading for the package's section of ``REPORT.md``.
        summary_md: markdown paragraphs/tables; figures are referenced by the report itself.
        figures: PNG paths written under the demo's ``out_dir``.
        metrics: flat-ish dict of the measured numbers (also stored in ``report.json``).
    """

    title: str
    summary_md: str
    figures: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class DemoFunction(Protocol):
    def __call__(self, out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult: ...


class DemoFailures(Exception):
    """One or more demos raised; the report (with their tracebacks) was written all the same.

    Attributes:
        names: the demos that failed.
        report: the ``REPORT.md`` that describes them.
    """

    def __init__(self, names: list[str], report: Path):
        self.names = list(names)
        self.report = report
        super().__init__(f"{len(names)} demo(s) failed: {names} (see {report})")


def discover_demos() -> dict[str, EntryPoint]:
    """Registered demos by name (sorted), without importing them."""
    return {ep.name: ep for ep in sorted(entry_points(group=DEMO_GROUP), key=lambda e: e.name)}


# ---------------------------------------------------------------------------------- report pieces
def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _section_md(
    name: str, result: DemoResult | None, error: str | None, seconds: float, out: Path
) -> str:
    if error is not None:
        return (
            f"## {name}\n\nThe demo failed after {seconds:.0f} s:\n\n```\n{error.rstrip()}\n```\n"
        )
    assert result is not None
    parts = [
        f"## {result.title}\n",
        f"*Package `{name}`; ran {seconds:.0f} s.*\n",
        result.summary_md.strip(),
        "",
    ]
    for fig in result.figures:
        path = Path(fig).resolve()
        rel = path.relative_to(out.resolve()) if path.is_relative_to(out.resolve()) else Path(fig)
        parts.append(f"![{Path(fig).stem}]({rel.as_posix()})\n")
    return "\n".join(parts)


def _missing_md(name: str) -> str:
    return (
        f"## {name}\n\nThis package has no registered demo yet "
        f"(no `eolab.demos` entry point could be loaded).\n"
    )


def read_report_sections(text: str) -> dict[str, str]:
    """``{demo name: its markdown section}`` of a ``REPORT.md`` (this release's or the first's).

    Example:
        >>> text = "# r\\n\\n<!-- eolab-demo: a -->\\n## A\\n\\nok\\n<!-- /eolab-demo -->\\n"
        >>> read_report_sections(text)
        {'a': '## A\\n\\nok\\n'}
    """
    sections = {m.group("name"): m.group("body") for m in _SECTION.finditer(text)}
    if sections or "<!-- eolab-demo:" in text:
        return sections
    # a report of the first release: split at the "## " headings and find each one's demo
    chunks = re.split(r"^(?=## )", text, flags=re.M)[1:]
    for chunk in chunks:
        match = _OLD_PACKAGE_LINE.search(chunk) or _OLD_HEADING.match(chunk)
        if match:
            sections[match.group("name")] = chunk.rstrip() + "\n"
    return sections


def _read_previous(out: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Sections of the ``REPORT.md`` and demo entries of the ``report.json`` already in ``out``."""
    sections: dict[str, str] = {}
    entries: dict[str, dict[str, Any]] = {}
    report = out / REPORT_NAME
    if report.is_file():
        sections = read_report_sections(report.read_text(encoding="utf-8"))
    data_file = out / REPORT_JSON_NAME
    if data_file.is_file():
        try:
            data = json.loads(data_file.read_text(encoding="utf-8"))
        except ValueError:
            data = {}
        demos = data.get("demos") if isinstance(data, dict) else None
        if isinstance(demos, dict):
            entries = {k: v for k, v in demos.items() if isinstance(v, dict)}
    return sections, entries


def _status(entry: Mapping[str, Any]) -> str:
    if entry.get("missing"):
        return "no demo"
    return "ok" if entry.get("ok") else "FAILED"


def _write_report(
    out: Path, sections: dict[str, str], entries: dict[str, dict[str, Any]], order: Iterable[str]
) -> Path:
    from .io import atomic_save_json, atomic_write, package_versions

    names = list(dict.fromkeys([*order, *sorted(sections), *sorted(entries)]))
    names = [n for n in names if n in sections or n in entries]
    header = [
        "# eolab demo report\n",
        f"Updated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}). Each demo's section is replaced only "
        "when that demo runs again (`eolab demo --only NAME`); the table says when each ran.\n",
        "| demo | status | seconds | finished (UTC) | seed | budget (s) | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        e = entries.get(name, {})
        commit = str(e.get("commit") or "")[:12]
        header.append(
            f"| {name} | {_status(e)} | {e.get('seconds', '')} | {e.get('finished', '')} "
            f"| {e.get('seed', '')} | {e.get('budget_s', '')} | {commit} |"
        )
    body = [
        f"<!-- eolab-demo: {name} -->\n{sections[name].rstrip()}\n<!-- /eolab-demo -->"
        for name in names
        if name in sections
    ]
    report = out / REPORT_NAME
    with atomic_write(report, "w") as f:
        f.write("\n".join(header) + "\n\n" + "\n\n".join(body) + "\n")
    ran = [e.get("seconds") or 0 for e in entries.values() if not e.get("missing")]
    atomic_save_json(
        {
            "schema": REPORT_SCHEMA,
            "updated": _now(),
            "total_seconds": round(sum(float(s) for s in ran), 1),
            "demos": {n: entries[n] for n in names if n in entries},
            "versions": package_versions(),
        },
        out / REPORT_JSON_NAME,
    )
    return report


# ---------------------------------------------------------------------------------- the runner
def run_demos(
    out: str | Path,
    *,
    only: Iterable[str] | None = None,
    budget_s: float = 180.0,
    seed: int = 0,
    fetch: bool = True,
) -> Path:
    """Run the registered demos (or ``only`` those) and merge their sections into ``out/REPORT.md``.

    The names are checked and the folder probed for writability before anything runs. The report
    is rewritten (atomically) after each demo, so a run killed half-way keeps the sections of the
    demos that finished. A demo that raises is reported as failed in its section (with the
    traceback) while the other demos still run; then :class:`DemoFailures` is raised.

    Args:
        out: the output folder; each demo writes into ``out/<name>/``.
        only: entry-point names to run (default: every registered demo).
        budget_s: wall-clock training budget per demo (s).
        seed: the seed handed to every demo.
        fetch: fetch the real sample data first (``eolab samples fetch``).

    Returns:
        The path of ``REPORT.md``.

    Raises:
        eo_common.errors.ConfigError: an unknown demo name.
        eo_common.errors.RunFolderError: ``out`` cannot be written.
        DemoFailures: one or more demos raised.
    """
    from .errors import ConfigError, check_writable_dir
    from .io import git_commit

    out = Path(out)
    demos = discover_demos()
    names = list(demos)
    wanted = list(only or [])
    if wanted:
        unknown = sorted(set(wanted) - set(demos))
        if unknown:
            raise ConfigError(f"only: unknown demo(s) {unknown}; registered: {names}")
        names = [n for n in names if n in wanted]
    check_writable_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    if fetch:
        from .samples import fetch as fetch_samples

        fetch_samples(progress=True)

    sections, entries = _read_previous(out)
    commit = git_commit()
    failures: list[str] = []
    order = [*demos, *EXPECTED_DEMOS]
    for name in names:
        print(f"\n=== demo {name} (budget {budget_s:.0f} s) ===", flush=True)
        t0 = time.perf_counter()
        result, error = None, None
        try:
            fn = demos[name].load()
            result = fn(out / name, seed=seed, budget_s=budget_s)
        except Exception:  # noqa: BLE001 - a failing demo must not hide the others
            error = traceback.format_exc()
            failures.append(name)
            print(error, file=sys.stderr)
        seconds = time.perf_counter() - t0
        sections[name] = _section_md(name, result, error, seconds, out)
        entries[name] = {
            "seconds": round(seconds, 1),
            "ok": error is None,
            "metrics": result.metrics if result else {},
            "finished": _now(),
            "seed": seed,
            "budget_s": budget_s,
            "commit": commit,
        }
        _write_report(out, sections, entries, order)  # a kill later keeps this demo's result
    for name in EXPECTED_DEMOS:
        if name not in demos and name not in sections:
            sections[name] = _missing_md(name)
            entries[name] = {"missing": True}
    report = _write_report(out, sections, entries, order)
    print(f"\nReport: {report}")
    if failures:
        raise DemoFailures(failures, report)
    return report
