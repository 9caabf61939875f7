"""``glacier-train``: train the 4-class glacier U-Net, keeping the checkpoint with the best
validation MCC computed the way the competition computes it.

Validation runs on **whole tiles** (no crops), and :class:`eo_common.metrics.SegmentationMetrics`
accumulates one confusion matrix over every pixel of every validation tile, so ``val/mcc`` equals
``sklearn.metrics.matthews_corrcoef`` on all validation pixels flattened (tested).

Example:
    glacier-train --data_root GlacierHack/train --include_glcm --encoder_name resnet34 \\
        --crop_size 256 --batch_size 8 --max_epochs 60 --lr_scheduler cosine_restarts --T_0 10 \\
        --focal_weight 1 --dice_weight 1 --mcc_weight 0.5 --lake_weight 3 --debris_weight 1 \\
        --p_minority 0.5 --experiment_name glacier_r34 --seed 0
    glacier-train --demo --max_epochs 3        # derived-label Landsat-8 tiles (see demo.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from eo_common.losses import signed_distance_map
from eo_common.metrics import SegmentationMetrics
from eo_common.training import (
    EOModule,
    TrainConfig,
    add_training_args,
    build_trainer,
    prepare_run_dir,
    resume_checkpoint,
    seed_everything,
)
from torch import Tensor
from torch.utils.data import DataLoader

from glacier_seg.data import (
    CLASS_NAMES,
    ClassBalancedCropSampler,
    GlacierTileDataset,
    Normalizer,
    TileArrays,
    WeightedTileSampler,
    cutmix_batch,
    find_tiles,
    image_sampling_weights,
    load_tiles,
    mixup_batch,
    split_tiles,
)
from glacier_seg.model import LossConfig, ModelConfig, build_loss, build_model
from glacier_seg.texture import GLCM_PROPERTIES, GLCMConfig

__all__ = [
    "DataConfig",
    "SamplingConfig",
    "GlacierTrainConfig",
    "GlacierSegModule",
    "padded_forward",
    "build_parser",
    "config_from_args",
    "prepare_data",
    "build_dataloaders",
    "train",
    "main",
]


@dataclass
class DataConfig:
    """Where the tiles are and how they become network inputs.

    Attributes:
        data_root: GlacierHack root (Band1..Band5, Label).
        val_ids: tile ids held out for validation (default: ``val_fraction`` of the tiles).
        val_fraction: fraction of tiles held out when ``val_ids`` is empty.
        normalization: ``"percentile"`` (per tile, 2-98 %) or ``"dataset"`` (train statistics).
        include_glcm: append the GLCM texture channels.
        glcm: texture parameters.
        glcm_cache: cache folder for texture channels (default ``<output_dir>/glcm_cache``).
    """

    data_root: Path | None = None
    val_ids: tuple[str, ...] = ()
    val_fraction: float = 0.2
    normalization: str = "percentile"
    include_glcm: bool = True
    glcm: GLCMConfig = field(default_factory=GLCMConfig)
    glcm_cache: Path | None = None

    @property
    def in_channels(self) -> int:
        return 5 + (self.glcm.num_channels if self.include_glcm else 0)


@dataclass
class SamplingConfig:
    """Training crops, samplers and batch mixing.

    Attributes:
        crop_size: training crop side (multiple of 32).
        samples_per_epoch: crops per epoch (default 8 per training tile).
        lake_weight, debris_weight: image-level sampling weight added for tiles with lake/debris.
        p_minority: probability that a crop is centred on a debris or lake pixel.
        mixup, mixup_alpha, cutmix, cutmix_alpha: batch mixing switches (CutMix wins when both
            are on and the batch draws it with probability 0.5).
        augment: random flips and 90-degree rotations.
    """

    crop_size: int = 256
    samples_per_epoch: int | None = None
    lake_weight: float = 0.0
    debris_weight: float = 0.0
    p_minority: float = 0.0
    mixup: bool = False
    mixup_alpha: float = 0.4
    cutmix: bool = False
    cutmix_alpha: float = 1.0
    augment: bool = True


@dataclass
class GlacierTrainConfig:
    """Everything ``glacier-train`` needs; every flag maps to one field."""

    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    T_0: int = 10
    T_mult: int = 1
    min_lr: float = 0.0
    lr_patience: int = 5
    max_time_s: float | None = None
    limit_train_batches: int | None = None
    demo: bool = False

    def to_dict(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [conv(x) for x in v]
            return v

        out = {
            "data": conv(dataclasses.asdict(self.data)),
            "sampling": dataclasses.asdict(self.sampling),
            "model": dataclasses.asdict(self.model),
            "loss": conv(dataclasses.asdict(self.loss)),
            "train": self.train.to_dict(),
        }
        for name in (
            "T_0",
            "T_mult",
            "min_lr",
            "lr_patience",
            "max_time_s",
            "limit_train_batches",
            "demo",
        ):
            out[name] = getattr(self, name)
        return out


def padded_forward(model: torch.nn.Module, x: Tensor, multiple: int = 32) -> Tensor:
    """Run ``model`` on ``x`` (B, C, H, W) of any size: reflect-pad H and W up to a multiple of
    ``multiple`` (U-Net strides), then crop the logits back to (B, K, H, W)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return model(x)[..., :height, :width]


