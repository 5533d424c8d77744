"""DoRA equations against independent references: materialised matrices and hand formulas."""
import math

import pytest
import torch
from torch import nn

from dora_bench.dora import DoraConfig, DynamicRankLinear, budget_at, dem_penalty, importance_scores


def materialised_shares(A, B, c):
    """Eq. 7 straight from the definition: build every ΔW_k and their sum."""
    updates = [c[k] * torch.outer(B[:, k], A[k]) for k in range(A.shape[0])]
    total = torch.linalg.matrix_norm(sum(updates))
    return torch.stack([torch.linalg.matrix_norm(u) / (total + 1e-8) for u in updates])


def test_closed_form_importance_equals_materialised_definition():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    B = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    c = torch.randn(5, generator=gen, dtype=torch.float64)
    c[2] = 0.0
    scores = importance_scores(A, B, c)
    assert torch.allclose(scores, materialised_shares(A, B, c), rtol=0, atol=1e-10)
    assert scores[2] == 0
    # The denominator is the norm of the sum: non-orthogonal components make shares not sum to 1.
    assert not math.isclose(scores.sum().item(), 1.0, abs_tol=1e-3)


def test_importance_batches_over_leading_dims():
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    B = torch.randn(3, 9, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    batched = importance_scores(A, B, c)
    for i in range(3):
        assert torch.allclose(batched[i], materialised_shares(A[i], B[i], c[i]), rtol=0, atol=1e-10)


def test_cancelling_components_give_finite_scores():
    # c = (1, -1) on identical components: ΔW = 0 exactly, the quadratic form may round below 0.
    a, b = torch.randn(1, 5), torch.randn(7, 1)
    scores = importance_scores(torch.cat([a, a]), torch.cat([b, b], dim=1), torch.tensor([1.0, -1.0]))
    assert torch.isfinite(scores).all() and (scores > 1e6).all()


def make_layers(rank=3, shapes=((6, 4), (5, 9))):
    torch.manual_seed(0)
    return [DynamicRankLinear(nn.Linear(d_in, d_out), rank, lora_alpha=8, lora_dropout=0.0) for d_in, d_out in shapes]


@pytest.mark.parametrize("n_layers", [2, 1])
def test_dem_equals_hand_computed_unbiased_variances(n_layers):
    layers = make_layers()[:n_layers]

    def unbiased_var(values):
        values = values.tolist()
        mean = sum(values) / len(values)
        return sum((v - mean) ** 2 for v in values) / (len(values) - 1)

    total = sum(unbiased_var(layer.A[k]) + unbiased_var(layer.B[:, k]) for layer in layers for k in range(3))
    expected = total / (2 * len(layers) * 3)
    penalty = dem_penalty(layers)
    assert penalty.requires_grad
    assert math.isclose(penalty.item(), expected, rel_tol=1e-5)
    penalty.backward()
    assert all(layer.A.grad is not None and layer.B.grad is not None for layer in layers)


def test_dem_rejects_mixed_ranks():
    with pytest.raises(ValueError, match="^dem_penalty needs layers of one rank r'$"):
        dem_penalty(make_layers(rank=2) + make_layers(rank=3))


def test_paper_budget_phases_and_cubic_decay():
    T, b0, bT = 100, 12, 8

    def budget(t):
        return budget_at(t, T, b0, bT, 0.15, 0.5)

    assert all(budget(t) == b0 for t in range(0, 15))
    assert all(budget(t) == bT for t in range(50, 101))
    # Middle phase t_i = 15 ≤ t < T − t_f = 50, length 35: hand value at t = 22.
    assert math.isclose(budget(22), 8 + 4 * (1 - 7 / 35) ** 3)
    values = [budget(t / 4) for t in range(0, 4 * T + 1)]
    assert all(later <= earlier for earlier, later in zip(values, values[1:]))
    assert values[-1] < values[0]


def test_paper_budget_uses_exact_decimal_phase_boundaries():
    # 0.15·20 is 3 up to one ulp in floats; the phase must start at exactly t = 3.
    assert budget_at(3, 20, 3, 2, 0.15, 0.5) == 3.0
    assert budget_at(3.5, 20, 3, 2, 0.15, 0.5) < 3.0


def test_config_default_initial_budget():
    assert DoraConfig(target_modules=".*", final_budget=2).initial_budget == 3
    assert DoraConfig(target_modules=".*", final_budget=8).initial_budget == 12
    assert DoraConfig(target_modules=".*", final_budget=1).initial_budget == 2
    assert DoraConfig(target_modules=".*", final_budget=2, initial_budget=2).initial_budget == 2


@pytest.mark.parametrize(
    "overrides, field, value",
    [
        ({"final_budget": 8, "initial_budget": 2}, "initial_budget", "2"),
        ({"final_budget": 0.5}, "final_budget", "0.5"),
        ({"initial_budget": 0, "final_budget": 1}, "initial_budget", "0"),
        ({"initial_budget": 2.5}, "initial_budget", "2.5"),
        ({"t_init": -0.1}, "t_init", "-0.1"),
        ({"t_final": 1.0}, "t_final", "1.0"),
        ({"t_init": 0.5, "t_final": 0.5}, "t_init + t_final", "1.0"),
        ({"prune_interval": 0}, "prune_interval", "0"),
        ({"reg_coefficient": -0.1}, "reg_coefficient", "-0.1"),
        ({"beta": 1.0}, "beta", "1.0"),
        ({"beta": -0.5}, "beta", "-0.5"),
        ({"schedule": "adalora"}, "schedule", "adalora"),
        ({"lora_dropout": 1.5}, "lora_dropout", "1.5"),
        ({"lora_alpha": 0}, "lora_alpha", "0"),
        ({"target_modules": []}, "target_modules", "[]"),
    ],
)
def test_config_validation_names_field_and_value(overrides, field, value):
    kwargs = {"target_modules": ".*", "final_budget": 2} | overrides
    with pytest.raises(ValueError) as info:
        DoraConfig(**kwargs)
    message = str(info.value)
    assert f"DoraConfig.{field}=" in message and value in message, message
