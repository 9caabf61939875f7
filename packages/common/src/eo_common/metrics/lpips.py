"""LPIPS (Zhang et al. 2018, v0.1) from a local backbone weights file, on public APIs only.

The network is torchvision's public backbone (``alexnet``, ``vgg16`` or ``squeezenet1_1``, built
without weights and filled from the user's local file) cut into the LPIPS slices, plus the
published LPIPS v0.1 linear heads, which torchmetrics ships as package data
(``torchmetrics/functional/image/lpips_models/<net>.pth``) and which are read here with
``importlib.resources`` and ``torch.load``. The computation is LPIPS v0.1 exactly as torchmetrics'
:class:`~torchmetrics.image.LearnedPerceptualImagePatchSimilarity` does it (the tests compare the
two with the same backbone weights):

.. math::
    d(x, y) = \\sum_l \\frac{1}{H_l W_l} \\sum_{h, w} \\big\\| w_l \\odot (\\hat f^l_{hw}(x) -
    \\hat f^l_{hw}(y)) \\big\\|_2^2

with :math:`\\hat f^l` the channel-normalised activations of slice :math:`l` on inputs scaled to
[-1, 1] and shifted/scaled by the LPIPS constants, and :math:`w_l` the linear head of layer
:math:`l`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["LPIPS", "LPIPS_WEIGHTS_HELP", "LPIPS_NETS", "build_lpips", "lpips_head_weights"]

LPIPS_WEIGHTS_HELP = (
    "LPIPS needs the ImageNet weights of its backbone, which cannot be downloaded here. Pass "
    "`lpips_weights=<path>` pointing at a local file: either the torchvision state dict of the backbone "
    "(alex: alexnet-owt-7be5be79.pth, vgg: vgg16-397923af.pth, squeeze: squeezenet1_1-b8a52dc0.pth; "
    "on a machine with internet `torchvision.models.alexnet(weights='DEFAULT')` stores it under "
    "~/.cache/torch/hub/checkpoints/), or a full LPIPS state dict (keys 'net.slice*', 'lin*'). "
    "The LPIPS linear heads ship with torchmetrics and are used from there."
)

#: backbone constructor (torchvision) and the feature indices of each LPIPS slice
LPIPS_NETS: dict[str, tuple[str, tuple[range, ...]]] = {
    "alex": ("alexnet", (range(0, 2), range(2, 5), range(5, 8), range(8, 10), range(10, 12))),
    "vgg": ("vgg16", (range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30))),
    "squeeze": (
        "squeezenet1_1",
        (
            range(0, 2),
            range(2, 5),
            range(5, 8),
            range(8, 10),
            range(10, 11),
            range(11, 12),
            range(12, 13),
        ),
    ),
}


def lpips_head_weights(net: str) -> list[Tensor]:
    """The published LPIPS v0.1 linear heads of ``net``, one ``(1, C_l, 1, 1)`` tensor per layer,
    read from the copy torchmetrics ships as package data."""
    ref = resources.files("torchmetrics.functional.image").joinpath("lpips_models", f"{net}.pth")
    with resources.as_file(ref) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{k}.model.1.weight"] for k in range(len(LPIPS_NETS[net][1]))]


class LPIPS(nn.Module):
    """LPIPS v0.1 distance, ``(B, 3, H, W)`` x2 -> ``(B, 1, 1, 1)``; frozen, always in eval mode.

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"``.

    The backbone starts without weights (built on the meta device, so the discarded classifier of
    the torchvision model costs nothing): load them with :func:`build_lpips` (or
    :meth:`load_backbone`) before use; the linear heads are the published ones (:func:`lpips_head_weights`).
    """

    def __init__(self, net: Literal["alex", "vgg", "squeeze"] = "alex") -> None:
        super().__init__()
        import torchvision

        if net not in LPIPS_NETS:
            raise ValueError(f"lpips_net must be 'alex', 'vgg' or 'squeeze', got {net!r}")
        builder, ranges = LPIPS_NETS[net]
        with torch.device("meta"):  # no time or memory spent on weights that are replaced anyway
            features = getattr(torchvision.models, builder)(weights=None).features
        features = features.to_empty(device="cpu")
        self.backbone_loaded = False
        self.net_name = net
        self.slices = nn.ModuleList(
            nn.Sequential(*(features[i] for i in indices)) for indices in ranges
        )
        self.index = [list(indices) for indices in ranges]
        heads = lpips_head_weights(net)
        self.lins = nn.ModuleList(nn.Conv2d(w.shape[1], 1, 1, bias=False) for w in heads)
        with torch.no_grad():
            for lin, w in zip(self.lins, heads):
                lin.weight.copy_(w)
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """LPIPS never leaves evaluation mode."""
        return super().train(False)

    def load_backbone(self, state: dict[str, Tensor]) -> None:
        """Load torchvision ``features`` weights keyed ``N.*`` (feature index N); strict."""
        mapped = {}
        for key, value in state.items():
            index, _, rest = key.partition(".")
            for k, indices in enumerate(self.index):
                if index.isdigit() and int(index) in indices:
                    mapped[f"{k}.{indices.index(int(index))}.{rest}"] = value
        unused = [k for k in state if not k.partition(".")[0].isdigit()]
        if unused:
            raise RuntimeError(f"unexpected keys {unused[:5]}")
        self.slices.load_state_dict(mapped, strict=True)
        self.backbone_loaded = True

    @staticmethod
    def _unit(x: Tensor, eps: float = 1e-8) -> Tensor:
        return x / torch.sqrt(eps + torch.sum(x**2, dim=1, keepdim=True))

    def forward(self, x: Tensor, y: Tensor, normalize: bool = False) -> Tensor:
        """LPIPS of image pairs: ``x``, ``y`` ``(B, 3, H, W)`` in [-1, 1] (in [0, 1] with
        ``normalize=True``) -> ``(B, 1, 1, 1)``."""
        if not self.backbone_loaded:
            raise RuntimeError("LPIPS: load the backbone weights first (build_lpips)")
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        x, y = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for block, lin in zip(self.slices, self.lins):
            x, y = block(x), block(y)
            diff = (self._unit(x) - self._unit(y)) ** 2
            total = total + lin(diff).mean(dim=(2, 3), keepdim=True)
        return total


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a clear error
        raise ValueError(f"{path}: cannot read LPIPS weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors. {LPIPS_WEIGHTS_HELP}")
    return state


def build_lpips(weights_path: str | os.PathLike, net: str = "alex") -> LPIPS:
    """An :class:`LPIPS` network whose backbone weights come from a local file.

    The file holds either the torchvision state dict of the backbone (keys ``features.N.*`` or
    ``N.*``) or a complete LPIPS state dict as the ``lpips`` package and torchmetrics write it (keys
    ``net.sliceK.N.*`` or ``net.slices.K.N.*``, optionally ``linK.model.1.weight`` heads, which then
    replace the published ones).

    Raises:
        FileNotFoundError: the file does not exist (the message explains how to get one).
        ValueError: the file is not a matching state dict.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights file not found: {path}. {LPIPS_WEIGHTS_HELP}")
    if net not in LPIPS_NETS:
        raise ValueError(f"lpips_net must be 'alex', 'vgg' or 'squeeze', got {net!r}")
    state = _read_state_dict(path)
    model = LPIPS(net)  # type: ignore[arg-type]
    if any(k.startswith("net.") for k in state):
        # lpips / torchmetrics layout: net.sliceK.N.* (or net.slices.K.N.*) holds features[N]
        backbone = {}
        for key, value in state.items():
            if not key.startswith("net."):
                continue
            parts = key.split(".")
            offset = 3 if parts[1] == "slices" else 2  # skip "net", "sliceK" (or "slices", "K")
            backbone[".".join(parts[offset:])] = value
        heads = {k: v for k, v in state.items() if k.startswith("lin")}
        for k, lin in enumerate(model.lins):
            weight = heads.pop(f"lin{k}.model.1.weight", None)
            if weight is not None:
                with torch.no_grad():
                    lin.weight.copy_(weight)
        if heads:
            raise ValueError(f"{path}: unexpected LPIPS head keys {sorted(heads)[:5]}")
    else:
        has_prefix = any(k.startswith("features.") for k in state)
        backbone = {
            (k[len("features.") :] if has_prefix else k): v
            for k, v in state.items()
            if not has_prefix or k.startswith("features.")  # skip a full model's classifier
        }
    try:
        model.load_backbone(backbone)
    except RuntimeError as exc:
        raise ValueError(
            f"{path}: does not hold the weights of the LPIPS '{net}' backbone ({str(exc)[:300]}). "
            f"{LPIPS_WEIGHTS_HELP}"
        ) from exc
    return model
