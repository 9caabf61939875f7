"""GLCM texture channels: an exact, vectorised sliding-window grey-level co-occurrence matrix.

scikit-image computes texture per pixel by cutting a ``window x window`` patch around the pixel,
calling :func:`skimage.feature.graycomatrix` on it and reading properties with
:func:`skimage.feature.graycoprops`. That is about a hundred seconds per megapixel. This module
computes the *same numbers* for every pixel at once:

* ``contrast``, ``dissimilarity``, ``homogeneity`` are means over the pixel pairs of a window of a
  function of the pair, so each is one box filter (integral image) over a per-pair map;
* ``correlation`` needs the first and second moments of the pair values, again box filters, done in
  exact integer arithmetic so constant windows give exactly the scikit-image special case (1.0);
* ``ASM`` (and ``energy = sqrt(ASM)``) needs the sum of *squared* co-occurrence counts. The sum of
  squared counts over all codes equals the number of pairs-of-pairs inside the window that share a
  code, so it is a sum over displacements ``delta`` of box filters of the equality map
  ``code(p) == code(p + delta)``. Its cost does not depend on the number of grey levels.

The sums themselves live in :mod:`glacier_seg.glcm_sums`. The image is padded (reflect by default)
by ``window // 2`` so the output has the input's shape; a
pixel whose window lies inside the image (an *interior* pixel) gets exactly scikit-image's value for
that window, the others get scikit-image's value for the window of the padded image.

Example:
    >>> import numpy as np
    >>> from skimage.feature import graycomatrix, graycoprops
    >>> rng = np.random.default_rng(0)
    >>> q = rng.integers(0, 8, size=(16, 16)).astype(np.uint8)
    >>> feats = glcm_features(q, window=5, levels=8, distances=(1,), angles=(0.0,),
    ...                       properties=("contrast",))
    >>> feats.shape                      # (properties, distances, angles, H, W)
    (1, 1, 1, 16, 16)
    >>> glcm = graycomatrix(q[5:10, 5:10], [1], [0.0], levels=8, symmetric=True, normed=True)
    >>> bool(np.isclose(feats[0, 0, 0, 7, 7], graycoprops(glcm, "contrast")[0, 0]))
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from eo_common.io import atomic_write

from glacier_seg.glcm_sums import block_properties

__all__ = [
    "GLCM_PROPERTIES",
    "GLCMConfig",
    "quantize",
    "glcm_offsets",
    "glcm_features",
    "iter_glcm_blocks",
    "default_block_rows",
    "glcm_features_skimage_loop",
    "texture_channels",
    "cached_texture_channels",
]

GLCM_PROPERTIES: tuple[str, ...] = (
    "contrast",
    "dissimilarity",
    "homogeneity",
    "energy",
    "correlation",
    "ASM",
)


@dataclass(frozen=True)
class GLCMConfig:
    """Parameters of the GLCM texture channels (one field per ``--glcm_*`` flag).

    Attributes:
        band: 1-based index of the GlacierHack band to texture (1..5 = Landsat-8 B2, B3, B4, B6,
            B10); default 3 = B4 (red).
        window: odd side of the square window, pixels.
        levels: grey levels after quantisation (2..256).
        distances: pixel-pair distances, pixels.
        angles_deg: pixel-pair angles in degrees (scikit-image convention: offset
            ``(round(sin a * d), round(cos a * d))`` in (row, col)).
        properties: subset of :data:`GLCM_PROPERTIES`; one output channel each.
        symmetric: count (i, j) and (j, i) (scikit-image ``symmetric=True``).
        average_angles: mean over distances and angles (rotation-invariant channels); if False one
            channel per (property, distance, angle).
        clip_percentiles: per-tile percentiles mapped to grey levels 0 and ``levels - 1``.
    """

    band: int = 3
    window: int = 7
    levels: int = 32
    distances: tuple[int, ...] = (1,)
    angles_deg: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
    properties: tuple[str, ...] = ("contrast", "homogeneity")
    symmetric: bool = True
    average_angles: bool = True
    clip_percentiles: tuple[float, float] = field(default=(2.0, 98.0))

    def __post_init__(self) -> None:
        if self.window < 2 or self.window % 2 == 0:
            raise ValueError(f"glcm window must be an odd integer >= 3, got {self.window}")
        if not 2 <= self.levels <= 256:
            raise ValueError(f"glcm levels must be in [2, 256], got {self.levels}")
        if not self.distances or any(d < 1 for d in self.distances):
            raise ValueError(f"glcm distances must be positive integers, got {self.distances}")
        if not self.angles_deg:
            raise ValueError("glcm angles_deg must not be empty")
        bad = [p for p in self.properties if p not in GLCM_PROPERTIES]
        if bad or not self.properties:
            raise ValueError(
                f"glcm properties must be a non-empty subset of {GLCM_PROPERTIES}, got {bad or '()'}"
            )
        for dr, dc in glcm_offsets(self.distances, np.deg2rad(self.angles_deg)):
            if abs(dr) >= self.window or abs(dc) >= self.window:
                raise ValueError(
                    f"glcm distance {max(self.distances)} does not fit in window {self.window}"
                )

    @property
    def num_channels(self) -> int:
        """Number of texture channels this configuration produces."""
        per_prop = 1 if self.average_angles else len(self.distances) * len(self.angles_deg)
        return len(self.properties) * per_prop

    def digest(self) -> str:
        """A short stable hash of the parameters (cache key)."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def quantize(band: np.ndarray, levels: int, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Map a float band to integer grey levels ``0..levels-1`` by a per-tile percentile clip.

    Args:
        band: (H, W) any real dtype; NaNs become level 0.
        levels: number of grey levels.
        low, high: percentiles (in %) mapped to level 0 and ``levels - 1``.

    Returns:
        (H, W) uint8 (uint16 when ``levels > 256`` is impossible here) grey levels.

    Example:
        >>> quantize(np.array([[0.0, 1.0], [2.0, 3.0]]), levels=4, low=0, high=100).tolist()
        [[0, 1], [2, 3]]
    """
    x = np.asarray(band)
    if x.ndim != 2:
        raise ValueError(f"quantize expects a (H, W) band, got shape {x.shape}")
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.uint8)
    values = x[finite].astype(np.float64)  # the one full-size temporary (8 bytes per pixel)
    lo, hi = np.percentile(values, [low, high], overwrite_input=True)
    del values
    scale = (levels - 1) / (hi - lo) if hi > lo else 0.0
    q = np.empty(x.shape, dtype=np.uint8)
    step = default_block_rows(x.shape[1])
    for r0 in range(0, x.shape[0], step):  # float64 temporaries of one block only
        xb = x[r0 : r0 + step].astype(np.float64)
        qb = np.floor((np.clip(xb, lo, hi) - lo) * scale + 0.5)
        qb = np.where(finite[r0 : r0 + step], qb, 0.0)
        q[r0 : r0 + step] = np.clip(qb, 0, levels - 1)
    return q


def glcm_offsets(distances: Sequence[int], angles: Sequence[float]) -> list[tuple[int, int]]:
    """(row, col) pixel offsets of each (distance, angle) pair, as scikit-image computes them.

    scikit-image's ``graycomatrix`` pairs pixel ``(r, c)`` with ``(r + floor(sin(a) * d + 0.5),
    c + floor(cos(a) * d + 0.5))`` (float64). Returned list is ordered distance-major: ``offsets[i * A + j]`` is
    distance ``i``, angle ``j``.

    Example:
        >>> glcm_offsets([1], np.deg2rad([0, 45, 90, 135]))
        [(0, 1), (1, 1), (1, 0), (1, -1)]
    """
    # scikit-image rounds as floor(v + 0.5) in float64 (so sin(30 deg) = 0.49999999999999994 -> 1)
    return [
        (int(np.floor(np.sin(a) * d + 0.5)), int(np.floor(np.cos(a) * d + 0.5)))
        for d in distances
        for a in angles
    ]


def _check_glcm_args(q: np.ndarray, window: int, levels: int, properties: Sequence[str]) -> None:
    if q.ndim != 2:
        raise ValueError(f"glcm_features expects a (H, W) image, got shape {q.shape}")
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"glcm_features expects integer grey levels, got dtype {q.dtype}")
    if q.size and (q.min() < 0 or q.max() >= levels):
        raise ValueError(f"grey levels must lie in [0, {levels}), got [{q.min()}, {q.max()}]")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and positive, got {window}")
    unknown = [p for p in properties if p not in GLCM_PROPERTIES]
    if unknown:
        raise ValueError(f"unknown GLCM properties {unknown}; choose from {GLCM_PROPERTIES}")


def default_block_rows(width: int) -> int:
    """Output rows per block of :func:`glcm_features`: about 2**17 pixels, at least 16 rows.

    A block of that size keeps the per-displacement scratch arrays of the ASM sum (a few hundred
    KiB of ``uint16``) in the CPU cache, which is what makes the time linear in the pixel count.
    """
    return max(16, -(-(2**17) // max(int(width), 1)))


def iter_glcm_blocks(
    image: np.ndarray,
    *,
    window: int,
    levels: int,
    distances: Sequence[int] = (1,),
    angles: Sequence[float] = (0.0,),
    properties: Sequence[str] = GLCM_PROPERTIES,
    symmetric: bool = True,
    pad_mode: str = "reflect",
    block_rows: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`glcm_features` one block of output rows at a time (memory flat with the image height).

    Yields ``(row_start, block)`` with ``block`` float64 of shape
    ``(len(properties), len(distances), len(angles), rows, W)`` for output rows
    ``row_start .. row_start + rows - 1``, top to bottom. Each block is computed from its own rows
    plus ``window // 2`` halo rows on either side, so the values do not depend on ``block_rows``
    (integer sums are exact; the float sums of homogeneity agree to rounding). Working memory is a
    few arrays of one block, independent of the image size.

    Args:
        image, window, levels, distances, angles, properties, symmetric, pad_mode: see
            :func:`glcm_features`.
        block_rows: output rows per block (None: :func:`default_block_rows` of the width).
    """
    q = np.asarray(image)
    _check_glcm_args(q, window, levels, properties)
    offsets = glcm_offsets(distances, angles)
    for dr, dc in offsets:
        if abs(dr) >= window or abs(dc) >= window:
            raise ValueError(f"offset ({dr}, {dc}) does not fit in window {window}")
    height, width = q.shape
    half = window // 2
    step = default_block_rows(width) if block_rows is None else int(block_rows)
    if step < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    grey_t = np.uint8 if levels <= 256 else np.uint16
    qp = np.pad(q.astype(grey_t), half, mode=pad_mode)  # 1 byte per pixel
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        slab = qp[r0 : r1 + 2 * half]
        block = np.empty(
            (len(properties), len(distances), len(angles), r1 - r0, width), dtype=np.float64
        )
        for k, (dr, dc) in enumerate(offsets):
            di, ai = divmod(k, len(angles))
            results = block_properties(slab, dr, dc, window, levels, properties, symmetric)
            for pi, prop in enumerate(properties):
                block[pi, di, ai] = results[prop]
        yield r0, block


