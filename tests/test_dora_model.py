"""DoRA on RoBERTa models built from configs: injection, parameter counts, exact resume, and
export to a PEFT LoRA adapter that PEFT itself must reproduce."""
import copy
import re

import pytest
import torch
from torch import nn
from transformers import RobertaConfig, RobertaForSequenceClassification

from dora_bench.dora import DoraConfig, DynamicRankLinear, apply_dora, export_peft_lora

TARGETS = r".*\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
TOTAL_STEPS = 12


def tiny_roberta(seed=0):
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=40, num_labels=3)
    return RobertaForSequenceClassification(config)


def dora_model(schedule="paper"):
    model = tiny_roberta()
    config = DoraConfig(target_modules=TARGETS, final_budget=2, prune_interval=2, reg_coefficient=0.3,
                        schedule=schedule)
    controller = apply_dora(model, config, TOTAL_STEPS)
    model.classifier.requires_grad_(True)  # the runner's job: the task head trains fully
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2, weight_decay=0.01)
    return model, controller, optimizer


def batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(3, 100, (4, 16), generator=gen), torch.randint(0, 3, (4,), generator=gen))
            for _ in range(TOTAL_STEPS)]


def train(model, controller, optimizer, steps, data):
    model.train()
    for t in steps:
        input_ids, labels = data[t - 1]
        loss = model(input_ids=input_ids, labels=labels).loss + controller.regularization()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        controller.step(t)


@pytest.fixture(scope="module")
def trained():
    model, controller, optimizer = dora_model()
    train(model, controller, optimizer, range(1, TOTAL_STEPS + 1), batches())
    return model, controller


def test_layer_forward_matches_materialised_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = DynamicRankLinear(copy.deepcopy(base), rank=3, lora_alpha=8, lora_dropout=0.1).eval()
    x = torch.randn(2, 4, 6)
    assert torch.equal(layer(x), base(x))  # c = 0 at init
    with torch.no_grad():
        layer.c.copy_(torch.tensor([0.5, -1.0, 2.0]))
    delta_w = (8 / 3) * layer.B @ torch.diag(layer.c) @ layer.A
    assert torch.allclose(layer(x), base(x) + x @ delta_w.T, atol=1e-6)
    assert not layer.base_layer.weight.requires_grad and not layer.base_layer.bias.requires_grad


def test_init_is_kaiming_uniform_with_bound_sqrt_6_over_fan_in():
    torch.manual_seed(0)
    layer = DynamicRankLinear(nn.Linear(256, 512), rank=64, lora_alpha=8, lora_dropout=0.0)
    for tensor, fan_in in ((layer.A, 256), (layer.B, 64)):
        bound = (6 / fan_in) ** 0.5
        assert 0.99 * bound < tensor.abs().max() <= bound
    assert torch.equal(layer.c, torch.zeros(64)) and layer.scaling == 8 / 64


def test_injection_targets_six_matrices_per_layer_and_freezes_base():
    model = tiny_roberta()
    before = {name for name, _ in model.named_parameters()}
    controller = apply_dora(model, DoraConfig(target_modules=TARGETS, final_budget=2), 10)
    assert len(controller.layers) == 12
    assert all(isinstance(model.get_submodule(name), DynamicRankLinear) for name in controller.layers)
    assert not any("classifier" in name for name in controller.layers)
    assert not any(isinstance(m, DynamicRankLinear) for m in model.classifier.modules())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{name}.{p}" for name in controller.layers for p in "ABc"}
    assert len(list(model.parameters())) == len(before) + 36  # every pre-existing parameter is frozen


def test_list_targets_match_exact_names_and_dotted_suffixes():
    model = nn.ModuleDict({"dense": nn.Linear(2, 2), "xdense": nn.Linear(2, 2),
                           "head": nn.ModuleDict({"dense": nn.Linear(2, 2)})})
    controller = apply_dora(model, DoraConfig(target_modules=["dense"], final_budget=1), 10)
    assert list(controller.layers) == ["dense", "head.dense"]


def test_unmatched_targets_name_pattern_and_examples():
    with pytest.raises(ValueError) as info:
        apply_dora(tiny_roberta(), DoraConfig(target_modules=r"query", final_budget=2), 10)
    assert "target_modules='query'" in str(info.value)
    assert "roberta.encoder.layer.0.attention.self.query" in str(info.value)


def state_of(model, controller):
    return {name: p.detach().clone() for name, p in model.state_dict().items()}, controller.state_dict()


