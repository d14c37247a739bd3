"""``imgclass data prepare``: sources -> render -> recipe -> split -> store.

Streams: sources are read chunk by chunk, round-robin, each example is given its
split as it comes (stratified per class, see ``split.py``), and examples are buffered
up to a bounded number of bytes, shuffled, and appended to the store split by split,
so that every stretch of the store mixes all classes. Memory stays bounded however
large the input: two buffers of BUFFER_BYTES, plus the store's labels (4 bytes an
example) when class numbers are put in name order at the end, plus 8 bytes an example
for the content hashes that keep exact duplicates out (``dedupe.py``).

Which split an example goes to: a source's own test and valid parts (MNIST's t10k
files, sketch-rnn's keys, ``mnist_test.csv``) keep their split, and are read first.
When the inputs hold their own test split, that is the whole test split: every other
example goes to train or valid. Otherwise every class is split three ways.
"""

from __future__ import annotations

import glob
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
from imgclass.data.dedupe import Deduplicator, content_keys
from imgclass.data.limits import DEFAULT_LIMITS, ReadLimits
from imgclass.data.preprocess import apply_recipe, get_recipe, invert_auto
from imgclass.data.preprocess.photo import resize_crop
from imgclass.data.render import render_batch, simplify_raw
from imgclass.data.sources import Chunk, Source, detect_format, open_source
from imgclass.data.sources.imagefolder import ImageFolderSource
from imgclass.data.sources.mnist import find_idx_pairs
from imgclass.data.split import SPLITS, SplitAssigner
from imgclass.data.store import FORMAT_VERSION, StoreWriter
from imgclass.errors import ConfigError, DataFormatError, DatasetError
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
# Formats whose reader takes a folder; any other format given a folder reads its files.
FOLDER_FORMATS = {"imagefolder", "stanford-dogs", "mnist-idx"}
# Formats whose labels are numbers, which --class-names can name.
NUMBERED_FORMATS = {"mnist-idx", "mnist-csv", "npz"}
OWN_SPLITS = ("test", "valid")  # splits a source can define for its examples
BUFFER_BYTES = 64 << 20  # bounds memory, and how far apart examples get shuffled
MAX_CHUNK = 4096  # examples read from a source at a time
READ_BYTES = 64 << 20  # decoded input of one chunk from every source together, at most
CHUNK_OUT_BYTES = 16 << 20  # a chunk's images after the recipe, at most (but one image)
RECIPE_THREADS = 4  # threads rendering and applying the recipe, a chunk each
# MNIST's digits sit in a 20x20 box inside their 28x28 frame: ink reaches the outermost
# pixels of 1.3% of them. Images that fill their frame (Fashion-MNIST's clothes, letters
# drawn to the edge) reach it far more often, and MNIST's crop and re-centring would
# shrink them: past FILLED_SHARE, the default recipe keeps them as they are.
EDGE_INK = 64  # grey level that counts as ink on the edge (after bringing ink to 255)
FILLED_SHARE = 0.2
FRAME_SAMPLE = 1000  # images looked at to decide


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
    class_names: list[str] | None = None  # names of labels 0, 1, 2... (numbered formats)
    recipe_reason: str | None = None  # why ``recipe`` was given, for the summary
    limits: ReadLimits = DEFAULT_LIMITS
    extra_manifest: dict[str, Any] = field(default_factory=dict)


def expand_inputs(inputs: list[str], fmt: str | None) -> list[tuple[str, str]]:
    """(path, format) of every source to read, each read once.

    A folder of Quick, Draw!/IDX/... files becomes its files (with ``--format`` too); a
    pattern the shell left as it was (``'in/*.bin'``) becomes the files it matches; the
    images and labels files of an IDX pair (both named by ``mnist/*.gz``) become one
    source, their images file; a file named twice is read once.
    """
    out: list[tuple[str, str]] = []
    seen: dict[tuple[str, ...], str] = {}
    for item in inputs:
        for path, f in _expand_one(item, fmt):
            key = _identity(path, f)
            if key in seen:
                if f != "mnist-idx":
                    log.warning("%s is named more than once; reading it once", path)
                continue
            seen[key] = path
            out.append((path, f))
    if not out:
        raise ConfigError("no input files")
    return out


