"""The Lightning module of stages 2 and 3, and reading their checkpoints back.

:class:`GACTask` wraps a :class:`~gac_pipeline.model.Stage2Refiner` (``kind="stage2"``) or a
:class:`~gac_pipeline.model.Stage3Grounder` (``kind="stage3"``) with its loss and streaming validation
metrics. Its checkpoints hold only what trains (LoRA adapters, heads, the cycle predictor) plus the
optimiser state: a few MB even for a 300M-parameter backbone, which is rebuilt from the stored network
config (registry name + weight source, or the init seed of a random-init backbone).

Checkpoints of the previous release (``GACModule``, hyper-parameters ``kind``, ``model_config``,
``loss_weights``, ``optim`` ...) have the same layout and load with :func:`load_stage_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from eo_common.errors import CheckpointError
from eo_common.training import EOModule, build_scheduler, load_checkpoint

from gac_pipeline.evaluate import StageMetrics
from gac_pipeline.losses import build_stage2_loss, build_stage3_loss
from gac_pipeline.model import (
    CycleSARPredictor,
    GrounderConfig,
    RefinerConfig,
    Stage2Refiner,
    Stage3Grounder,
)

__all__ = [
    "SELECTION",
    "GACTask",
    "resolve_stage_checkpoint",
    "read_stage_checkpoint",
    "load_stage_model",
    "network_from_checkpoint",
]

SELECTION = {"stage2": ("val/psnr", "max"), "stage3": ("val/sar_edge", "min")}
"""Selection metric of each stage: stage 2 keeps the highest PSNR, stage 3 the lowest SAR-edge score."""
_COMMAND = {"stage2": "gac-stage2", "stage3": "gac-stage3"}


def resolve_stage_checkpoint(path: str | Path) -> Path:
    """The checkpoint file meant by ``path``.

    Accepted: a checkpoint file; a gac-stage2/3 run folder (its ``checkpoints/best.ckpt``); and
    ``<run>/best.pt`` or ``<run>/best.ckpt`` (the seed scripts' names; also ``last``), which mean that
    run's ``checkpoints/best.ckpt`` when no such file exists.

    Example:
        >>> resolve_stage_checkpoint("outputs/stage2_full/best.pt")  # doctest: +SKIP
        PosixPath('outputs/stage2_full/checkpoints/best.ckpt')
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        return path / "checkpoints" / "best.ckpt"
    if path.stem in ("best", "last") and path.suffix in (".pt", ".ckpt", ".pth"):
        candidate = path.parent / "checkpoints" / f"{path.stem}.ckpt"
        if candidate.is_file():
            return candidate
    return path


def read_stage_checkpoint(path: str | Path, expect_kind: str | None = None) -> dict[str, Any]:
    """Load a stage-2/3 checkpoint (resolved by :func:`resolve_stage_checkpoint`) and check its kind.

    Raises:
        CheckpointError: missing, truncated or corrupt file; not a gac stage checkpoint; a checkpoint of
            the other stage than ``expect_kind``. The message names the file.
    """
    file = resolve_stage_checkpoint(path)
    ckpt = load_checkpoint(file, expect_keys=("state_dict", "hyper_parameters"))
    kind = (ckpt.get("hyper_parameters") or {}).get("kind")
    if kind not in SELECTION:
        raise CheckpointError(
            "not a gac-stage2/gac-stage3 checkpoint (no hyper_parameters.kind)", path=file
        )
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(
            f"is a {_COMMAND[kind]} checkpoint; a {_COMMAND[expect_kind]} checkpoint is needed here",
            path=file,
        )
    ckpt["path"] = str(file)
    return ckpt


def _build_network(kind: str, model_config: dict[str, Any]) -> Stage2Refiner | Stage3Grounder:
    if kind == "stage2":
        return Stage2Refiner(RefinerConfig.from_dict(model_config))
    return Stage3Grounder(GrounderConfig.from_dict(model_config))


def network_from_checkpoint(
    ckpt: dict[str, Any], **config_overrides: Any
) -> Stage2Refiner | Stage3Grounder:
    """The network of a checkpoint read by :func:`read_stage_checkpoint`, in eval mode: frozen parts
    rebuilt from the stored config (with ``config_overrides``), trained parts from the file."""
    hp = ckpt["hyper_parameters"]
    network = _build_network(hp["kind"], {**hp["model_config"], **config_overrides})
    weights = {
        k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    trained = {n for n, p in network.named_parameters() if p.requires_grad}
    missing = sorted(trained - set(weights))
    if missing:
        raise CheckpointError(
            f"lacks {len(missing)} trained weights of its network (e.g. {missing[0]})",
            path=ckpt.get("path"),
        )
    network.load_state_dict(weights, strict=False)
    return network.eval()


def load_stage_model(
    path: str | Path, expect_kind: str | None = None
) -> Stage2Refiner | Stage3Grounder:
    """The trained network of a stage checkpoint, in eval mode (frozen parts rebuilt, trained parts
    from the file). Works for this release's checkpoints and the previous one's.

    Raises:
        CheckpointError: see :func:`read_stage_checkpoint`; or the file lacks trained weights of the
            network its config describes.
    """
    return network_from_checkpoint(read_stage_checkpoint(path, expect_kind))


class GACTask(EOModule):
    """Lightning module of stage 2 (``kind="stage2"``) or stage 3 (``kind="stage3"``).

    Batches are the dicts of :class:`gac_pipeline.data.PairedTileDataset`. Stage 3 computes opt_v2 on the
    fly with the frozen stage-2 network of ``stage2_checkpoint``.

    Args:
        kind: ``"stage2"`` or ``"stage3"``.
        model_config: fields of :class:`RefinerConfig` or :class:`GrounderConfig`.
        loss_weights: stage 2: l1, msssim, lpips; stage 3: l1, edge, cycle.
        stage2_checkpoint: stage 3 only.
        lpips_weights: local LPIPS backbone weights (loss term and metric); None = LPIPS off.
        **hparams: the optimiser hyper-parameters of :meth:`eo_common.config.OptimConfig.hparams`
            (``optimizer`` may also be ``"adamw8bit"``, bitsandbytes' 8-bit AdamW).
    """

    def __init__(
        self,
        kind: str,
        model_config: dict,
        loss_weights: dict | None = None,
        stage2_checkpoint: str | None = None,
        lpips_weights: str | None = None,
        **hparams: Any,
    ):
        super().__init__()
        if kind not in SELECTION:
            raise ValueError(f"kind must be 'stage2' or 'stage3', got {kind!r}")
        monitor, mode = SELECTION[kind]
        hparams.setdefault("monitor", monitor)
        hparams.setdefault("mode", mode)
        self.save_hyperparameters()
        self.kind = kind
        weights = dict(loss_weights or {})
        self.model = _build_network(kind, model_config)
        if kind == "stage2":
            self.loss = build_stage2_loss(
                weights.get("l1", 1.0),
                weights.get("msssim", 0.2),
                weights.get("lpips", 0.1),
                lpips_weights,
            )
            self.refiner = None
        else:
            if stage2_checkpoint is None:
                raise ValueError("stage 3 needs --stage2_checkpoint (the trained stage-2 model)")
            self.cycle = CycleSARPredictor()
            self.loss = build_stage3_loss(
                self.cycle,
                weights.get("l1", 1.0),
                weights.get("edge", 0.1),
                weights.get("cycle", 0.1),
            )
            refiner = load_stage_model(stage2_checkpoint, expect_kind="stage2")
            self.refiner = refiner.requires_grad_(False)
        self.val_metrics = StageMetrics(lpips_weights)
        self.strict_loading = False

    # ------------------------------------------------------------------ forward and losses
    def opt_v2(self, batch: dict) -> torch.Tensor:
        """opt_v2 of a batch: the stage-2 network's output (stage 3: frozen, no gradient)."""
        if self.kind == "stage2":
            return self.model(batch["opt_v1"], batch["s1"] if self.model.config.use_s1 else None)
        with torch.no_grad():
            self.refiner.eval()
            s1 = batch["s1"] if self.refiner.config.use_s1 else None
            return self.refiner(batch["opt_v1"], s1)

    def forward(self, batch: dict) -> torch.Tensor:
        opt_v2 = self.opt_v2(batch)
        if self.kind == "stage2":
            return opt_v2
        return self.model(opt_v2, batch["s1_db"], batch["s1"])

    def compute_losses(self, batch: dict, stage: str):
        pred = self(batch)
        target = batch["target"]
        if self.kind == "stage2":
            total, parts = self.loss(pred, target)
        else:
            total, parts = self.loss(
                l1=(pred, target), edge=(pred, batch["s1"]), cycle=(pred, target, batch["s1"])
            )
        return total, parts, pred

    def update_metrics(self, stage: str, batch: dict, outputs: Any) -> None:
        if stage == "val" and outputs is not None:
            self.val_metrics.update(outputs, batch["target"], batch["s1"])

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        hp = self.hparams
        if hp.get("optimizer", hp.get("optim", "adamw")) != "adamw8bit":
            return super().configure_optimizers()
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(
            self.optimizer_parameters(),
            lr=float(hp.get("lr", 1e-4)),
            weight_decay=float(hp.get("weight_decay", 0.0)),
        )
        scheduler = build_scheduler(
            optimizer,
            str(hp.get("lr_scheduler", "none")),
            epochs=hp.get("max_epochs"),
            warmup_epochs=int(hp.get("warmup_epochs", 0)),
            patience=int(hp.get("lr_patience", 5)),
            T_0=int(hp.get("T_0", 10)),
            T_mult=int(hp.get("T_mult", 1)),
            min_lr=float(hp.get("min_lr", 0.0)),
            monitor=str(hp["monitor"]),
            mode=hp["mode"],
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------ small checkpoints
    def trainable_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = sorted(self.trainable_names() - set(checkpoint["state_dict"]))
        if missing:
            raise CheckpointError(
                f"the checkpoint lacks trained weights {missing[:3]} (made with other settings?)"
            )
