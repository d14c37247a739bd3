"""``imgclass data prepare``: sources -> render -> recipe -> split -> store.

Streams: sources are read chunk by chunk, round-robin (so a stretch of the store
mixes classes), examples are buffered per split up to a bounded number of bytes,
shuffled, and appended to the store. Memory stays bounded however large the input.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclass import __version__
from imgclass.data.preprocess import apply_recipe, get_recipe
from imgclass.data.render import render_batch, simplify_raw
from imgclass.data.sources import Chunk, Source, detect_format, open_source
from imgclass.data.split import SPLITS, SplitAssigner
from imgclass.data.store import FORMAT_VERSION, StoreWriter
from imgclass.errors import ConfigError, DatasetError
from imgclass.progress import progress

log = logging.getLogger(__name__)

STROKE_FORMATS = {"quickdraw-ndjson", "quickdraw-bin", "sketchrnn-npz"}
DEFAULT_RECIPES = {
    "quickdraw-npy": "sketch",
    "quickdraw-ndjson": "sketch",
    "quickdraw-bin": "sketch",
    "sketchrnn-npz": "sketch",
    "mnist-idx": "mnist",
    "mnist-csv": "mnist",
    "imagefolder": "photo",
    "stanford-dogs": "photo",
}
BUFFER_BYTES = 64 << 20  # per split: bounds memory, and how far examples are shuffled
MAX_CHUNK = 4096  # examples read from a source at a time


@dataclass
class PrepareOptions:
    """What ``imgclass data prepare`` was asked to do."""

    inputs: list[str]
    out: str
    format: str | None = None
    categories: list[str] | None = None
    per_class: int | None = None
    recipe: str | dict[str, Any] | None = None
    split: tuple[int, int, int] = (80, 10, 10)
    seed: int = 0
    size: int | None = None
    skip_bad: bool = False
    overwrite: bool = False
    crop_to_box: bool = False
    buffer_bytes: int = BUFFER_BYTES
    extra_manifest: dict[str, Any] = field(default_factory=dict)


def expand_inputs(inputs: list[str], fmt: str | None) -> list[tuple[str, str]]:
    """(path, format) for every input; a folder of Quick, Draw!/IDX files becomes its files."""
    out: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and fmt is None and detect_format(path) == "imagefolder":
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            sub = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if files and not sub:
                out.extend((str(p), detect_format(p)) for p in files)
                continue
        out.append((item, fmt or detect_format(path)))
    if not out:
        raise ConfigError("no input files")
    return out


def choose_recipe(
    options: PrepareOptions, formats: list[str], sources: list[Source]
) -> dict[str, Any]:
    if options.recipe is not None:
        return get_recipe(options.recipe, **({"size": options.size} if options.size else {}))
    names = {DEFAULT_RECIPES.get(f, "sketch") for f in formats}
    if formats and all(f == "npz" for f in formats):
        names = {"mnist" if s.classes() is None else "sketch" for s in sources}
    if len(names) > 1:
        raise ConfigError(
            f"inputs of different kinds need different recipes ({', '.join(sorted(names))}); pass --recipe"
        )
    return get_recipe(names.pop(), **({"size": options.size} if options.size else {}))


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        return h.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        h.update(bytes.fromhex(file_sha256(file)))
    return h.hexdigest()


def round_robin(sources: list[Source], chunk_size: int) -> Iterator[Chunk]:
    """Chunks from every source in turn until all are exhausted."""
    iterators = [s.iter_chunks(chunk_size) for s in sources]
    while iterators:
        alive = []
        for it in iterators:
            chunk = next(it, None)
            if chunk is not None:
                alive.append(it)
                yield chunk
        iterators = alive


class _SplitBuffer:
    """Examples waiting to be shuffled and written, per split."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.drawings: list[list[np.ndarray]] = []
        self.nbytes = 0

    def add(
        self, images: np.ndarray, codes: np.ndarray, drawings: list[list[np.ndarray]] | None
    ) -> None:
        self.images.append(images)
        self.codes.append(codes)
        self.nbytes += images.nbytes
        if drawings is not None:
            self.drawings.extend(drawings)
            # Each stroke costs its points plus about 100 bytes of Python/numpy overhead.
            self.nbytes += sum(s.nbytes + 100 for d in drawings for s in d)


