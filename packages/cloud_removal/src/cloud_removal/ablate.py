"""``cr-ablate``: measure what each enhancement is worth, with the same seed(s) and budget for all.

Runs a list of configurations through :func:`cloud_removal.train.train` (every ``cr-train`` flag is
accepted and forms the shared base) and writes a markdown table of the best validation PSNR and the
SSIM of that epoch, with each configuration's delta against ``full``. With ``--seeds N`` every
configuration runs with seeds ``seed .. seed+N-1`` and the table shows mean +- sample standard
deviation; deltas are means of per-seed differences (paired by seed). Finished runs are recorded in a
manifest and skipped on a rerun (resumable); the table is rewritten atomically after every run.

Default configurations: ``full`` and each enhancement removed in turn (see :data:`ABLATIONS`).

Example::

    cr-ablate --demo --max_epochs 2 --seeds 2 --ablation_dir runs/cr_ablation
    cr-ablate --input_data_folder /data/SEN12MS-CR --configs full,no_cross_attn --time_budget_s 3600
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from eo_common.io import Manifest, atomic_save_json, atomic_write

from .data import CloudRemovalDataError
from .model import CloudRemovalCrossAttention, count_parameters
from .train import CRTrainConfig, build_parser, config_from_args, train

__all__ = [
    "ABLATIONS",
    "DEFAULT_CONFIGS",
    "run_ablation",
    "apply_overrides",
    "format_table",
    "main",
]

ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_spectral_attention": {"use_spectral_attention": False},
    "no_cross_attn": {"use_cross_attn": False},
    "no_sar_gating": {"use_sar_gating": False},
    "no_confidence": {"use_confidence": False},
    "no_multi_scale": {"multi_scale": False},
    "no_groupnorm": {"norm": "none"},
    "fixed_scale_weights": {"multi_scale_weights": "fixed"},
    "cross_attn_1_block": {"num_cross_attn_blocks": 1},
    "cross_attn_3_blocks": {"num_cross_attn_blocks": 3},
    "no_global_residual": {"use_global_residual": False},
    "no_confidence_loss": {"use_confidence_loss": False},
    "cloud_focused_loss": {"use_cloud_focused_loss": True},
}
"""Named configurations: overrides of :class:`ModelConfig` / :class:`LossConfig` fields."""

DEFAULT_CONFIGS = (
    "full", "no_spectral_attention", "no_cross_attn", "no_sar_gating", "no_confidence",
    "no_multi_scale", "no_groupnorm",
)  # fmt: skip


def apply_overrides(base: CRTrainConfig, overrides: dict[str, Any]) -> CRTrainConfig:
    """A copy of ``base`` with model/loss fields replaced (unknown keys raise ValueError)."""
    cfg = copy.deepcopy(base)
    model_keys = set(vars(cfg.model))
    loss_keys = set(vars(cfg.loss))
    m = {k: v for k, v in overrides.items() if k in model_keys}
    lo = {k: v for k, v in overrides.items() if k in loss_keys}
    unknown = set(overrides) - set(m) - set(lo)
    if unknown:
        raise ValueError(f"ablation overrides name unknown fields {sorted(unknown)}")
    cfg.model = replace(cfg.model, **m)
    cfg.loss = replace(cfg.loss, **lo)
    return cfg


def _best_epoch_metrics(run_dir: Path) -> dict[str, float]:
    """val/psnr and val/ssim of the epoch with the best val/psnr in ``metrics.csv``."""
    path = run_dir / "metrics.csv"
    best: dict[str, float] = {}
    if not path.is_file():
        return best
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            v = row.get("val/psnr")
            if v and (not best or float(v) > best["psnr"]):
                best = {
                    "psnr": float(v),
                    "ssim": float(row.get("val/ssim") or "nan"),
                    "identity_psnr": float(row.get("val/identity_psnr") or "nan"),
                    "epoch": float(row.get("epoch") or "nan"),
                }
    return best


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def format_table(results: dict[str, dict[int, dict[str, float]]], configs: list[str]) -> str:
    """Markdown table: config, parameters, val PSNR, delta PSNR, val SSIM, delta SSIM, seeds."""
    lines = [
        "| configuration | parameters | val PSNR (dB) | Δ PSNR vs full | val SSIM | Δ SSIM vs full | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    full = results.get("full", {})
    for name in configs:
        runs = results.get(name, {})
        if not runs:
            continue
        seeds = sorted(runs)
        psnr = [runs[s]["psnr"] for s in seeds]
        ssim = [runs[s]["ssim"] for s in seeds]
        paired = [s for s in seeds if s in full]
        if name != "full" and paired:
            dp = _mean_sd([runs[s]["psnr"] - full[s]["psnr"] for s in paired])
            ds = _mean_sd([runs[s]["ssim"] - full[s]["ssim"] for s in paired])
        else:
            dp = ds = "—"
        params = int(runs[seeds[0]]["parameters"])
        lines.append(
            f"| {name} | {params / 1e6:.2f} M | {_mean_sd(psnr)} | {dp} | {_mean_sd(ssim)} | {ds} | {len(seeds)} |"
        )
    return "\n".join(lines) + "\n"


def run_ablation(
    base: CRTrainConfig,
    configs: list[str],
    seeds: list[int],
    out_dir: Path,
    *,
    enable_progress_bar: bool = False,
) -> dict[str, Any]:
    """Train every (configuration, seed) not yet done; write ``ablation.md`` and ``ablation.json``."""
    unknown = [c for c in configs if c not in ABLATIONS]
    if unknown:
        raise ValueError(
            f"unknown ablation configuration(s) {unknown}; available: {sorted(ABLATIONS)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir / "manifest.jsonl")
    results: dict[str, dict[int, dict[str, float]]] = {}
    for rec in manifest.records():
        results.setdefault(rec["config"], {})[int(rec["seed"])] = rec
    for name in configs:
        for seed in seeds:
            run_id = f"{name}_s{seed}"
            if run_id in manifest:
                continue
            cfg = apply_overrides(base, ABLATIONS[name])
            cfg.train = replace(
                cfg.train,
                seed=seed,
                experiment_name=f"ablation_{run_id}",
                output_dir=out_dir / "runs",
                resume=None,
            )
            summary = train(cfg, enable_progress_bar=enable_progress_bar)
            best = _best_epoch_metrics(Path(summary["run_dir"]))
            rec = {
                "config": name,
                "seed": seed,
                "parameters": count_parameters(CloudRemovalCrossAttention(cfg.model)),
                **best,
                "train_seconds": summary["train_seconds"],
                "epochs": summary["epochs_run"],
            }
            manifest.mark_done(run_id, **rec)
            results.setdefault(name, {})[seed] = rec
            _write(results, configs, seeds, base, out_dir)
    return _write(results, configs, seeds, base, out_dir)


def _write(results, configs, seeds, base: CRTrainConfig, out_dir: Path) -> dict[str, Any]:
    table = format_table(results, configs)
    header = (
        "# cr-ablate\n\n"
        f"Same budget for every configuration: max_epochs={base.train.max_epochs}, "
        f"time_budget_s={base.time_budget_s or 'none'}, batch {base.train.batch_size}, crop {base.crop_size}, "
        f"lr {base.train.lr}, seeds {seeds}, data {base.input_data_folder}. "
        "PSNR/SSIM: best validation epoch by PSNR (GLF-CR normalisation unless stated, data_range 1).\n\n"
    )
    with atomic_write(out_dir / "ablation.md", "w") as f:
        f.write(header + table)
    payload = {"configs": configs, "seeds": seeds, "results": results, "table_md": table}
    atomic_save_json(payload, out_dir / "ablation.json")
    return payload


def build_ablate_parser() -> argparse.ArgumentParser:
    p = build_parser()
    p.prog = "cr-ablate"
    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("ablation")
    g.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help=f"comma-separated names from: {', '.join(ABLATIONS)}",
    )
    g.add_argument(
        "--seeds", type=int, default=1, help="seeds per configuration (mean ± sd when > 1)"
    )
    g.add_argument(
        "--ablation_dir",
        type=Path,
        default=Path("runs/cr_ablation"),
        help="output folder (runs/, manifest.jsonl, ablation.md, ablation.json)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = build_ablate_parser().parse_args(argv)
    try:
        base = config_from_args(ns, argv)
        configs = [c.strip() for c in ns.configs.split(",") if c.strip()]
        seeds = [base.train.seed + k for k in range(max(1, ns.seeds))]
        payload = run_ablation(base, configs, seeds, ns.ablation_dir)
    except (ValueError, FileNotFoundError, CloudRemovalDataError) as exc:
        print(f"cr-ablate: error: {exc}", file=sys.stderr)
        return 2
    print(payload["table_md"])
    print(json.dumps({"ablation_md": str(Path(ns.ablation_dir) / "ablation.md")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
