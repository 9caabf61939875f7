"""cr-ablate's configuration: cr-train's plus the ablation group, and the ``cloud_removal:ablation``
sweep preset it runs (variants of the base configuration, read from ``sweeps/ablation.yaml``).

No torch import (as :mod:`cloud_removal.config`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eo_common.config import opt

from .config import CRTrainConfig

__all__ = [
    "AblateOptions",
    "CRAblateConfig",
    "ABLATIONS",
    "ABLATION_BASE",
    "ABLATION_PRESET",
    "ablation_preset",
    "DEFAULT_ABLATIONS",
    "ABLATE_METRICS",
]

# ------------------------------------------------------------------------------------ cr-ablate
#: the sweep preset ``cloud_removal:ablation`` that cr-ablate runs (its base and its variants)
ABLATION_PRESET = Path(__file__).resolve().parent / "sweeps" / "ablation.yaml"


@functools.cache
def ablation_preset() -> dict[str, Any]:
    """The ``cloud_removal:ablation`` sweep file as a mapping (read once; YAML, no torch)."""
    import yaml

    return yaml.safe_load(ABLATION_PRESET.read_text(encoding="utf-8"))


#: named variants: overrides of ``model.*`` / ``loss.*`` fields of the base configuration (the
#: ``variants`` of the ``cloud_removal:ablation`` preset, in its order)
ABLATIONS: dict[str, dict[str, object]] = {
    str(name): dict(values or {}) for name, values in ablation_preset()["variants"].items()
}
#: the base of every variant: cr-ablate's defaults (the preset's ``base``, all enhancements on)
ABLATION_BASE: dict[str, object] = dict(ablation_preset()["base"])
DEFAULT_ABLATIONS: tuple[str, ...] = (
    "full", "no_spectral_attention", "no_cross_attn", "no_sar_gating", "no_confidence",
    "no_multi_scale", "no_groupnorm",
)  # fmt: skip


@dataclass
class AblateOptions:
    """ablate: which variants of the base configuration run, and with how many seeds."""

    configs: list[str] = opt(
        help=f"variants to run, from: {', '.join(ABLATIONS)}",
        factory=lambda: list(DEFAULT_ABLATIONS),
        resumable=True,
    )
    seeds: int = opt(
        1,
        help="seeds per variant: run.seed, run.seed+1, ... (mean ± sd when > 1)",
        min=1,
        resumable=True,
    )
    sweep_workers: int = opt(
        1,
        help="sweep worker processes running the variants side by side (eolab sweep --workers); "
        "on CPU one per free core with --threads 1",
        min=1,
        identity=False,
        resumable=True,
    )

    def check(self) -> list[str]:
        unknown = [c for c in self.configs if c not in ABLATIONS]
        if unknown:
            return [f"configs: unknown variant(s) {unknown}; choose from {list(ABLATIONS)}"]
        if not self.configs:
            return ["configs: name at least one variant"]
        return []


@dataclass
class CRAblateConfig(CRTrainConfig):
    """cr-train's configuration (the shared base) plus the ablation's own group."""

    ablate: AblateOptions = field(default_factory=AblateOptions)


#: cr-ablate's ``summary.json`` metrics: each variant's validation PSNR, mean over its seeds
ABLATE_METRICS: tuple[str, ...] = tuple(f"{name}/val_psnr" for name in ABLATIONS)
