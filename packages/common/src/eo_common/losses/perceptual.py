"""Feature-space losses on a frozen VGG16: perceptual (feature L1) and Gram-matrix texture loss.

Multispectral inputs are mapped explicitly onto VGG's three RGB inputs with ``rgb_bands``
(0-based channel indices in R, G, B order), scaled from ``input_range`` to [0, 1] and then
normalised with the ImageNet mean and std that torchvision's VGG16 weights expect.

Weights: ``weights_path`` (a local file: a torchvision ``vgg16`` state_dict, or the state_dict of
its ``features`` module; ``.pth``/``.pt`` via ``torch.load`` or ``.safetensors``), or
``pretrained=True`` (torchvision's ImageNet download, for users online), or neither: random
weights, with a warning that this is only meant for tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_float, check_images

__all__ = [
    "VGG16_LAYERS",
    "VGG16Features",
    "VGGPerceptualLoss",
    "perceptual_loss",
    "GramTextureLoss",
    "gram_matrix",
    "gram_texture_loss",
    "load_vgg16_features_state_dict",
]

#: Names of the ReLU outputs in ``torchvision.models.vgg16().features`` -> index in that Sequential.
VGG16_LAYERS: dict[str, int] = {
    "relu1_1": 1,
    "relu1_2": 3,
    "relu2_1": 6,
    "relu2_2": 8,
    "relu3_1": 11,
    "relu3_2": 13,
    "relu3_3": 15,
    "relu4_1": 18,
    "relu4_2": 20,
    "relu4_3": 22,
    "relu5_1": 25,
    "relu5_2": 27,
    "relu5_3": 29,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg16_features_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read VGG16 weights from a local file and return the state_dict of ``vgg16().features``.

    Accepts a full torchvision ``vgg16`` state_dict (keys ``features.0.weight`` ... and
    ``classifier.*``, the latter dropped) or a features-only one (keys ``0.weight`` ...), saved
    with ``torch.save`` or as ``.safetensors``. Raises ``FileNotFoundError`` when the file is
    missing and ``ValueError`` (naming the file) when it holds no VGG16 feature weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable / not a tensor file
        raise ValueError(f"cannot read VGG16 weights from {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict (got {type(state).__name__})")
    features: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("features."):
            features[key[len("features.") :]] = value
        elif key.split(".")[0].isdigit():
            features[key] = value
    if not features:
        raise ValueError(
            f"{path} holds no VGG16 feature weights (expected keys like 'features.0.weight' or "
            f"'0.weight'; found e.g. {list(state)[:3]})"
        )
    return features


def _load_trunk_weights(trunk: nn.Sequential, weights_path: str | Path) -> None:
    """Load the weights the (possibly truncated) trunk needs; deeper layers in the file are ignored."""
    state = load_vgg16_features_state_dict(weights_path)
    expected = trunk.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise ValueError(
            f"{weights_path} lacks VGG16 feature weights {missing[:4]} needed for the requested layers"
        )
    wrong = [
        f"{key}: {tuple(state[key].shape)} != {tuple(value.shape)}"
        for key, value in expected.items()
        if tuple(state[key].shape) != tuple(value.shape)
    ]
    if wrong:
        raise ValueError(f"{weights_path} does not match torchvision's VGG16 features: {wrong[:4]}")
    trunk.load_state_dict({key: state[key] for key in expected}, strict=True)


class VGG16Features(nn.Module):
    r"""Frozen VGG16 ``features`` trunk that returns the activations of named ReLU layers.

    The trunk is cut after the deepest requested layer, its parameters have
    ``requires_grad=False`` and it stays in eval mode (``train()`` does not switch it).
    Gradients still flow to the *input*, which is what a perceptual loss needs. The VGG weights
    are not part of ``state_dict()`` (a training checkpoint does not carry them, and loading one
    keeps the weights this extractor was built with).

    Args:
        layers: names from :data:`VGG16_LAYERS`, e.g. ``("relu1_2", "relu2_2", "relu3_3")``.
        weights_path: local weights file (see :func:`load_vgg16_features_state_dict`).
        pretrained: download torchvision's ImageNet weights (needs internet the first time).
        rgb_bands: 0-based input channels fed to VGG's R, G, B inputs, in that order. Default
            ``(3, 2, 1)`` = Sentinel-2 B04, B03, B02 of a 13-band (B01..B12 with B8A) stack; use
            ``(0, 1, 2)`` for an RGB image.
        input_range: ``(low, high)`` of the input values; mapped linearly onto [0, 1] before the
            ImageNet normalisation ``(x - mean) / std``.

    Shape:
        - input: ``(B, C, H, W)`` float with ``C > max(rgb_bands)``.
        - output: ``dict[name, (B, C_l, H_l, W_l)]``.
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        weights_path: str | Path | None = None,
        pretrained: bool = False,
        rgb_bands: Sequence[int] = (3, 2, 1),
        input_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        import torchvision

        layers = tuple(layers)
        unknown = [name for name in layers if name not in VGG16_LAYERS]
        if not layers or unknown:
            raise ValueError(
                f"unknown VGG16 layer names {unknown}; choose from {list(VGG16_LAYERS)}"
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers must be unique, got {layers}")
        rgb_bands = tuple(int(b) for b in rgb_bands)
        if len(rgb_bands) != 3 or min(rgb_bands) < 0:
            raise ValueError(
                f"rgb_bands must be 3 non-negative channel indices (R, G, B), got {rgb_bands}"
            )
        low, high = (float(v) for v in input_range)
        if not high > low:
            raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}")
        if weights_path is not None and pretrained:
            raise ValueError("give either weights_path or pretrained=True, not both")

        last = max(VGG16_LAYERS[name] for name in layers)
        if pretrained:
            weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1
            trunk = torchvision.models.vgg16(weights=weights).features[: last + 1]
        else:
            # the features trunk alone (same layers and keys as vgg16().features), without
            # allocating the 120 M-parameter classifier
            from torchvision.models.vgg import cfgs, make_layers

            trunk = make_layers(cfgs["D"], batch_norm=False)[: last + 1]
            if weights_path is not None:
                _load_trunk_weights(trunk, weights_path)
            else:
                warnings.warn(
                    "VGG16 perceptual/texture features use RANDOM weights (no weights_path, "
                    "pretrained=False): only meant for tests; pass weights_path=<local vgg16 "
                    "state_dict> or pretrained=True for a meaningful loss",
                    UserWarning,
                    stacklevel=3,
                )
        for module in trunk:
            if isinstance(module, nn.ReLU):
                module.inplace = False
        for param in trunk.parameters():
            param.requires_grad_(False)
        self.trunk = trunk.eval()
        self.layers = layers
        self._index_to_name = {VGG16_LAYERS[name]: name for name in layers}
        self.rgb_bands = rgb_bands
        self.input_range = (low, high)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # The frozen VGG weights come from weights_path / pretrained, never from a training
        # checkpoint: keep them out of state_dict() and keep the current ones on load_state_dict().
        self.register_state_dict_post_hook(_drop_trunk_state)
        self.register_load_state_dict_pre_hook(_keep_current_trunk_state)

    def train(self, mode: bool = True) -> VGG16Features:
        super().train(mode)
        self.trunk.eval()  # frozen feature extractor: always eval
        return self

    def to_vgg_input(self, x: Tensor) -> Tensor:
        """Select the RGB bands, scale ``input_range`` to [0, 1], ImageNet-normalise: ``(B, 3, H, W)``."""
        x = check_float(x, "input")
        if x.ndim != 4:
            raise ValueError(f"input must have shape (B, C, H, W), got {tuple(x.shape)}")
        if max(self.rgb_bands) >= x.shape[1]:
            raise ValueError(
                f"rgb_bands {self.rgb_bands} need at least {max(self.rgb_bands) + 1} channels, "
                f"input has {x.shape[1]}"
            )
        rgb = x[:, list(self.rgb_bands)]
        low, high = self.input_range
        rgb = (rgb - low) / (high - low)
        return (rgb - self.mean.to(rgb.dtype)) / self.std.to(rgb.dtype)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.to_vgg_input(x)
        out: dict[str, Tensor] = {}
        for index, module in enumerate(self.trunk):
            h = module(h)
            if index in self._index_to_name:
                out[self._index_to_name[index]] = h
        return out


