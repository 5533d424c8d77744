"""DoRA on decoder LLMs built from transformers configs: a tiny Llama (nn.Linear, grouped-query attention) and a
tiny GPT-2 (Conv1D, weight stored d_in × d_out). Injection, what is never adapted, fp32 adapters on a bf16 base,
gradient checkpointing, the counted parameters, and export to a PEFT LoRA adapter that stock PEFT reproduces."""
import copy
import json

import pytest
import torch
from peft import PeftModel, PeftModelForCausalLM
from tiny_training import tiny_cfg
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from dora_bench.dora import DoraConfig, DynamicRankLinear, apply_dora, export_peft_lora, importance_scores
from dora_bench.errors import UserError
from dora_bench.methods import apply_method
from dora_bench.methods.base import head_modules

VOCAB = 64
LLAMA_TARGETS = r".*\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
GPT2_TARGETS = r".*\.h\.\d+\.(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))"
# hidden 32, 4 query heads of 8, 2 key/value heads (grouped-query attention: k/v project to 16), MLP 80 wide
LLAMA = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=32, tie_word_embeddings=True)
# (d_in, d_out) of each adapted matrix, from the config numbers above, not from the modules
LLAMA_SHAPES = {"q_proj": (32, 32), "k_proj": (32, 16), "v_proj": (32, 16), "o_proj": (32, 32),
                "gate_proj": (32, 80), "up_proj": (32, 80), "down_proj": (80, 32)}
GPT2_SHAPES = {"attn.c_attn": (32, 96), "attn.c_proj": (32, 32), "mlp.c_fc": (32, 128), "mlp.c_proj": (128, 32)}


def tiny_llama(layers=2, seed=0, **overrides):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**LLAMA, "num_hidden_layers": layers, **overrides})).eval()


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


MODELS = {"llama": (tiny_llama, LLAMA_TARGETS, LLAMA_SHAPES), "gpt2": (tiny_gpt2, GPT2_TARGETS, GPT2_SHAPES)}


def shape_of(name, shapes):
    return next(dims for suffix, dims in shapes.items() if name.endswith("." + suffix))