def glcm_features(
    image: np.ndarray,
    *,
    window: int,
    levels: int,
    distances: Sequence[int] = (1,),
    angles: Sequence[float] = (0.0,),
    properties: Sequence[str] = GLCM_PROPERTIES,
    symmetric: bool = True,
    pad_mode: str = "reflect",
    block_rows: int | None = None,
) -> np.ndarray:
    """Per-pixel GLCM properties over a sliding ``window``, equal to scikit-image per window.

    For each pixel the value equals ``graycoprops(graycomatrix(win, distances, angles, levels,
    symmetric=symmetric, normed=True), prop)`` where ``win`` is the ``window x window`` patch of
    the ``pad_mode``-padded image centred on the pixel. Computed in blocks of ``block_rows`` output
    rows (:func:`iter_glcm_blocks`): the working memory beyond the returned array does not grow with
    the image, and the time is linear in the pixel count.

    Args:
        image: (H, W) integer grey levels in ``[0, levels)``.
        window: odd window side, pixels.
        levels: number of grey levels.
        distances: pair distances in pixels.
        angles: pair angles in **radians** (as scikit-image).
        properties: names from :data:`GLCM_PROPERTIES`.
        symmetric: scikit-image's ``symmetric`` flag.
        pad_mode: :func:`numpy.pad` mode used to give border pixels a full window.
        block_rows: output rows per block (None: :func:`default_block_rows`).

    Returns:
        float64 array (len(properties), len(distances), len(angles), H, W).

    Raises:
        ValueError: bad shape, grey levels outside ``[0, levels)``, unknown property, or an offset
            that does not fit in the window.
    """
    q = np.asarray(image)
    _check_glcm_args(q, window, levels, properties)
    height, width = q.shape
    out = np.empty((len(properties), len(distances), len(angles), height, width), dtype=np.float64)
    for r0, block in iter_glcm_blocks(
        q,
        window=window,
        levels=levels,
        distances=distances,
        angles=angles,
        properties=properties,
        symmetric=symmetric,
        pad_mode=pad_mode,
        block_rows=block_rows,
    ):
        out[..., r0 : r0 + block.shape[-2], :] = block
    return out


