"""The report's pictures: what they show, checked on the figures' own data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from imgclass.evaluate import plots  # noqa: E402
from imgclass.evaluate.metrics import calibration_bins, compute_metrics, most_confused  # noqa: E402
from imgclass.evaluate.report import (  # noqa: E402
    active_classes,
    most_confident_mistakes,
    one_per_class,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def paired_confusions(k: int, seed: int = 0) -> np.ndarray:
    """Counts (k, k) where class 2i and 2i+1 are often confused, plus sparse noise; the
    classes are shuffled so that partners are far apart in the data's order."""
    rng = np.random.default_rng(seed)
    cm = np.diag(rng.integers(10, 20, k))
    for i in range(0, k - 1, 2):
        cm[i, i + 1] = cm[i + 1, i] = rng.integers(4, 8)
    noise = rng.random((k, k)) < 0.02
    cm = cm + noise
    perm = rng.permutation(k)
    return cm[np.ix_(perm, perm)], perm


@pytest.mark.parametrize("k", [40, 345])
def test_class_order_puts_confused_classes_side_by_side(k):
    cm, perm = paired_confusions(k)
    order = plots.class_order(cm)
    assert sorted(order) == list(range(k))
    position = np.empty(k, int)
    position[order] = np.arange(k)
    where = np.empty(k, int)
    where[perm] = np.arange(k)  # where original class c sits in the shuffled matrix
    partners = [(where[i], where[i + 1]) for i in range(0, k - 1, 2)]
    adjacent = np.mean([abs(position[a] - position[b]) == 1 for a, b in partners])
    assert adjacent > 0.95


def test_small_matrix_writes_rates_and_every_label():
    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 5]])
    fig = plots.confusion_matrix(cm, ["cat", "dog", "sun"])
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted([".80", ".20", ".10", ".90", "1"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "sun"]
    shown = ax.images[0].get_array()
    np.testing.assert_allclose(shown, cm / cm.sum(axis=1, keepdims=True))


def test_large_matrix_is_clustered_without_cell_text_and_few_labels():
    k = 345
    cm, _ = paired_confusions(k, seed=1)
    labels = [f"class {i}" for i in range(k)]
    pairs = most_confused(cm, labels, 10)
    wanted = {n for p in pairs for n in (p["true"], p["predicted"])}
    fig = plots.confusion_matrix(cm, labels, highlight=sorted(wanted))
    ax = fig.axes[0]
    assert not ax.texts
    assert {t.get_text() for t in ax.get_yticklabels()} == wanted
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown.sum(axis=1), 1.0)  # rows still sum to 1
    order = plots.class_order(cm)
    np.testing.assert_allclose(shown, plots.row_normalise(cm)[np.ix_(order, order)])


def test_closeup_keeps_rates_relative_to_the_whole_row():
    cm = np.array([[6, 2, 2], [0, 10, 0], [0, 5, 5]])
    fig = plots.confused_submatrix(cm, ["a", "b", "c"], ["c", "b"])
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), [[0.5, 0.5], [0.0, 1.0]])


def test_confused_pairs_chart_lists_the_pairs_worst_on_top():
    cm = np.array([[8, 2, 0], [5, 5, 0], [0, 3, 7]])
    fig = plots.confused_pairs(most_confused(cm, ["1", "2", "3"]))
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["1 → 2", "3 → 2", "2 → 1"]  # bottom to top
    assert [p.get_width() for p in ax.patches] == [2, 3, 5]


def test_per_class_f1_shows_worst_and_best_for_many_classes():
    rng = np.random.default_rng(0)
    per_class = {f"c{i}": {"f1": float(v)} for i, v in enumerate(rng.random(100))}
    fig = plots.per_class_f1(per_class, show=10)
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()][::-1]  # top to bottom
    ranked = sorted(per_class, key=lambda c: per_class[c]["f1"])
    assert names == ranked[:10] + ["…"] + ranked[-10:]


def test_training_curves_skip_missing_values():
    history = [
        {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": None, "lr": 0.1},
        {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.7, "val_loss": 0.6, "lr": 0.1},
    ]
    fig = plots.training_curves(history)
    assert len(fig.axes) == 2  # the learning rate did not change: no third panel
    loss_lines = {ln.get_label(): ln.get_xydata().tolist() for ln in fig.axes[0].lines}
    assert loss_lines == {"train": [[1, 1.0], [2, 0.5]], "validation": [[2, 0.6]]}
    history[1]["lr"] = 0.01
    assert len(plots.training_curves(history).axes) == 3


def test_reliability_diagram_bars_are_the_bin_accuracies():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    stats = calibration_bins(y, proba)
    fig = plots.reliability_diagram(stats, 0.2)
    top = fig.axes[0]
    heights = [p.get_height() for p in top.patches[:3]]  # accuracy bars of the used bins
    assert heights == [0.0, 1.0, 1.0]  # bin 8 (0.6, wrong), bin 10 (0.7), bin 14 (0.9, 0.95)


def test_filters_and_activation_maps_figures():
    rng = np.random.default_rng(0)
    fig = plots.conv_filters(rng.normal(size=(70, 3, 3, 3)))
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 64
    assert images[0].images[0].get_array().shape == (3, 3, 3)  # RGB filters in colour
    maps = np.abs(rng.normal(size=(2, 16, 26, 26)))
    fig = plots.activation_maps(np.zeros((2, 28, 28), np.uint8), maps, ["a", "b"], filters=5)
    assert len(fig.axes) == 2 * 6


def test_example_picking():
    y = np.array([0, 1, 2, 1, 0])
    proba = np.array(
        [[0.9, 0.1, 0], [0.8, 0.2, 0], [0.1, 0.3, 0.6], [0.1, 0.3, 0.6], [0.4, 0.6, 0]]
    )
    assert most_confident_mistakes(y, proba, 5).tolist() == [1, 3, 4]
    assert most_confident_mistakes(y, proba, 2).tolist() == [1, 3]
    assert one_per_class(np.array([2, 2, 0, 1, 0]), 2).tolist() == [0, 2]
    four = np.column_stack([proba, np.zeros(5)])  # class d neither occurs nor is predicted
    cm = compute_metrics(y, four, ["a", "b", "c", "d"])["confusion"]
    assert active_classes(np.array(cm)).tolist() == [0, 1, 2]
