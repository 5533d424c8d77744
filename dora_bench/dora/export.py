"""Export the kept DoRA components as a standard PEFT LoRA adapter."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from .controller import DoraController
from .layer import DynamicRankLinear

if TYPE_CHECKING:
    from peft import LoraConfig

PREFIX = "base_model.model."


def _component_tensors(layer: DynamicRankLinear) -> tuple[torch.Tensor, torch.Tensor] | None:
    """LoRA (A, B) for the components with c_k ≠ 0, c folded into B; None when none is left."""
    kept = layer.c.detach().nonzero().flatten()
    if kept.numel() == 0:
        return None
    lora_a = layer.A.detach()[kept]
    # The product in fp32, stored in the adapter's dtype (PEFT upcasts half-precision adapters on load).
    lora_b = (layer.B.detach()[:, kept].float() * layer.c.detach()[kept].float()).to(layer.B.dtype)
    return lora_a.contiguous().cpu(), lora_b.contiguous().cpu()


def _head_tensors(model: nn.Module, modules_to_save: Sequence[str]) -> dict[str, torch.Tensor]:
    tensors = {}
    for target in modules_to_save:
        found = [(name, module) for name, module in model.named_modules()
                 if name == target or name.endswith("." + target)]
        if not found:
            raise ValueError(f"modules_to_save entry {target!r} names no module of the model")
        for name, module in found:
            if any(isinstance(m, DynamicRankLinear) for m in module.modules()):
                raise ValueError(f"modules_to_save entry {target!r} contains DoRA layers ({name})")
            for key, value in module.state_dict().items():
                tensors[f"{PREFIX}{name}.{key}"] = value.detach().contiguous().cpu().clone()
    return tensors


def export_peft_lora(
    model: nn.Module,
    controller: DoraController,
    out_dir: str,
    modules_to_save: Sequence[str] = ("classifier",),
    task_type: str | None = None,
    base_model_name_or_path: str | None = None,
) -> "LoraConfig":
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` loadable by
    ``PeftModel.from_pretrained(base, out_dir)`` on the un-adapted base model.

    A component is exported iff c_k ≠ 0, i.e. exactly the components that change the output:
    after the final mask these are the kept ones; earlier, regrown pruned ones count too.
    Per module, lora_A = A[kept], lora_B = B[:, kept]·diag(c[kept]) and alpha = s·r_k, so PEFT's
    scaling alpha/r_k equals DoRA's s. Modules without a component are left out.

    lora_A (r_k × d_in) and lora_B (d_out × r_k) have one orientation for ``nn.Linear`` and GPT-2's
    ``Conv1D``; only the base weight of a Conv1D is stored transposed, which PEFT's ``fan_in_fan_out`` says
    (it transposes B·A when merging). ``rank_pattern`` / ``alpha_pattern`` are keyed by full module names:
    PEFT matches a key as a regex ending at the end of a name and starting at a dot, so the key of
    ``layers.1.…`` never matches ``layers.11.…``. Decoders pass ``modules_to_save=()`` (their lm_head is tied
    to the embeddings and does not train) and ``task_type="CAUSAL_LM"``.
    """
    # Imported here so that training with DoRA needs torch only.
    from peft import LoraConfig
    from safetensors.torch import save_file

    tensors, ranks = {}, {}
    for name, layer in controller.layers.items():
        pair = _component_tensors(layer)
        if pair is None:
            continue
        tensors[f"{PREFIX}{name}.lora_A.weight"], tensors[f"{PREFIX}{name}.lora_B.weight"] = pair
        ranks[name] = pair[0].shape[0]
    if not ranks:
        raise ValueError("every DoRA component has c = 0: there is no update to export")
    # One flag for all targets; PEFT corrects it per module (with a warning) on a model mixing both kinds.
    fan_in_fan_out = any(controller.layers[name].fan_in_fan_out for name in ranks)
    tensors.update(_head_tensors(model, modules_to_save))

    scaling = next(iter(controller.layers.values())).scaling
    max_rank = max(ranks.values())
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    lora_config = LoraConfig(
        r=max_rank,
        lora_alpha=scaling * max_rank,
        lora_dropout=controller.config.lora_dropout,
        target_modules=list(ranks),
        rank_pattern=ranks,
        alpha_pattern={name: scaling * rank for name, rank in ranks.items()},
        fan_in_fan_out=fan_in_fan_out,
        modules_to_save=list(modules_to_save) or None,
        task_type=task_type,
        base_model_name_or_path=base_model_name_or_path,
        bias="none",
    )
    os.makedirs(out_dir, exist_ok=True)
    lora_config.save_pretrained(out_dir)
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    return lora_config
