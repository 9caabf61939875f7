"""Class maps that GIS software shows coloured and labelled on open (colour table, category names,
QGIS style), written as Cloud-Optimised GeoTIFFs with mode-resampled overviews."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from .io import PathLike, RasterError, _open, write_raster

__all__ = ["ClassInfo", "write_class_map", "read_class_names"]


@dataclass(frozen=True)
class ClassInfo:
    """One class of a class map: its value in the raster, its name and its colour (r, g, b)."""

    value: int
    name: str
    color: tuple[int, int, int]


def write_class_map(
    path: PathLike,
    labels: np.ndarray,
    *,
    crs: CRS | str | None,
    transform: Affine,
    classes: Sequence[ClassInfo],
    nodata: int | None = 255,
    description: str = "class",
    cog: bool = True,
) -> Path:
    """Write a class map (one uint8 band) that GIS software shows coloured and labelled on open.

    Written: the COG (or tiled GeoTIFF) with a colour table and ``mode``-resampled overviews, the band
    description, one ``class_<value>=<name>`` metadata item per class; beside it GDAL's ``<file>.aux.xml``
    with the category names (read by GDAL, QGIS, ArcGIS) and a QGIS style ``<stem>.qml`` (paletted
    renderer: colours and labels), which QGIS applies when the layer is opened.

    Args:
        path: destination ``.tif``.
        labels: ``(H, W)`` integer class values (and ``nodata``).
        crs, transform: georeference.
        classes: value, name and colour of every class.
        nodata: the value of pixels without a class (shown transparent), or None.
        description: band description.
        cog: write a Cloud-Optimised GeoTIFF.

    Example:
        >>> risk = [ClassInfo(0, "low", (26, 150, 65)), ClassInfo(1, "medium", (253, 174, 97)),
        ...         ClassInfo(2, "high", (215, 25, 28))]
        >>> write_class_map("risk.tif", labels, crs=crs, transform=t, classes=risk)  # doctest: +SKIP
    """
    from xml.sax.saxutils import quoteattr

    from ..io import atomic_write

    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 2:
        raise RasterError(f"a class map is (H, W), got shape {labels.shape}", path)
    if labels.dtype.kind == "f":
        raise RasterError("class values must be integers, not floats", path)
    values = [c.value for c in classes]
    if len(set(values)) != len(values) or not all(0 <= v <= 254 for v in values):
        raise RasterError(f"class values must be distinct in 0..254, got {values}", path)
    colormap = {c.value: (*c.color, 255) for c in classes}
    if nodata is not None:
        colormap[int(nodata)] = (0, 0, 0, 0)
    path = write_raster(
        path,
        labels.astype(np.uint8)[None],
        crs=crs,
        transform=transform,
        nodata=nodata,
        band_names=[description],
        overview_resampling="mode",
        cog=cog,
        colormap=colormap,
        tags={f"class_{c.value}": c.name for c in classes},
    )
    names = {c.value: c.name for c in classes}
    top = max(values)
    categories = "".join(f"      <Category>{names.get(v, '')}</Category>\n" for v in range(top + 1))
    with atomic_write(Path(f"{path}.aux.xml"), "w") as f:
        f.write(
            '<PAMDataset>\n  <PAMRasterBand band="1">\n'
            f"    <Description>{description}</Description>\n"
            f"    <CategoryNames>\n{categories}    </CategoryNames>\n"
            "  </PAMRasterBand>\n</PAMDataset>\n"
        )
    entries = "".join(
        f'        <paletteEntry value="{c.value}" color="#{c.color[0]:02x}{c.color[1]:02x}'
        f'{c.color[2]:02x}" alpha="255" label={quoteattr(c.name)}/>\n'
        for c in classes
    )
    with atomic_write(path.with_suffix(".qml"), "w") as f:
        f.write(
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28.0" styleCategories="Symbology">\n  <pipe>\n'
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
            f"      <colorPalette>\n{entries}      </colorPalette>\n"
            "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
        )
    return path


def read_class_names(path: PathLike) -> dict[int, str]:
    """``{value: name}`` of a class map written by :func:`write_class_map` (from its metadata)."""
    with _open(path) as src:
        tags = src.tags()
    out = {}
    for key, name in tags.items():
        if key.startswith("class_") and key[6:].isdigit():
            out[int(key[6:])] = name
    return dict(sorted(out.items()))
