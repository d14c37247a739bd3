"""Our metrics against scikit-learn's and against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from imgclass.evaluate.metrics import (
    calibration_bins,
    compute_metrics,
    expected_calibration_error,
    map_at_3,
    map_at_k,
    most_confused,
    top_k_accuracy,
)


def _random_case(seed: int, n: int = 400, k: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Labels over classes 0..k-2 (class k-1 never occurs), probabilities leaning to the
    truth, and class 2 (almost) never predicted."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k - 1, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += rng.random(n) * 0.6
    proba[:, 2] *= 0.01
    return y, proba / proba.sum(axis=1, keepdims=True)


def _check_against_sklearn(y: np.ndarray, proba: np.ndarray, k: int) -> None:
    m = compute_metrics(y, proba, [f"c{i}" for i in range(k)])
    pred = proba.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    for i in range(k):
        assert m["per_class"][f"c{i}"] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}, abs=1e-12
        )
    present = np.unique(y)
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, pred, labels=present, average="macro", zero_division=0), abs=1e-12
    )
    assert m["accuracy"] == pytest.approx(float((pred == y).mean()))
    assert m["top3_accuracy"] == pytest.approx(
        top_k_accuracy_score(y, proba, k=3, labels=range(k)), abs=1e-12
    )
    assert m["confusion"] == confusion_matrix(y, pred, labels=range(k)).tolist()
    assert m["n"] == len(y)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_cases_match_scikit_learn(seed):
    y, proba = _random_case(seed)
    _check_against_sklearn(y, proba, 7)


def test_edge_classes_match_scikit_learn():
    y, proba = _random_case(5)
    m = compute_metrics(y, proba, [f"c{i}" for i in range(7)])
    # Class 2 is never predicted: precision 0 (zero_division=0), recall 0, F1 0.
    assert (proba.argmax(axis=1) != 2).all()
    support = int((y == 2).sum())
    assert support > 0
    assert m["per_class"]["c2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": support}
    # Class 6 never occurs: support 0, and it does not count in macro F1.
    assert m["per_class"]["c6"]["support"] == 0
    f1_present = [m["per_class"][f"c{i}"]["f1"] for i in range(6)]
    assert m["macro_f1"] == pytest.approx(np.mean(f1_present))


@pytest.mark.filterwarnings("ignore:'k' \\(3\\) greater than or equal")
def test_a_class_predicted_but_absent_has_precision_zero():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.0, 0.1], [0.2, 0.0, 0.8], [0.1, 0.9, 0.0], [0.1, 0.8, 0.1]])
    m = compute_metrics(y, proba, ["a", "b", "c"])
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # a: precision 1/1, recall 1/2 -> F1 2/3; b: F1 1. Macro over the present a and b.
    assert m["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    _check_against_sklearn(y, proba, 3)


def test_top_k_with_fewer_classes_than_k():
    y = np.array([0, 1, 1])
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert top_k_accuracy(y, proba, 3) == 1.0
    assert map_at_3(y, proba) == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)


def test_map3_by_hand():
    y = np.array([0, 1, 2, 3, 0])
    proba = np.array(
        [
            [0.5, 0.2, 0.2, 0.1],  # rank 1 -> 1
            [0.5, 0.3, 0.1, 0.1],  # rank 2 -> 1/2
            [0.1, 0.2, 0.3, 0.4],  # classes by probability 3, 2: rank 2 -> 1/2
            [0.4, 0.3, 0.2, 0.1],  # rank 4 -> 0
            [0.1, 0.4, 0.3, 0.2],  # rank 4 -> 0
        ]
    )
    assert map_at_3(y, proba) == pytest.approx((1 + 1 / 2 + 1 / 2) / 5)
    assert map_at_k(y, proba, 1) == pytest.approx(1 / 5)
    assert top_k_accuracy(y, proba, 3) == pytest.approx(3 / 5)


def test_ties_rank_the_lower_class_first_like_argmax():
    y = np.array([1, 0])
    proba = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    assert map_at_3(y, proba) == pytest.approx((1 / 2 + 1) / 2)
    assert compute_metrics(y, proba, ["a", "b", "c"])["accuracy"] == 0.5


def test_ece_by_hand():
    # Bins of width 1/15, bin b = (b/15, (b+1)/15]. Confidences 0.95 (right) and 0.97
    # (wrong) share bin 14: |0.5 - 0.96| = 0.46. 0.5, wrong, is alone in bin 7: 0.5.
    # 0.3 (bin 4) and 0.35 (bin 5) are right: gaps 0.7 and 0.65. Rows need not sum to 1.
    y = np.array([0, 1, 0, 1, 2])
    proba = np.array(
        [
            [0.95, 0.05, 0.0],
            [0.97, 0.03, 0.0],
            [0.25, 0.25, 0.5],
            [0.2, 0.3, 0.2],
            [0.3, 0.1, 0.35],
        ]
    )
    expected = (2 * 0.46 + 0.5 + 0.7 + 0.65) / 5
    assert expected_calibration_error(y, proba) == pytest.approx(expected)
    stats = calibration_bins(y, proba)
    assert stats["count"].tolist() == [0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 2]
    assert stats["accuracy"][14] == 0.5
    assert stats["confidence"][14] == pytest.approx(0.96)


def test_ece_of_a_calibrated_model_is_small():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    right = rng.random(n) < conf  # right exactly as often as the confidence says
    y = np.where(right, 0, 1)
    proba = np.column_stack([conf, 1 - conf])
    assert expected_calibration_error(y, proba) < 0.02
    assert expected_calibration_error(np.ones(n, int), proba) > 0.7


def test_most_confused_by_hand():
    cm = np.array([[8, 2, 0], [5, 5, 0], [0, 2, 8]])
    pairs = most_confused(cm, ["a", "b", "c"], top=3)
    assert pairs == [
        {"true": "b", "predicted": "a", "count": 5, "rate": 0.5},
        {"true": "a", "predicted": "b", "count": 2, "rate": 0.2},
        {"true": "c", "predicted": "b", "count": 2, "rate": 0.2},
    ]
    assert most_confused(np.eye(3, dtype=int) * 4, ["a", "b", "c"]) == []


def test_empty_input_gives_zeros():
    m = compute_metrics(np.zeros(0, int), np.zeros((0, 3)), ["a", "b", "c"])
    assert m["n"] == 0 and m["accuracy"] == 0.0 and m["ece"] == 0.0
    assert m["confusion"] == [[0] * 3] * 3


@pytest.mark.parametrize(
    ("y", "proba", "message"),
    [
        (np.array([0, 1]), np.ones((3, 2)) / 2, "expected y_true"),
        (np.array([0, 2]), np.ones((2, 2)) / 2, "outside 0..1"),
        (np.array([0.0, 1.0]), np.ones((2, 2)) / 2, "integer class indices"),
        (np.array([0, 1]), np.array([[np.nan, 1], [0, 1]]), "NaN"),
    ],
)
def test_bad_inputs_are_refused(y, proba, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(y, proba, ["a", "b"])


def test_wrong_number_of_classes_is_refused():
    with pytest.raises(ValueError, match="3 columns for 2 classes"):
        compute_metrics(np.array([0]), np.ones((1, 3)) / 3, ["a", "b"])