class Preparer:
    """Runs one prepare; see ``prepare``."""

    def __init__(self, options: PrepareOptions) -> None:
        self.options = options
        pairs = expand_inputs(options.inputs, options.format)
        self.paths = [Path(p) for p, _ in pairs]
        self.formats = [f for _, f in pairs]
        self.sources = [self._open(p, f) for p, f in pairs]
        self.recipe = choose_recipe(options, self.formats, self.sources)
        self.with_strokes = all(f in STROKE_FORMATS for f in self.formats)
        self.assigner = SplitAssigner(options.split, options.seed)
        self.rng = np.random.default_rng(options.seed)
        self.classes: list[str] = []
        self.class_index: dict[str, int] = {}
        self.counts = {s: np.zeros(0, dtype=np.int64) for s in SPLITS}
        self.stroke_kinds: set[str] = set()

    def _open(self, path: str, fmt: str) -> Source:
        opts: dict[str, Any] = {
            "categories": self.options.categories,
            "per_class": self.options.per_class,
        }
        if fmt in ("imagefolder", "stanford-dogs"):
            opts["skip_bad"] = self.options.skip_bad
        if fmt == "stanford-dogs":
            opts["crop_to_box"] = self.options.crop_to_box
        return open_source(path, fmt, **opts)

    def image_shape(self) -> tuple[int, ...]:
        h, w = self.recipe["size"]
        return (h, w) if self.recipe["channels"] == 1 else (h, w, 3)

    def run(self) -> Path:
        started = time.time()
        with ThreadPoolExecutor(max_workers=1) as pool:
            hashes = [pool.submit(file_sha256, p) for p in self.paths]
            with StoreWriter(
                self.options.out,
                self.image_shape(),
                with_strokes=self.with_strokes,
                overwrite=self.options.overwrite,
            ) as writer:
                self._stream(writer)
                if sum(int(c.sum()) for c in self.counts.values()) == 0:
                    raise DatasetError("no examples were read (check --categories and the inputs)")
                self._remap_labels(writer)
                manifest = self._manifest(hashes, time.time() - started)
                return writer.finish(manifest)

    def _stream(self, writer: StoreWriter) -> None:
        buffers = {s: _SplitBuffer() for s in SPLITS}
        chunk_size = self._chunk_size()
        with progress(desc="preparing", unit=" img", total=self._known_total()) as bar:
            for chunk in round_robin(self.sources, chunk_size):
                images = self._images(chunk)
                drawings = self._drawings(chunk)
                codes = self._codes(chunk.labels)
                splits = self.assigner.assign_codes(codes, self.classes, chunk.split)
                for s, name in enumerate(SPLITS):
                    sel = np.flatnonzero(splits == s)
                    if not len(sel):
                        continue
                    whole = len(sel) == len(codes)  # the common case: skip the gathers
                    buffers[name].add(
                        images if whole else images[sel],
                        codes if whole else codes[sel],
                        [drawings[i] for i in sel] if drawings is not None else None,
                    )
                    if buffers[name].nbytes >= self.options.buffer_bytes:
                        self._flush(writer, name, buffers[name])
                        buffers[name] = _SplitBuffer()
                bar.update(len(chunk))
        for name, buf in buffers.items():
            if buf.codes:
                self._flush(writer, name, buf)

    def _chunk_size(self) -> int:
        """Examples per read: small enough that one write buffer holds a stretch of every
        source (so each stretch of the store mixes all classes), at least 256 for speed."""
        if self.recipe["channels"] != 1:
            return 64  # photos: decoding dominates, keep the batches small
        pixels = int(np.prod(self.image_shape()))
        per_buffer = self.options.buffer_bytes // pixels
        return int(np.clip(per_buffer // (2 * len(self.sources)), 256, MAX_CHUNK))

    def _known_total(self) -> int | None:
        total = 0
        for src in self.sources:
            n = getattr(src, "n", None)
            if n is None:
                return None
            total += min(n, self.options.per_class or n)
        return total

    def _images(self, chunk: Chunk) -> np.ndarray:
        if chunk.images is None:
            if not chunk.strokes:
                raise DatasetError(f"{chunk.source}: a chunk with neither images nor strokes")
            size = self.recipe["size"][0]
            simple = [simplify_raw(d) if chunk.stroke_kind == "raw" else d for d in chunk.strokes]
            raster: Any = render_batch(simple, size=size)
        else:
            raster = chunk.images
        return apply_recipe(self.recipe, raster)

    def _drawings(self, chunk: Chunk) -> list[list[np.ndarray]] | None:
        if not self.with_strokes or chunk.strokes is None:
            return None
        if chunk.stroke_kind:
            self.stroke_kinds.add(chunk.stroke_kind)
        return [list(d) for d in chunk.strokes]

    def _codes(self, labels: list[str]) -> np.ndarray:
        """Class indices (in order of first appearance) of a chunk's labels."""
        if labels[0] == labels[-1] and len(set(labels)) == 1:
            return np.full(len(labels), self._code(labels[0]), dtype=np.int32)
        return np.array([self._code(label) for label in labels], dtype=np.int32)

    def _code(self, label: str) -> int:
        if label not in self.class_index:
            self.class_index[label] = len(self.classes)
            self.classes.append(label)
        return self.class_index[label]

    def _flush(self, writer: StoreWriter, split: str, buf: _SplitBuffer) -> None:
        images = np.concatenate(buf.images)
        codes = np.concatenate(buf.codes)
        order = self.rng.permutation(len(images))
        counts = np.bincount(codes, minlength=len(self.classes))
        counts[: len(self.counts[split])] += self.counts[split]
        self.counts[split] = counts
        drawings = [buf.drawings[i] for i in order] if self.with_strokes else None
        writer.append(split, images[order], codes[order], drawings)

    def _per_class(self, split: str) -> dict[str, int]:
        counts = np.zeros(len(self.classes), dtype=np.int64)
        counts[: len(self.counts[split])] = self.counts[split]
        return {c: int(counts[self.class_index[c]]) for c in self.classes}

    def _remap_labels(self, writer: StoreWriter) -> None:
        """Class indices follow sorted class names, whatever order the inputs came in."""
        final = sorted(self.classes)
        mapping = np.array([final.index(c) for c in self.classes], dtype=np.int32)
        for split in SPLITS:
            if split in writer.file:
                dset = writer.file[split]["labels"]
                dset[:] = mapping[dset[:]]
        self.classes = final

    def _manifest(self, hashes: list[Future[str]], seconds: float) -> dict[str, Any]:
        counts = {s: self._per_class(s) for s in SPLITS}
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "imgclass_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "classes": self.classes,
            "num_classes": len(self.classes),
            "image_shape": list(self.image_shape()),
            "split_percentages": list(self.options.split),
            "seed": self.options.seed,
            "counts": {s: sum(c.values()) for s, c in counts.items()},
            "counts_per_class": counts,
            "recipe": self.recipe,
            "has_strokes": self.with_strokes,
            "stroke_kind": (
                "mixed" if len(self.stroke_kinds) > 1 else next(iter(self.stroke_kinds), None)
            ),
            "sources": [
                {"path": str(p.resolve()), "format": f, "sha256": h.result()}
                for p, f, h in zip(self.paths, self.formats, hashes, strict=True)
            ],
            "skipped": sorted({s for src in self.sources for s in getattr(src, "skipped", [])}),
            "prepare_seconds": round(seconds, 3),
        }
        manifest.update(self.options.extra_manifest)
        return manifest


def prepare(options: PrepareOptions) -> Path:
    """Prepare a dataset; returns the path of the finished store."""
    return Preparer(options).run()
