"""The ``risk-pipeline`` configuration: typed sections, schema validation that lists every problem.

A config file is YAML with the sections ``dataset``, ``model``, ``training``, ``inference`` (with
``crf``) and ``evaluation`` plus the top-level keys ``output_dir`` and ``seed``. Every key maps to one
field of a dataclass below; the dataclass annotations and the ``metadata`` of each field (``min``,
``max``, ``choices``, ``path``) *are* the schema. :func:`validate_config` walks a parsed YAML mapping
against that schema and collects every problem (unknown key, wrong type, out-of-range value, missing
input file, encoder name unknown to segmentation_models_pytorch) instead of stopping at the first.

Example:
    >>> problems = validate_config({"dataset": {"tile_size": -4, "colour": 1}})
    >>> [p.field for p in problems][:3]
    ['dataset.colour', 'dataset.stack', 'dataset.labels']

Command line: ``risk-validate-config config.yaml`` prints ``OK`` or one line per problem and exits
with status 2 when there is any problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "DatasetConfig",
    "ModelConfig",
    "AugmentationConfig",
    "TrainingConfig",
    "CRFConfig",
    "InferenceConfig",
    "TargetsConfig",
    "EvaluationConfig",
    "PipelineConfig",
    "validate_config",
    "load_config",
    "config_to_dict",
    "config_from_dict",
    "build_section",
    "section_fingerprint",
    "known_encoder_names",
    "main",
]

CLASS_NAMES = ("low", "medium", "high")
NUM_CLASSES = 3
IGNORE_INDEX = 255


def _f(default: Any = dataclasses.MISSING, *, factory: Any = None, **meta: Any) -> Any:
    """A dataclass field with schema metadata (min, max, choices, path, doc)."""
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DatasetConfig:
    """Input rasters, tiling, the spatial split and minority-class oversampling.

    ``stack`` is one multi-band GeoTIFF or a list of single-band rasters; rasters on different grids
    are resampled onto the first with ``resampling`` (rasterio method name) when
    ``align_rasters`` is true, otherwise a grid mismatch is an error.
    """

    stack: str | list[str] = _f(
        None, path=True, required=True, doc="multi-band GeoTIFF or list of single-band rasters"
    )
    labels: str = _f(None, path=True, required=True, doc="label raster, uint8 0/1/2, 255 = ignore")
    band_names: list[str] | None = _f(None, doc="names of the stack bands (default band_1..)")
    align_rasters: bool = _f(False, doc="resample rasters on another grid onto the first one")
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = _f("bilinear")
    optical_bands: list[int] = _f(
        factory=list, min=0, doc="0-based stack bands that get colour jitter"
    )
    tile_size: int = _f(64, min=16, max=4096, doc="tile edge in pixels")
    overlap: int = _f(16, min=0, max=2048, doc="overlap of neighbouring tiles in pixels")
    min_valid_fraction: float = _f(
        0.5, min=0.0, max=1.0, doc="drop tiles with fewer labelled pixels"
    )
    block_size: int = _f(
        256, min=16, doc="edge of the square blocks that are assigned to one split"
    )
    val_fraction: float = _f(0.15, min=0.0, max=0.9)
    test_fraction: float = _f(0.15, min=0.0, max=0.9)
    oversample_class: int = _f(1, min=0, max=2)
    oversample_target_fraction: float = _f(0.3, min=0.0, max=0.95, doc="0 disables duplication")
    medium_rich_threshold: float = _f(0.3, min=0.0, max=1.0, doc="class fraction of a 'rich' tile")
    use_smote: bool = _f(True)
    smote_k_neighbors: int = _f(5, min=1, max=100)
    smote_ratio: float = _f(0.5, min=0.0, max=10.0, doc="synthetic tiles per medium-rich tile")
    smote_too_few: Literal["lower_k", "skip", "error"] = _f("lower_k")


@dataclass
class ModelConfig:
    """smp U-Net with a switchable spatial attention block and a softmax + CORAL head."""

    encoder: str = _f("resnet34", doc="any encoder name smp knows (efficientnet-b4, resnet50, ...)")
    encoder_weights: str | None = _f(None, doc="'imagenet' or null (offline: null)")
    attention: bool = _f(True, doc="channel + spatial attention on the deepest encoder features")
    attention_reduction: int = _f(16, min=1, max=256)
    dropout_prob: float = _f(0.2, min=0.0, max=0.9)
    decoder_channels: list[int] = _f(factory=lambda: [256, 128, 64, 32, 16], min=1, length=5)
    coral_ordered_biases: bool = _f(True, doc="keep CORAL biases decreasing (rank-consistent)")


@dataclass
class AugmentationConfig:
    """Geometric augmentation on all bands, photometric jitter on ``dataset.optical_bands`` only."""

    flips: bool = _f(True)
    rotations: bool = _f(True, doc="random multiples of 90 degrees")
    brightness: float = _f(0.1, min=0.0, max=2.0, doc="additive offset range in standard units")
    contrast: float = _f(0.1, min=0.0, max=1.0, doc="scale range around the tile mean")
    saturation: float = _f(0.1, min=0.0, max=1.0, doc="scale range around the optical-band mean")


@dataclass
class TrainingConfig:
    """Loss, optimisation and stopping."""

    epochs: int = _f(50, min=1, max=10000)
    patience: int = _f(10, min=1, doc="early stopping on val/kappa")
    batch_size: int = _f(16, min=1)
    lr: float = _f(1e-3, min=0.0, max=1.0)
    weight_decay: float = _f(1e-4, min=0.0, max=1.0)
    lr_scheduler: Literal["cosine", "step", "plateau", "cosine_restarts", "none"] = _f("cosine")
    use_focal_loss: bool = _f(True)
    focal_gamma: float = _f(2.0, min=0.0, max=10.0)
    class_weights: list[float] | None = _f(None, min=0.0, length=NUM_CLASSES)
    use_ordinal_loss: bool = _f(True, doc="add coral_weight x CORAL loss")
    coral_weight: float = _f(0.5, min=0.0, max=100.0)
    label_smoothing: float = _f(0.0, min=0.0, max=0.5)
    augmentation: AugmentationConfig = _f(factory=AugmentationConfig)
    num_workers: int = _f(0, min=0, max=64)
    accelerator: str = _f("auto", choices=("auto", "cpu", "gpu", "cuda", "mps"))
    budget_s: float | None = _f(None, min=1.0, doc="stop training after this wall-clock time")
    limit_train_batches: int | None = _f(None, min=1)


@dataclass
class CRFConfig:
    """Dense CRF refinement (pydensecrf) on overlapping tiles.

    ``spatial_weight`` is the standard deviation (pixels) of the smoothness kernel and
    ``compat_spatial`` its weight; the appearance (bilateral) kernel has ``bilateral_sxy`` pixels,
    ``bilateral_srgb`` grey levels (0-255) and weight ``compat_bilateral``. ``compatibility``:
    ``ordinal`` (label change i->j costs weight x |i - j|) or ``potts`` (every change costs weight).
    """

    enabled: bool = _f(True)
    iterations: int = _f(5, min=1, max=100)
    spatial_weight: float = _f(3.0, min=0.1, max=500.0)
    compat_spatial: float = _f(3.0, min=0.0, max=100.0)
    bilateral_sxy: float = _f(30.0, min=0.1, max=500.0)
    bilateral_srgb: float = _f(13.0, min=0.1, max=255.0)
    compat_bilateral: float = _f(10.0, min=0.0, max=100.0)
    compatibility: Literal["ordinal", "potts"] = _f(
        "potts", doc="label compatibility w|i-j| or Potts"
    )
    image_bands: list[int] = _f(factory=lambda: [0, 1, 2], min=0, length=3)
    tile_size: int = _f(1024, min=32, max=16384)
    overlap: int = _f(128, min=0, max=4096)
    workers: int = _f(1, min=1, max=64)


@dataclass
class InferenceConfig:
    """Sliding-window prediction of the whole raster."""

    tile_size: int = _f(256, min=16, max=8192)
    overlap: int = _f(64, min=0, max=4096)
    blend: Literal["cosine", "linear", "none"] = _f("cosine")
    batch_size: int = _f(8, min=1)
    tta: bool = _f(False, doc="average over the four flips (none, h, v, both)")
    mc_dropout_samples: int = _f(0, min=0, max=256, doc="0: off; N: dropout kept on, N passes")
    ensemble_seeds: list[int] = _f(
        factory=list, doc="train one model per seed, average probabilities"
    )
    head: Literal["softmax", "coral", "average"] = _f(
        "softmax", doc="head whose probabilities make the maps"
    )
    uncertainty: Literal["entropy", "mc_variance"] = _f("entropy")
    crf: CRFConfig = _f(factory=CRFConfig)


@dataclass
class TargetsConfig:
    """Success criteria (each ``>=``); null removes a row."""

    kappa: float | None = _f(0.48, min=-1.0, max=1.0)
    class1_precision: float | None = _f(0.22, min=0.0, max=1.0)
    class2_recall: float | None = _f(0.93, min=0.0, max=1.0)
    spearman_rho: float | None = _f(0.58, min=-1.0, max=1.0)


@dataclass
class EvaluationConfig:
    split: Literal["test", "val", "train", "all"] = _f("test")
    targets: TargetsConfig = _f(factory=TargetsConfig)
    baseline_metrics: str | None = _f(None, path=True, doc="metrics.json of a baseline run")


@dataclass
class PipelineConfig:
    output_dir: str = _f("runs/risk_mapping")
    seed: int = _f(0, min=0)
    dataset: DatasetConfig = _f(factory=DatasetConfig)
    model: ModelConfig = _f(factory=ModelConfig)
    training: TrainingConfig = _f(factory=TrainingConfig)
    inference: InferenceConfig = _f(factory=InferenceConfig)
    evaluation: EvaluationConfig = _f(factory=EvaluationConfig)


@dataclass
class ConfigProblem:
    """One problem found in a config; ``field`` is the dotted key, e.g. ``training.epochs``."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(ValueError):
    """A config file with problems; ``problems`` lists all of them, the message names the file."""

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} config problem(s):\n{lines}")


