"""``WeightedSum``: combine named loss terms and report each term for logging."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

__all__ = ["WeightedSum"]


class WeightedSum(nn.Module):
    r"""Weighted sum of named loss terms; returns the total and every term's value for logging.

    .. math:: L = \sum_{n:\, w_n \ne 0} w_n\, L_n(\text{inputs}_n)

    Terms whose weight is 0 are skipped entirely (not computed, absent from ``parts``), so an
    ablation is a weight of 0. ``parts[name]`` is the *unweighted* term value, detached (for
    ``EOModule`` to log as ``{stage}/loss_{name}``).

    Inputs: positional and keyword arguments of ``forward`` are passed to every term, except
    that a keyword named like a term supplies that term's own inputs, as a tuple (positional
    arguments) or a dict (keyword arguments), e.g.
    ``loss(pred, target, boundary=(logits, dist_maps))``.

    Args:
        terms: ``{name: (loss_module, weight)}``; names must be valid Python identifiers without
            dots (they become keyword names and ``nn.ModuleDict`` keys); weights finite floats.

    Shape:
        - output: ``(total: scalar Tensor, parts: dict[str, scalar Tensor])``.

    Example:
        >>> from eo_common.losses import L1Loss, GradientLoss
        >>> loss = WeightedSum({"l1": (L1Loss(), 1.0), "grad": (GradientLoss(), 0.5)})
        >>> pred = torch.tensor([[[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]])
        >>> total, parts = loss(pred, torch.zeros_like(pred))
        >>> total
        tensor(1.)
        >>> parts
        {'l1': tensor(0.3333), 'grad': tensor(1.3333)}
    """

    def __init__(self, terms: Mapping[str, tuple[nn.Module, float]]) -> None:
        super().__init__()
        if not isinstance(terms, Mapping) or not terms:
            raise ValueError("terms must be a non-empty dict {name: (loss_module, weight)}")
        modules: dict[str, nn.Module] = {}
        weights: dict[str, float] = {}
        for name, spec in terms.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(
                    f"term name {name!r} must be a Python identifier (letters, digits, _)"
                )
            if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
                raise ValueError(
                    f"term {name!r} must be given as (loss_module, weight), got {spec!r}"
                )
            module, weight = spec
            if not callable(module):
                raise ValueError(f"term {name!r}: {module!r} is not callable")
            modules[name] = module if isinstance(module, nn.Module) else _Callable(module)
            weights[name] = self._check_weight(name, weight)
        self.terms = nn.ModuleDict(modules)
        self.weights = weights

    @staticmethod
    def _check_weight(name: str, weight: Any) -> float:
        try:
            value = float(weight)
        except (TypeError, ValueError) as err:
            raise ValueError(f"weight of term {name!r} must be a number, got {weight!r}") from err
        if not math.isfinite(value):
            raise ValueError(f"weight of term {name!r} must be finite, got {value}")
        return value

    def set_weight(self, name: str, weight: float) -> None:
        """Change one term's weight (e.g. a schedule that ramps the boundary loss up)."""
        if name not in self.weights:
            raise ValueError(f"unknown term {name!r}; terms are {list(self.weights)}")
        self.weights[name] = self._check_weight(name, weight)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        per_term = {name: kwargs.pop(name) for name in list(kwargs) if name in self.weights}
        total: Tensor | None = None
        parts: dict[str, Tensor] = {}
        for name, weight in self.weights.items():
            if weight == 0:
                continue
            module = self.terms[name]
            if name in per_term:
                inputs = per_term[name]
                if isinstance(inputs, Mapping):
                    value = module(**inputs)
                elif isinstance(inputs, (tuple, list)):
                    value = module(*inputs)
                else:
                    raise ValueError(
                        f"inputs for term {name!r} must be a tuple (positional) or dict (keyword), "
                        f"got {type(inputs).__name__}"
                    )
            else:
                value = module(*args, **kwargs)
            if not isinstance(value, Tensor) or value.ndim != 0:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"term {name!r} must return a scalar tensor, got {shape}")
            parts[name] = value.detach()
            total = weight * value if total is None else total + weight * value
        if total is None:
            raise ValueError("every term has weight 0: nothing to compute")
        return total, parts

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={weight:g}" for name, weight in self.weights.items())


class _Callable(nn.Module):
    """Wrap a plain function so it can sit in the ModuleDict."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.fn(*args, **kwargs)