def _expand_one(item: str, fmt: str | None) -> list[tuple[str, str]]:
    path = Path(item)
    if not path.exists() and any(c in item for c in "*?["):
        matches = sorted(glob.glob(item))
        if not matches:
            raise DataFormatError(item, "no file or folder matches this pattern")
        return [pair for match in matches for pair in _expand_one(match, fmt)]
    if not path.exists():
        raise DataFormatError(path, "no such file or folder")
    found = fmt or detect_format(path)
    if found == "mnist-idx":  # one source per images/labels pair
        return [(str(images), found) for images, _, _ in find_idx_pairs(path)]
    if not path.is_dir():
        if found in FOLDER_FORMATS:
            raise DataFormatError(path, f"--format {found} reads a folder, not a file")
        return [(item, found)]
    if found not in FOLDER_FORMATS:  # a file format given for a folder: its files
        return [(str(p), found) for p in _files_for(path, found)]
    files = _visible(path, Path.is_file)
    if fmt is None and files and not _visible(path, Path.is_dir):
        return [pair for p in files for pair in _expand_one(str(p), None)]
    return [(item, found)]


def _visible(folder: Path, kind: Any) -> list[Path]:
    return sorted(p for p in folder.iterdir() if kind(p) and not p.name.startswith("."))


def _files_for(folder: Path, fmt: str) -> list[Path]:
    """The files of ``folder`` to read as ``fmt``: those whose names say so, else all."""
    files = _visible(folder, Path.is_file)
    if not files:
        raise DataFormatError(folder, f"no files in this folder to read as {fmt}")
    return [p for p in files if _format_by_name(p) == fmt] or files


def _format_by_name(path: Path) -> str | None:
    try:
        return detect_format(path)
    except DataFormatError:
        return None


def _identity(path: str, fmt: str) -> tuple[str, ...]:
    """What makes two inputs the same data: the file, or the IDX pair it belongs to
    (``x`` and ``x.gz`` side by side hold the same pair)."""
    resolved = Path(path).resolve()
    if fmt == "mnist-idx":
        return (str(resolved.parent), resolved.name.lower().removesuffix(".gz"))
    return (str(resolved),)


def source_files(path: Path, fmt: str) -> list[Path]:
    """The files a source reads: an IDX source reads its labels file too."""
    if fmt == "mnist-idx" and path.is_file():
        return [path, find_idx_pairs(path)[0][1]]
    return [path]


def choose_recipe(
    options: PrepareOptions, formats: list[str], sources: list[Source]
) -> tuple[dict[str, Any], str]:
    """The recipe, and why it was chosen (a line for the summary and the manifest)."""
    if options.recipe is not None:
        why = options.recipe_reason or "given with --recipe"
        return get_recipe(options.recipe, **_size_override(options)), why
    names = {DEFAULT_RECIPES.get(f, "sketch") for f in formats}
    if formats and all(f == "npz" for f in formats):
        names = {"mnist" if s.classes() is None else "sketch" for s in sources}
    if len(names) > 1:
        kinds = ", ".join(sorted(names))
        raise ConfigError(
            f"inputs of different kinds need different recipes ({kinds}); pass --recipe"
        )
    name = names.pop()
    kinds = ", ".join(sorted(set(formats)))
    why = f"the default for {kinds} inputs"
    if name == "mnist":
        name, why = _digits_or_filled(sources, kinds)
    return get_recipe(name, **_size_override(options)), why


def _digits_or_filled(sources: list[Source], kinds: str) -> tuple[str, str]:
    """``mnist`` for MNIST-like digits, ``none`` for images that already fill their frame
    (which MNIST's crop to the ink and re-centring would shrink), and why."""
    share, n = edge_ink_share(sources)
    seen = f"ink reaches the edge in {share:.0%} of the first {n:,} images"
    if n and share > FILLED_SHARE:
        return "none", (
            f"{kinds} inputs whose images already fill their frame ({seen}): kept as they "
            "are, since MNIST's crop and re-centring would change their scale; "
            "--recipe mnist crops and centres them"
        )
    return "mnist", (
        f"{kinds} inputs that sit in a box inside their frame like MNIST's digits ({seen}): "
        "cropped to the ink, fitted to 20x20 and centred; --recipe none keeps them as they are"
    )


def edge_ink_share(sources: list[Source], sample: int = FRAME_SAMPLE) -> tuple[float, int]:
    """(share of images with ink on their outermost pixels, images looked at), from the
    first chunk of the first source that has images; ink brought to 255 first."""
    for src in sources:
        chunks = src.iter_chunks(sample)
        try:
            chunk = next(chunks, None)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if chunk is None or not isinstance(chunk.images, np.ndarray) or not len(chunk):
            continue
        gray = np.asarray(invert_auto(chunk.images, flatten=False))
        edge = np.concatenate(
            [gray[:, 0, :], gray[:, -1, :], gray[:, :, 0], gray[:, :, -1]], axis=1
        )
        return float(np.mean((edge >= EDGE_INK).any(axis=1))), len(gray)
    return 0.0, 0


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
            side: int = max(size, step.get("resize_to") or round(size * 8 / 7))
            return side
        break
    margin: int = max(512, 4 * max(recipe["size"]))
    return margin