def known_encoder_names() -> list[str]:
    """Encoder names registered in segmentation_models_pytorch (timm-universal ``tu-*`` aside)."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return list(get_encoder_names())


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    """Does a YAML value fit the annotation ``tp``? (ints are accepted for floats, bools are not ints)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return isinstance(value, tp)


def _numbers_in(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
    return []


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


def _walk(
    raw: Any,
    cls: type,
    prefix: str,
    problems: list[ConfigProblem],
    base_dir: Path | None,
    check_files: bool,
) -> None:
    if not isinstance(raw, dict):
        problems.append(
            ConfigProblem(prefix or "<root>", f"expected a mapping, got {type(raw).__name__}")
        )
        return
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(ConfigProblem(f"{prefix}{key}", f"unknown key (known keys: {known})"))
    for name, fdef in fields.items():
        dotted = f"{prefix}{name}"
        tp = hints[name]
        if name not in raw:
            if fdef.metadata.get("required"):
                problems.append(ConfigProblem(dotted, "required key is missing"))
            elif dataclasses.is_dataclass(tp):
                _walk({}, tp, dotted + ".", problems, base_dir, check_files)
            continue
        value = raw[name]
        if dataclasses.is_dataclass(tp):
            _walk(
                value if value is not None else {},
                tp,
                dotted + ".",
                problems,
                base_dir,
                check_files,
            )
            continue
        if not _matches(value, tp):
            problems.append(
                ConfigProblem(
                    dotted, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
                )
            )
            continue
        meta = fdef.metadata
        for number in _numbers_in(value):
            if "min" in meta and number < meta["min"]:
                problems.append(
                    ConfigProblem(dotted, f"value {number!r} is below the minimum {meta['min']}")
                )
            if "max" in meta and number > meta["max"]:
                problems.append(
                    ConfigProblem(dotted, f"value {number!r} is above the maximum {meta['max']}")
                )
        if "choices" in meta and value not in meta["choices"]:
            problems.append(
                ConfigProblem(dotted, f"{value!r} is not one of {list(meta['choices'])}")
            )
        if "length" in meta and isinstance(value, list) and len(value) != meta["length"]:
            problems.append(
                ConfigProblem(dotted, f"expected {meta['length']} values, got {len(value)}")
            )
        if meta.get("path") and check_files and value is not None:
            for p in value if isinstance(value, list) else [value]:
                resolved = _resolve(p, base_dir)
                if not resolved.is_file():
                    problems.append(ConfigProblem(dotted, f"input file not found: {resolved}"))


def _cross_checks(raw: dict, problems: list[ConfigProblem]) -> None:
    """Checks between fields, on values that already passed the per-field checks."""
    bad = {p.field for p in problems}

    def get(section: str, key: str, default: Any) -> Any:
        sec = raw.get(section)
        if not isinstance(sec, dict) or f"{section}.{key}" in bad:
            return default
        return sec.get(key, default)

    ds = DatasetConfig()
    tile = get("dataset", "tile_size", ds.tile_size)
    overlap = get("dataset", "overlap", ds.overlap)
    if isinstance(tile, int) and isinstance(overlap, int) and overlap >= tile:
        problems.append(
            ConfigProblem("dataset.overlap", f"must be smaller than dataset.tile_size ({tile})")
        )
    block = get("dataset", "block_size", ds.block_size)
    if isinstance(tile, int) and isinstance(block, int) and block < tile:
        problems.append(
            ConfigProblem("dataset.block_size", f"must be at least dataset.tile_size ({tile})")
        )
    val = get("dataset", "val_fraction", ds.val_fraction)
    test = get("dataset", "test_fraction", ds.test_fraction)
    if isinstance(val, int | float) and isinstance(test, int | float) and val + test >= 1.0:
        problems.append(
            ConfigProblem("dataset.test_fraction", "val_fraction + test_fraction must be < 1")
        )

    inf = InferenceConfig()
    itile = get("inference", "tile_size", inf.tile_size)
    for section, size in (("dataset", tile), ("inference", itile)):
        if isinstance(size, int) and size % 32:
            problems.append(
                ConfigProblem(
                    f"{section}.tile_size", f"must be a multiple of 32 (U-Net), got {size}"
                )
            )
    ioverlap = get("inference", "overlap", inf.overlap)
    if isinstance(itile, int) and isinstance(ioverlap, int) and ioverlap >= itile:
        problems.append(
            ConfigProblem(
                "inference.overlap", f"must be smaller than inference.tile_size ({itile})"
            )
        )
    unc = get("inference", "uncertainty", inf.uncertainty)
    mc = get("inference", "mc_dropout_samples", inf.mc_dropout_samples)
    if unc == "mc_variance" and isinstance(mc, int) and mc < 2:
        problems.append(
            ConfigProblem(
                "inference.uncertainty", "'mc_variance' needs inference.mc_dropout_samples >= 2"
            )
        )
    crf = raw.get("inference", {}).get("crf") if isinstance(raw.get("inference"), dict) else None
    if isinstance(crf, dict):
        cdef = CRFConfig()
        ctile = crf.get("tile_size", cdef.tile_size)
        coverlap = crf.get("overlap", cdef.overlap)
        if (
            isinstance(ctile, int)
            and isinstance(coverlap, int)
            and "inference.crf.overlap" not in bad
            and coverlap >= ctile
        ):
            problems.append(
                ConfigProblem(
                    "inference.crf.overlap",
                    f"must be smaller than inference.crf.tile_size ({ctile})",
                )
            )

    encoder = get("model", "encoder", None)
    if isinstance(encoder, str) and "model.encoder" not in bad:
        names = known_encoder_names()
        if encoder not in names and not encoder.startswith("tu-"):
            import difflib

            close = difflib.get_close_matches(encoder, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(
                ConfigProblem(
                    "model.encoder",
                    f"{encoder!r} is not an encoder known to segmentation_models_pytorch{hint}",
                )
            )


def validate_config(
    raw: Any, *, base_dir: str | Path | None = None, check_files: bool = True
) -> list[ConfigProblem]:
    """Every problem of a parsed YAML config (empty list when it is valid).

    Args:
        raw: the mapping from ``yaml.safe_load``.
        base_dir: folder that relative input paths are resolved against (the config file's folder).
        check_files: also check that the input rasters exist.

    Example:
        >>> [str(p) for p in validate_config({"model": {"dropout_prob": 2}}, check_files=False)][-1]
        'model.dropout_prob: value 2 is above the maximum 0.9'
    """
    problems: list[ConfigProblem] = []
    base = Path(base_dir) if base_dir is not None else None
    _walk(raw, PipelineConfig, "", problems, base, check_files)
    if isinstance(raw, dict):
        _cross_checks(raw, problems)
    return problems


def build_section(cls: type, raw: dict) -> Any:
    """Build a config dataclass (nested sections too) from an already validated mapping."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        tp = hints[f.name]
        value = raw[f.name]
        kwargs[f.name] = build_section(tp, value or {}) if dataclasses.is_dataclass(tp) else value
    return cls(**kwargs)


def config_from_dict(
    raw: dict,
    *,
    base_dir: str | Path | None = None,
    check_files: bool = True,
    source: str = "<config>",
) -> PipelineConfig:
    """Validate and build a :class:`PipelineConfig`; input paths become absolute.

    Raises:
        ConfigError: listing every problem, with ``source`` (the file name) in the message.
    """
    problems = validate_config(raw, base_dir=base_dir, check_files=check_files)
    if problems:
        raise ConfigError(source, problems)
    cfg: PipelineConfig = build_section(PipelineConfig, raw)
    base = Path(base_dir) if base_dir is not None else None
    ds = cfg.dataset
    if isinstance(ds.stack, list):
        ds.stack = [str(_resolve(p, base)) for p in ds.stack]
    elif ds.stack is not None:
        ds.stack = str(_resolve(ds.stack, base))
    if ds.labels is not None:
        ds.labels = str(_resolve(ds.labels, base))
    if cfg.evaluation.baseline_metrics:
        cfg.evaluation.baseline_metrics = str(_resolve(cfg.evaluation.baseline_metrics, base))
    cfg.output_dir = str(_resolve(cfg.output_dir, base))
    return cfg


def load_config(path: str | Path, *, check_files: bool = True) -> PipelineConfig:
    """Read, validate and build the config in ``path`` (relative paths resolve against its folder).

    Raises:
        FileNotFoundError: the config file does not exist.
        ConfigError: the YAML does not parse or any field is invalid; all problems are listed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(
            str(path), [ConfigProblem("<yaml>", str(exc).replace("\n", " "))]
        ) from exc
    if raw is None:
        raw = {}
    return config_from_dict(raw, base_dir=path.parent, check_files=check_files, source=str(path))


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (JSON/YAML friendly)."""
    return dataclasses.asdict(cfg)


def section_fingerprint(*parts: Any) -> str:
    """Short sha256 of JSON-serialised config sections (used to detect stale stage outputs)."""
    blob = json.dumps(
        [p if not dataclasses.is_dataclass(p) else dataclasses.asdict(p) for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    """``risk-validate-config CONFIG``: list every problem; exit 0 when valid, 2 otherwise."""
    parser = argparse.ArgumentParser(
        prog="risk-validate-config",
        description="Validate a risk-pipeline config.yaml against the schema and list every problem "
        "(unknown key, wrong type, out-of-range value, missing input file, unknown smp encoder).",
    )
    parser.add_argument("config", type=Path, help="path of the YAML config")
    parser.add_argument(
        "--no_file_check", action="store_true", help="do not check that inputs exist"
    )
    args = parser.parse_args(argv)
    try:
        load_config(args.config, check_files=not args.no_file_check)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"OK: {args.config} is a valid risk-pipeline config")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
