"""Pruning events of both schedules on hand-built cases, checked against hand counts and an
independent float64 re-computation of the smoothed scores."""
import pytest
import torch
from torch import nn

from dora_bench.dora import DoraConfig, apply_dora, dem_penalty
from dora_bench.dora.schedule import AuthorsCodeSchedule, PaperSchedule

SHAPES = {"first": (4, 6), "second": (6, 5), "third": (5, 8), "fourth": (8, 3)}


def build(n_layers, total_steps, **overrides):
    torch.manual_seed(0)
    names = list(SHAPES)[:n_layers]
    model = nn.ModuleDict({name: nn.Linear(*SHAPES[name]) for name in names})
    config = DoraConfig(target_modules=names, **({"final_budget": 2, "reg_coefficient": 0.0} | overrides))
    return apply_dora(model, config, total_steps)


def c_values(controller, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(layer.rank, generator=gen) for name, layer in controller.layers.items()}


def write_c(controller, values):
    """Stand-in for an optimizer step that moves c (pruned components included)."""
    with torch.no_grad():
        for name, layer in controller.layers.items():
            layer.c.copy_(values[name])


def reference_shares(layer):
    A, B, c = (p.detach().double() for p in (layer.A, layer.B, layer.c))
    updates = [c[k] * torch.outer(B[:, k], A[k]) for k in range(len(c))]
    total = torch.linalg.matrix_norm(sum(updates))
    return torch.stack([torch.linalg.matrix_norm(u) for u in updates]) / (total + 1e-8)


class Reference:
    """Float64 EMA of the materialised shares, in module order."""

    def __init__(self, controller):
        self.controller = controller
        self.scores = torch.zeros(len(controller.layers), controller.config.initial_budget, dtype=torch.float64)

    def update(self):
        raw = torch.stack([reference_shares(layer) for layer in self.controller.layers.values()])
        self.scores = 0.9 * self.scores + 0.1 * raw

    def assert_matches(self):
        got = torch.stack(list(self.controller.scores.values())).double()
        assert torch.allclose(got, self.scores, rtol=1e-5, atol=1e-7)


def current_c(controller):
    return torch.stack([layer.c.detach().clone() for layer in controller.layers.values()])


def test_authors_code_events_and_counts_with_non_integer_offset():
    # T = 33: 0.15·T = 4.95, so p = int(t − 4.95) is 0 at t = 4 and t = 5; P = int(0.35·33) = 11.
    controller = build(3, total_steps=33, prune_interval=5, schedule="authors_code")
    assert controller.final_step == 16
    # N = 9 components; k = max(1, int(9 · (1/3) · (p/11)³)) for p = 0, 0, 5, 10, 11.
    expected_k = {4: 1, 5: 1, 10: 1, 15: 2, 16: 3}
    values = c_values(controller)
    reference = Reference(controller)
    for t in range(1, 17):
        write_c(controller, values)
        reference.update()
        controller.step(t)
        reference.assert_matches()
        if t in expected_k:
            order = torch.argsort(reference.scores.flatten())
            pruned = torch.zeros(9, dtype=torch.bool)
            pruned[order[: expected_k[t]]] = True
            assert torch.equal(current_c(controller).flatten() == 0, pruned), t
    assert [event["step"] for event in controller.history] == list(expected_k)
    assert [9 - event["kept"] for event in controller.history] == list(expected_k.values())
    # the reported budget: r'·(1 − (r' − b)/r'·(p/P)³) with r' = 3, b = 2 at p = 0, 0, 5, 10, 11
    budgets = [3 * (1 - (p / 11) ** 3 / 3) for p in (0, 0, 5, 10, 11)]
    assert [e["budget"] for e in controller.history] == pytest.approx(budgets)
    assert sum(controller.rank_pattern().values()) == 6