def glcm_features_skimage_loop(
    image: np.ndarray,
    *,
    window: int,
    levels: int,
    distances: Sequence[int] = (1,),
    angles: Sequence[float] = (0.0,),
    properties: Sequence[str] = GLCM_PROPERTIES,
    symmetric: bool = True,
    pad_mode: str = "reflect",
    pixels: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """The slow reference: scikit-image ``graycomatrix``/``graycoprops`` on every window.

    Same arguments and output layout as :func:`glcm_features`; with ``pixels`` only those
    (row, col) positions are computed and the result is (P, D, A, len(pixels)). Used by the tests
    and by ``benchmarks/glacier_glcm.py``.
    """
    from skimage.feature import graycomatrix, graycoprops

    half = window // 2
    qp = np.pad(np.asarray(image), half, mode=pad_mode).astype(
        np.uint8 if levels <= 256 else np.uint16
    )
    height, width = np.asarray(image).shape
    coords = pixels if pixels is not None else [(r, c) for r in range(height) for c in range(width)]
    out = np.empty((len(properties), len(distances), len(angles), len(coords)), dtype=np.float64)
    for n, (r, c) in enumerate(coords):
        glcm = graycomatrix(
            qp[r : r + window, c : c + window],
            distances,
            angles,
            levels=levels,
            symmetric=symmetric,
            normed=True,
        )
        for pi, prop in enumerate(properties):
            out[pi, :, :, n] = graycoprops(glcm, prop)
    if pixels is None:
        return out.reshape(len(properties), len(distances), len(angles), height, width)
    return out


def texture_channels(band: np.ndarray, cfg: GLCMConfig) -> np.ndarray:
    """Quantise one band and compute the configured GLCM channels.

    Args:
        band: (H, W) float band (raw values; quantised per tile with ``cfg.clip_percentiles``).
        cfg: the texture parameters.

    Returns:
        (cfg.num_channels, H, W) float32: property-major, then (distance, angle) when not averaged.
    """
    q = quantize(band, cfg.levels, *cfg.clip_percentiles)
    out = np.empty((cfg.num_channels, *q.shape), dtype=np.float32)
    for r0, block in iter_glcm_blocks(
        q,
        window=cfg.window,
        levels=cfg.levels,
        distances=cfg.distances,
        angles=np.deg2rad(cfg.angles_deg),
        properties=cfg.properties,
        symmetric=cfg.symmetric,
    ):
        if cfg.average_angles:
            block = block.mean(axis=(1, 2))
        out[:, r0 : r0 + block.shape[-2]] = block.reshape(-1, *block.shape[-2:])
    return out


def cached_texture_channels(
    band: np.ndarray, cfg: GLCMConfig, cache_dir: str | os.PathLike | None, key: str
) -> np.ndarray:
    """:func:`texture_channels` with an on-disk cache per tile ``key`` and parameter set.

    The file is ``cache_dir/<key>__<cfg.digest()>.npy``, written atomically; ``key`` should
    identify the tile *content* (the dataset uses tile id + band file size and mtime), so a changed
    file or changed parameters never reuse a stale cache. ``cache_dir=None`` disables caching.
    """
    if cache_dir is None:
        return texture_channels(band, cfg)
    path = Path(cache_dir) / f"{key}__{cfg.digest()}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape == (cfg.num_channels, *band.shape):
            return cached
    feats = texture_channels(band, cfg)
    with atomic_write(path, "wb") as f:
        np.save(f, feats)
    return feats