def token_batch(seed=7, rows=3, length=12):
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def logits(model, input_ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def random_c_(controller, seed=0):
    """Non-zero component scalars, as after some training, each module on its own scale so that pruning
    keeps different ranks per module."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in controller.layers.values():
            layer.c.copy_(torch.randn(layer.rank, generator=gen) * torch.rand(1, generator=gen) * 3)


def prune_to_final(controller):
    for t in range(1, controller.final_step + 1):
        controller.step(t)
    return controller.rank_pattern()


def runner_handle(model, adapted_modules, total_steps=10, *overrides):
    """The runner's thin adapter (methods/dora.py) on a decoder: a causal-LM task head, no trained head."""
    cfg = tiny_cfg("method=dora", "method.lora_dropout=0", *overrides)
    cfg.model.adapted_modules = adapted_modules
    cfg.task.head = "causal_lm"
    cfg.model.name_or_path = None
    return apply_method(model, cfg, total_steps)


# ---- the layer ---------------------------------------------------------------------------------------------

def test_conv1d_layer_is_the_linear_layer_of_the_transposed_weight():
    torch.manual_seed(0)
    conv = Conv1D(nf=5, nx=7)  # d_out 5, d_in 7: W stored 7 × 5, y = x W + b
    nn.init.normal_(conv.bias)
    linear = nn.Linear(7, 5)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    on_conv = DynamicRankLinear(conv, rank=3, lora_alpha=8, lora_dropout=0.0)
    on_linear = DynamicRankLinear(linear, rank=3, lora_alpha=8, lora_dropout=0.0)
    assert (on_conv.in_features, on_conv.out_features) == (7, 5) and on_conv.fan_in_fan_out
    assert on_conv.A.shape == on_linear.A.shape == (3, 7) and on_conv.B.shape == on_linear.B.shape == (5, 3)
    x = torch.randn(2, 4, 7)
    assert torch.equal(on_conv(x), conv(x))  # c = 0 at init
    with torch.no_grad():
        on_linear.A.copy_(on_conv.A)
        on_linear.B.copy_(on_conv.B)
        for layer in (on_conv, on_linear):
            layer.c.copy_(torch.tensor([0.5, -1.0, 2.0]))
    delta_w = (8 / 3) * on_conv.B @ torch.diag(on_conv.c) @ on_conv.A  # d_out × d_in
    torch.testing.assert_close(on_conv(x), x @ conv.weight + conv.bias + x @ delta_w.T)
    torch.testing.assert_close(on_conv(x), on_linear(x))


def test_fp32_adapter_on_bf16_base_casts_input_in_and_output_back():
    torch.manual_seed(0)
    base = nn.Linear(6, 5).to(torch.bfloat16)
    layer = DynamicRankLinear(copy.deepcopy(base), rank=3, lora_alpha=8, lora_dropout=0.0, dtype=torch.float32)
    assert {p.dtype for p in (layer.A, layer.B, layer.c)} == {torch.float32}
    assert layer.base_layer.weight.dtype == torch.bfloat16
    x = torch.randn(2, 6).to(torch.bfloat16)
    assert torch.equal(layer(x), base(x))
    with torch.no_grad():
        layer.c.copy_(torch.tensor([0.5, -1.0, 2.0]))
    out = layer(x)
    assert out.dtype == torch.bfloat16
    # PEFT's order: the bf16 base output plus the fp32 update, summed in fp32, rounded once to bf16.
    update = (x.float() @ layer.A.T * (layer.c * 8 / 3)) @ layer.B.T
    assert torch.equal(out, (base(x) + update).to(torch.bfloat16))


# ---- injection ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MODELS)
def test_injection_adapts_every_projection_with_its_shape_and_starts_at_the_base_model(kind):
    build, targets, shapes = MODELS[kind]
    model, base = build(), build()
    controller = apply_dora(model, DoraConfig(target_modules=targets, final_budget=2), 10)
    assert len(controller.layers) == 2 * len(shapes)
    for name, layer in controller.layers.items():
        assert isinstance(model.get_submodule(name), DynamicRankLinear)
        assert (layer.in_features, layer.out_features) == shape_of(name, shapes), name
        assert layer.A.shape == (3, layer.in_features) and layer.B.shape == (layer.out_features, 3)
        assert layer.fan_in_fan_out is (kind == "gpt2")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{name}.{p}" for name in controller.layers for p in "ABc"}
    assert not isinstance(model.lm_head, DynamicRankLinear)
    input_ids = token_batch()
    assert torch.equal(logits(model, input_ids), logits(base, input_ids))  # c = 0: ΔW = 0


def tied_toy():
    """No transformers model: a projection that shares its weight with an embedding table."""
    model = nn.ModuleDict({"embed": nn.Embedding(10, 4), "proj": nn.Linear(4, 10, bias=False), "dense": nn.Linear(4, 4)})
    model.proj.weight = model.embed.weight
    return model


@pytest.mark.parametrize("build,targets,refused", [
    (tiny_llama, ["lm_head"], "lm_head (the model's input or output embeddings)"),
    (lambda: tiny_llama(tie_word_embeddings=False), r"lm_head|.*_proj", "lm_head"),
    (tiny_llama, r".*", "model.embed_tokens"),
    (tiny_gpt2, ["wte", "c_attn"], "transformer.wte"),
    (tied_toy, ["proj", "dense"], "proj (its weight is tied to the token embeddings)"),
], ids=["llama-lm_head", "untied-lm_head", "llama-everything", "gpt2-wte", "tied-projection"])
def test_lm_head_and_embeddings_are_refused_and_the_model_is_left_untouched(build, targets, refused):
    model = build()
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="DoRA never adapts embeddings or lm_head") as info:
        apply_dora(model, DoraConfig(target_modules=targets, final_budget=2), 10)
    assert refused in str(info.value)
    assert not any(isinstance(m, DynamicRankLinear) for m in model.modules())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before


