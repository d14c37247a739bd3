"""``imgclass predict BUNDLE FILE...``: top guesses for image files and ndjson drawings.

Every input goes the server's way: image files are decoded like uploads
(``Bundle.decode``), and images and drawings alike become the model's input through
``Bundle.model_input`` (by ``Bundle.predict_raw``), strokes already in Quick, Draw!'s
simplified form left as they are. All files are
processed; an input that cannot be used (a file, or one ndjson line) is reported on
stderr in one line and makes the exit status 2, like any bad input to a command.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.data.render import is_simplified as is_simplified  # where tests found it
from imgclass.errors import BadInput, ConfigError, DataFormatError, ImgclassError

STROKE_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
DRAWINGS_PER_BATCH = 256
BAR_WIDTH = 30


@dataclass
class Item:
    """One thing to classify: an image, or a drawing (one ndjson line)."""

    file: str
    value: Any
    line: int | None = None
    word: str | None = None
    simplified: bool = False


@dataclass
class Outcome:
    """Predictions for the items that worked and one message per failure."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify image files or Quick, Draw! ndjson drawings",
        description=(
            "Top-k guesses of a bundle for image files (PNG, JPEG, WebP, BMP, GIF's first "
            "frame; any size, dark-on-light or light-on-dark) and .ndjson files of Quick, "
            "Draw! drawings (one per line, 'drawing' in simplified or raw form), through "
            "the bundle's own preprocessing recipe."
        ),
        epilog=(
            "Exit status: 0 when every input was classified, 2 when some could not be used "
            "(each named on stderr; the others are still classified)."
        ),
    )
    p.add_argument("bundle", help="bundle folder (what train writes to RUNDIR/bundle)")
    p.add_argument("files", nargs="+", metavar="FILE", help="image or .ndjson files")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="guesses shown (3)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def is_stroke_file(path: Path) -> bool:
    """ndjson by its name, or by a first byte of ``{`` for files without a known suffix."""
    name = path.name.lower()
    if name.endswith(STROKE_SUFFIXES):
        return True
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"):
        return False
    with open(path, "rb") as f:
        return f.read(64).lstrip()[:1] == b"{"


def read_drawings(path: Path, outcome: Outcome) -> list[Item]:
    """The drawings of an ndjson file; a bad line is an error for that line only."""
    from imgclass.data.sources.fileio import GZIP_ERRORS, open_maybe_gzip
    from imgclass.data.sources.ndjson import parse_drawing, parse_json_line

    items = []
    try:
        with open_maybe_gzip(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = parse_json_line(line, path, lineno)
                    drawing = parse_drawing(record["drawing"], path, f"line {lineno}")
                except DataFormatError as exc:
                    outcome.errors.append({"file": f"{path}:{lineno}", "error": str(exc)})
                    continue
                word = record.get("word") if isinstance(record.get("word"), str) else None
                items.append(Item(str(path), drawing, lineno, word, is_simplified(drawing)))
    except GZIP_ERRORS as exc:
        raise DataFormatError(path, f"corrupt gzip data ({exc})") from None
    if not items and not outcome.errors:
        raise DataFormatError(path, "no drawings in the file")
    return items


def read_inputs(files: list[str], outcome: Outcome, bundle: Any) -> list[Item]:
    """Decode every file (images as the server decodes uploads, for ``bundle``); failures
    go to ``outcome.errors`` and the rest carries on."""
    items: list[Item] = []
    for name in files:
        path = Path(name)
        try:
            if not path.is_file():
                raise DataFormatError(path, "no such file")
            if is_stroke_file(path):
                items.extend(read_drawings(path, outcome))
            else:
                items.append(Item(name, read_image(path, bundle)))
        except (ImgclassError, OSError) as exc:
            outcome.errors.append({"file": name, "error": _message(name, exc)})
    return items


def read_image(path: Path, bundle: Any) -> Any:
    """An image file -> the PIL image ``Bundle.model_input`` takes, decoded like an upload;
    DataFormatError naming the file when it is not an image imgclass accepts."""
    from imgclass.data.limits import DEFAULT_LIMITS

    try:
        return bundle.decode(path.read_bytes(), DEFAULT_LIMITS.max_image_pixels)
    except BadInput as exc:
        raise DataFormatError(path, str(exc)) from None


def _message(name: str, exc: BaseException) -> str:
    text = str(exc)
    return text if name in text else f"{name}: {text}"


def _probabilities(bundle: Any, group: list[Item]) -> np.ndarray:
    """float32 (len(group), K) for items of one kind (all images, or all drawings with
    the same simplified flag)."""
    if not isinstance(group[0].value, list):
        return np.asarray(bundle.predict_raw([it.value for it in group]))
    raw = not group[0].simplified
    return np.asarray(bundle.predict_raw([it.value for it in group], raw=raw))


def _result(item: Item, proba: np.ndarray, labels: list[str], k: int) -> dict[str, Any]:
    order = np.argsort(-proba, kind="stable")[:k]
    out: dict[str, Any] = {"file": item.file}
    if item.line is not None:
        out["line"] = item.line
    if item.word is not None:
        out["word"] = item.word
    out["predictions"] = [{"label": labels[i], "probability": float(proba[i])} for i in order]
    return out


def classify(bundle: Any, items: list[Item], k: int, outcome: Outcome) -> None:
    """Predict images one file at a time (a bad one fails alone) and drawings in batches."""
    done: dict[int, dict[str, Any]] = {}
    is_image = [not isinstance(it.value, list) for it in items]
    batches = [[i] for i, image in enumerate(is_image) if image]
    for simplified in (False, True):
        same = [i for i, it in enumerate(items) if not is_image[i] and it.simplified == simplified]
        step = DRAWINGS_PER_BATCH
        batches += [same[a : a + step] for a in range(0, len(same), step)]
    for batch in batches:
        try:
            proba = _probabilities(bundle, [items[i] for i in batch])
        except ImgclassError as exc:
            for i in batch:
                where = items[i].file + (f":{items[i].line}" if items[i].line else "")
                outcome.errors.append({"file": where, "error": _message(items[i].file, exc)})
            continue
        for i, p in zip(batch, proba, strict=True):
            done[i] = _result(items[i], p, bundle.labels, k)
    outcome.results.extend(done[i] for i in sorted(done))


def format_result(result: dict[str, Any]) -> str:
    """A file's guesses as text: rank, label, probability and a bar."""
    head = result["file"]
    if "line" in result:
        head += f", line {result['line']}"
    if "word" in result:
        head += f" (word: {result['word']})"
    width = max(len(p["label"]) for p in result["predictions"])
    lines = [head]
    for rank, p in enumerate(result["predictions"], start=1):
        bar = "█" * round(p["probability"] * BAR_WIDTH)
        lines.append(f"  {rank}. {p['label']:<{width}}  {p['probability']:6.1%}  {bar}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from imgclass.bundle import load_bundle

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    bundle = load_bundle(args.bundle)
    outcome = Outcome()
    items = read_inputs(args.files, outcome, bundle)
    classify(bundle, items, min(args.top_k, len(bundle.labels)), outcome)
    for error in outcome.errors:
        print(f"error: {error['error']}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "model": bundle.model_json.get("name"),
                    "results": outcome.results,
                    "errors": outcome.errors,
                }
            )
        )
    elif outcome.results:
        print("\n\n".join(format_result(r) for r in outcome.results))
    return 2 if outcome.errors else 0
