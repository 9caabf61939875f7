"""``eolab info``: the Python, torch/CUDA, library and GDAL versions, eolab packages and sample sets."""

from __future__ import annotations

import platform
import sys

__all__ = ["EOLAB_PACKAGES", "info_lines", "print_info"]

EOLAB_PACKAGES = ("eo-common", "cloud-removal", "gac-pipeline", "risk-mapping", "glacier-seg")
_LIBRARIES = (
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
)


def info_lines() -> list[str]:
    """The lines ``eolab info`` prints: Python, torch/CUDA, key libraries, GDAL, eolab packages."""
    from .demos import discover_demos
    from .io import package_versions
    from .samples import SOURCES, data_root, have_samples

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
    for name, ver in package_versions(_LIBRARIES).items():
        lines.append(f"{name:<13} {ver}")
    try:
        import rasterio

        lines.append(f"GDAL          {rasterio.__gdal_version__}")
    except ImportError:
        pass
    installed = package_versions(EOLAB_PACKAGES)
    lines.append(
        "eolab packages: "
        + ", ".join(
            f"{n} {installed[n]}" if n in installed else f"{n} (not installed)"
            for n in EOLAB_PACKAGES
        )
    )
    demos = discover_demos()
    lines.append("demos:        " + (", ".join(demos) if demos else "none registered"))
    present = [s.key for s in SOURCES if have_samples(s.key)]
    lines.append(
        f"sample data   {data_root()} ({len(present)}/{len(SOURCES)} sets: "
        f"{', '.join(present) or 'none; run `eolab samples fetch`'})"
    )
    return lines


def print_info(cfg: object = None) -> int:
    """The work of ``eolab info``: print :func:`info_lines`; exit status 0."""
    print("\n".join(info_lines()))
    return 0