def test_the_runner_refuses_lm_head_in_one_line_naming_the_model_key():
    with pytest.raises(UserError) as info:
        runner_handle(tiny_llama(), r"lm_head|.*\.mlp\.down_proj")
    message = str(info.value)
    assert message.startswith("model.adapted_modules='lm_head|") and "\n" not in message
    assert "lm_head (the model's input or output embeddings)" in message


# ---- counted parameters ------------------------------------------------------------------------------------

def test_counted_parameters_on_llama_price_mlp_components_above_attention_ones():
    model = tiny_llama()
    handle = runner_handle(model, LLAMA_TARGETS, 10, "budget.rank=2")
    controller = handle.extra["controller"]
    cost = {suffix: d_in + d_out for suffix, (d_in, d_out) in LLAMA_SHAPES.items()}
    assert cost["gate_proj"] == cost["up_proj"] == cost["down_proj"] == 112 > cost["q_proj"] == 64 > cost["k_proj"] == 48
    assert handle.paper_trainable_params() == 2 * 3 * sum(cost.values())  # before pruning: r' = 3 everywhere
    assert handle.trainable_params() == sum(3 * (c + 1) for c in cost.values()) * 2  # A, B, c tensors; no head
    random_c_(controller)
    ranks = prune_to_final(controller)
    assert sum(ranks.values()) == 14 * 2 and len(set(ranks.values())) > 1
    by_hand = sum(rank * cost[name.rsplit(".", 1)[1]] for name, rank in ranks.items())
    assert handle.paper_trainable_params() == controller.trainable_parameter_count() == by_hand


# ---- export to PEFT ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MODELS)
def test_exported_adapter_reproduces_the_runners_logits_in_stock_peft(tmp_path, kind):
    build, targets, _ = MODELS[kind]
    model = build()
    handle = runner_handle(model, targets, 10, "budget.rank=2")
    controller = handle.extra["controller"]
    random_c_(controller)
    ranks = prune_to_final(controller)
    assert len(set(ranks.values())) > 1  # ranks differ per module: rank_pattern is exercised
    heads = head_modules(model, "causal_lm")
    assert heads is None  # a decoder has no head that trains: its lm_head is tied to the embeddings
    # What the runner's handle.export passes for the causal_lm head (PEFT task type CAUSAL_LM)
    export_peft_lora(model, controller, str(tmp_path), modules_to_save=heads or [], task_type="CAUSAL_LM")
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["task_type"] == "CAUSAL_LM" and saved["modules_to_save"] is None
    assert saved["fan_in_fan_out"] is (kind == "gpt2")

    input_ids = token_batch()
    expected = logits(model, input_ids)
    peft_model = PeftModel.from_pretrained(build(), str(tmp_path))
    assert isinstance(peft_model, PeftModelForCausalLM)
    for name, rank in ranks.items():
        layer = peft_model.base_model.model.get_submodule(name)
        if rank == 0:
            assert not hasattr(layer, "lora_A"), name
            continue
        assert layer.r["default"] == rank and layer.fan_in_fan_out is (kind == "gpt2"), name
        assert isinstance(layer.get_base_layer(), Conv1D if kind == "gpt2" else nn.Linear)
    torch.testing.assert_close(logits(peft_model, input_ids), expected, rtol=0, atol=1e-5)
    merged = peft_model.merge_and_unload()
    assert not any("lora" in name for name, _ in merged.named_modules())
    torch.testing.assert_close(logits(merged, input_ids), expected, rtol=0, atol=1e-5)


