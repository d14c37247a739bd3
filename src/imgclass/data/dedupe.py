"""Exact duplicates: a content hash per example, and one copy kept in one split.

Why: a copy of one example in two splits leaks (a validation or test score measured
on examples the model was trained on), and copies within a split weigh some examples
twice. ``imgclass data prepare`` hashes every example as it streams past, keeps the
first copy and drops the others, and reports what it found in the manifest's
``duplicates`` section. Sources' own test and valid parts are read first (see
``prepare.round_robin``), so when a copy is in a source's own test split, that is the
copy kept.

The hash is of the example as read, before any recipe: the pixels and the shape of an
image, or the points of every stroke of a drawing, cut to 61 bits (the low 3 bits of
each stored key hold where the kept copy went), 8 bytes an example in memory; two
different examples collide with odds of about n^2 / 2^62 (1 in 50,000 for ten million
examples).

Images of up to VECTOR_BYTES (bitmaps, digits) are hashed a chunk at a time by one
matrix product: two multilinear multiply-shift hashes (Dietzfelbinger; Thorup, "High
speed hashing for integers and strings") of the image's 32-bit words and its shape, with
coefficients drawn from os.urandom once per process, each giving 32 bits that collide
with probability 2^-32 for any two different images, whatever they are (the coefficients
are secret, so no input can be made to collide on purpose). That is about 4x less CPU
than one blake2b call per image, and runs outside the GIL. Bigger images (photos) and
strokes use blake2b. Keys are compared within one prepare only, never stored, so they
need not be the same from one process to the next.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

SPLITS = ("train", "valid", "test")
TAG_BITS = 3  # split number (0..2) plus 4 when the copy is in a source's own split
TAG_MASK = np.uint64((1 << TAG_BITS) - 1)
KEY_MASK = ~TAG_MASK
OWN = 4
METHOD = (
    "61-bit hash of each example as read: the pixels and shape of an image (multilinear "
    "hashing with random coefficients up to 64 kB, blake2b above), or the points of its "
    "strokes (blake2b)"
)
VECTOR_BYTES = 1 << 16  # images up to this size are hashed a chunk at a time (see above)
SHAPE_WORDS = 4  # ndim and up to three sides, hashed after the pixels
# Two columns of 64-bit coefficients, one row per 32-bit word of an image and its shape.
_COEFFICIENTS = np.frombuffer(
    os.urandom((VECTOR_BYTES // 4 + SHAPE_WORDS) * 16), dtype=np.uint64
).reshape(-1, 2)


def _digest(parts: Sequence[Any], person: bytes) -> bytes:
    """8-byte blake2b of arrays: each one's dtype, shape and bytes, in order."""
    h = hashlib.blake2b(digest_size=8, person=person)
    for part in parts:
        arr = np.ascontiguousarray(part)
        h.update(arr.dtype.str.encode())
        h.update(struct.pack(f"<{arr.ndim + 1}I", arr.ndim, *arr.shape))
        h.update(arr.data)
    return h.digest()


def _image_digests(images: np.ndarray) -> list[bytes]:
    """8-byte blake2b of each uint8 image of a batch (n, h, w[, c]), its shape in the salt
    (one call per image: three times faster than ``_digest`` for small images)."""
    shape = images.shape[1:]
    salt = struct.pack("<4I", len(shape), *shape, *[0] * (3 - len(shape)))
    rows = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    blake = hashlib.blake2b
    return [blake(row.data, digest_size=8, salt=salt, person=b"image").digest() for row in rows]


def _vector_keys(images: np.ndarray) -> np.ndarray:
    """uint64 (n,) keys of a batch of uint8 images (n, h, w[, c]) of at most VECTOR_BYTES
    each: the top 32 bits of two multilinear hashes of the image's little-endian 32-bit
    words (zero-padded) followed by its shape."""
    n = len(images)
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(n, -1)
    size = flat.shape[1]
    words = -(-size // 4)
    if size % 4:
        padded = np.zeros((n, 4 * words), np.uint8)
        padded[:, :size] = flat
        flat = padded
    w = np.empty((n, words + SHAPE_WORDS), np.uint64)
    w[:, :words] = flat.view("<u4")
    shape = images.shape[1:]
    w[:, words:] = (len(shape), *shape, *[0] * (SHAPE_WORDS - 1 - len(shape)))
    h = w @ _COEFFICIENTS[: words + SHAPE_WORDS]  # wraps modulo 2^64, as the hash wants
    high = np.uint64(32)
    keys: np.ndarray = ((h[:, 0] >> high) << high) | (h[:, 1] >> high)
    return keys


def _image_keys(images: np.ndarray) -> np.ndarray:
    """uint64 (n,) keys of a batch of same-shaped images (n, h, w[, c]): vectorised up
    to VECTOR_BYTES an image, blake2b above (always the same way for the same image)."""
    if not len(images):
        return np.zeros(0, np.uint64)
    if int(np.prod(images.shape[1:])) <= VECTOR_BYTES:
        return _vector_keys(images)
    return np.frombuffer(b"".join(_image_digests(images)), dtype="<u8").astype(np.uint64)


def content_keys(
    images: np.ndarray | list[np.ndarray] | None, strokes: Sequence[Sequence[Any]] | None
) -> np.ndarray:
    """uint64 (n,) content keys (low TAG_BITS bits zero): of the strokes when a chunk has
    them (a stroke dataset: the drawing is the example), else of the images."""
    if strokes is not None:
        digests = [
            _digest([np.asarray(s, dtype=np.float32) for s in drawing], b"strokes")
            for drawing in strokes
        ]
        keys = np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)
    elif isinstance(images, np.ndarray) and images.ndim in (3, 4):
        keys = _image_keys(images)
    elif images is not None:  # photos of varying sizes
        keys = np.array([_image_keys(np.asarray(image)[None])[0] for image in images], np.uint64)
    else:
        keys = np.zeros(0, np.uint64)
    out: np.ndarray = keys & KEY_MASK
    return out


