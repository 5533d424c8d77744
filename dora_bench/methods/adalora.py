"""AdaLoRA through PEFT, with the allocator hook the HF Trainer never calls by itself."""
from __future__ import annotations

from peft import AdaLoraConfig, get_peft_model
from peft.tuners.adalora import SVDLinear

from dora_bench.dora.config import default_initial_budget
from dora_bench.errors import UserError
from dora_bench.methods.base import PEFT_TASK_TYPES, MethodHandle, head_modules

E_SUFFIX = ".lora_E.default"


def apply(model, cfg, total_steps: int) -> MethodHandle:
    m = cfg.method
    init_r = m.init_r if m.init_r is not None else default_initial_budget(m.target_r)
    tinit, tfinal = int(m.t_init * total_steps), int(m.t_final * total_steps)
    if tinit >= total_steps - tfinal:
        raise UserError(f"method.t_init={m.t_init} + method.t_final={m.t_final} leave no pruning phase "
                        f"in {total_steps} optimizer steps; allowed: t_init + t_final < 1 with enough steps")
    config = AdaLoraConfig(  # a fresh config per model: PEFT mutates it (rank_pattern) while training
        task_type=PEFT_TASK_TYPES[cfg.task.head], target_modules=cfg.model.adapted_modules,
        modules_to_save=head_modules(model, cfg.task.head),
        target_r=m.target_r, init_r=init_r, tinit=tinit, tfinal=tfinal, deltaT=m.delta_t,
        beta1=m.beta1, beta2=m.beta2, orth_reg_weight=m.orth_reg_weight, total_step=total_steps,
        lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
    )
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=True)  # fp32 adapters on a bf16 base
    tuner = peft_model.base_model  # update_and_allocate lives on the unwrapped AdaLoraModel
    allocator = tuner.rankallocator
    dims = {name: (module.in_features, module.out_features)
            for name, module in tuner.model.named_modules() if isinstance(module, SVDLinear)}

    # The allocator's rank pattern lives here and is lent to PEFT's config only while PEFT needs it (allocation,
    # final export): with it set, PEFT saves a checkpoint's adapter cut to the kept triplets and cuts the modules
    # when loading one, so a run resumed in the pruning phase lost the masked triplets (which may come back) and
    # no longer matched its optimizer state.
    rank_pattern: dict | None = None

    def ranks() -> dict[str, int]:
        if not rank_pattern:
            return {name: init_r for name in dims}
        return {_module_name(key): int(sum(mask)) for key, mask in rank_pattern.items()}

    def paper_count() -> int:  # Σ r_k (d_in + d_out + 1): A rows, B columns and E entries kept
        return sum(r * (sum(dims[name]) + 1) for name, r in ranks().items())

    last_step = 0

    def after_optimizer_step(step: int) -> None:
        nonlocal last_step, rank_pattern
        last_step = step
        config.rank_pattern = rank_pattern
        tuner.update_and_allocate(step - 1)  # PEFT counts steps from 0
        rank_pattern, config.rank_pattern = config.rank_pattern, None

    def signals() -> dict[str, float]:
        budget, _ = allocator.budget_schedule(last_step - 1)  # total rank over all matrices
        return {"adalora_budget": budget, "adalora_kept_ranks": sum(ranks().values())}

    def state() -> dict:
        return {"ipt": allocator.ipt, "exp_avg_ipt": allocator.exp_avg_ipt, "exp_avg_unc": allocator.exp_avg_unc,
                "rank_pattern": rank_pattern or {}}

    def load(saved: dict) -> None:
        nonlocal rank_pattern
        allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = (
            saved["ipt"], saved["exp_avg_ipt"], saved["exp_avg_unc"])
        rank_pattern = saved["rank_pattern"] or None

    def export(out_dir: str) -> None:  # the adapter cut to the final rank pattern, as PEFT saves AdaLoRA
        config.rank_pattern = rank_pattern
        peft_model.save_pretrained(out_dir)

    return MethodHandle(
        model=peft_model,
        paper_trainable_params=paper_count,
        after_optimizer_step=after_optimizer_step,
        state_dict=state,
        load_state_dict=load,
        summary=lambda: {"rank_pattern": ranks(), "init_r": init_r, "target_r": m.target_r,
                         "tinit": tinit, "tfinal": tfinal, "total_step": total_steps},
        signals=signals,
        final_structure_step=total_steps - tfinal + 1,  # the final mask lands at PEFT step T - tfinal
        export=export,
    )


def _module_name(key: str) -> str:
    """Rank-pattern keys are parameter names (`...query.lora_E.default`); keep the module name."""
    return key.removesuffix(E_SUFFIX).removesuffix(".lora_E")
