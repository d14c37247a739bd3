"""Which words the game asks: active learning over the model's weak classes.

A word's *difficulty* is the share of its drawings the model gets wrong: its recall
error on the model's own test split (``1 - recall``, the off-diagonal share of its
confusion-matrix row) taken as a prior worth ``prior_rounds`` game rounds, updated by
the game's own results (rounds lost / rounds played for that word):

    difficulty = (prior_rounds * (1 - recall) + lost) / (prior_rounds + played)

so a word the test split calls easy but that players keep losing rises, and a hard word
that players keep winning sinks. Words are drawn with probability

    p = (1 - uniform_share) * w / sum(w) + uniform_share / K,   w = floor + difficulty

so the weakest classes come up most and every class keeps a chance of at least
``uniform_share / K`` (new data for all classes, and a check that easy ones stay easy).
Pure functions: the route feeds them the report and the store's counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PRIOR_ROUNDS = 4.0  # the test-split recall weighs as much as this many game rounds
FLOOR = 0.05  # a class the model never gets wrong still has some weight
UNIFORM_SHARE = 0.25  # the share of picks made uniformly over all classes
UNKNOWN_ERROR = 0.5  # the prior error of a class when the test split is not available


def difficulty(
    classes: Sequence[str],
    recall: Mapping[str, float] | None,
    results: Mapping[str, tuple[int, int]],
    prior_rounds: float = PRIOR_ROUNDS,
) -> np.ndarray:
    """Each class's estimated error rate, in [0, 1]: float array of shape (K,).

    recall: per class, from the test-split report (None or missing: UNKNOWN_ERROR);
    results: per word, (rounds played, rounds the model recognised) in the game."""
    out = np.empty(len(classes))
    for k, c in enumerate(classes):
        prior = UNKNOWN_ERROR if recall is None or c not in recall else 1.0 - float(recall[c])
        played, won = results.get(c, (0, 0))
        lost = max(0, played - won)
        out[k] = (prior_rounds * min(max(prior, 0.0), 1.0) + lost) / (prior_rounds + played)
    return out


def word_probabilities(
    errors: np.ndarray, uniform_share: float = UNIFORM_SHARE, floor: float = FLOOR
) -> np.ndarray:
    """The chance of each class being picked next (sums to 1, every entry at least
    ``uniform_share / K``): proportional to ``floor + errors``, mixed with uniform."""
    if not 0.0 <= uniform_share <= 1.0:
        raise ValueError(f"uniform_share must be in [0, 1], got {uniform_share}")
    weights = floor + np.asarray(errors, dtype=float)
    k = len(weights)
    mixed: np.ndarray = (1.0 - uniform_share) * weights / weights.sum() + uniform_share / k
    return mixed


def pick_words(
    classes: Sequence[str], probabilities: np.ndarray, n: int, rng: np.random.Generator
) -> list[str]:
    """``n`` distinct classes (all of them when there are fewer), drawn one after the
    other with ``probabilities`` renormalised over those not yet drawn."""
    n = min(n, len(classes))
    picked = rng.choice(len(classes), size=n, replace=False, p=probabilities)
    return [classes[int(i)] for i in picked]
