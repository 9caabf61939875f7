"""LoRA adapters (peft), int8 frozen layers (bitsandbytes), merging and the PEFT export.

The adapters are injected with peft's :func:`~peft.inject_adapter_in_model` (adapter name
``"default"``), so the backbone keeps its own layer names; :func:`export_peft_adapter` writes them the
way the ecosystem loads them: ``PeftModel.save_pretrained`` (``adapter_config.json`` +
``adapter_model.safetensors``), loadable with ``PeftModel.from_pretrained(backbone, folder)`` onto the
same terratorch backbone.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "quantize_linear_8bit",
    "apply_lora",
    "lora_parameter_count",
    "trainable_state_dict",
    "merge_lora",
    "export_peft_adapter",
]

# bitsandbytes warns on every int8 matmul of a float32 input (it computes in float16); once is enough
warnings.filterwarnings("once", message="MatMul8bitLt: inputs will be cast")


def quantize_linear_8bit(module: nn.Module, target_regex: str = r".*") -> int:
    """Replace the ``nn.Linear`` layers of a frozen module whose name matches by bitsandbytes int8 layers.

    The weights are quantised (LLM.int8, row-wise absmax) when the module is next moved with ``.to()``;
    bitsandbytes 0.50 runs these layers on CPU too. Returns the number of layers replaced.
    """
    import bitsandbytes as bnb

    pattern = re.compile(target_regex)
    replaced = 0
    for name, child in list(module.named_modules()):
        if not isinstance(child, nn.Linear) or not pattern.fullmatch(name):
            continue
        q = bnb.nn.Linear8bitLt(
            child.in_features, child.out_features, bias=child.bias is not None,
            has_fp16_weights=False, threshold=6.0,
        )  # fmt: skip
        q.load_state_dict(child.state_dict())
        q.requires_grad_(False)
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, q)
        replaced += 1
    module.to("cpu")  # quantise now (Int8Params quantise on .to())
    return replaced


def apply_lora(
    module: nn.Module, *, rank: int, alpha: float, target_regex: str, dropout: float = 0.0
) -> nn.Module:
    """Freeze ``module`` and inject LoRA adapters (peft) into the layers whose full name matches.

    Raises:
        ValueError: rank < 1, or the regex matches no layer (the message shows a few layer names).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"--lora_rank must be >= 1, got {rank}")
    module.requires_grad_(False)
    pattern = re.compile(target_regex)
    names = [n for n, m in module.named_modules() if pattern.fullmatch(n)]
    if not names:
        examples = [n for n, _ in module.named_modules()][:12]
        raise ValueError(
            f"--lora_targets {target_regex!r} matches no layer; layers look like {examples}"
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_regex)
    return inject_adapter_in_model(config, module)


def lora_parameter_count(module: nn.Module) -> int:
    """Number of LoRA adapter parameters (``lora_A``/``lora_B``) in ``module``."""
    return sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)


def trainable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that require grad (adapters and heads), detached, on CPU."""
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


def merge_lora(module: nn.Module) -> int:
    """Merge every LoRA adapter into its base layer and remove the adapter wrappers (in place).

    Base layers must be float (rebuild without ``--load_in_8bit`` before merging). Returns the number
    of layers merged.
    """
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
            merged += 1
    return merged


def export_peft_adapter(
    backbone: nn.Module, build_base: Callable[[], nn.Module], out_dir: str | Path
) -> Path:
    """Write the LoRA adapters of ``backbone`` with PEFT's ``save_pretrained``.

    Args:
        backbone: a backbone with adapters injected by :func:`apply_lora` (int8 or float).
        build_base: builds the same backbone without adapters (float; its weights are not saved, only
            the adapters are). ``PeftModel.from_pretrained(build_base(), out_dir)`` loads the export.
        out_dir: folder for ``adapter_config.json`` and ``adapter_model.safetensors``.

    Returns:
        ``out_dir``.
    """
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    config = copy.deepcopy(backbone.peft_config["default"])
    adapters = get_peft_model_state_dict(backbone, adapter_name="default")
    peft_model = get_peft_model(build_base(), config)
    prefix = "base_model.model."  # the PeftModel's names of the backbone's layers
    result = set_peft_model_state_dict(peft_model, {prefix + k: v for k, v in adapters.items()})
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        raise RuntimeError(f"PEFT export: adapter weights not placed: {unexpected[:3]}")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))  # a kill leaves only the hidden partial folder
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir
