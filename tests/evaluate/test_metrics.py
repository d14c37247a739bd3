"""Our metrics against scikit-learn's and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from imgclass.evaluate.metrics import compute_metrics, expected_calibration_error, map_at_3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 6
    y = rng.integers(0, k - 1, 300)  # the last class never occurs
    proba = rng.dirichlet(np.ones(k), 300)
    proba[np.arange(300), y] += rng.random(300) * 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    proba[:, 2] *= 0.01  # class 2 is (almost) never predicted
    m = compute_metrics(y, proba, [str(i) for i in range(k)])
    pred = proba.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    for i in range(k):
        assert m["per_class"][str(i)] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}
        )
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, pred, labels=range(k - 1), average="macro", zero_division=0)
    )
    assert m["top3_accuracy"] == pytest.approx(top_k_accuracy_score(y, proba, k=3, labels=range(k)))
    assert m["confusion"] == confusion_matrix(y, pred, labels=range(k)).tolist()


def test_map3_and_ece_by_hand():
    y = np.array([0, 1, 2, 0])
    proba = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])
    assert map_at_3(y, proba) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3) / 4)
    # Confidence 0.6 everywhere, one right out of four: |0.25 - 0.6| = 0.35.
    assert expected_calibration_error(y, proba) == pytest.approx(0.35)
