"""The demo plug-in interface: each package registers ``run_demo`` in the ``eolab.demos`` group.

``eo_common`` discovers demos through entry points only, so it never imports a sibling package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Protocol

__all__ = ["DemoResult", "DemoFunction", "discover_demos", "DEMO_GROUP"]

DEMO_GROUP = "eolab.demos"


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


def discover_demos() -> dict[str, EntryPoint]:
    """Registered demos by name (sorted), without importing them."""
    return {ep.name: ep for ep in sorted(entry_points(group=DEMO_GROUP), key=lambda e: e.name)}
