"""sketch-rnn ``<category>.npz``: stroke-3 sequences under ``train``, ``valid``, ``test``.

Each sequence is an (n, 3) array of (dx, dy, pen_lifted): offsets from the previous
point, and 1 where the pen leaves the paper after that point. We rebuild absolute
strokes by a cumulative sum, split after each pen lift.

Why a restricted, metered unpickler: Google's files store each split as a numpy
*object* array (sequences of different lengths), which numpy writes as a pickle
stream, and many were written by Python 2. A user's file must never run code, so we
never call the general unpickler (``np.load(allow_pickle=True)``). Arrays without
objects are read with no pickle at all; object arrays go through an unpickler that
can build nothing but numpy arrays, dtypes and bytes (the globals numpy's own array
pickles use), runs only the opcodes those pickles contain, and meters what it builds:
every array's declared shape and dtype are checked against what is left of
``ReadLimits.max_array_bytes`` *before* it is allocated, and so is every other object
the stream creates. So a crafted file fails with a ``DataFormatError`` instead of
executing anything, and a 200-byte pickle asking for ``numpy.ndarray((3e9,), "O")``
is refused before it asks the allocator for 22 GiB.

A split is unpickled whole (a standard 70,000-drawing split costs about 140 MB), its
sequences are written flat to an anonymous temporary file, and the objects are freed:
while its chunks are handed out, a source holds one chunk in memory, however many
sources a prepare reads side by side.
"""

from __future__ import annotations

import io
import math
import pickle
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from imgclass.data.limits import DEFAULT_LIMITS, ReadLimits, format_bytes
from imgclass.data.sources.base import (
    OWN_SPLITS_FIRST,
    Chunk,
    Drawing,
    LabelFilter,
    label_from_filename,
)
from imgclass.data.sources.fileio import read_array, read_npy_header
from imgclass.data.sources.ndjson import MAX_POINTS_PER_DRAWING
from imgclass.data.sources.npz import npz_keys
from imgclass.errors import DataFormatError

SPLIT_KEYS = ("train", "valid", "test")
# numpy's array-rebuilding function, whichever module holds it in this numpy version
_RECONSTRUCT: Callable[..., np.ndarray] = np.zeros(1).__reduce__()[0]  # type: ignore[assignment]
# dtypes an array pickle may hold: numbers, objects, and strings (refused later, by name)
_ARRAY_KINDS = "biufOUS"
# What one opcode may cost, in bytes, beyond the stream bytes it reads (counted apart):
# a memo entry (dict slot and key), a new list or tuple, or a reference and small object.
_MEMO_COST, _CONTAINER_COST, _OTHER_COST = 128, 64, 32
_ARRAY_COST = 112  # an ndarray object without its data
_MEMO_OPS = (pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE, pickle.PUT)
_CONTAINER_OPS = (
    pickle.MARK,
    pickle.EMPTY_LIST,
    pickle.LIST,
    pickle.TUPLE,
    pickle.TUPLE1,
    pickle.TUPLE2,
    pickle.TUPLE3,
)
# Every opcode numpy's array pickles use (Python 2 and 3, protocols 2 to 4); no others.
_OTHER_OPS = (
    pickle.PROTO,
    pickle.STOP,
    pickle.GLOBAL,
    pickle.STACK_GLOBAL,
    pickle.BINGET,
    pickle.LONG_BINGET,
    pickle.GET,
    pickle.EMPTY_TUPLE,
    pickle.APPEND,
    pickle.APPENDS,
    pickle.BININT,
    pickle.BININT1,
    pickle.BININT2,
    pickle.LONG1,
    pickle.NONE,
    pickle.NEWTRUE,
    pickle.NEWFALSE,
    pickle.REDUCE,
    pickle.SHORT_BINSTRING,
    pickle.BINSTRING,
    pickle.BINUNICODE,
    pickle.SHORT_BINUNICODE,
    pickle.BINUNICODE8,
    pickle.SHORT_BINBYTES,
    pickle.BINBYTES,
    pickle.BINBYTES8,
    pickle.BINFLOAT,
)


class _OverBudget(pickle.UnpicklingError):
    """The pickle would build more than the unpickler's budget allows."""


def _opcode_tables() -> tuple[list[Callable[[Any], None] | None], list[int]]:
    """(handler, cost) per opcode byte: the pure-Python unpickler's handlers for the
    opcodes array pickles use, ours for BUILD and FRAME, None for every other opcode."""
    base = pickle._Unpickler.dispatch
    handlers: list[Callable[[Any], None] | None] = [None] * 256
    costs = [0] * 256
    for ops, cost in (
        (_MEMO_OPS, _MEMO_COST),
        (_CONTAINER_OPS, _CONTAINER_COST),
        (_OTHER_OPS, _OTHER_COST),
    ):
        for op in ops:
            handlers[op[0]], costs[op[0]] = base[op[0]], cost
    handlers[pickle.BUILD[0]] = NumpyOnlyUnpickler.load_build_checked
    handlers[pickle.FRAME[0]] = NumpyOnlyUnpickler.skip_frame
    costs[pickle.BUILD[0]] = _OTHER_COST
    return handlers, costs


