"""``imgclass data prepare``: sources -> render -> recipe -> split -> store.

Streams: sources are read chunk by chunk, round-robin, each example is given its
split as it comes (stratified per class, see ``split.py``), and examples are buffered
up to a bounded number of bytes, shuffled, and appended to the store split by split,
so that every stretch of the store mixes all classes. Memory stays bounded however
large the input: two buffers of BUFFER_BYTES, plus the store's labels (4 bytes an
example) when class numbers are put in name order at the end.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from imgclass import __version__
from imgclass.data.builtin import QUICKDRAW_LICENCE
from imgclass.data.limits import DEFAULT_LIMITS, ReadLimits
from imgclass.data.preprocess import apply_recipe, get_recipe
from imgclass.data.preprocess.photo import resize_crop
from imgclass.data.render import render_batch, simplify_raw
from imgclass.data.sources import Chunk, Source, detect_format, open_source
from imgclass.data.sources.imagefolder import ImageFolderSource
from imgclass.data.split import SPLITS, SplitAssigner
from imgclass.data.store import FORMAT_VERSION, StoreWriter
from imgclass.errors import ConfigError, DatasetError
from imgclass.progress import progress

log = logging.getLogger(__name__)

STROKE_FORMATS = {"quickdraw-ndjson", "quickdraw-bin", "sketchrnn-npz"}
QUICKDRAW_FORMATS = {"quickdraw-npy", *STROKE_FORMATS}
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
BUFFER_BYTES = 64 << 20  # bounds memory, and how far apart examples get shuffled
MAX_CHUNK = 4096  # examples read from a source at a time
READ_BYTES = 64 << 20  # decoded input of one chunk from every source together, at most
CHUNK_OUT_BYTES = 16 << 20  # a chunk's images after the recipe, at most (but one image)
RECIPE_THREADS = 4  # threads rendering and applying the recipe, a chunk each


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
    limits: ReadLimits = DEFAULT_LIMITS
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
        return get_recipe(options.recipe, **_size_override(options))
    names = {DEFAULT_RECIPES.get(f, "sketch") for f in formats}
    if formats and all(f == "npz" for f in formats):
        names = {"mnist" if s.classes() is None else "sketch" for s in sources}
    if len(names) > 1:
        kinds = ", ".join(sorted(names))
        raise ConfigError(
            f"inputs of different kinds need different recipes ({kinds}); pass --recipe"
        )
    return get_recipe(names.pop(), **_size_override(options))


def decode_side(recipe: dict[str, Any]) -> int:
    """The shorter side that photos may be reduced to while they are decoded (by integer
    factors, see ``imagefolder.load_image``) without changing what the recipe makes of
    them beyond rounding: what ``resize_crop`` resizes to, when it is the first step to
    change the geometry; else a margin of four output sizes (at least 512 px), since a
    step like ``crop_to_ink`` may keep a small part of the picture."""
    for step in recipe["steps"]:
        if step["op"] in ("to_rgb", "to_gray"):
            continue
        if step["op"] == "resize_crop":
            defaults = inspect.signature(resize_crop).parameters
            size = step.get("size", defaults["size"].default)
            return max(size, step.get("resize_to") or round(size * 8 / 7))
        break
    return max(512, 4 * max(recipe["size"]))


def _size_override(options: PrepareOptions) -> dict[str, Any]:
    return {} if options.size is None else {"size": options.size}


def check_options(options: PrepareOptions) -> None:
    """ConfigError for settings that no input could make sense of."""
    if options.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {options.seed}")
    if options.per_class is not None and options.per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {options.per_class}")
    if options.size is not None and options.size < 1:
        raise ConfigError(f"--size must be a positive number of pixels, got {options.size}")
    if len(options.split) != 3 or sum(options.split) != 100 or min(options.split) < 0:
        raise ConfigError(f"--split {options.split}: expected three percentages adding up to 100")
    if options.buffer_bytes < 1:
        raise ConfigError(f"buffer_bytes must be positive, got {options.buffer_bytes}")


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


class _WriteBuffer:
    """Examples waiting to be shuffled and written, all splits together.

    Allocated once and reused, so a flush costs no fresh pages.
    images: uint8 (capacity, *image_shape); codes: int32 class codes (capacity,);
    splits: int8 split numbers (capacity,); drawings: a list, when strokes are kept.
    """

    def __init__(self, capacity: int, image_shape: tuple[int, ...]) -> None:
        self.images = np.empty((capacity, *image_shape), dtype=np.uint8)
        self.codes = np.empty(capacity, dtype=np.int32)
        self.splits = np.empty(capacity, dtype=np.int8)
        self.drawings: list[list[np.ndarray]] = []
        self.n = 0
        self.drawing_bytes = 0

    def room(self) -> int:
        return len(self.codes) - self.n

    def nbytes(self) -> int:
        return self.n * self.images[0].nbytes + self.drawing_bytes

    def add(
        self,
        images: np.ndarray,
        codes: np.ndarray,
        splits: np.ndarray,
        drawings: list[list[np.ndarray]] | None,
    ) -> None:
        """Copy a chunk's examples in (no more than ``room()``)."""
        stop = self.n + len(codes)
        self.images[self.n : stop] = images
        self.codes[self.n : stop] = codes
        self.splits[self.n : stop] = splits
        self.n = stop
        if drawings is not None:
            self.drawings.extend(drawings)
            # Each stroke costs its points plus about 100 bytes of Python/numpy overhead.
            self.drawing_bytes += sum(s.nbytes + 100 for d in drawings for s in d)

    def clear(self) -> None:
        self.n, self.drawing_bytes, self.drawings = 0, 0, []