def test_rank_patterns_of_layer_1_and_layer_11_never_collide(tmp_path):
    small = dict(hidden_size=16, intermediate_size=24, num_attention_heads=2, num_key_value_heads=1)
    model = tiny_llama(layers=12, **small)
    controller = apply_dora(model, DoraConfig(target_modules=LLAMA_TARGETS, final_budget=2), 10)
    random_c_(controller)
    keep = {1: 1, 11: 3, 10: 2}  # components kept per module of a layer; other layers keep 2
    with torch.no_grad():
        for name, layer in controller.layers.items():
            index = int(name.split(".")[2])
            layer.c[keep.get(index, 2):] = 0
        controller.layers["model.layers.11.self_attn.q_proj"].c.zero_()  # left out of the adapter entirely
    lora_config = export_peft_lora_of(model, controller, tmp_path)
    assert lora_config.rank_pattern["model.layers.1.mlp.up_proj"] == 1
    assert lora_config.rank_pattern["model.layers.11.mlp.up_proj"] == 3
    assert "model.layers.11.self_attn.q_proj" not in lora_config.rank_pattern

    input_ids = token_batch()
    peft_model = PeftModel.from_pretrained(tiny_llama(layers=12, **small), str(tmp_path))
    adapted = peft_model.base_model.model
    for name, layer in controller.layers.items():
        rank = int((layer.c != 0).sum())
        if rank:
            assert adapted.get_submodule(name).r["default"] == rank, name
    assert not hasattr(adapted.get_submodule("model.layers.11.self_attn.q_proj"), "lora_A")
    assert adapted.get_submodule("model.layers.1.self_attn.q_proj").r["default"] == 1
    torch.testing.assert_close(logits(peft_model, input_ids), logits(model, input_ids), rtol=0, atol=1e-5)


def export_peft_lora_of(model, controller, out_dir):
    return export_peft_lora(model, controller, str(out_dir), modules_to_save=(), task_type="CAUSAL_LM")


def test_bf16_base_with_fp32_adapters_matches_peft_unmerged(tmp_path):
    model = tiny_llama().to(torch.bfloat16)
    controller = apply_dora(model, DoraConfig(target_modules=LLAMA_TARGETS, final_budget=2), 10)
    random_c_(controller)
    export_peft_lora_of(model, controller, tmp_path)
    peft_model = PeftModel.from_pretrained(tiny_llama().to(torch.bfloat16), str(tmp_path))  # upcasts LoRA to fp32
    assert peft_model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.dtype == torch.float32
    input_ids = token_batch()
    expected = logits(model, input_ids)
    assert expected.dtype == torch.bfloat16
    # Logits below 0.5 in bf16: an ulp is <= 2^-9; summation order flips a few roundings, never more.
    torch.testing.assert_close(logits(peft_model, input_ids), expected, rtol=0, atol=4e-3)
    assert (expected.float() - logits(tiny_llama().to(torch.bfloat16), input_ids).float()).abs().mean() > 0.05


# ---- training in mixed dtypes ------------------------------------------------------------------------------

@pytest.mark.parametrize("adapter_dtype,expected", [("fp32", torch.float32), ("base", torch.bfloat16)])
def test_adapters_on_a_bf16_base_train_with_finite_loss_and_gradients_in_their_dtype(adapter_dtype, expected):
    model = tiny_llama().to(torch.bfloat16)
    handle = runner_handle(model, LLAMA_TARGETS, 8, f"method.adapter_dtype={adapter_dtype}",
                           "method.reg_coefficient=0.5")
    controller = handle.extra["controller"]
    adapter = [p for p in model.parameters() if p.requires_grad]
    assert len(adapter) == 3 * 14 and {p.dtype for p in adapter} == {expected}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    optimizer = torch.optim.AdamW(adapter, lr=1e-2)
    input_ids = token_batch(rows=4, length=16)
    losses = []
    model.train()
    for t in range(1, 9):
        output = model(input_ids=input_ids, labels=input_ids)
        assert output.logits.dtype == torch.bfloat16  # outputs go back to the base dtype
        regularization = handle.extra_loss()
        assert regularization.dtype == torch.float32 and bool(regularization > 0) is (t < 4)  # DEM off from T − t_f
        loss = output.loss + regularization
        assert torch.isfinite(loss)
        loss.backward()
        for name, layer in controller.layers.items():
            for p in (layer.A, layer.B, layer.c):
                assert p.grad is not None and p.grad.dtype == expected and torch.isfinite(p.grad).all(), name
            if t > 1:  # c = 0 at the start gives A and B their first gradient at step 2
                assert layer.A.grad.abs().sum() > 0 and layer.B.grad.abs().sum() > 0, name
        optimizer.step()
        optimizer.zero_grad()
        handle.after_optimizer_step(t)
        losses.append(output.loss.item())
    assert losses[-1] < losses[0]
    state = handle.state_dict()
    assert state["scores"].dtype == torch.float32 and torch.isfinite(state["scores"]).all()
    assert state["scores"].abs().sum() > 0


