"""Helpers for the retraining tests (tests/feedback and tests/serve): a small real
champion trained on some digits, feedback made of other real digits, a registry."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from imgclass.cli import main

BUILTIN = Path(__file__).resolve().parents[2] / "src" / "imgclass" / "builtin" / "digits.npz"


def prepare_digits(out: Path, categories: str | None = None, per_class: int = 30) -> Path:
    """The built-in real MNIST digits as a prepared dataset (80/10/10 split)."""
    args = ["-q", "data", "prepare", "--builtin", "digits", "--per-class", str(per_class)]
    if categories:
        args += ["--categories", categories]
    assert main([*args, "--out", str(out)]) == 0
    return out


def train_champion(data: Path, out: Path, model: str = "cnn-small", epochs: int = 3) -> Path:
    """A real bundle (with weights.npz for torch models), not tracked."""
    sets = ["--set", "n_components=20"] if model == "pca-svm" else ["--set", "num_threads=1"]
    args = ["-q", "train", "--data", str(data), "--model", model, "--out", str(out)]
    assert main([*args, "--epochs", str(epochs), *sets, "--no-track"]) == 0
    return out / "bundle"


def held_out_digits(n: int, offset: int = 0, classes: tuple[int, ...] = tuple(range(10))):
    """(images uint8 (n, 28, 28), labels as strings): built-in training digits beyond the
    first 30 of each class, which ``prepare_digits`` never uses."""
    d = np.load(BUILTIN)
    y = d["y_train"].astype(np.int64)
    rank = np.array([np.sum(y[:i] == y[i]) for i in range(len(y))])
    keep = np.flatnonzero(np.isin(y, classes) & (rank >= 30))[offset : offset + n]
    return d["x_train"][keep], [str(int(v)) for v in y[keep]]


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def add_feedback(db: Path | str, images: np.ndarray, labels: list[str], accept: bool = True):
    """Store each image as a submission with its label (accepted); returns the ids."""
    from imgclass.feedback.store import FeedbackStore

    with FeedbackStore.from_path_or_url(db) as store:
        ids = [
            store.add(label=y, input_kind="image", image=png(x))[0]
            for x, y in zip(images, labels, strict=True)
        ]
        if accept:
            store.set_status(ids, "accepted")
    return ids