@pytest.mark.parametrize("schedule", ["paper", "authors_code"])
def test_resume_from_checkpoint_is_exact(tmp_path, schedule):
    data = batches()
    torch.manual_seed(123)  # the dropout stream
    model, controller, optimizer = dora_model(schedule)
    train(model, controller, optimizer, range(1, 6), data)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "dora": controller.state_dict(), "rng": torch.get_rng_state()}, tmp_path / "ckpt.pt")
    train(model, controller, optimizer, range(6, TOTAL_STEPS + 1), data)
    uninterrupted_params, uninterrupted_state = state_of(model, controller)
    assert 5 < controller.final_step == controller.history[-1]["step"]  # resuming crosses the final event

    checkpoint = torch.load(tmp_path / "ckpt.pt")  # weights_only: the controller state is plain data
    model, controller, optimizer = dora_model(schedule)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    controller.load_state_dict(checkpoint["dora"])
    torch.set_rng_state(checkpoint["rng"])
    train(model, controller, optimizer, range(6, TOTAL_STEPS + 1), data)
    resumed_params, resumed_state = state_of(model, controller)

    assert resumed_params.keys() == uninterrupted_params.keys()
    assert all(torch.equal(resumed_params[k], uninterrupted_params[k]) for k in resumed_params)
    for key in ("scores", "mask", "final_mask"):
        assert torch.equal(resumed_state[key], uninterrupted_state[key]), key
    assert resumed_state["history"] == uninterrupted_state["history"]
    assert resumed_state["step"] == TOTAL_STEPS


def logits(model, input_ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


@pytest.mark.parametrize("task_type", [None, "SEQ_CLS"])
def test_exported_peft_adapter_reproduces_model(tmp_path, trained, task_type):
    from peft import PeftModel

    model, controller = copy.deepcopy(trained)  # one memo: the copied controller holds the copied layers
    emptied = next(iter(controller.layers))
    with torch.no_grad():  # a matrix that lost every component must be left out, not break loading
        controller.layers[emptied].c.zero_()
    lora_config = export_peft_lora(model, controller, str(tmp_path), task_type=task_type)
    assert emptied not in lora_config.target_modules

    input_ids = torch.randint(3, 100, (5, 16), generator=torch.Generator().manual_seed(7))
    expected = logits(model, input_ids)
    peft_model = PeftModel.from_pretrained(tiny_roberta(), str(tmp_path))
    assert torch.allclose(logits(peft_model, input_ids), expected, rtol=0, atol=1e-5)
    for name, rank in lora_config.rank_pattern.items():
        layer = peft_model.base_model.model.get_submodule(name)
        assert layer.r["default"] == rank == int((model.get_submodule(name).c != 0).sum())
        assert layer.scaling["default"] == pytest.approx(8 / 3)
    merged = peft_model.merge_and_unload()
    assert not any("lora" in name for name, _ in merged.named_modules())
    assert torch.allclose(logits(merged, input_ids), expected, rtol=0, atol=1e-5)


def test_export_after_final_mask_keeps_exactly_the_kept_components(tmp_path, trained):
    model, controller = trained
    assert controller.current_step > controller.final_step
    lora_config = export_peft_lora(model, controller, str(tmp_path))
    kept = {name: rank for name, rank in controller.rank_pattern().items() if rank}
    assert lora_config.rank_pattern == kept
    assert sum(kept.values()) == 2 * 12


@pytest.fixture(scope="module")
def roberta_base_shaped():
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=130, num_labels=2)
    model = RobertaForSequenceClassification(config)
    controller = apply_dora(model, DoraConfig(target_modules=TARGETS, final_budget=8), 10)
    return model, controller


def test_roberta_base_parameter_counts(roberta_base_shaped):
    model, controller = roberta_base_shaped
    assert len(controller.layers) == 72
    dims = [layer.in_features + layer.out_features for layer in controller.layers.values()]
    assert sum(2 * d for d in dims) == 331_776 and sum(8 * d for d in dims) == 1_327_104  # LoRA r=2 / r=8
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == controller.initial_parameter_count() == 12 * 12 * (4 * (1536 + 1) + 2 * (3840 + 1))

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in controller.layers.values():
            layer.c.copy_(torch.randn(12, generator=gen))
    for t in range(1, controller.final_step + 1):
        controller.step(t)
    ranks = controller.rank_pattern()
    assert sum(ranks.values()) == 72 * 8
    per_component = {name: 3840 if re.search(r"(intermediate|output)\.dense$", name)
                     and "attention" not in name else 1536 for name in ranks}
    assert controller.trainable_parameter_count() == sum(ranks[n] * per_component[n] for n in ranks)
