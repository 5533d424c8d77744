"""GLUE metrics against hand-computed values."""
import numpy as np
import pytest

from dora_bench.tasks.glue import glue_metrics


def test_accuracy_and_f1_by_hand():
    pred, gold = np.array([1, 0, 1, 1, 0]), np.array([1, 0, 0, 1, 1])
    m = glue_metrics(pred, gold, ("accuracy", "f1"))
    assert m["accuracy"] == pytest.approx(60.0)
    # tp=2, fp=1, fn=1 -> precision = recall = 2/3 -> F1 = 2/3
    assert m["f1"] == pytest.approx(200 / 3)


def test_matthews_by_hand():
    pred, gold = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 0, 0, 1, 1])
    tp, tn, fp, fn = 2, 2, 1, 1
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert glue_metrics(pred, gold, ("matthews",))["matthews"] == pytest.approx(100 * mcc)


def test_pearson_and_spearman_by_hand():
    pred, gold = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    # Pearson: centred x=(-1.5,-.5,.5,1.5), y=(-1.5,.5,-.5,1.5): sum xy=4, sum x^2=sum y^2=5 -> 0.8
    # Spearman on ranks equals the same here (values are already ranks).
    m = glue_metrics(pred, gold, ("pearson", "spearman"))
    assert m["pearson"] == pytest.approx(80.0) and m["spearman"] == pytest.approx(80.0)


def test_spearman_ranks_a_monotone_non_linear_prediction():
    gold = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # ranks of pred: 1, 3, 2, 4, 5 -> d = (0, 1, -1, 0, 0), Σd² = 2 -> rho = 1 - 6·2 / (5·(25 - 1)) = 0.9
    pred = np.array([0.1, 0.4, 0.2, 5.0, 50.0])
    # Pearson on the values (the closed form), centred gold = (-2, -1, 0, 1, 2)
    centred = pred - pred.mean()
    pearson = (centred @ (gold - 3)) / np.sqrt((centred @ centred) * 10)
    m = glue_metrics(pred, gold, ("pearson", "spearman"))
    assert m["spearman"] == pytest.approx(90.0) and m["pearson"] == pytest.approx(100 * pearson)
    assert abs(m["pearson"] - m["spearman"]) > 1                          # the case tells them apart
    # a strictly increasing transform keeps Spearman at 100 and moves Pearson below it
    m = glue_metrics(np.exp(gold), gold, ("pearson", "spearman"))
    assert m["spearman"] == pytest.approx(100.0) and m["pearson"] < 95


def test_constant_prediction_counts_as_zero_correlation():
    m = glue_metrics(np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0]), ("pearson",))
    assert m["pearson"] == 0.0