class SeenKeys:
    """The keys of every kept example, with where each went, in sorted uint64 levels.

    A log-structured set: each batch of new keys becomes a sorted level, merged with the
    previous one while that is not bigger (so there are about log2(n / batch) levels and
    each key is merged about as often). 8 bytes a key, plus a copy during a merge.
    """

    def __init__(self) -> None:
        self.levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self.levels)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """int8 (n,): the tag stored with each key, or -1 for keys never added."""
        out = np.full(len(keys), -1, dtype=np.int8)
        for level in self.levels:
            pos = np.minimum(np.searchsorted(level, keys), len(level) - 1)
            hit = (level[pos] & KEY_MASK) == keys
            out[hit] = (level[pos[hit]] & TAG_MASK).astype(np.int8)
        return out

    def add(self, keys: np.ndarray, tags: np.ndarray) -> None:
        """Add keys (not yet present, distinct) with their tags (0..7)."""
        if not len(keys):
            return
        level = np.sort(keys | tags.astype(np.uint64))
        while self.levels and len(self.levels[-1]) <= len(level):
            # Two sorted runs: the stable sort (timsort) merges them in linear time.
            level = np.sort(np.concatenate([self.levels.pop(), level]), kind="stable")
        self.levels.append(level)


class Deduplicator:
    """Decides, chunk by chunk, which examples are first copies, and counts the others."""

    def __init__(self) -> None:
        self.seen = SeenKeys()
        self.within = np.zeros(3, dtype=np.int64)  # dropped, same split as the kept copy
        self.across = np.zeros((3, 3), dtype=np.int64)  # [kept split, dropped copy's split]
        self.own_test_overlaps = 0  # copies elsewhere of a source's own test examples
        self.own_dropped = 0  # own test/valid examples dropped for a copy kept elsewhere

    def keep(self, keys: np.ndarray, splits: np.ndarray, own: bool) -> np.ndarray:
        """bool (n,): which examples to keep. ``splits`` are the splits they were given
        (int8, 0..2); ``own`` says the chunk is a source's own test or valid part."""
        _, first_index, inverse = np.unique(keys, return_index=True, return_inverse=True)
        first = first_index[inverse]  # the first example in the chunk with the same key
        previous = self.seen.find(keys)
        keep: np.ndarray = (previous < 0) & (first == np.arange(len(keys)))
        tag = (splits.astype(np.int8) | np.int8(OWN if own else 0)).astype(np.int8)
        kept_tag = np.where(previous >= 0, previous, tag[first])
        self._count(kept_tag[~keep], splits[~keep], own)
        self.seen.add(keys[keep], tag[keep])
        return keep

    def _count(self, kept_tag: np.ndarray, splits: np.ndarray, own: bool) -> None:
        kept_split = kept_tag & 3
        same = kept_split == splits
        self.within += np.bincount(splits[same], minlength=3)
        np.add.at(self.across, (kept_split[~same], splits[~same]), 1)
        from_own_test = (kept_tag & OWN).astype(bool) & (kept_split == 2)
        if not own:
            self.own_test_overlaps += int(from_own_test.sum())
        else:
            self.own_dropped += int((~(kept_tag & OWN).astype(bool)).sum())

    def report(self) -> dict[str, Any]:
        """The manifest's ``duplicates`` section."""
        across = {
            f"{SPLITS[a]}/{SPLITS[b]}": int(self.across[a, b] + self.across[b, a])
            for a in range(3)
            for b in range(a + 1, 3)
        }
        return {
            "method": METHOD,
            "dropped": int(self.within.sum() + self.across.sum()),
            "within_split": {s: int(n) for s, n in zip(SPLITS, self.within, strict=True)},
            "across_splits": across,
            "own_test_overlaps": self.own_test_overlaps,
            "own_split_copies_dropped": self.own_dropped,
        }


def describe(report: dict[str, Any] | None) -> str:
    """One line for people: ``none found`` or what was dropped, and where the copies were."""
    if not report:
        return "not checked (prepared before imgclass looked for them)"
    if not report["dropped"]:
        return "none (every example's content is different)"
    parts = [f"within {s} {n:,}" for s, n in report["within_split"].items() if n]
    parts += [f"across {pair} {n:,}" for pair, n in report["across_splits"].items() if n]
    n = report["dropped"]
    copies = "exact copy" if n == 1 else "exact copies"
    text = f"{n:,} {copies} dropped, one copy kept ({'; '.join(parts)})"
    if report.get("own_test_overlaps"):
        text += (
            f"; {report['own_test_overlaps']:,} of them copies of the sources' own test examples"
        )
    return text