class NumpyOnlyUnpickler(pickle._Unpickler):
    """An unpickler that can rebuild numpy arrays and dtypes and nothing else, within a
    budget of bytes.

    It runs the opcode handlers of Python's own pure-Python unpickler (the C one cannot
    be metered opcode by opcode, and a single LONG_BINPUT makes it allocate a memo of
    the index it names) in a loop of its own: only the opcodes array pickles use, each
    charged before it runs. ``spent`` starts at what the stream holds (``stream_bytes``)
    and grows with each opcode and each array's declared size, checked before the array
    is allocated. The stream is read from memory: frames are only a buffering hint, so
    their headers are skipped.
    """

    stack: list[Any]  # the unpickler's stack and the stacks under its marks (set by load)
    metastack: list[list[Any]]

    def __init__(self, data: bytes, budget: int, stream_bytes: int = 0) -> None:
        self._buffer = io.BytesIO(data)
        super().__init__(self._buffer, encoding="latin1")  # Python 2 wrote bytes as str
        self.budget = budget
        self.spent = stream_bytes
        self._ndarray = self._new_array  # one object, so that _reconstruct can tell it

    def load(self) -> Any:
        self.read, self.readline = self._buffer.read, self._buffer.readline
        self.readinto = self._buffer.readinto
        self.metastack, self.stack, self.proto = [], [], 0
        self.append = self.stack.append
        read, stop = self._buffer.read, pickle.STOP[0]
        while key := read(1):
            code = key[0]
            handler = _HANDLERS[code]
            if handler is None:
                raise pickle.UnpicklingError(f"opcode {key!r} is not used by numpy arrays")
            self.spent += _COSTS[code]
            if self.spent > self.budget:
                raise _OverBudget(f"rebuilding it needs more than {format_bytes(self.budget)}")
            if code == stop:
                return self.stack.pop()
            handler(self)
        raise EOFError("the pickle ends before its STOP")

    def skip_frame(self) -> None:
        if len(self.read(8)) != 8:
            raise EOFError("a frame header is cut short")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (
            ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x and Python 2 files
            ("numpy._core.multiarray", "_reconstruct"),  # numpy 2.x
        ):
            return self._reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return self._ndarray
        if (module, name) == ("numpy", "dtype"):
            return _checked_dtype
        if (module, name) == ("_codecs", "encode"):  # bytes, as Python 3 pickles them at protocol 2
            return self._latin1_bytes
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def spend_array(self, shape: object, dtype: object) -> None:
        """Check an array's declared shape and dtype, and charge its size, before it exists."""
        if (
            not isinstance(shape, tuple)
            or not {type(d) for d in shape} <= {int}
            or (shape and min(shape) < 0)
        ):
            raise pickle.UnpicklingError(f"an array shape must be a tuple of sizes, not {shape!r}")
        dtype = _check_dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        self.spent += nbytes + _ARRAY_COST
        if self.spent > self.budget:
            raise _OverBudget(
                f"it asks for an array of shape {shape} {dtype} ({format_bytes(nbytes)}): "
                f"more than the {format_bytes(self.budget)} allowed for the whole array"
            )

    def _new_array(self, shape: object, dtype: object = "f8") -> np.ndarray:
        """``numpy.ndarray(shape, dtype)`` called directly: checked first."""
        shape = (shape,) if isinstance(shape, int) else shape
        checked = dtype if isinstance(dtype, np.dtype) else _checked_dtype(dtype)
        self.spend_array(shape, checked)
        return np.ndarray(shape, checked)  # type: ignore[arg-type]

    def _latin1_bytes(self, text: object, encoding: object) -> bytes:
        """``_codecs.encode(text, "latin1")``: how protocol 2 spells a bytes object."""
        if not isinstance(text, str) or encoding != "latin1":
            raise pickle.UnpicklingError("unexpected _codecs.encode arguments")
        self.spent += len(text) + 33
        if self.spent > self.budget:
            raise _OverBudget(f"rebuilding it needs more than {format_bytes(self.budget)}")
        return text.encode("latin1")

    def _reconstruct(self, subtype: object, shape: object, dtype: object) -> np.ndarray:
        """numpy's ``_reconstruct``, limited to what array pickles ask of it: an empty ndarray."""
        if subtype is not self._ndarray or shape != (0,) or dtype not in ("b", b"b"):
            raise pickle.UnpicklingError("unexpected array reconstruction arguments")
        self.spend_array((0,), np.dtype(np.int8))
        return _RECONSTRUCT(np.ndarray, (0,), b"b")

    def load_build_checked(self) -> None:
        """BUILD, for the two objects array pickles build: an array (its shape, dtype and
        data checked and charged before numpy allocates) and a dtype (no fields)."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) in (4, 5):
            shape, dtype, _fortran, data = state[-4:]
            self.spend_array(shape, dtype)
            _check_array_data(shape, np.dtype(dtype), data)
        elif isinstance(inst, np.dtype) and isinstance(state, tuple) and len(state) >= 5:
            if any(part is not None for part in state[2:5]):
                raise pickle.UnpicklingError("dtypes with fields or subarrays are not read")
        else:
            raise pickle.UnpicklingError(f"unexpected state for a {type(inst).__name__}")
        inst.__setstate__(state)
        if isinstance(inst, np.dtype):
            _check_dtype(inst)


_HANDLERS, _COSTS = _opcode_tables()


def _checked_dtype(obj: object, align: object = False, _copy: object = True) -> np.dtype[Any]:
    """``numpy.dtype(name, align, copy)`` for the simple dtypes of array pickles (the pickle
    passes them by position). Always a copy, whatever ``copy`` says: the BUILD that follows must never change numpy's shared dtype objects."""
    if not isinstance(obj, str) or not obj[:1] or obj[0] not in _ARRAY_KINDS:
        raise pickle.UnpicklingError(f"unexpected dtype {obj!r}")
    return _check_dtype(np.dtype(obj, align=bool(align), copy=True))


