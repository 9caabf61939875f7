"""GeoTIFF I/O and tiled processing of rasters larger than memory.

Everything here works on channels-first arrays ``(C, H, W)`` and keeps the georeference (CRS,
affine transform, nodata) next to the pixels, so outputs open in QGIS on top of their inputs.

Reading and writing
    :func:`read_raster` reads all or chosen 1-based bands, optionally a window (the returned
    transform is then the window's own transform). :func:`write_raster` writes atomically (a
    temporary file beside the target, renamed when complete), DEFLATE-compressed, tiled 256 x 256 when
    the raster is at least one block in each direction, with band descriptions as band names.

Errors
    Every problem with a file raises :class:`RasterError` (a :class:`ValueError`) whose message starts
    with the file path: a missing file (:class:`RasterNotFoundError`, also a
    :class:`FileNotFoundError`), a file GDAL cannot open, a wrong band count, a window outside the
    raster, grids that differ (:func:`check_same_grid` names both files and what differs), and an
    all-nodata tile (:func:`check_not_all_nodata`).

NaN handling
    NaN is read and written as is (never silently replaced). Wherever this module decides whether a
    pixel is *missing* (:func:`missing_mask`, :func:`check_not_all_nodata`, the nodata mask of
    :func:`sliding_window_predict`), a NaN counts as missing exactly like the nodata value does.

Tiling and blending
    :func:`tile_windows` lays tiles of ``tile_size`` with ``overlap`` pixels between neighbours; the
    last tile of each row and column is shifted inwards so that it ends at the border, so every pixel is
    covered and no padding is needed when the raster is at least one tile large (``stretch``: the last
    tiles stretch to the border instead, :func:`tile_spans`, fewer pixels computed twice). Overlapping
    predictions are blended with weights that ramp up over the overlap (:func:`blend_weights`,
    linear or cosine); the ramps of two neighbours are complementary, so the weights sum to one and a
    function that returns its input comes back unchanged. :func:`sliding_window_predict` streams a
    GeoTIFF through a prediction function a few tile rows at a time, ``N`` tiles per call when the
    function takes a batch (``batch_size``, ``"auto"`` from the free GPU memory;
    :func:`torch_batch_predictor` wraps a torch module); :func:`predict_array_tiled` does the same for
    an in-memory array.
"""

from .batching import resolve_batch_size, torch_batch_predictor
from .classmap import ClassInfo, read_class_names, write_class_map
from .cog import finalize_geotiff
from .files import RasterError, RasterNotFoundError, is_gdal_path
from .io import (
    Raster,
    check_not_all_nodata,
    check_same_grid,
    missing_mask,
    read_raster,
    write_raster,
)
from .predict import predict_array_tiled, sliding_window_predict
from .stack import RESAMPLING_METHODS, stack_bands
from .tiles import (
    blend_weights,
    iter_tiles,
    padded_tile_size,
    tile_offsets,
    tile_spans,
    tile_windows,
)

__all__ = [
    "RasterError",
    "RasterNotFoundError",
    "Raster",
    "read_raster",
    "write_raster",
    "check_same_grid",
    "check_not_all_nodata",
    "missing_mask",
    "stack_bands",
    "tile_windows",
    "tile_offsets",
    "tile_spans",
    "padded_tile_size",
    "blend_weights",
    "sliding_window_predict",
    "predict_array_tiled",
    "resolve_batch_size",
    "torch_batch_predictor",
    "iter_tiles",
    "RESAMPLING_METHODS",
    "ClassInfo",
    "write_class_map",
    "read_class_names",
    "finalize_geotiff",
    "is_gdal_path",
]