class Preparer:
    """Runs one prepare; see ``prepare``."""

    def __init__(self, options: PrepareOptions) -> None:
        check_options(options)
        self.options = options
        pairs = expand_inputs(options.inputs, options.format)
        self.paths = [Path(p) for p, _ in pairs]
        self.formats = [f for _, f in pairs]
        self.sources = [self._open(p, f, len(pairs)) for p, f in pairs]
        self.recipe = choose_recipe(options, self.formats, self.sources)
        for src in self.sources:
            if isinstance(src, ImageFolderSource):
                src.min_side = decode_side(self.recipe)
        self.with_strokes = all(f in STROKE_FORMATS for f in self.formats)
        self.assigner = SplitAssigner(options.split, options.seed)
        self.rng = np.random.default_rng(options.seed)
        self.classes: list[str] = []
        self.class_index: dict[str, int] = {}
        self.counts = {s: np.zeros(0, dtype=np.int64) for s in SPLITS}
        self.stroke_kinds: set[str] = set()

    def _open(self, path: str, fmt: str, n_sources: int) -> Source:
        # Sources are read side by side, a chunk each: together they get READ_BYTES.
        chunk_bytes = min(self.options.limits.chunk_bytes, max(1 << 20, READ_BYTES // n_sources))
        opts: dict[str, Any] = {
            "categories": self.options.categories,
            "per_class": self.options.per_class,
            "limits": replace(self.options.limits, chunk_bytes=chunk_bytes),
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
                self._check_categories()
                self._remap_labels(writer)
                manifest = self._manifest(hashes, time.time() - started)
                return writer.finish(manifest)

    def _check_categories(self) -> None:
        """DatasetError when nothing was read; a warning for each wanted class not found."""
        wanted = self.options.categories or []
        missing = [c for c in wanted if c not in self.class_index]
        if not self.classes:
            known = sorted({c for src in self.sources for c in (src.classes() or [])})
            hint = f"; the inputs hold {_some(known)}" if known and wanted else ""
            what = f"none of --categories {_some(wanted)} was found" if wanted else "no examples"
            raise DatasetError(f"{what} in {_some([str(p) for p in self.paths])}{hint}")
        if missing:
            log.warning("categories not found in the inputs: %s", ", ".join(missing))

    def _stream(self, writer: StoreWriter) -> None:
        """Read every source into the store. Two buffers take turns: while one is being
        compressed into the store by the writer's threads, the other is filled."""
        chunk_size = self._chunk_size()
        capacity = max(chunk_size, self.options.buffer_bytes // self._image_bytes())
        buffers = [_WriteBuffer(capacity, self.image_shape()) for _ in range(2)]
        buf = buffers[0]
        with progress(desc="preparing", unit=" img", total=self._known_total()) as bar:
            for chunk, images in self._rendered(round_robin(self.sources, chunk_size)):
                drawings = self._drawings(chunk)
                codes = self._codes(chunk.labels)
                splits = self.assigner.assign_codes(codes, self.classes, chunk.split)
                start = 0
                while start < len(codes):
                    part = slice(start, min(len(codes), start + buf.room()))
                    buf.add(images[part], codes[part], splits[part], drawings and drawings[part])
                    start = part.stop
                    if not buf.room() or buf.nbytes() >= self.options.buffer_bytes:
                        self._flush(writer, buf)
                        buf = buffers[1] if buf is buffers[0] else buffers[0]
                bar.update(len(chunk))
        if buf.n:
            self._flush(writer, buf)
        writer.drain()

    def _image_bytes(self) -> int:
        return int(np.prod(self.image_shape()))

    def _chunk_size(self) -> int:
        """Examples per read: small enough that one write buffer holds a stretch of every
        source (so each stretch of the store mixes all classes), at least 256 for speed;
        and whatever the image size, at most CHUNK_OUT_BYTES of them after the recipe,
        since a few chunks are in flight at once (the readers bound the input side)."""
        by_bytes = max(1, CHUNK_OUT_BYTES // self._image_bytes())
        if self.recipe["channels"] != 1:
            return min(64, by_bytes)  # photos: decoding dominates, keep the batches small
        per_buffer = self.options.buffer_bytes // self._image_bytes()
        return min(by_bytes, int(np.clip(per_buffer // (2 * len(self.sources)), 256, MAX_CHUNK)))

    def _known_total(self) -> int | None:
        total = 0
        for src in self.sources:
            n = getattr(src, "n", None)
            if n is None:
                return None
            total += min(n, self.options.per_class or n)
        return total

    def _rendered(self, chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, np.ndarray]]:
        """(chunk, its images rendered and put through the recipe), in order, computed a
        few chunks ahead by worker threads (OpenCV and numpy release the GIL for much of
        that work, so a recipe like ``sketch`` uses every core)."""
        workers = min(RECIPE_THREADS, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ahead: deque[tuple[Chunk, Future[np.ndarray]]] = deque()
            for chunk in chunks:
                ahead.append((chunk, pool.submit(self._images, chunk)))
                if len(ahead) > 2 * workers:
                    done, job = ahead.popleft()
                    yield done, job.result()
            while ahead:
                done, job = ahead.popleft()
                yield done, job.result()

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

    def _flush(self, writer: StoreWriter, buf: _WriteBuffer) -> None:
        """Shuffle the buffer (so each stretch of the store mixes classes) and hand each
        split's part of it to the writer, which compresses it in the background."""
        writer.drain()  # the other buffer's chunks are written: it may be refilled
        order = self.rng.permutation(buf.n)
        for s, split in enumerate(SPLITS):
            sel = order[buf.splits[order] == s]
            if not len(sel):
                continue
            codes = buf.codes[sel]
            counts = np.bincount(codes, minlength=len(self.classes))
            counts[: len(self.counts[split])] += self.counts[split]
            self.counts[split] = counts
            drawings = [buf.drawings[i] for i in sel] if self.with_strokes else None
            writer.append(split, buf.images, codes, drawings, order=sel, wait=False)
        buf.clear()

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
        if all(f in QUICKDRAW_FORMATS for f in self.formats):
            manifest["licence"] = QUICKDRAW_LICENCE  # these formats hold Google's data only
        manifest.update(self.options.extra_manifest)
        return manifest


def _some(names: list[str], limit: int = 8) -> str:
    """``a, b, c`` or ``a, b, ... (345 in all)`` for messages."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, ... ({len(names)} in all)"


def prepare(options: PrepareOptions) -> Path:
    """Prepare a dataset; returns the path of the finished store."""
    return Preparer(options).run()