def _check_dtype(dtype: object) -> np.dtype[Any]:
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError(f"expected a numpy dtype, found {type(dtype).__name__}")
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"unexpected dtype {dtype}")
    return dtype


def _check_array_data(shape: tuple[int, ...], dtype: np.dtype[Any], data: object) -> None:
    """An array's pickled data must hold exactly its declared number of items or bytes."""
    count = math.prod(shape)
    if dtype.hasobject:
        ok = isinstance(data, list) and len(data) == count
    else:
        ok = isinstance(data, (bytes, str)) and len(data) == count * dtype.itemsize
    if not ok:
        raise pickle.UnpicklingError(f"array data does not match its shape {shape} {dtype}")


def read_sequences(path: Path, key: str, limits: ReadLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Split ``key`` of a sketch-rnn ``.npz``: an array of (n_i, 3) stroke-3 sequences.

    What the split may cost in memory (its stream, and the arrays it rebuilds) is
    checked against ``limits.max_array_bytes`` before anything is allocated.
    """
    member = f"{key}.npy"
    try:
        with zipfile.ZipFile(path) as zf:
            size = zf.getinfo(member).file_size
            limits.check_array_bytes(path, size, f"array {key!r}")
            with zf.open(member) as f:
                shape, fortran, dtype = read_npy_header(f, path, f"array {key!r}")
                if dtype.hasobject:
                    # at most the declared size: zipfile stops there (and checks the CRC)
                    stream = f.read()
                    value = NumpyOnlyUnpickler(stream, limits.max_array_bytes, size).load()
                else:
                    nbytes = math.prod(shape) * dtype.itemsize
                    limits.check_array_bytes(path, nbytes, f"array {key!r}")
                    order = shape[::-1] if fortran else shape
                    value = read_array(f, order, dtype, path, f"array {key!r}", "data")
                    value = value.T if fortran else value
    except DataFormatError:
        raise
    except _OverBudget as exc:
        raise DataFormatError(path, f"array {key!r}: {exc} (--max-array-bytes)") from None
    except (zipfile.BadZipFile, zlib.error, KeyError, OSError, EOFError) as exc:
        raise DataFormatError(path, f"cannot read array {key!r} ({exc})") from None
    except (ValueError, TypeError, MemoryError, IndexError, pickle.UnpicklingError) as exc:
        raise DataFormatError(
            path, f"array {key!r} is not a readable numpy array ({exc})"
        ) from None
    if not isinstance(value, np.ndarray):
        raise DataFormatError(path, f"array {key!r} is not a numpy array")
    return value


class _FlatSequences:
    """A split's first ``n`` sequences, validated and written end to end to ``file`` (an
    anonymous temporary file): points (total, 3) of one dtype, and ``ends`` (n + 1,)
    the row where each sequence starts, then the total."""

    def __init__(self, file: IO[bytes], sequences: np.ndarray, n: int, path: Path, key: str):
        checked = [_check_sequence(sequences[i], path, f"{key}[{i}]") for i in range(n)]
        kinds = {s.dtype for s in checked}
        self.dtype = np.result_type(*kinds) if kinds else np.dtype(np.int16)
        self.ends = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([len(s) for s in checked], out=self.ends[1:])
        self.file = file
        for seq in checked:
            file.write(np.ascontiguousarray(seq, dtype=self.dtype).tobytes())

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Points of sequences ``start..stop``, as one (rows, 3) array."""
        row = 3 * self.dtype.itemsize
        self.file.seek(int(self.ends[start]) * row)
        count = int(self.ends[stop] - self.ends[start])
        return np.frombuffer(self.file.read(count * row), dtype=self.dtype).reshape(count, 3)