def _drop_trunk_state(module: VGG16Features, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "trunk.")]:
        del state_dict[key]


def _keep_current_trunk_state(module: VGG16Features, state_dict: dict, prefix: str, *args) -> None:
    for key, value in module.trunk.state_dict().items():
        state_dict[prefix + "trunk." + key] = value


def _layer_weights(layers: Sequence[str], layer_weights: Sequence[float] | None) -> list[float]:
    if layer_weights is None:
        return [1.0] * len(layers)
    weights = [float(w) for w in layer_weights]
    if len(weights) != len(layers):
        raise ValueError(
            f"layer_weights needs one weight per layer ({len(layers)}), got {len(weights)}"
        )
    return weights


def _distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    if distance == "l1":
        return F.l1_loss(a, b)
    if distance == "l2":
        return F.mse_loss(a, b)
    raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")


def perceptual_loss(
    pred: Tensor,
    target: Tensor,
    feature_extractor: VGG16Features,
    layer_weights: Sequence[float] | None = None,
    distance: Literal["l1", "l2"] = "l1",
) -> Tensor:
    r"""Perceptual loss: weighted mean feature distance over VGG16 layers.

    .. math::
        L = \sum_l \lambda_l \, \operatorname{mean}\big|\phi_l(p) - \phi_l(t)\big|
        \quad (\text{or the mean squared difference for } \texttt{distance="l2"})

    where :math:`\phi_l` is the activation of layer ``l`` of ``feature_extractor`` (after band
    mapping and ImageNet normalisation) and :math:`\lambda_l` the layer weight (default 1).
    ``pred`` and ``target`` go through VGG in one batch.

    Args:
        pred: float ``(B, C, H, W)``.
        target: float ``(B, C, H, W)``.
        feature_extractor: a :class:`VGG16Features`.
        layer_weights: one weight per layer of the extractor, default all 1.
        distance: ``"l1"`` (default) or ``"l2"``.

    Returns:
        Scalar tensor; 0 exactly when ``pred == target`` on the three mapped bands.
    """
    pred, target = check_images(pred, target)
    weights = _layer_weights(feature_extractor.layers, layer_weights)
    feats = feature_extractor(torch.cat([pred, target], dim=0))
    b = pred.shape[0]
    total = pred.new_zeros(())
    for name, weight in zip(feature_extractor.layers, weights):
        if weight == 0:
            continue
        f = feats[name]
        total = total + weight * _distance(f[:b], f[b:], distance)
    return total


