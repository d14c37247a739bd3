"""Feedback -> a prepared dataset, in the same store format as ``imgclass data prepare``.

Each submission becomes exactly what the server fed the model for the same input: both
go through ``imgclass.bundle.model_input`` (strokes simplified unless they already are,
rendered and put through the bundle's recipe, like ``data prepare`` does for ndjson
drawings; images decoded like uploads and prepared). So a model trained on the export
sees the world as it is served.

Classes are the bundle's labels followed by labels it does not know (in the order they
were first submitted), so class numbers stay those of the model and a retrained head
only grows. Each submission's split (``train`` or ``test``) is a function of its
content hash and the seed: the same submission lands in the same split in every export,
so a held-out slice stays held out as feedback accumulates.

Where a submission came from counts too (``sources``: only those; ``game_weight``: how
much a game round weighs against a correction made on the page or by an API client).
Game drawings are labelled with the word asked, not checked by a person who saw the
model err, so they may deserve less (or, as the most plentiful labelled drawings of the
classes the model gets wrong, more) than corrections: a weight of 0 leaves them out, 2
puts each twice in the training split, 0.5 keeps half of them (chosen by content hash,
the same half every time). The test split holds each kept submission once: a weight
changes what is learned, never the yardstick.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclass import __version__
from imgclass.errors import ConfigError, FeedbackError
from imgclass.feedback.store import FeedbackItem, FeedbackStore, check_source, check_status
from imgclass.text import plural

log = logging.getLogger(__name__)

BATCH = 256  # examples handed to the store writer at a time
MAX_IMAGE_PIXELS = 25_000_000  # as the server's default: decompression bombs are refused
SOURCE_FORMAT = "imgclass-feedback"


@dataclass
class _Plan:
    """What the first pass over the submissions found."""

    classes: list[str]
    known: int  # the first ``known`` classes are the bundle's labels
    with_strokes: bool
    n: int
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourceWeights:
    """Which submissions to export by where they came from, and how many copies of a
    game round go into the training split (see the module docstring)."""

    sources: tuple[str, ...] | None = None  # None: every source
    game_weight: float = 1.0

    def check(self) -> None:
        """ConfigError for an unknown source or a weight that is negative or not finite."""
        for source in self.sources or ():
            try:
                check_source(source)
            except FeedbackError as exc:
                raise ConfigError(str(exc)) from None
        if not (math.isfinite(self.game_weight) and 0 <= self.game_weight <= 100):
            raise ConfigError(f"game weight must be between 0 and 100, got {self.game_weight}")

    def copies(self, item: FeedbackItem, split: str, seed: int = 0) -> int:
        """How many times ``item`` goes into ``split`` (0: left out)."""
        if self.sources is not None and item.source not in self.sources:
            return 0
        if item.source != "game" or self.game_weight == 1.0:
            return 1
        whole, part = divmod(self.game_weight, 1.0)
        extra = _fraction(f"weight:{seed}:{item.content_hash}") < part
        if split == "test":
            return 1 if whole + extra > 0 else 0
        return int(whole) + int(extra)


def _fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of(content_hash: str, test_fraction: float, seed: int = 0) -> str:
    """``"test"`` or ``"train"``, fixed by the content hash and the seed."""
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def feedback_image(item: FeedbackItem, recipe: dict[str, Any], size: int) -> np.ndarray:
    """The model input (uint8 (H, W[, C]), recipe form) for one submission, made by the
    server's own code path, ``imgclass.bundle.model_input`` (strokes win when a
    submission has both; images are decoded as the server decodes uploads)."""
    from imgclass.bundle import decode_input, model_input
    from imgclass.errors import BadInput

    if item.strokes is not None:
        drawing = [np.asarray(s, dtype=np.float32).T for s in item.strokes]
        drawn: np.ndarray = model_input(recipe, size, [drawing])[0]
        return drawn
    if item.image is None:
        raise FeedbackError(f"feedback {item.id} has no input")
    try:
        img = decode_input(item.image, recipe, MAX_IMAGE_PIXELS)
    except BadInput as exc:
        raise FeedbackError(f"feedback {item.id}: {exc}") from None
    decoded: np.ndarray = model_input(recipe, size, [img])[0]
    return decoded


def export_feedback(
    store: FeedbackStore,
    out: Path,
    *,
    bundle: Path,
    status: str = "accepted",
    test_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    weights: SourceWeights | None = None,
) -> Path:
    """Write the submissions with ``status`` as a prepared dataset at ``out`` (atomically:
    a temporary folder renamed into place) with ``bundle``'s recipe; returns ``out``.
    ``weights``: which sources, and how much a game round counts (default: all, once).

    FeedbackError when there is nothing to export; the store is only read."""
    from imgclass.bundle import read_bundle_json

    check_status(status)
    weights = weights or SourceWeights()
    weights.check()
    if not 0.0 <= test_fraction <= 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    bundle = Path(bundle)
    labels, preprocess, _, info = read_bundle_json(bundle)
    sequence = preprocess["input"].get("kind") == "sequence"
    plan = _plan(store, status, labels, sequence, weights)
    recipe = preprocess["recipe"]
    started = time.time()
    split_args = (test_fraction, seed)
    writer, batches = _write(
        store, Path(out), plan, preprocess, status, overwrite, split_args, weights
    )
    source = {
        "path": store.location,
        "format": SOURCE_FORMAT,
        "sha256": hashlib.sha256("".join(sorted(batches.hashes)).encode()).hexdigest(),
    }
    manifest = _manifest(plan, recipe, batches, source, split_args, time.time() - started)
    manifest["feedback"] = {
        "status": status,
        "bundle": str(bundle.resolve()),
        "bundle_model_sha256": info.get("model_sha256"),
        "new_classes": plan.classes[plan.known :],
        "test_fraction": test_fraction,
        "sources": list(weights.sources) if weights.sources is not None else None,
        "game_weight": weights.game_weight,
        "examples_per_source": batches.per_source,
        "ids": batches.ids,
    }
    written: Path = writer.finish(manifest)
    return written


def _plan(
    store: FeedbackStore, status: str, labels: list[str], sequence: bool, weights: SourceWeights
) -> _Plan:
    """Classes (the bundle's, then new ones in first-seen order), whether every
    submission has strokes, and which ones a sequence model cannot use (submissions
    that ``weights`` leaves out entirely are not looked at)."""
    classes = list(labels)
    known = set(classes)
    n, strokes, skipped = 0, 0, []
    for item in store.iter_inputs(status=status):
        if not (weights.copies(item, "train") or weights.copies(item, "test")):
            continue
        if sequence and item.strokes is None:
            skipped.append(f"feedback {item.id}: an image, and the model reads strokes")
            continue
        n += 1
        strokes += item.strokes is not None
        if item.label not in known:
            known.add(item.label)
            classes.append(item.label)
    if n == 0:
        chosen = "" if weights.sources is None else f" from {', '.join(weights.sources)}"
        raise FeedbackError(
            f"no {status} feedback{chosen} to export in {store.location}"
            + (" with a game weight of 0" if weights.game_weight == 0 else "")
            + (
                f" ({plural(len(skipped), 'image')} skipped: the model reads strokes)"
                if skipped
                else ""
            )
            + (
                "; accept some first (imgclass feedback accept ID...)"
                if status == "accepted"
                else ""
            )
        )
    for reason in skipped:
        log.warning("skipping %s", reason)
    return _Plan(classes, len(labels), strokes == n, n, skipped)


def _image_shape(recipe: dict[str, Any]) -> tuple[int, ...]:
    h, w = recipe["size"]
    return (h, w) if recipe["channels"] == 1 else (h, w, 3)


def _write(
    store: FeedbackStore,
    out: Path,
    plan: _Plan,
    preprocess: dict[str, Any],
    status: str,
    overwrite: bool,
    split_args: tuple[float, int],
    weights: SourceWeights,
) -> tuple[Any, _Batches]:
    """Render every submission into a StoreWriter (left unfinished for the manifest)."""
    from imgclass.data.store import StoreWriter
    from imgclass.progress import progress

    recipe = preprocess["recipe"]
    size = int((preprocess["input"].get("size") or recipe["size"])[0])
    index = {c: i for i, c in enumerate(plan.classes)}
    batches = _Batches(plan.with_strokes)
    shape = _image_shape(recipe)
    writer = StoreWriter(out, shape, with_strokes=plan.with_strokes, overwrite=overwrite)
    try:
        with progress(desc="exporting", unit=" item", total=plan.n) as bar:
            for item in store.iter_inputs(status=status):
                if item.strokes is None and preprocess["input"].get("kind") == "sequence":
                    continue
                split = split_of(item.content_hash, *split_args)
                copies = weights.copies(item, split, split_args[1])
                if not copies:
                    continue
                try:
                    image = feedback_image(item, recipe, size)
                except (FeedbackError, ValueError) as exc:
                    plan.skipped.append(f"feedback {item.id}: {exc}")
                    log.warning("skipping feedback %d: %s", item.id, exc)
                    continue
                for _ in range(copies):
                    batches.add(split, image, index[item.label], item)
                batches.flush(writer, split, BATCH)
                bar.update(1)
        for split in ("train", "test"):
            batches.flush(writer, split, 1)
    except BaseException:
        writer.abort()
        raise
    if not sum(batches.counts.values()):
        writer.abort()
        raise FeedbackError(f"none of the {status} feedback could be exported: {plan.skipped}")
    return writer, batches


class _Batches:
    """Examples waiting to be appended, per split, and what has been appended."""

    def __init__(self, with_strokes: bool) -> None:
        self.with_strokes = with_strokes
        self.pending: dict[str, list[tuple[np.ndarray, int, list[np.ndarray] | None]]] = {
            "train": [],
            "test": [],
        }
        self.ids: dict[str, list[int]] = {"train": [], "test": []}
        self.codes: dict[str, list[int]] = {"train": [], "test": []}
        self.counts: dict[str, int] = {"train": 0, "test": 0}
        self.hashes: list[str] = []
        self.per_source: dict[str, dict[str, int]] = {"train": {}, "test": {}}

    def add(self, split: str, image: np.ndarray, code: int, item: FeedbackItem) -> None:
        drawing = None
        if self.with_strokes and item.strokes is not None:
            drawing = [np.asarray(s, dtype=np.float32).T for s in item.strokes]
        self.pending[split].append((image, code, drawing))
        self.ids[split].append(item.id)
        self.codes[split].append(code)
        self.hashes.append(item.content_hash)
        counts = self.per_source[split]
        counts[item.source] = counts.get(item.source, 0) + 1

    def flush(self, writer: Any, split: str, at_least: int) -> None:
        rows = self.pending[split]
        if not rows or len(rows) < at_least:
            return
        images = np.stack([r[0] for r in rows])
        codes = np.array([r[1] for r in rows], dtype=np.int32)
        drawings = [r[2] or [] for r in rows] if self.with_strokes else None
        writer.append(split, images, codes, drawings)
        self.counts[split] += len(rows)
        self.pending[split] = []

    def per_class(self, classes: list[str]) -> dict[str, dict[str, int]]:
        out = {}
        for split in ("train", "valid", "test"):
            found = np.bincount(self.codes.get(split, []), minlength=len(classes))
            out[split] = {c: int(found[i]) for i, c in enumerate(classes)}
        return out


def _manifest(
    plan: _Plan,
    recipe: dict[str, Any],
    batches: _Batches,
    source: dict[str, str],
    split_args: tuple[float, int],
    seconds: float,
) -> dict[str, Any]:
    """The manifest of ``data prepare`` (the caller adds ``feedback``: where the examples
    came from, ``feedback.ids[split][i]`` being the submission behind example ``i``)."""
    from imgclass.data.store import FORMAT_VERSION

    test_fraction, seed = split_args
    counts = batches.per_class(plan.classes)
    return {
        "format_version": FORMAT_VERSION,
        "imgclass_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "classes": plan.classes,
        "num_classes": len(plan.classes),
        "image_shape": list(_image_shape(recipe)),
        "split_percentages": [round(100 * (1 - test_fraction)), 0, round(100 * test_fraction)],
        "seed": seed,
        "counts": {s: sum(c.values()) for s, c in counts.items()},
        "counts_per_class": counts,
        "recipe": recipe,
        "has_strokes": plan.with_strokes,
        "stroke_kind": "raw" if plan.with_strokes else None,
        "sources": [source],
        "skipped": plan.skipped,
        "prepare_seconds": round(seconds, 3),
    }