def _check_sequence(seq: object, path: str | Path, where: str) -> np.ndarray:
    """One stroke-3 sequence: a numeric (n, 3) array, 1 <= n <= MAX_POINTS_PER_DRAWING."""
    arr = seq if isinstance(seq, np.ndarray) else np.asarray([])
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0 or arr.dtype.kind not in "iuf":
        raise DataFormatError(
            path, f"expected a (n, 3) numeric stroke-3 array, found {arr.dtype} {arr.shape}", where
        )
    if len(arr) > MAX_POINTS_PER_DRAWING:
        raise DataFormatError(
            path, f"{len(arr)} points is more than the limit of {MAX_POINTS_PER_DRAWING}", where
        )
    return np.asarray(arr)


class SketchRnnSource:
    """sketch-rnn ``.npz``: one class per file, the split taken from the key.

    Chunks hold ``strokes`` (float32 (n_points, 2), absolute positions starting
    from the first offset, ``stroke_kind="raw"`` because the range is not 0..255),
    ``split`` ("train", "valid" or "test") and ids ``"<key>:<index>"``.
    ``per_class`` counts per split.
    """

    format = "sketchrnn-npz"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        label: str | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        self.path = str(path)
        self.label = label or label_from_filename(self.path, ("sketchrnn_",))
        self.categories = categories
        self.per_class = per_class
        self.limits = limits or DEFAULT_LIMITS
        self.keys = [k for k in OWN_SPLITS_FIRST if k in npz_keys(path)]
        if not self.keys:
            raise DataFormatError(path, "no train, valid or test array (not a sketch-rnn file)")
        LabelFilter(categories, per_class)  # validates per_class now

    def classes(self) -> list[str] | None:
        return [self.label]

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        if not LabelFilter(self.categories).wants(self.label):
            return
        path = Path(self.path)
        for key in self.keys:
            sequences = read_sequences(path, key, self.limits)
            n = min(len(sequences), self.per_class or len(sequences))
            with tempfile.TemporaryFile() as file:
                flat = _FlatSequences(file, sequences, n, path, key)
                del sequences  # from here on, the split is on disk
                yield from self._split_chunks(flat, key, chunk_size)

    def _split_chunks(self, flat: _FlatSequences, key: str, chunk_size: int) -> Iterator[Chunk]:
        # a point costs its stored row and the float32 (x, y) it becomes
        row_bytes = 3 * flat.dtype.itemsize + 8
        max_rows = max(1, self.limits.chunk_bytes // row_bytes)
        start, n = 0, len(flat.ends) - 1
        while start < n:
            fits = int(np.searchsorted(flat.ends, flat.ends[start] + max_rows, side="right")) - 1
            stop = min(n, start + chunk_size, max(start + 1, fits))
            points = flat.rows(start, stop)
            bounds = flat.ends[start : stop + 1] - flat.ends[start]
            yield Chunk(
                labels=[self.label] * (stop - start),
                source=self.path,
                strokes=[
                    stroke3_to_strokes(
                        points[bounds[i] : bounds[i + 1]], self.path, f"{key}[{start + i}]"
                    )
                    for i in range(stop - start)
                ],
                stroke_kind="raw",
                split=key,
                ids=[f"{key}:{i}" for i in range(start, stop)],
            )
            start = stop


def stroke3_to_strokes(seq: object, path: str | Path, where: str) -> Drawing:
    """stroke-3 (n, 3) (dx, dy, pen_lifted) -> absolute strokes, split after each pen lift.

    Example: [[1, 2, 0], [3, 4, 1], [10, 0, 0], [1, 1, 1]] -> strokes
    [[1, 2], [4, 6]] and [[14, 6], [15, 7]].
    """
    arr = _check_sequence(seq, path, where)
    xy = np.cumsum(arr[:, :2].astype(np.float64), axis=0).astype(np.float32)
    if not np.isfinite(xy).all():
        raise DataFormatError(path, "stroke-3 offsets must be finite numbers", where)
    pieces = np.split(xy, np.flatnonzero(arr[:, 2] > 0) + 1)
    return [np.ascontiguousarray(p) for p in pieces if len(p)]
