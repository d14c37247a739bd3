"""The game's word pick (serve/game.py): weakest classes asked most, every class kept
possible, and the game's own results moving the weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from imgclass.serve.game import difficulty, pick_words, word_probabilities

CLASSES = [f"c{k}" for k in range(20)]
# recall from 0.05 (c0, the weakest) to 1.0 (c19, never wrong)
RECALL = {c: 0.05 + 0.95 * k / 19 for k, c in enumerate(CLASSES)}


def play(probabilities: np.ndarray, games: int = 3000, n: int = 6, seed: int = 0) -> Counter:
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for _ in range(games):
        words = pick_words(CLASSES, probabilities, n, rng)
        assert len(set(words)) == n  # no word twice in a game
        counts.update(words)
    return counts


def test_the_weakest_classes_are_asked_most_and_every_class_comes_up():
    p = word_probabilities(difficulty(CLASSES, RECALL, {}))
    assert p.sum() == pytest.approx(1.0)
    assert p.min() >= 0.25 / len(CLASSES) - 1e-12  # the uniform share keeps every class
    assert list(np.argsort(-p)) == list(range(20))  # weaker -> more likely, strictly
    counts = play(p)
    assert set(counts) == set(CLASSES)  # every class came up in 3,000 games
    weakest = sum(counts[c] for c in CLASSES[:5])
    strongest = sum(counts[c] for c in CLASSES[-5:])
    assert weakest > 2 * strongest
    # measured frequencies follow the ranking: Spearman-like check on quartiles
    quarters = [sum(counts[c] for c in CLASSES[q : q + 5]) for q in range(0, 20, 5)]
    assert quarters == sorted(quarters, reverse=True)


def test_without_a_test_split_every_class_is_equally_likely():
    p = word_probabilities(difficulty(CLASSES, None, {}))
    np.testing.assert_allclose(p, 1 / 20)


def test_lost_game_rounds_raise_a_class_and_won_rounds_lower_it():
    base = word_probabilities(difficulty(CLASSES, RECALL, {}))
    easy, hard = "c19", "c0"
    results = {easy: (12, 1), hard: (12, 12)}  # players lose "easy", win "hard"
    moved = word_probabilities(difficulty(CLASSES, RECALL, results))
    i, j = CLASSES.index(easy), CLASSES.index(hard)
    assert moved[i] > 3 * base[i] and moved[j] < base[j] / 2
    assert moved[i] > moved[j]  # the game's evidence outweighs the test-split prior
    counts = play(moved, games=1500, seed=1)
    assert counts[easy] > counts[hard]


def test_difficulty_blends_the_test_split_with_the_rounds_played():
    d = difficulty(["a", "b", "c"], {"a": 0.75, "b": 1.0}, {"b": (4, 0)}, prior_rounds=4.0)
    np.testing.assert_allclose(d, [0.25, 0.5, 0.5])  # c: no recall known -> 0.5


def test_fewer_classes_than_rounds_asks_each_once():
    rng = np.random.default_rng(0)
    assert sorted(pick_words(["a", "b", "c"], np.full(3, 1 / 3), 6, rng)) == ["a", "b", "c"]