class GlacierSegModule(EOModule):
    """LightningModule: U-Net + weighted loss + streaming competition MCC.

    Args:
        model: :class:`ModelConfig` as a dict. loss: :class:`LossConfig` as a dict.
        data: the :class:`DataConfig` dict plus the fitted normaliser (so a checkpoint alone
            rebuilds the input pipeline for evaluation and prediction).
        mixup, mixup_alpha, cutmix, cutmix_alpha: batch mixing.
        **optim: ``lr``, ``weight_decay``, ``lr_scheduler``, ``warmup_epochs``, ``max_epochs``,
            ``T_0``, ``T_mult``, ``min_lr``, ``lr_patience``, ``monitor``, ``mode``.

    Batches: ``{"image": (B, C, H, W), "mask": (B, H, W) long}``. Logged: ``{stage}/loss``,
    ``{stage}/loss_{term}``, ``val/mcc``, ``val/kappa``, ``val/per_class/<name>/iou`` ...
    """

    def __init__(
        self,
        model: dict[str, Any],
        loss: dict[str, Any],
        data: dict[str, Any] | None = None,
        mixup: bool = False,
        mixup_alpha: float = 0.4,
        cutmix: bool = False,
        cutmix_alpha: float = 1.0,
        seed: int = 0,
        **optim: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = ModelConfig(**model)
        self.loss_cfg = LossConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in loss.items()}
        )
        self.net = build_model(self.model_cfg)
        self.criterion = build_loss(self.loss_cfg, self.model_cfg.num_classes)
        self.train_metrics = SegmentationMetrics(
            self.model_cfg.num_classes, class_names=CLASS_NAMES
        )
        self.val_metrics = SegmentationMetrics(self.model_cfg.num_classes, class_names=CLASS_NAMES)
        self.test_metrics = SegmentationMetrics(self.model_cfg.num_classes, class_names=CLASS_NAMES)
        self.mix_generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) normalised channels -> (B, 4, H, W) logits (any H, W)."""
        return padded_forward(self.net, x)

    def _loss(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        kwargs: dict[str, Any] = {}
        if self.loss_cfg.boundary_weight:
            dist = signed_distance_map(target, self.model_cfg.num_classes).to(logits)
            kwargs["boundary"] = (logits, dist)
        return self.criterion(logits, target, **kwargs)

    def compute_losses(
        self, batch: dict[str, Tensor], stage: str
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        images, masks = batch["image"], batch["mask"]
        if stage == "train" and (self.hparams.cutmix or self.hparams.mixup):
            use_cutmix = self.hparams.cutmix and (
                not self.hparams.mixup or bool(torch.rand(1, generator=self.mix_generator) < 0.5)
            )
            if use_cutmix:
                images, masks = cutmix_batch(
                    images, masks, self.hparams.cutmix_alpha, self.mix_generator
                )
            else:
                images, masks_a, masks_b, lam = mixup_batch(
                    images, masks, self.hparams.mixup_alpha, self.mix_generator
                )
                logits = self(images)
                total_a, parts_a = self._loss(logits, masks_a)
                total_b, parts_b = self._loss(logits, masks_b)
                parts = {k: lam * parts_a[k] + (1 - lam) * parts_b[k] for k in parts_a}
                return lam * total_a + (1 - lam) * total_b, parts, logits.detach()
        logits = self(images)
        total, parts = self._loss(logits, masks)
        return total, parts, logits.detach()

    def update_metrics(self, stage: str, batch: dict[str, Tensor], outputs: Tensor) -> None:
        metric = getattr(self, f"{stage}_metrics")
        if stage == "train" and (self.hparams.cutmix or self.hparams.mixup):
            return  # mixed targets: no meaningful training confusion matrix
        metric.update(outputs, batch["mask"])


def _collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": torch.stack([i["image"] for i in items])}
    if "mask" in items[0]:
        out["mask"] = torch.stack([i["mask"] for i in items])
    out["tile_id"] = [i["tile_id"] for i in items]
    return out


def prepare_data(cfg: GlacierTrainConfig) -> tuple[list[TileArrays], list[TileArrays], Normalizer]:
    """Read, pair and split the tiles; fit the normaliser on the training tiles."""
    if cfg.data.data_root is None:
        raise ValueError("--data_root is required (or use --demo)")
    tiles = find_tiles(cfg.data.data_root)
    glcm = cfg.data.glcm if cfg.data.include_glcm else None
    cache = cfg.data.glcm_cache or (cfg.train.output_dir / "glcm_cache")
    arrays = load_tiles(tiles, glcm=glcm, cache_dir=cache, progress=True)
    train_ids, val_ids = split_tiles(
        [a.tile_id for a in arrays], cfg.data.val_fraction, cfg.train.seed, cfg.data.val_ids
    )
    train_tiles = [a for a in arrays if a.tile_id in set(train_ids)]
    val_tiles = [a for a in arrays if a.tile_id in set(val_ids)]
    if not train_tiles or not val_tiles:
        raise ValueError(
            f"need at least one training and one validation tile, got {len(train_tiles)}/{len(val_tiles)}"
        )
    normalizer = Normalizer(cfg.data.normalization).fit([a.image for a in train_tiles])
    return train_tiles, val_tiles, normalizer


def build_dataloaders(
    cfg: GlacierTrainConfig,
    train_tiles: Sequence[TileArrays],
    val_tiles: Sequence[TileArrays],
    normalizer: Normalizer,
) -> tuple[DataLoader, DataLoader]:
    """Training loader (weighted tile draws, class-balanced crops) and whole-tile validation loader."""
    s = cfg.sampling
    min_side = min(min(t.image.shape[1:]) for t in train_tiles)
    crop = min(s.crop_size, min_side)
    crop_sampler = ClassBalancedCropSampler(crop, p_minority=s.p_minority)
    train_ds = GlacierTileDataset(
        train_tiles, normalizer, crop, crop_sampler, s.augment, cfg.train.seed
    )
    weights = image_sampling_weights([t.mask for t in train_tiles], s.lake_weight, s.debris_weight)
    n_samples = s.samples_per_epoch or 8 * len(train_tiles)
    sampler = WeightedTileSampler(weights, n_samples, seed=cfg.train.seed)
    workers = cfg.train.num_workers
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        drop_last=n_samples >= cfg.train.batch_size,
        persistent_workers=workers > 0,
    )
    val_ds = GlacierTileDataset(val_tiles, normalizer, crop_size=None)
    same_size = len({t.image.shape for t in val_tiles}) == 1
    val_loader = DataLoader(
        val_ds,
        batch_size=cfg.train.batch_size if same_size else 1,
        shuffle=False,
        num_workers=0,
        collate_fn=_collate,
    )
    return train_loader, val_loader


def _sampler_epoch_callback() -> Any:
    import lightning as L

    class SamplerEpoch(L.Callback):
        """Keeps the tile sampler's epoch equal to the trainer's (exact crops after --resume)."""

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            loader = trainer.train_dataloader
            sampler = getattr(loader, "sampler", None)
            if isinstance(sampler, WeightedTileSampler):
                sampler.set_epoch(trainer.current_epoch)

    return SamplerEpoch()


def build_module(cfg: GlacierTrainConfig, normalizer: Normalizer) -> GlacierSegModule:
    """The LightningModule for ``cfg`` (model input channels follow the data config)."""
    model_cfg = dataclasses.replace(cfg.model, in_channels=cfg.data.in_channels)
    data = cfg.to_dict()["data"]
    data["normalizer"] = normalizer.to_dict()
    optim = cfg.train.optimizer_hparams()
    optim.update(
        T_0=cfg.T_0,
        T_mult=cfg.T_mult,
        min_lr=cfg.min_lr,
        lr_patience=cfg.lr_patience,
        monitor="val/mcc",
        mode="max",
    )
    return GlacierSegModule(
        model=dataclasses.asdict(model_cfg),
        loss=dataclasses.asdict(cfg.loss),
        data=data,
        mixup=cfg.sampling.mixup,
        mixup_alpha=cfg.sampling.mixup_alpha,
        cutmix=cfg.sampling.cutmix,
        cutmix_alpha=cfg.sampling.cutmix_alpha,
        seed=cfg.train.seed,
        **optim,
    )


def train(
    cfg: GlacierTrainConfig, extra_callbacks: Sequence[Any] = (), **trainer_kwargs: Any
) -> dict[str, Any]:
    """Train (``trainer_kwargs`` override Lightning Trainer arguments); returns ``{"run_dir", "best_checkpoint", "best_val_mcc", "epochs", "seconds"}``.

    Writes ``run_dir/config.json``, Lightning checkpoints (``best`` by ``val/mcc``, ``last``),
    ``metrics.csv`` and ``summary.json``. With ``cfg.train.resume`` set it continues from
    ``last.ckpt``.
    """
    if cfg.demo:
        from glacier_seg.demo import build_demo_layout

        cfg.data.data_root = build_demo_layout(
            cfg.train.output_dir / "demo_data", seed=cfg.train.seed
        )
        if not cfg.data.val_ids:
            cfg.data.val_ids = tuple(
                json.loads((cfg.data.data_root / "split.json").read_text())["val"]
            )
    seed_everything(cfg.train.seed)
    started = time.perf_counter()
    train_tiles, val_tiles, normalizer = prepare_data(cfg)
    train_loader, val_loader = build_dataloaders(cfg, train_tiles, val_tiles, normalizer)
    run_dir = prepare_run_dir(cfg.train.output_dir, cfg.train.experiment_name, cfg.to_dict())
    module = build_module(cfg, normalizer)
    overrides: dict[str, Any] = dict(trainer_kwargs)
    if cfg.max_time_s:
        overrides["max_time"] = timedelta(seconds=cfg.max_time_s)
    if cfg.limit_train_batches:
        overrides["limit_train_batches"] = cfg.limit_train_batches
    trainer = build_trainer(
        cfg.train,
        run_dir,
        monitor="val/mcc",
        mode="max",
        extra_callbacks=[_sampler_epoch_callback(), *extra_callbacks],
        **overrides,
    )
    ckpt = resume_checkpoint(run_dir, cfg.train.resume)
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    summary = {
        "run_dir": str(run_dir),
        "best_checkpoint": best,
        "best_val_mcc": float(score) if score is not None else None,
        "epochs": int(trainer.current_epoch),
        "seconds": round(time.perf_counter() - started, 1),
        "train_tiles": [t.tile_id for t in train_tiles],
        "val_tiles": [t.tile_id for t in val_tiles],
    }
    from eo_common.io import atomic_save_json

    atomic_save_json(summary, run_dir / "summary.json")
    return summary


# ------------------------------------------------------------------------------------------- CLI
def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.replace(",", " ").split())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace(",", " ").split())


def _words(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.replace(",", " ").split())


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Data, GLCM and normalisation flags (shared by train, eval, predict and diagnose)."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--data_root", type=Path, default=None, help="GlacierHack root with Band1..Band5 and Label"
    )
    g.add_argument(
        "--normalization",
        choices=("percentile", "dataset"),
        default="percentile",
        help="per-tile 2-98 %% percentile stretch or training-set mean/std (default %(default)s)",
    )
    g.add_argument(
        "--include_glcm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="append GLCM texture channels (7 channels with 2 properties; default on)",
    )
    d = GLCMConfig()
    g.add_argument(
        "--glcm_band",
        type=int,
        default=d.band,
        help="1-based band to texture, 1..5 = B2,B3,B4,B6,B10 (default %(default)s)",
    )
    g.add_argument(
        "--glcm_window",
        type=int,
        default=d.window,
        help="odd window side in pixels (default %(default)s)",
    )
    g.add_argument(
        "--glcm_levels", type=int, default=d.levels, help="grey levels (default %(default)s)"
    )
    g.add_argument(
        "--glcm_distances",
        type=_ints,
        default=d.distances,
        help="pair distances, e.g. '1,2' (default 1)",
    )
    g.add_argument(
        "--glcm_angles",
        type=_floats,
        default=d.angles_deg,
        help="angles in degrees (default '0,45,90,135')",
    )
    g.add_argument(
        "--glcm_properties",
        type=_words,
        default=d.properties,
        help=f"comma-separated subset of {','.join(GLCM_PROPERTIES)} (default contrast,homogeneity)",
    )
    g.add_argument(
        "--glcm_per_angle",
        action="store_true",
        help="one channel per (distance, angle) instead of the mean",
    )
    g.add_argument(
        "--glcm_cache",
        type=Path,
        default=None,
        help="texture cache folder (default <output_dir>/glcm_cache)",
    )


def glcm_from_args(ns: argparse.Namespace) -> GLCMConfig:
    return GLCMConfig(
        band=ns.glcm_band,
        window=ns.glcm_window,
        levels=ns.glcm_levels,
        distances=tuple(ns.glcm_distances),
        angles_deg=tuple(ns.glcm_angles),
        properties=tuple(ns.glcm_properties),
        average_angles=not ns.glcm_per_angle,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glacier-train",
        description="Train a U-Net (smp, scSE attention) on GlacierHack tiles: background / glacier / "
        "debris / lake; best checkpoint by validation MCC over all validation pixels.",
    )
    add_data_args(parser)
    g = parser.add_argument_group("split and sampling")
    g.add_argument(
        "--val_ids",
        type=_words,
        default=(),
        help="tile ids for validation, e.g. '3,17' (default: a seeded val_fraction)",
    )
    g.add_argument(
        "--val_fraction",
        type=float,
        default=0.2,
        help="fraction of tiles for validation (default %(default)s)",
    )
    s = SamplingConfig()
    g.add_argument(
        "--crop_size",
        type=int,
        default=s.crop_size,
        help="training crop side, multiple of 32 (default %(default)s)",
    )
    g.add_argument(
        "--samples_per_epoch",
        type=int,
        default=None,
        help="crops per epoch (default 8 per training tile)",
    )
    g.add_argument(
        "--lake_weight",
        type=float,
        default=s.lake_weight,
        help="extra image-level sampling weight for tiles with lake",
    )
    g.add_argument(
        "--debris_weight",
        type=float,
        default=s.debris_weight,
        help="extra image-level sampling weight for tiles with debris",
    )
    g.add_argument(
        "--p_minority",
        type=float,
        default=s.p_minority,
        help="probability a crop is centred on a debris/lake pixel",
    )
    g.add_argument(
        "--mixup", action="store_true", help="MixUp batches (loss mixed with the same lambda)"
    )
    g.add_argument(
        "--mixup_alpha",
        type=float,
        default=s.mixup_alpha,
        help="MixUp Beta(alpha, alpha) (default %(default)s)",
    )
    g.add_argument(
        "--cutmix", action="store_true", help="CutMix batches (box pasted into image and mask)"
    )
    g.add_argument(
        "--cutmix_alpha",
        type=float,
        default=s.cutmix_alpha,
        help="CutMix Beta(alpha, alpha) (default %(default)s)",
    )
    g.add_argument("--no_augment", action="store_true", help="no random flips/rotations")
    m = ModelConfig()
    g = parser.add_argument_group("model")
    g.add_argument(
        "--encoder_name", default=m.encoder_name, help="smp encoder (default %(default)s)"
    )
    g.add_argument(
        "--encoder_weights",
        default=m.encoder_weights,
        help="none | imagenet | PATH to a local 3-channel encoder state dict",
    )
    g.add_argument(
        "--extra_channel_init",
        choices=("rgb_matched", "smp", "zero"),
        default=m.extra_channel_init,
        help="how pretrained RGB filters initialise 5/7 input channels (see README)",
    )
    g.add_argument(
        "--decoder_channels",
        type=_ints,
        default=m.decoder_channels,
        help="U-Net decoder widths, one per stage (default '256,128,64,32,16')",
    )
    g.add_argument(
        "--decoder_attention_type",
        choices=("scse", "none"),
        default=m.decoder_attention_type,
        help="decoder attention",
    )
    lo = LossConfig()
    g = parser.add_argument_group("loss (weighted sum; 0 switches a term off)")
    for name in ("focal", "dice", "mcc", "boundary", "lovasz", "tversky"):
        g.add_argument(
            f"--{name}_weight",
            type=float,
            default=getattr(lo, f"{name}_weight"),
            help=f"weight of the {name} term (default %(default)s)",
        )
    g.add_argument(
        "--focal_gamma",
        type=_floats,
        default=lo.focal_gamma,
        help="focal gamma, one value or one per class, e.g. '1,2,3,3'",
    )
    g.add_argument(
        "--class_weights",
        type=_floats,
        default=None,
        help="focal alpha per class, e.g. '0.5,1,2,4'",
    )
    g.add_argument(
        "--tversky_alpha",
        type=float,
        default=lo.tversky_alpha,
        help="Tversky false-positive weight",
    )
    g.add_argument(
        "--tversky_beta", type=float, default=lo.tversky_beta, help="Tversky false-negative weight"
    )
    add_training_args(parser)
    parser.set_defaults(experiment_name="glacier", lr_scheduler="cosine_restarts", max_epochs=60)
    g = parser.add_argument_group("schedule and run")
    g.add_argument(
        "--T_0",
        type=int,
        default=10,
        help="cosine_restarts: epochs of the first cycle (default %(default)s)",
    )
    g.add_argument("--T_mult", type=int, default=1, help="cosine_restarts: cycle length multiplier")
    g.add_argument(
        "--min_lr", type=float, default=0.0, help="lowest learning rate of cosine schedules"
    )
    g.add_argument(
        "--lr_patience",
        type=int,
        default=5,
        help="plateau: epochs without val MCC gain before decay",
    )
    g.add_argument(
        "--max_time_s", type=float, default=None, help="stop training after this many seconds"
    )
    g.add_argument(
        "--limit_train_batches", type=int, default=None, help="batches per epoch (debugging)"
    )
    g.add_argument(
        "--demo",
        action="store_true",
        help="train on the derived-label Landsat-8 demo tiles (eolab samples)",
    )
    return parser


def config_from_args(ns: argparse.Namespace) -> GlacierTrainConfig:
    """Parsed flags -> :class:`GlacierTrainConfig` (validates every value)."""
    data = DataConfig(
        data_root=ns.data_root,
        val_ids=tuple(str(int(v)) if v.isdigit() else v for v in ns.val_ids),
        val_fraction=ns.val_fraction,
        normalization=ns.normalization,
        include_glcm=ns.include_glcm,
        glcm=glcm_from_args(ns),
        glcm_cache=ns.glcm_cache,
    )
    sampling = SamplingConfig(
        crop_size=ns.crop_size,
        samples_per_epoch=ns.samples_per_epoch,
        lake_weight=ns.lake_weight,
        debris_weight=ns.debris_weight,
        p_minority=ns.p_minority,
        mixup=ns.mixup,
        mixup_alpha=ns.mixup_alpha,
        cutmix=ns.cutmix,
        cutmix_alpha=ns.cutmix_alpha,
        augment=not ns.no_augment,
    )
    if sampling.crop_size % 32:
        raise ValueError(f"--crop_size must be a multiple of 32, got {sampling.crop_size}")
    model = ModelConfig(
        encoder_name=ns.encoder_name,
        in_channels=data.in_channels,
        encoder_weights=ns.encoder_weights,
        decoder_attention_type=ns.decoder_attention_type,
        extra_channel_init=ns.extra_channel_init,
        decoder_channels=tuple(ns.decoder_channels),
    )
    loss = LossConfig(
        focal_weight=ns.focal_weight,
        dice_weight=ns.dice_weight,
        mcc_weight=ns.mcc_weight,
        boundary_weight=ns.boundary_weight,
        lovasz_weight=ns.lovasz_weight,
        tversky_weight=ns.tversky_weight,
        focal_gamma=tuple(ns.focal_gamma),
        class_weights=tuple(ns.class_weights) if ns.class_weights else None,
        tversky_alpha=ns.tversky_alpha,
        tversky_beta=ns.tversky_beta,
    )
    build_loss(loss)  # validate early (gamma count, all-zero weights)
    return GlacierTrainConfig(
        data=data,
        sampling=sampling,
        model=model,
        loss=loss,
        train=TrainConfig.from_args(ns),
        T_0=ns.T_0,
        T_mult=ns.T_mult,
        min_lr=ns.min_lr,
        lr_patience=ns.lr_patience,
        max_time_s=ns.max_time_s,
        limit_train_batches=ns.limit_train_batches,
        demo=ns.demo,
    )


def run_cli(fn: Any, argv: Sequence[str] | None, parser: argparse.ArgumentParser) -> int:
    """Parse, run, and turn input errors into one line on stderr with exit code 2."""
    ns = parser.parse_args(argv)
    try:
        result = fn(ns)
    except (ValueError, FileNotFoundError) as exc:
        first = str(exc).splitlines()
        print(
            f"{parser.prog}: error: {' | '.join(line.strip() for line in first)}", file=sys.stderr
        )
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``glacier-train``."""
    parser = build_parser()
    return run_cli(lambda ns: train(config_from_args(ns)), argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