class VGGPerceptualLoss(nn.Module):
    r"""Perceptual loss on frozen VGG16 features, for any band count.

    .. math::
        L = \sum_l \lambda_l \, \operatorname{mean}\big|\phi_l(p_{\text{rgb}}) - \phi_l(t_{\text{rgb}})\big|

    :math:`p_{\text{rgb}}` = the bands ``rgb_bands`` of ``pred`` (R, G, B order) mapped from
    ``input_range`` to [0, 1] and normalised with the ImageNet mean/std; :math:`\phi_l` the ReLU
    output of VGG16 layer ``l`` (names in :data:`VGG16_LAYERS`); :math:`\lambda_l` =
    ``layer_weights`` (default 1). Bands not named in ``rgb_bands`` do not affect the loss.

    Args:
        weights_path: local VGG16 weights (a torchvision ``vgg16`` state_dict or the state_dict of
            its ``features``), e.g. the file torchvision caches as ``vgg16-397923af.pth``.
        pretrained: use torchvision's ImageNet download instead (online users).
            With neither, random weights are used and a ``UserWarning`` says this is only for tests.
        rgb_bands: 0-based channels mapped to VGG's R, G, B; default ``(3, 2, 1)`` (Sentinel-2
            B04, B03, B02 in a 13-band stack); ``(0, 1, 2)`` for plain RGB.
        layers: VGG16 layer names, default ``("relu1_2", "relu2_2", "relu3_3")``.
        layer_weights: one weight per layer, default all 1.
        input_range: value range of the inputs, mapped onto [0, 1] (default ``(0, 1)``).
        distance: ``"l1"`` (default) or ``"l2"``.

    Shape:
        - pred, target: ``(B, C, H, W)`` float, ``C > max(rgb_bands)``; ``H, W >= 2**(pools)``
          (16 px is enough for ``relu3_3``).
        - output: scalar.

    Example (random weights, so the value itself carries no meaning):
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     loss = VGGPerceptualLoss(rgb_bands=(0, 1, 2))
        >>> x = torch.rand(1, 3, 32, 32)
        >>> loss(x, x)
        tensor(0.)
    """

    def __init__(
        self,
        weights_path: str | Path | None = None,
        pretrained: bool = False,
        rgb_bands: Sequence[int] = (3, 2, 1),
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        layer_weights: Sequence[float] | None = None,
        input_range: tuple[float, float] = (0.0, 1.0),
        distance: Literal["l1", "l2"] = "l1",
    ) -> None:
        super().__init__()
        if distance not in ("l1", "l2"):
            raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
        self.features = VGG16Features(layers, weights_path, pretrained, rgb_bands, input_range)
        self.layer_weights = _layer_weights(self.features.layers, layer_weights)
        self.distance = distance

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return perceptual_loss(pred, target, self.features, self.layer_weights, self.distance)