def test_dem_and_importance_on_adapters_of_mixed_dtypes():
    model = nn.ModuleDict({"a": nn.Linear(6, 4), "b": nn.Linear(6, 4).to(torch.bfloat16), "c": nn.Linear(6, 4)})
    torch.manual_seed(0)
    controller = apply_dora(model, DoraConfig(target_modules=["a", "b", "c"], final_budget=1, adapter_dtype="base",
                                              reg_coefficient=1.0, t_init=0.1, t_final=0.1, prune_interval=1), 10)
    layers = list(controller.layers.values())
    assert [layer.A.dtype for layer in layers] == [torch.float32, torch.bfloat16, torch.float32]
    random_c_(controller)
    dem = controller.regularization()
    # Eq. 10 in float64 on the same values: Σ_k Var(a_k) + Var(b_k) over 3 matrices of r' = 2, / (2·3·2)
    by_hand = sum(layer.A.double().var(dim=1).sum() + layer.B.double().var(dim=0).sum() for layer in layers) / 12
    assert dem.dtype == torch.float32
    torch.testing.assert_close(dem.double(), by_hand, rtol=1e-6, atol=0)
    shares = {name: importance_scores(layer.A.double(), layer.B.double(), layer.c.double())
              for name, layer in controller.layers.items()}
    controller.step(1)  # the EMA starts at 0: s̄ = (1 − β)·s
    for name, score in controller.scores.items():
        assert score.dtype == torch.float32
        torch.testing.assert_close(score.double(), 0.1 * shares[name], rtol=1e-2, atol=1e-6)  # bf16 inputs
    for t in range(2, controller.final_step + 1):  # the final event writes its mask into c of both dtypes
        controller.step(t)
    ranks = controller.rank_pattern()
    assert sum(ranks.values()) == 3
    assert all((layer.c != 0).sum() == ranks[name] for name, layer in controller.layers.items())


# ---- gradient checkpointing --------------------------------------------------------------------------------

def adapter_gradients(checkpointing):
    """Gradients of every A, B, c of a tiny Llama (fixed non-zero c, no dropout) under one checkpointing mode,
    and how often the first adapted layer ran forward (2 when its block was recomputed for backward)."""
    model = tiny_llama()
    controller = apply_dora(model, DoraConfig(target_modules=LLAMA_TARGETS, final_budget=2, lora_dropout=0.0), 10)
    random_c_(controller)
    model.train()
    if checkpointing == "non-reentrant":  # what the engine uses: nothing else to enable
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif checkpointing.startswith("reentrant"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        if checkpointing == "reentrant+input-grads":
            model.enable_input_require_grads()
    calls = []
    model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *args: calls.append(1))
    input_ids = token_batch(rows=4, length=16)
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    grads = {f"{name}.{p}": getattr(layer, p).grad for name, layer in controller.layers.items() for p in "ABc"}
    return grads, len(calls)


@pytest.mark.parametrize("checkpointing", ["non-reentrant", "reentrant+input-grads"])
def test_gradient_checkpointing_gives_every_adapter_parameter_its_gradient(checkpointing):
    reference, calls = adapter_gradients("off")
    assert calls == 1
    grads, calls = adapter_gradients(checkpointing)
    assert calls == 2  # checkpointing really ran: the block was recomputed in backward
    assert grads.keys() == reference.keys() and len(grads) == 3 * 14
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
        # equal up to float rounding (recomputation may take another kernel path)
        torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-5 * float(reference[name].abs().max()),
                                   msg=name)


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad=True")
def test_reentrant_checkpointing_over_frozen_embeddings_cuts_the_graph():
    # peft issue 1142, why the engine uses use_reentrant=False: no input of a checkpointed block requires grad.
    with pytest.raises(RuntimeError, match="does not require grad"):
        adapter_gradients("reentrant")