def test_authors_code_mask_is_frozen_after_P():
    controller = build(3, total_steps=20, prune_interval=3, schedule="authors_code")
    # 0.15·20 = 3: events at p = 0, 3, 6 (t = 3, 6, 9) and at p = P = 7 (t = 10).
    assert controller.final_step == 10
    values = c_values(controller)
    for t in range(1, 11):
        write_c(controller, values)
        controller.step(t)
    assert [event["step"] for event in controller.history] == [3, 6, 9, 10]
    frozen = current_c(controller) != 0
    scores = controller.scores
    for t in range(11, 21):
        write_c(controller, c_values(controller, seed=t))
        controller.step(t)
        assert torch.equal(current_c(controller) != 0, frozen)
    after = current_c(controller)
    assert torch.equal(after[frozen], torch.stack(list(c_values(controller, seed=20).values()))[frozen])
    assert all(torch.equal(scores[name], controller.scores[name]) for name in scores)  # no EMA after P
    assert len(controller.history) == 4


def test_authors_code_prunes_ties_at_threshold():
    # All c = 0 gives all scores 0: the first event (k = 1) prunes every tied component.
    controller = build(3, total_steps=20, prune_interval=3, schedule="authors_code")
    for t in range(1, 4):
        controller.step(t)
    assert controller.history == [{"step": 3, "budget": 3.0, "kept": 0}]

    schedule = AuthorsCodeSchedule(DoraConfig(target_modules=".*", final_budget=1, initial_budget=3), 100)
    scores = torch.tensor([[0.1, 0.2, 0.2], [0.2, 0.5, 0.6]])
    t = 50  # p = 35 = P: k = max(1, int(6 · (2/3))) = 4 → threshold 0.2, all three 0.2s pruned
    expected = torch.tensor([[False, False, False], [False, True, True]])
    assert torch.equal(schedule.keep_mask(t, scores), expected)


def test_authors_code_final_step_with_no_warm_up():
    # t_init = 0, T = 3: P = int(0.5·3) = 1 and p = t, so p = 1 = P at t = 1 is the final event.
    schedule = AuthorsCodeSchedule(DoraConfig(target_modules=".*", final_budget=1, t_init=0.0), 3)
    assert (schedule.P, schedule.final_step) == (1, 1)


def test_authors_code_rejects_too_few_steps():
    with pytest.raises(ValueError, match="total_steps=2"):
        build(1, total_steps=2, schedule="authors_code")


def test_paper_schedule_global_pruning_keeps_final_budget():
    # T = 40: t_i = 6, T − t_f = 20, Δ = 4 → events at 6, 10, 14, 18 and the final one at 20.
    controller = build(4, total_steps=40, prune_interval=4)
    assert controller.final_step == 20
    values = c_values(controller, seed=3)
    reference = Reference(controller)
    for t in range(1, 21):
        write_c(controller, values)
        reference.update()
        controller.step(t)
        reference.assert_matches()
    # b(t) = 2 + (1 − (t − 6)/14)³ and kept = int(4·b(t)).
    assert [(e["step"], e["kept"]) for e in controller.history] == [(6, 12), (10, 9), (14, 8), (18, 8), (20, 8)]
    assert controller.current_budget(10) == pytest.approx(2 + (1 - 4 / 14) ** 3)
    top = torch.zeros(12, dtype=torch.bool)
    top[torch.argsort(reference.scores.flatten(), descending=True)[:8]] = True
    assert torch.equal(current_c(controller).flatten() != 0, top)
    ranks = controller.rank_pattern()
    assert sum(ranks.values()) == 8 and len(set(ranks.values())) > 1  # allocation is global, not per matrix
    expected_count = sum(ranks[name] * sum(SHAPES[name]) for name in ranks)
    assert controller.trainable_parameter_count() == expected_count
    assert controller.initial_parameter_count() == sum(3 * (sum(SHAPES[name]) + 1) for name in SHAPES)


