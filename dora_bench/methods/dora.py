"""DoRA (dynamic rank) in the runner: a thin adapter from the config to `dora_bench.dora`."""
from __future__ import annotations

from dataclasses import fields

import torch

from dora_bench.dora import DoraConfig, apply_dora, dem_penalty, export_peft_lora
from dora_bench.errors import UserError
from dora_bench.methods.base import PEFT_TASK_TYPES, MethodHandle, head_modules, is_head_parameter


def apply(model, cfg, total_steps: int) -> MethodHandle:
    try:
        options = {f.name: cfg.method[f.name] for f in fields(DoraConfig) if f.name in cfg.method}
        config = DoraConfig(target_modules=cfg.model.adapted_modules, **options)
        controller = apply_dora(model, config, total_steps)
    except ValueError as err:
        # The targets come from the model config; every other option from method.
        message = str(err).replace("DoraConfig.target_modules", "model.adapted_modules")
        raise UserError(message.replace("DoraConfig.", "method.")) from None
    heads = head_modules(model, cfg.task.head) or []
    for name, parameter in model.named_parameters():
        if is_head_parameter(name, cfg.task.head):
            parameter.requires_grad_(True)

    def summary() -> dict:
        pattern = controller.rank_pattern()
        return {
            "rank_pattern": pattern,
            "budget_reached": sum(pattern.values()) / len(pattern),
            "final_budget": config.final_budget,
            "initial_budget": config.initial_budget,
            "schedule": config.schedule,
            "reg_coefficient": config.reg_coefficient,
            "initial_parameter_count": controller.initial_parameter_count(),
            "trajectory": controller.history,
        }

    @torch.no_grad()
    def signals() -> dict[str, float]:
        return {"dora_budget": controller.current_budget(controller.current_step),  # b(t), per matrix
                "dora_kept_components": sum(controller.rank_pattern().values()),
                "dora_dem": float(dem_penalty(controller.layers.values()))}  # Eq. 10, before η

    return MethodHandle(
        model=model,
        paper_trainable_params=controller.trainable_parameter_count,
        extra_loss=controller.regularization,
        after_optimizer_step=controller.step,
        state_dict=controller.state_dict,
        load_state_dict=controller.load_state_dict,
        summary=summary,
        signals=signals,
        final_structure_step=controller.final_step,
        extra={"controller": controller},
        export=lambda out_dir: export_peft_lora(model, controller, out_dir, modules_to_save=heads,
                                                task_type=PEFT_TASK_TYPES[cfg.task.head],
                                                base_model_name_or_path=cfg.model.name_or_path),
    )
