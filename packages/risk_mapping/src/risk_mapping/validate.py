"""``risk-validate-config``: the config layer's validation plus the checks that open the inputs."""

from __future__ import annotations

from typing import Any

from eo_common.errors import ConfigError

from risk_mapping.config import ValidateConfig

__all__ = ["validate"]


def validate(cfg: ValidateConfig) -> dict[str, Any]:
    """Report every problem the inputs have (the config's own fields were checked while parsing).

    Returns ``{"valid": True, ...}``; raises :class:`ConfigError` listing every problem otherwise.
    """
    from risk_mapping.sources import check_inputs

    rasters = cfg.open_rasters and cfg.file_check
    problems = check_inputs(cfg, rasters=rasters, encoder=True)
    if problems:
        raise ConfigError(problems)
    return {
        "valid": True,
        "checked": "config fields" + (", input rasters" if rasters else "") + ", encoder",
        "output_dir": str(cfg.run_dir),
    }