def top(scores, n):
    """Mask of the n highest scores (flattened, module order)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.flatten(), descending=True)[:n]] = True
    return keep


# (schedule, layers, T, Δ, {pruning event t: components kept}, seed of the first step's c) with the hand counts of
# the tests above; the seeds give c values under which the rankings compared below differ.
MOVING_SCORE_CASES = {
    "paper": ("paper", 4, 40, 4, {6: 12, 10: 9, 14: 8, 18: 8, 20: 8}, 500),
    "authors_code": ("authors_code", 3, 33, 5, {4: 8, 5: 8, 10: 8, 15: 7, 16: 6}, 100),
}


@pytest.mark.parametrize("case", sorted(MOVING_SCORE_CASES))
def test_pruning_ranks_by_the_smoothed_score_after_this_steps_update(case):
    """c moves between steps, so the EMA (Eq. 8), the raw share of this step and the EMA before this step's
    update rank the components differently; each event keeps the top of the float64 EMA after the update."""
    schedule, n_layers, total_steps, interval, kept, seed = MOVING_SCORE_CASES[case]
    controller = build(n_layers, total_steps=total_steps, prune_interval=interval, schedule=schedule)
    reference = Reference(controller)
    differs_from_raw = differs_from_previous = 0
    masks = {}
    for t in range(1, max(kept) + 1):
        write_c(controller, c_values(controller, seed=seed + t))
        previous = reference.scores.clone()
        reference.update()
        raw = torch.stack([reference_shares(layer) for layer in controller.layers.values()])
        controller.step(t)
        reference.assert_matches()
        if t in kept:
            masks[t] = expected = top(reference.scores, kept[t])
            assert torch.equal(current_c(controller).flatten() != 0, expected), t
            differs_from_raw += not torch.equal(top(raw, kept[t]), expected)
            differs_from_previous += not torch.equal(top(previous, kept[t]), expected)
    assert [(e["step"], e["kept"]) for e in controller.history] == sorted(kept.items())
    assert differs_from_raw and differs_from_previous    # the case tells the three rankings apart
    final, before = masks[max(kept)], masks[sorted(kept)[-2]]
    assert not torch.equal(final, before)                 # ... and the final event's mask from the one before it
    for t in range(max(kept) + 1, max(kept) + 4):         # later steps re-apply the final event's mask
        write_c(controller, c_values(controller, seed=seed + t))
        controller.step(t)
        assert torch.equal(current_c(controller).flatten() != 0, final), t


def test_pruned_component_regrows_between_events_but_not_after_final_mask():
    controller = build(2, total_steps=40, prune_interval=4)
    values = c_values(controller)
    assert controller.rank_pattern() == {"first": 3, "second": 3}   # r' each before the first event
    for t in range(1, 11):
        write_c(controller, values)
        controller.step(t)
    pruned = current_c(controller) == 0  # event at t = 10 kept int(2·2.36) = 4 of 6
    assert pruned.sum() == 2
    assert controller.rank_pattern() == dict(zip(controller.layers, (~pruned).sum(dim=1).tolist()))  # not yet final
    regrown = torch.where(pruned, torch.full_like(pruned, 0.7, dtype=torch.float), current_c(controller))
    write_c(controller, dict(zip(controller.layers, regrown)))
    controller.step(11)  # no event: the optimizer's value stays
    assert torch.equal(current_c(controller), regrown)
    for t in range(12, 21):
        write_c(controller, values)
        controller.step(t)
    final = current_c(controller) != 0
    scores_before = controller.scores
    write_c(controller, {name: torch.full((3,), 0.7) for name in controller.layers})
    controller.step(21)
    assert torch.equal(current_c(controller) != 0, final)
    # The paper's algorithm keeps smoothing after the final mask (it no longer matters).
    assert any(not torch.equal(scores_before[n], controller.scores[n]) for n in scores_before)


@pytest.mark.parametrize("schedule, last_regularised, eta", [("paper", 19, 0.5), ("authors_code", 20, 1.0)])
def test_dem_is_active_only_before_the_final_phase(schedule, last_regularised, eta):
    # T = 40: paper regularises steps t < T − t_f = 20; authors_code steps with p ≤ P (t ≤ 20).
    controller = build(2, total_steps=40, prune_interval=4, schedule=schedule, reg_coefficient=eta)
    values = c_values(controller)
    for t in range(1, 41):
        penalty = controller.regularization()  # the loss of step t
        assert (penalty.item() > 0) == (t <= last_regularised), t
        assert penalty.requires_grad == (t <= last_regularised)
        if t <= last_regularised:                   # η·DEM (Eq. 10)
            assert penalty.item() == pytest.approx(eta * dem_penalty(controller.layers.values()).item())
        write_c(controller, values)
        controller.step(t)


def test_zero_reg_coefficient_disables_dem():
    controller = build(2, total_steps=40)
    assert controller.regularization().item() == 0


def test_state_dict_rejects_other_layout():
    state = build(2, total_steps=40).state_dict()
    with pytest.raises(ValueError, match="total_steps"):
        build(2, total_steps=50).load_state_dict(state)
    with pytest.raises(ValueError, match="layer_names"):
        build(3, total_steps=40).load_state_dict(state)


def test_controller_follows_model_moved_after_injection():
    controller = build(2, total_steps=40, reg_coefficient=0.5)
    model_layers = list(controller.layers.values())
    for layer in model_layers:
        layer.to(torch.float64)
    values = c_values(controller)
    for t in range(1, 22):
        write_c(controller, {name: v.double() for name, v in values.items()})
        controller.step(t)
    assert sum(controller.rank_pattern().values()) == 4
    assert controller.regularization().item() == 0
    for layer in model_layers:
        layer.to("meta")
    controller.step(22)  # a final-phase step: scores and masks must move to the new device
    assert all(score.device.type == "meta" for score in controller.scores.values())
    assert controller.regularization().device.type == "meta"   # DEM is off: a zero on the model's device
    state = controller.state_dict()
    assert {state[k].device.type for k in ("scores", "mask", "final_mask")} == {"meta"}


def test_controller_state_starts_on_the_model_device_with_boolean_masks():
    model = nn.ModuleDict({name: nn.Linear(*SHAPES[name], device="meta") for name in ("first", "second")})
    controller = apply_dora(model, DoraConfig(target_modules=["first", "second"], final_budget=2), 40)
    state = controller.state_dict()
    assert controller.current_step == state["step"] == 0
    assert (state["scores"].device.type, state["mask"].device.type, state["mask"].dtype) == ("meta", "meta", torch.bool)
    assert state["final_mask"] is None


def test_paper_events_follow_the_interval_from_the_first_event():
    # T = 40, Δ = 5: events at t_i = 6, 11, 16 and the final one at 20 (not at t ≡ −6 mod 5).
    controller = build(2, total_steps=40, prune_interval=5)
    values = c_values(controller)
    for t in range(1, 21):
        write_c(controller, values)
        controller.step(t)
    assert [e["step"] for e in controller.history] == [6, 11, 16, 20]


def test_one_adapted_matrix_prunes_alone():
    controller = build(1, total_steps=40, prune_interval=4)
    values = c_values(controller)
    for t in range(1, 11):
        write_c(controller, values)
        controller.step(t)
    assert controller.history[-1] == {"step": 10, "budget": pytest.approx(2 + (1 - 4 / 14) ** 3), "kept": 2}
    assert int((current_c(controller) != 0).sum()) == 2


def test_paper_keep_mask_breaks_ties_by_module_then_component_order():
    # 4 matrices × r' = 10, all scores equal: b(T) = 4 keeps the first 16 in module order (a non-stable sort of
    # 40 equal values does not keep their order). The mask is boolean and on the scores' device.
    schedule = PaperSchedule(DoraConfig(target_modules=".*", final_budget=4, initial_budget=10), 40)
    keep = schedule.keep_mask(schedule.final_step, torch.full((4, 10), 0.5))
    assert keep.dtype == torch.bool and torch.equal(keep.flatten(), torch.arange(40) < 16)
    assert schedule.keep_mask(schedule.final_step, torch.zeros(4, 10, device="meta")).device.type == "meta"