def _size_override(options: PrepareOptions) -> dict[str, Any]:
    return {} if options.size is None else {"size": options.size}


def check_options(options: PrepareOptions) -> None:
    """ConfigError for settings that no input could make sense of."""
    check_class_names(options.class_names)
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


def check_class_names(names: list[str] | None) -> None:
    """ConfigError unless the names are non-empty and distinct."""
    if names is None:
        return
    if not names or any(not n.strip() for n in names):
        raise ConfigError("--class-names: every class needs a name (an empty one was given)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--class-names: {', '.join(twice)} named more than once")


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
    """Chunks from every source in turn until all are exhausted: first the sources' own
    test and valid parts (which each source yields before its training part), then the
    rest. Why: the first copy of a duplicate is the one kept, and a copy in a source's
    own test split must be that one. Holds back one chunk per source meanwhile."""
    iterators = [s.iter_chunks(chunk_size) for s in sources]
    held: list[tuple[Chunk, Iterator[Chunk]]] = []
    while iterators:
        own = []
        for it in iterators:
            chunk = next(it, None)
            if chunk is not None and chunk.split in OWN_SPLITS:
                own.append(it)
                yield chunk
            elif chunk is not None:
                held.append((chunk, it))
        iterators = own
    iterators = [it for _, it in held]
    while held:  # each held chunk let go once yielded, not kept to the end
        yield held.pop(0)[0]
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
        image_bytes: int = self.n * self.images[0].nbytes
        return image_bytes + self.drawing_bytes

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
        self._check_numbered()
        self.sources = [self._open(p, f, len(pairs)) for p, f in pairs]
        self._check_named_already()
        self.recipe, self.recipe_reason = choose_recipe(options, self.formats, self.sources)
        for src in self.sources:
            if isinstance(src, ImageFolderSource):
                src.min_side = decode_side(self.recipe)
        self.with_strokes = all(f in STROKE_FORMATS for f in self.formats)
        self.assigner = SplitAssigner(options.split, options.seed)
        self.dedupe = Deduplicator()
        self.own_test = False  # whether the inputs hold their own test split
        self.rng = np.random.default_rng(options.seed)
        self.classes: list[str] = []
        self.class_index: dict[str, int] = {}
        self.counts = {s: np.zeros(0, dtype=np.int64) for s in SPLITS}
        self.stroke_kinds: set[str] = set()

    def _check_numbered(self) -> None:
        """--class-names names numbered labels: refuse it for inputs with named classes."""
        if self.options.class_names is None:
            return
        for path, fmt in zip(self.paths, self.formats, strict=True):
            if fmt not in NUMBERED_FORMATS:
                raise ConfigError(
                    f"--class-names names numbered labels ({', '.join(sorted(NUMBERED_FORMATS))}"
                    f" files); {path} is {fmt}, whose classes have names already"
                )

    def _check_named_already(self) -> None:
        if self.options.class_names is None:
            return
        for src in self.sources:
            if src.classes() is not None:
                raise ConfigError(
                    f"--class-names: {src.path} names its classes already ({_some(src.classes() or [])})"
                )

    def _source_categories(self) -> list[str] | None:
        """--categories as the sources know them: numbers, when --class-names names them."""
        wanted, names = self.options.categories, self.options.class_names
        if wanted is None or names is None:
            return wanted
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise ConfigError(
                f"--categories {', '.join(unknown)}: not in --class-names ({_some(names)})"
            )
        return [str(names.index(c)) for c in wanted]

    def _open(self, path: str, fmt: str, n_sources: int) -> Source:
        # Sources are read side by side, a chunk each: together they get READ_BYTES.
        chunk_bytes = min(self.options.limits.chunk_bytes, max(1 << 20, READ_BYTES // n_sources))
        opts: dict[str, Any] = {
            "categories": self._source_categories(),
            "per_class": self.options.per_class,
            "limits": replace(self.options.limits, chunk_bytes=chunk_bytes),
        }
        if fmt in ("imagefolder", "stanford-dogs"):
            opts["skip_bad"] = self.options.skip_bad
        if fmt == "stanford-dogs":
            opts["crop_to_box"] = self.options.crop_to_box
        return open_source(path, fmt, **opts)

    def _files(self) -> list[tuple[Path, str]]:
        """(file, format) of every file read, for the manifest's sources."""
        return [
            (file, f)
            for p, f in zip(self.paths, self.formats, strict=True)
            for file in source_files(p, f)
        ]

    def image_shape(self) -> tuple[int, ...]:
        h, w = self.recipe["size"]
        return (h, w) if self.recipe["channels"] == 1 else (h, w, 3)

    def run(self) -> Path:
        started = time.time()
        with ThreadPoolExecutor(max_workers=1) as pool:
            hashes = [pool.submit(file_sha256, p) for p, _ in self._files()]
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
            for chunk, (images, keys) in self._rendered(round_robin(self.sources, chunk_size)):
                drawings = self._drawings(chunk)
                codes = self._codes(self._named(chunk))
                splits = self.assigner.assign_codes(codes, self.classes, self._split_of(chunk))
                keep = self.dedupe.keep(keys, splits, own=chunk.split in OWN_SPLITS)
                if not keep.all():
                    images, codes, splits = images[keep], codes[keep], splits[keep]
                    drawings = drawings and [d for d, k in zip(drawings, keep, strict=True) if k]
                start = 0
                while start < len(codes):
                    part = slice(start, min(len(codes), start + buf.room()))
                    buf.add(images[part], codes[part], splits[part], drawings and drawings[part])
                    start = part.stop
                    if not buf.room() or buf.nbytes() >= self.options.buffer_bytes:
                        self._flush(writer, buf)
                        buf = buffers[1] if buf is buffers[0] else buffers[0]
                writer.write_ready()
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

    def _split_of(self, chunk: Chunk) -> str | None:
        """The kind of split pattern for a chunk's examples (see ``SplitAssigner``): a
        source's own test or valid part keeps its split; when the inputs hold their own
        test split (read first, see ``round_robin``), everything else goes to train or
        valid, so a training file never feeds the test split; else three ways."""
        if chunk.split == "test" and not self.own_test:
            self.own_test = True
            log.info("the inputs hold their own test split: other examples go to train/valid")
        if chunk.split in OWN_SPLITS:
            return chunk.split
        return "train" if self.own_test else None

    def _named(self, chunk: Chunk) -> list[str]:
        """The chunk's labels, numbers turned into --class-names."""
        names = self.options.class_names
        if names is None:
            return chunk.labels
        lookup: dict[str, str] = {}
        for label in set(chunk.labels):
            number = int(label) if label.lstrip("-").isdigit() else -1
            if not 0 <= number < len(names):
                i = chunk.labels.index(label)
                where = chunk.ids[i] if chunk.ids else f"example {i}"
                raise DataFormatError(
                    chunk.source,
                    f"label {label} has no name: --class-names names labels 0 to {len(names) - 1}",
                    where,
                )
            lookup[label] = names[number]
        return [lookup[label] for label in chunk.labels]

    def _rendered(
        self, chunks: Iterator[Chunk]
    ) -> Iterator[tuple[Chunk, tuple[np.ndarray, np.ndarray]]]:
        """(chunk, (its images rendered and put through the recipe, their content keys)),
        in order, computed a few chunks ahead by worker threads (OpenCV and numpy release
        the GIL for much of that work, so a recipe like ``sketch`` uses every core)."""
        workers = min(RECIPE_THREADS, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ahead: deque[tuple[Chunk, Future[tuple[np.ndarray, np.ndarray]]]] = deque()
            for chunk in chunks:
                ahead.append((chunk, pool.submit(self._images, chunk)))
                if len(ahead) > 2 * workers:
                    done, job = ahead.popleft()
                    yield done, job.result()
            while ahead:
                done, job = ahead.popleft()
                yield done, job.result()

    def _images(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's images through the recipe, and the content key of each example
        as read (``dedupe.content_keys``)."""
        return self._recipe_images(chunk), content_keys(chunk.images, chunk.strokes)

    def _recipe_images(self, chunk: Chunk) -> np.ndarray:
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

    def _class_order(self) -> list[str]:
        """The classes in the order of their final indices: --class-names' order, else
        the names sorted (as numbers when they all are: 2 before 10)."""
        if self.options.class_names is not None:
            return [c for c in self.options.class_names if c in self.class_index]
        if all(c.lstrip("-").isdigit() for c in self.classes):
            return sorted(self.classes, key=lambda c: (int(c), c))
        return sorted(self.classes)

    def _remap_labels(self, writer: StoreWriter) -> None:
        """Class indices follow the class order, whatever order the inputs came in."""
        final = self._class_order()
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
            "recipe_reason": self.recipe_reason,
            "has_strokes": self.with_strokes,
            "stroke_kind": (
                "mixed" if len(self.stroke_kinds) > 1 else next(iter(self.stroke_kinds), None)
            ),
            "sources": [
                {"path": str(p.resolve()), "format": f, "sha256": h.result()}
                for (p, f), h in zip(self._files(), hashes, strict=True)
            ],
            "duplicates": self.dedupe.report(),
            "skipped": sorted({s for src in self.sources for s in getattr(src, "skipped", [])}),
            "prepare_seconds": round(seconds, 3),
        }
        if self.options.class_names is not None:
            names = self.options.class_names
            manifest["label_numbers"] = {c: names.index(c) for c in self.classes}
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
