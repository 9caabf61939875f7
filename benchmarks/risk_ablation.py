"""Ablation on the demo data: what attention, oversampling + SMOTE and the CORAL head each change.

Uses the demo's inputs (real RMNP DEM, derived terrain bands, rule-made labels; see
``risk_mapping.demo``) and its config, trains every variant for a fixed number of epochs (no
wall-clock budget, so the machine's load does not change the comparison) with several seeds, and
prints test-split kappa, class-1 precision/recall, class-2 recall and Spearman rho without and with
the (ordinal) CRF, as mean and spread over the seeds.

Run:  .venv/bin/python benchmarks/risk_ablation.py [--seeds 0 1] [--epochs 20] [--out runs/risk_ablation]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "full (attention, dup+SMOTE, CORAL)": {},
    "no attention": {"model": {"attention": False}},
    "no oversampling, no SMOTE": {
        "dataset": {"oversample_target_fraction": 0.0, "use_smote": False}
    },
    "no CORAL (softmax head only)": {
        "training": {"use_ordinal_loss": False},
        "inference": {"head": "softmax"},
    },
    "CORAL loss, maps from the softmax head": {"inference": {"head": "softmax"}},
    "CORAL loss, maps from the CORAL head": {"inference": {"head": "coral"}},
}
METRICS = ("kappa", "class1_precision", "class1_recall", "class2_recall", "spearman_rho")


def _merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict):
            out[key] = _merge(out.get(key, {}), value)
        else:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/risk_ablation"))
    parser.add_argument(
        "--variants", type=int, nargs="+", default=None, help="indices into VARIANTS"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from eo_common.config import config_from_dict
    from risk_mapping.config import RiskConfig
    from risk_mapping.demo import _demo_config, _write_inputs
    from risk_mapping.pipeline import run_pipeline

    stack, labels, _ = _write_inputs(args.out / "data", seed=0)  # one label draw for every run
    results: dict[str, dict[str, list[float]]] = {}
    chosen = [n for i, n in enumerate(VARIANTS) if args.variants is None or i in args.variants]
    for index, (name, patch) in enumerate(VARIANTS.items()):
        if name not in chosen:
            continue
        for seed in args.seeds:
            # split, band statistics and SMOTE fixed (top-level seed 0); only the training seed varies
            raw = _demo_config(stack, labels, args.out / f"variant{index}_seed{seed}", 0)
            raw["inference"]["ensemble_seeds"] = [seed]
            raw["training"].update(epochs=args.epochs, patience=args.epochs)
            raw = _merge(raw, patch)
            raw.update(progress=False, overwrite=True)
            cfg = config_from_dict(RiskConfig, raw)
            t0 = time.perf_counter()
            run_pipeline(cfg)
            metrics = json.loads((Path(cfg.run_dir) / "evaluate" / "metrics.json").read_text())
            for variant in ("no_crf", "crf"):
                for m in METRICS:
                    results.setdefault(name, {}).setdefault(f"{variant}/{m}", []).append(
                        metrics["variants"][variant][m]
                    )
            print(
                f"{name} seed {seed}: {time.perf_counter() - t0:.0f} s, kappa "
                f"{metrics['variants']['no_crf']['kappa']:.3f} / CRF {metrics['variants']['crf']['kappa']:.3f}",
                flush=True,
            )
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2))
    print(f"\ntest split, mean (min-max) over seeds {args.seeds}, {args.epochs} epochs each")
    for variant in ("no_crf", "crf"):
        print(f"\n{variant}:")
        print("| variant | " + " | ".join(METRICS) + " |")
        print("|---|" + "---|" * len(METRICS))
        for name in chosen:
            cells = []
            for m in METRICS:
                vals = np.array(results[name][f"{variant}/{m}"])
                cells.append(f"{vals.mean():.3f} ({vals.min():.3f}-{vals.max():.3f})")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
