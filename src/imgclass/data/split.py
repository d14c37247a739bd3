"""Stratified, deterministic, streaming split assignment.

Each class gets its own seeded pattern of split names: blocks of
``100 / gcd(percentages)`` examples (10 for 80/10/10), each block a random
permutation holding exactly the requested proportions, ``BLOCKS`` blocks in all; the
k-th example of a class goes to ``pattern[k % len(pattern)]``. No counts are needed in advance,
and the same seed always gives the same split.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from imgclass.errors import ConfigError

SPLITS = ("train", "valid", "test")
BLOCKS = 100


def parse_split(text: str) -> tuple[int, int, int]:
    """``"80/10/10"`` -> (80, 10, 10); three non-negative integers summing to 100."""
    parts = text.replace(",", "/").split("/")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--split {text!r}: expected three integers like 80/10/10") from None
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) != 100:
        raise ConfigError(
            f"--split {text!r}: expected three non-negative integers adding up to 100"
        )
    return values


class SplitAssigner:
    """Assigns examples to train/valid/test per class, stratified and deterministic."""

    def __init__(self, percentages: tuple[int, int, int], seed: int = 0) -> None:
        self.percentages = percentages
        self.seed = seed
        self.counters: dict[tuple[str, str | None], int] = {}
        self.patterns: dict[tuple[str, str | None], np.ndarray] = {}

    def _pattern(self, label: str, kind: str | None) -> np.ndarray:
        key = (label, kind)
        if key not in self.patterns:
            train, valid, test = self.percentages
            if kind == "train":  # a source's own training part: split into train/valid only
                total = train + valid
                train, valid, test = (
                    (0, 0, 100)
                    if total == 0
                    else (round(100 * train / total), 100 - round(100 * train / total), 0)
                )
            g = math.gcd(math.gcd(train, valid), test)
            base = np.repeat(np.arange(3, dtype=np.int8), [train // g, valid // g, test // g])
            digest = hashlib.sha256(f"{self.seed}:{label}:{kind}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            self.patterns[key] = np.concatenate([rng.permutation(base) for _ in range(BLOCKS)])
        return self.patterns[key]

    def assign(self, labels: list[str], source_split: str | None = None) -> np.ndarray:
        """Split index (0 train, 1 valid, 2 test) for each example, in order."""
        names, codes = np.unique(np.asarray(labels), return_inverse=True)
        return self.assign_codes(codes, [str(n) for n in names], source_split)

    def assign_codes(
        self, codes: np.ndarray, names: list[str], source_split: str | None = None
    ) -> np.ndarray:
        """Like ``assign``, for labels given as indices ``codes`` into ``names``."""
        if source_split in ("test", "valid"):
            return np.full(len(codes), SPLITS.index(source_split), dtype=np.int8)
        out = np.empty(len(codes), dtype=np.int8)
        present = np.unique(codes)
        for code in present:
            where = np.flatnonzero(codes == code) if len(present) > 1 else np.arange(len(codes))
            key = (names[code], source_split)
            start = self.counters.get(key, 0)
            pattern = self._pattern(names[code], source_split)
            out[where] = pattern[(start + np.arange(len(where))) % len(pattern)]
            self.counters[key] = start + len(where)
        return out
