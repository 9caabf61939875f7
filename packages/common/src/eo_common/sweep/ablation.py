"""Ablation tables: mean and spread over seeds, the paired delta of each variant, and a noise verdict.

Every variant of an ablation runs with the same seeds, so the fair comparison with the baseline is
*paired by seed*: ``d_s = variant_s - baseline_s`` for each seed ``s`` both finished. The table gives
the mean and sample standard deviation of each variant over its seeds and the mean paired delta with
its standard deviation.

**The noise rule.** A delta is *within seed noise* when the 95 % confidence interval of the mean
paired delta contains zero, i.e. when the paired t-test (:func:`scipy.stats.ttest_rel`, two-sided,
``n - 1`` degrees of freedom over the ``n`` paired seeds) gives ``p >= 0.05``. The spread used is
that of the per-seed differences themselves, which is what "seed-to-seed variation" means for a
paired comparison: a delta of 0.3 dB with per-seed differences of 0.29 to 0.31 is real; the same
mean with differences from -0.5 to +1.1 is noise. With one seed there is no spread to judge by and
the verdict says so; with two seeds the test is weak (t critical 12.7), so use three or more. When
every paired difference is identical the spread is zero: a non-zero delta is then outside the noise
(``p = 0``), a zero delta within it.

Example:
    >>> rows = ablation_rows({"full": {0: 30.0, 1: 30.4, 2: 29.8},
    ...                       "no_fft": {0: 29.0, 1: 29.5, 2: 28.7}}, "full", "maximize")
    >>> [(r["variant"], round(r["delta"], 3), r["verdict"]) for r in rows]
    [('full', 0.0, 'baseline'), ('no_fft', -1.0, 'worse')]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

__all__ = ["ablation_rows", "paired_delta", "format_ablation", "ALPHA"]

ALPHA = 0.05


def paired_delta(variant: Mapping[int, float], baseline: Mapping[int, float]) -> dict[str, Any]:
    """Mean and sd of ``variant - baseline`` over the seeds both have, and the paired t-test p.

    Returns:
        ``{"n", "delta", "delta_sd", "p"}``; ``p`` is None with fewer than two paired seeds.
    """
    seeds = sorted(set(variant) & set(baseline))
    diffs = [float(variant[s]) - float(baseline[s]) for s in seeds]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "delta": math.nan, "delta_sd": math.nan, "p": None}
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"n": 1, "delta": mean, "delta_sd": math.nan, "p": None}
    sd = statistics.stdev(diffs)
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        from scipy.stats import ttest_rel

        p = float(ttest_rel([variant[s] for s in seeds], [baseline[s] for s in seeds]).pvalue)
    return {"n": n, "delta": mean, "delta_sd": sd, "p": p}


def _verdict(delta: float, p: float | None, n: int, direction: str) -> str:
    if n == 0:
        return "no paired seeds"
    if p is None:
        return "one seed: noise unknown"
    if p >= ALPHA:
        return "within seed noise"
    better = delta > 0 if direction == "maximize" else delta < 0
    return "better" if better else "worse"


def ablation_rows(
    values: Mapping[str, Mapping[int, float]], baseline: str, direction: str
) -> list[dict[str, Any]]:
    """One row per variant (baseline first): mean, sd, seeds, paired delta, sd, p, verdict.

    Args:
        values: ``{variant: {seed: objective value}}`` of the finished seeds.
        baseline: the reference variant.
        direction: ``maximize`` or ``minimize`` (which sign of a delta is better).
    """
    base = values.get(baseline, {})
    order = [baseline] + [v for v in values if v != baseline]
    rows = []
    for name in order:
        seeds = values.get(name, {})
        numbers = [float(v) for v in seeds.values()]
        row: dict[str, Any] = {
            "variant": name,
            "n": len(numbers),
            "mean": statistics.fmean(numbers) if numbers else math.nan,
            "sd": statistics.stdev(numbers) if len(numbers) > 1 else math.nan,
        }
        if name == baseline:
            row.update(
                delta=0.0, delta_sd=math.nan, p=None, verdict="baseline", paired=len(numbers)
            )
        else:
            pair = paired_delta(seeds, base)
            row.update(
                delta=pair["delta"],
                delta_sd=pair["delta_sd"],
                p=pair["p"],
                paired=pair["n"],
                verdict=_verdict(pair["delta"], pair["p"], pair["n"], direction),
            )
        rows.append(row)
    return rows


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


def format_ablation(rows: list[dict[str, Any]], metric: str) -> str:
    """Markdown table of :func:`ablation_rows`."""
    lines = [
        f"| variant | {metric} mean ± sd | seeds | Δ vs baseline (paired) ± sd | p | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        spread = f" ± {_num(r['sd'])}" if not math.isnan(r["sd"]) else ""
        delta = "" if r["verdict"] == "baseline" else f"{r['delta']:+.4g}"
        if delta and not math.isnan(r["delta_sd"]):
            delta += f" ± {_num(r['delta_sd'])}"
        p = "" if r["p"] is None else f"{r['p']:.3g}"
        lines.append(
            f"| {r['variant']} | {_num(r['mean'])}{spread} | {r['n']} | {delta} | {p} | {r['verdict']} |"
        )
    return "\n".join(lines)
