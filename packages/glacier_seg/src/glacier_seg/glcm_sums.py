"""The sums behind :mod:`glacier_seg.texture`: box filters over pixel pairs and the exact sum of
squared co-occurrence counts, for one block of rows and one pixel offset.

Everything works on integer grey levels and is exact (integer sums in wrapping unsigned
arithmetic whose final values fit); :func:`block_properties` turns the sums into the six
scikit-image GLCM properties of every window of a block. See :mod:`glacier_seg.texture` for the
method and the public API.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["box_sum", "pair_views", "shift_add", "sum_squared_counts", "block_properties"]


def box_sum(a: np.ndarray, h: int, w: int, acc: type | None = None) -> np.ndarray:
    """Sums of every ``h x w`` box of a (H, W) array -> (H - h + 1, W - w + 1).

    Integer input is summed exactly in ``acc`` (int64 unless a smaller type is known to suffice).
    """
    if acc is None:
        acc = np.int64 if np.issubdtype(a.dtype, np.integer) or a.dtype == bool else np.float64
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=acc)
    np.cumsum(a, axis=0, dtype=acc, out=s[1:, 1:])
    np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
    return s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]


def pair_views(m: np.ndarray, dr: int, dc: int) -> tuple[np.ndarray, np.ndarray]:
    """Views (first, second) over all positions p of ``m`` with ``p + (dr, dc)`` inside ``m``."""
    h, w = m.shape
    r0, r1 = max(0, -dr), h - max(0, dr)
    c0, c1 = max(0, -dc), w - max(0, dc)
    return m[r0:r1, c0:c1], m[r0 + dr : r1 + dr, c0 + dc : c1 + dc]


def shift_add(dst: np.ndarray, src: np.ndarray, offset: int, sign: int) -> None:
    """``dst[k + offset] += sign * src[k]`` (1-D, where both exist; unsigned integers wrap)."""
    lo, hi = max(0, -offset), min(src.size, dst.size - offset)
    if hi > lo:
        view = dst[lo + offset : hi + offset]
        (np.add if sign > 0 else np.subtract)(view, src[lo:hi], out=view)


def sum_squared_counts(
    x: np.ndarray, y: np.ndarray, levels: int, symmetric: bool, box_h: int, box_w: int
) -> np.ndarray:
    """For every ``box_h x box_w`` box: ``sum_{p, q in box} [codes_p == codes_q] * weight_p``.

    The pair at ``p`` has grey levels ``(x_p, y_p)``; its code is ``x_p * levels + y_p`` with weight 1,
    or with ``symmetric`` ``min * levels + max`` with weight 2 on the diagonal (``x_p == y_p``) and 1
    elsewhere. The sum equals ``sum_k count_k**2`` (weighted) of the codes inside each box: the sum
    of squared GLCM counts, symmetric ones halved. It is a sum over
    displacements ``delta = q - p`` of box sums of the equality map ``E_delta(p) = [codes_p ==
    codes_{p + delta}] * weight_p`` (``delta`` and ``-delta`` give the same total, so half of them
    are summed twice). Each box sum is the four-corner difference of a 2-D prefix sum; prefix sums
    are linear, so the corners of *every* ``delta`` are added, shifted, into one canvas and one 2-D
    prefix sum of the canvas gives all boxes at once. The corners factor into a column part that
    depends on ``delta``'s column and a row part that depends on its row: ``delta`` and its mirror
    ``(dy, -dx)`` (same box) are summed, added at their two column corners into a row buffer, and
    each row of displacements adds that buffer at its two row corners into the canvas.

    Every array has the same row pitch (the width plus ``box_w`` spare columns), so a 2-D shift is a
    1-D shift of the flattened array and every pass is one contiguous numpy operation (about 4x
    faster than strided 2-D slices). The spare columns hold a code no pixel has and weight 0, so a
    pair that runs off the right edge compares unequal or weighs nothing, and whatever the shifts
    move into the spare columns stays right of the output columns, where the final row prefix sums
    never look. Cost: about ``window**2`` passes over the block, independent of the number of levels.

    Arithmetic is modular: the canvas is ``uint16`` (unless a box sum could exceed it) and wraps
    modulo ``2**16``; intermediate values may wrap, the final sums fit, so they are exact. The
    per-displacement passes run on bytes: an equality map is written as ``bool`` and weighted in
    ``int8`` (a displacement and its mirror weigh at most 4 together), and the row buffer of one row
    of displacements is ``int8`` while its true value at any pixel lies within ``+-2 * box_w *
    max_weight`` (28 for a 7 x 7 symmetric window; ``int16`` above 127), so the wrapped byte is that
    value exactly; it is added,
    sign-extended, to the canvas once per row of displacements. Byte passes move half the memory of
    ``uint16`` ones and the ``bool`` comparison needs no cast (1.5x faster than ``uint16`` throughout).

    Args:
        x, y: (H + box_h - 1, W + box_w - 1) grey levels of the first and second pixel of each pair.
        levels: number of grey levels (codes below ``levels**2``).
        symmetric: unordered pairs (scikit-image ``symmetric=True``).
        box_h, box_w: box size (the window less the offset).

    Returns:
        (H, W) unsigned integers.
    """
    hc, wc = x.shape
    width = wc - box_w + 1
    max_weight = 2 if symmetric else 1
    bound = (max_weight * box_h * box_w) ** 2
    acc = np.uint16 if bound < 2**16 else np.uint32 if bound < 2**32 else np.uint64
    row_bound = 2 * max_weight * box_w  # |value| of the row buffer of one row of displacements
    row_t = np.int8 if row_bound < 2**7 else np.int16 if row_bound < 2**15 else np.int32
    pitch = wc + box_w
    size = hc * pitch
    code_t = np.uint16 if levels * levels < 2**16 else np.uint32
    c = np.full(size + pitch, np.iinfo(code_t).max, dtype=code_t)  # + a spare row at the end
    w = np.zeros(size + pitch, dtype=np.int8)
    codes, weights = c[:size].reshape(hc, pitch)[:, :wc], w[:size].reshape(hc, pitch)[:, :wc]
    if symmetric:
        np.minimum(x, y, out=codes)
        codes *= code_t(levels)
        codes += np.maximum(x, y)
        np.equal(x, y, out=weights, casting="unsafe")  # 1 on the diagonal
        weights += 1
    else:
        np.multiply(x, code_t(levels), out=codes, dtype=code_t)
        codes += y
        weights.fill(1)
    canvas = np.zeros(size, dtype=acc)
    signed_canvas = canvas.view(np.dtype(acc).str.replace("u", "i"))  # same bits, wraps alike
    rows = np.empty(size, dtype=row_t)
    e_bool, m_bool = np.empty(size, dtype=bool), np.empty(size, dtype=bool)
    e, m = e_bool.view(np.int8), m_bool.view(np.int8)  # 0/1 bytes, weighted in place
    for dy in range(box_h):
        n = size - dy * pitch  # the pairs whose first pixel has a partner dy rows below
        r = rows[:n]
        r.fill(0)
        for adx in range(box_w):
            if dy == 0 and adx == 0:  # delta = 0 is added after the doubling below
                continue
            g = dy * pitch + adx
            np.equal(c[:n], c[g : g + n], out=e_bool[:n])
            ev = e[:n]
            np.multiply(ev, w[:n], out=ev)
            if dy > 0 and adx > 0:  # the mirror (dy, -adx): pixel p + (0, adx) with p + (dy, 0)
                np.equal(c[adx : adx + n], c[dy * pitch : dy * pitch + n], out=m_bool[:n])
                mv = m[:n]
                np.multiply(mv, w[adx : adx + n], out=mv)
                np.add(ev, mv, out=ev)
            # column corners of the box of width box_w - adx: + at column adx, - at box_w
            shift_add(r, ev, adx, +1)
            shift_add(r, ev, box_w, -1)
        # row corners of the box of height box_h - dy: + at row dy, - at row box_h
        shift_add(signed_canvas, r, dy * pitch, +1)
        shift_add(signed_canvas, r, box_h * pitch, -1)
    np.add(canvas, canvas, out=canvas)  # each delta != 0 above stands for delta and -delta
    r = np.zeros(size, dtype=acc)  # delta = 0: the sum of the weights over the box
    weights = w[:size].astype(acc)
    shift_add(r, weights, 0, +1)
    shift_add(r, weights, box_w, -1)
    shift_add(canvas, r, 0, +1)
    shift_add(canvas, r, box_h * pitch, -1)
    grid = canvas.reshape(hc, pitch)
    np.cumsum(grid, axis=0, out=grid)
    np.cumsum(grid, axis=1, out=grid)
    return grid[box_h - 1 :, box_w - 1 : box_w - 1 + width]


def block_properties(
    slab: np.ndarray,
    dr: int,
    dc: int,
    window: int,
    levels: int,
    properties: Sequence[str],
    symmetric: bool,
) -> dict[str, np.ndarray]:
    """All requested properties of one offset for the output rows of one padded row slab.

    ``slab`` is ``(rows + window - 1, W + window - 1)`` of the padded grey levels (a small integer
    dtype); returns ``{property: (rows, W) float64}``.
    """
    x, y = pair_views(slab, dr, dc)
    box_h, box_w = window - abs(dr), window - abs(dc)
    n_pairs = box_h * box_w  # ordered pairs per window (non-symmetric GLCM total)
    results: dict[str, np.ndarray] = {}
    need_diff = {"contrast", "dissimilarity", "homogeneity"} & set(properties)
    if need_diff:
        diff = x.astype(np.int32) - y
        if "contrast" in properties or "homogeneity" in properties:
            sq = diff * diff
        if "contrast" in properties:
            results["contrast"] = box_sum(sq, box_h, box_w) / n_pairs
        if "dissimilarity" in properties:
            results["dissimilarity"] = box_sum(np.abs(diff), box_h, box_w) / n_pairs
        if "homogeneity" in properties:
            results["homogeneity"] = box_sum(1.0 / (1.0 + sq), box_h, box_w) / n_pairs
    if "correlation" in properties:
        # box sums in wrapping uint32 (exact: every window sum is below 2**32), products in int64
        xi, yi = x.astype(np.uint32), y.astype(np.uint32)

        def box(a: np.ndarray) -> np.ndarray:
            return box_sum(a, box_h, box_w, np.uint32).astype(np.int64)

        sxy = box(xi * yi)
        if symmetric:  # only the sums over both members of each pair are needed
            n2, s, ss = 2 * n_pairs, box(xi + yi), box(xi * xi + yi * yi)
            s *= s
            var_num = n2 * ss - s  # exact integers: (2N)^2 * variance, the same for i and j
            cov_num = (2 * n2) * sxy - s
            results["correlation"] = np.divide(
                cov_num, var_num, out=np.ones(var_num.shape), where=var_num != 0
            )
        else:
            sx, sy = box(xi), box(yi)
            var_i = n_pairs * box(xi * xi) - sx * sx
            var_j = n_pairs * box(yi * yi) - sy * sy
            cov_num = n_pairs * sxy - sx * sy
            degenerate = (var_i == 0) | (var_j == 0)
            denom = np.sqrt(np.where(degenerate, 1, var_i).astype(np.float64)) * np.sqrt(
                np.where(degenerate, 1, var_j).astype(np.float64)
            )
            results["correlation"] = np.where(degenerate, 1.0, cov_num / denom)
    if "ASM" in properties or "energy" in properties:
        total = 2.0 * n_pairs**2 if symmetric else float(n_pairs**2)
        asm = sum_squared_counts(x, y, levels, symmetric, box_h, box_w) / total
        results["ASM"] = asm
        if "energy" in properties:
            results["energy"] = np.sqrt(asm)
    return results