# --------------------------------------------------------------------------------------- Gram
def gram_matrix(features: Tensor) -> Tensor:
    r"""Normalised Gram matrix of a feature map.

    .. math:: G_{ij} = \frac{1}{C H W} \sum_{h,w} F_{i,h,w} F_{j,h,w}

    Args:
        features: float ``(B, C, H, W)``.

    Returns:
        ``(B, C, C)``, symmetric.

    Example:
        >>> f = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]]]])  # (1, 2, 1, 2)
        >>> gram_matrix(f)
        tensor([[[0.5000, 0.5000],
                 [0.5000, 1.0000]]])
    """
    features = check_float(features, "features")
    if features.ndim != 4:
        raise ValueError(f"features must have shape (B, C, H, W), got {tuple(features.shape)}")
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def gram_texture_loss(
    pred: Tensor,
    target: Tensor,
    feature_extractor: VGG16Features | None = None,
    layer_weights: Sequence[float] | None = None,
    distance: Literal["l1", "l2"] = "l2",
) -> Tensor:
    r"""Texture (style) loss: distance between Gram matrices of features.

    .. math::
        L = \sum_l \lambda_l \, \operatorname{mean}\big(G(\phi_l(p)) - G(\phi_l(t))\big)^2

    (mean absolute difference for ``distance="l1"``), :func:`gram_matrix` for :math:`G`. With
    ``feature_extractor=None`` there is a single "layer", the raw bands themselves:
    :math:`L = \operatorname{mean}(G(p) - G(t))^2` over the ``(B, C, C)`` band co-moment matrices.

    Args:
        pred: float ``(B, C, H, W)``.
        target: float ``(B, C, H, W)``.
        feature_extractor: a :class:`VGG16Features`, or None for raw bands.
        layer_weights: one weight per layer (ignored for raw bands).
        distance: ``"l2"`` (default, Gatys et al.) or ``"l1"``.

    Example:
        >>> pred = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]]]])
        >>> gram_texture_loss(pred, torch.zeros_like(pred))
        tensor(0.4375)
    """
    pred, target = check_images(pred, target)
    if feature_extractor is None:
        return _distance(gram_matrix(pred), gram_matrix(target), distance)
    weights = _layer_weights(feature_extractor.layers, layer_weights)
    feats = feature_extractor(torch.cat([pred, target], dim=0))
    b = pred.shape[0]
    total = pred.new_zeros(())
    for name, weight in zip(feature_extractor.layers, weights):
        if weight == 0:
            continue
        gram = gram_matrix(feats[name])
        total = total + weight * _distance(gram[:b], gram[b:], distance)
    return total


class GramTextureLoss(nn.Module):
    r"""Gram-matrix texture loss on frozen VGG16 features or on the raw bands.

    .. math::
        L = \sum_l \lambda_l \, \operatorname{mean}\big(G(\phi_l(p)) - G(\phi_l(t))\big)^2, \qquad
        G(F)_{ij} = \frac{1}{CHW}\sum_{h,w} F_{ihw}F_{jhw}

    Args:
        layers: VGG16 layer names (ignored when ``feature_extractor=None``).
        layer_weights: one weight per layer, default all 1.
        feature_extractor: ``"vgg"`` (default: a frozen :class:`VGG16Features` built from the
            arguments below), an existing :class:`VGG16Features` (e.g. shared with a
            :class:`VGGPerceptualLoss`), or None for Gram matrices of the raw bands (any band count,
            no weights needed).
        weights_path, pretrained, rgb_bands, input_range: as in :class:`VGGPerceptualLoss`.
        distance: ``"l2"`` (default) or ``"l1"``.

    Shape:
        - pred, target: ``(B, C, H, W)`` float.
        - output: scalar.

    Example:
        >>> loss = GramTextureLoss(feature_extractor=None)
        >>> pred = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]]]])
        >>> loss(pred, torch.zeros_like(pred))
        tensor(0.4375)
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        layer_weights: Sequence[float] | None = None,
        feature_extractor: Literal["vgg"] | VGG16Features | None = "vgg",
        weights_path: str | Path | None = None,
        pretrained: bool = False,
        rgb_bands: Sequence[int] = (3, 2, 1),
        input_range: tuple[float, float] = (0.0, 1.0),
        distance: Literal["l1", "l2"] = "l2",
    ) -> None:
        super().__init__()
        if distance not in ("l1", "l2"):
            raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
        if feature_extractor == "vgg":
            feature_extractor = VGG16Features(
                layers, weights_path, pretrained, rgb_bands, input_range
            )
        elif feature_extractor is not None and not isinstance(feature_extractor, VGG16Features):
            raise ValueError(
                f"feature_extractor must be 'vgg', a VGG16Features or None, got {feature_extractor!r}"
            )
        self.features = feature_extractor
        self.layer_weights = (
            None
            if feature_extractor is None
            else _layer_weights(feature_extractor.layers, layer_weights)
        )
        self.distance = distance

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return gram_texture_loss(pred, target, self.features, self.layer_weights, self.distance)
