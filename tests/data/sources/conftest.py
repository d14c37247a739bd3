"""Fixtures for the source readers: the real data slices and a reader helper."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgclass.data.sources import Chunk, Source


@pytest.fixture(scope="session")
def sources_dir(fixtures_dir: Path) -> Path:
    """tests/fixtures/sources: small real-format files (see make_fixtures.py there)."""
    return fixtures_dir / "sources"


@pytest.fixture(scope="session")
def quickdraw(shared_data: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The 345-category bitmaps: x (n, 28, 28) uint8, y (n,) codes, class names."""
    with np.load(shared_data / "quickdraw_345x80.npz") as d:
        return d["x"], d["y"], [str(c) for c in d["classes"]]


@pytest.fixture(scope="session")
def mnist(shared_data: Path) -> dict[str, np.ndarray]:
    with np.load(shared_data / "mnist.npz") as d:
        return {k: d[k][:200] for k in ("x_train", "y_train", "x_test", "y_test")}


@pytest.fixture(scope="session")
def raw_lines(shared_data: Path) -> list[bytes]:
    """The first 60 lines of the real raw ndjson (several words), as bytes."""
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rb") as f:
        return [next(f) for _ in range(60)]


def _read_all(source: Source, chunk_size: int = 3) -> tuple[list[Chunk], list[str]]:
    chunks = list(source.iter_chunks(chunk_size=chunk_size))
    return chunks, [label for chunk in chunks for label in chunk.labels]


@pytest.fixture
def read_all() -> Callable[..., Any]:
    """read_all(source, chunk_size=3) -> (chunks, labels in order)."""
    return _read_all
