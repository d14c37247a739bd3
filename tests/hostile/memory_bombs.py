"""Small files that declare far more than they hold, for the memory tests and the bench.

Each is a valid file of its format, built in a second or two: the zip and gzip bombs
repeat one deflate segment of 64 MiB of zeros (a full flush makes segments
independent), so their gigabytes are never compressed, only their CRC is computed.
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

SEGMENT = 64 << 20  # zeros per repeated deflate segment


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _deflate_zeros(head: bytes, zeros: int) -> tuple[bytes, int]:
    """(raw deflate stream of ``head`` then ``zeros`` zero bytes, its CRC-32), fast."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)]
    whole, rest = divmod(zeros, SEGMENT)
    if whole:
        segment = c.compress(bytes(SEGMENT)) + c.flush(zlib.Z_FULL_FLUSH)
        parts.extend([segment] * whole)
    parts.append(c.compress(bytes(rest)) + c.flush())
    crc = zlib.crc32(head)
    block = bytes(SEGMENT)
    for _ in range(whole):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return b"".join(parts), crc


def _zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A zip of deflated members given as (name, raw deflate data, crc, size), with zip64
    sizes where a member inflates past 4 GiB."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, crc, size in members:
        offset, raw = out.tell(), name.encode()
        big = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if big else b""
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if big else (len(data), size)
        version = 45 if big else 20
        common = (version, 0, 8, 0, 0x21, crc, *sizes, len(raw), len(extra))
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, *common)
        out.write(local + raw + extra + data)
        entry = struct.pack("<IH", 0x02014B50, version) + struct.pack("<HHHHHIIIHH", *common)
        central.write(entry + struct.pack("<HHHII", 0, 0, 0, 0, offset) + raw + extra)
    start = out.tell()
    out.write(central.getvalue())
    n = len(members)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central.getvalue()), start, 0))
    path.write_bytes(out.getvalue())


def npz_zip_bomb(path: Path, n: int = 4096, side: int = 1000) -> Path:
    """An ``.npz`` with ``x`` uint8 (n, side, side) of zeros (4096 x 1000 x 1000: 3.8 GiB
    from 3.9 MB) and ``y`` (n,) int64 labels."""
    head = _npy_header("|u1", (n, side, side))
    data, crc = _deflate_zeros(head, n * side * side)
    y = _npy_header("<i8", (n,)) + (np.arange(n) % 10).astype("<i8").tobytes()
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    ydata = c.compress(y) + c.flush()
    _zip(
        path,
        [
            ("x.npy", data, crc, len(head) + n * side * side),
            ("y.npy", ydata, zlib.crc32(y), len(y)),
        ],
    )
    return path


def idx_gzip_bomb(folder: Path, n: int = 1024, side: int = 1000) -> Path:
    """``train-images-idx3-ubyte.gz`` declaring (n, side, side) zeros, and its labels."""
    folder.mkdir(parents=True, exist_ok=True)
    head = struct.pack(">IIII", 0x00000803, n, side, side)
    data, crc = _deflate_zeros(head, n * side * side)
    size = (len(head) + n * side * side) & 0xFFFFFFFF
    gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + data + struct.pack("<II", crc, size)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gz)
    labels = struct.pack(">II", 0x00000801, n) + bytes(i % 10 for i in range(n))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return folder / "train-images-idx3-ubyte.gz"


def sketchrnn_pickle_bomb(path: Path, how: str = "ndarray") -> Path:
    """A sketch-rnn ``.npz`` whose ``train`` pickle asks for 3,000,000,000 objects (22 GiB):
    by calling ``numpy.ndarray((3e9,), "O")`` (``how="ndarray"``), or by the
    ``_reconstruct`` + BUILD that numpy's own array pickles use (``how="build"``)."""
    count = (3_000_000_000).to_bytes(5, "little")
    shape = b"\x8a\x05" + count + b"\x85"  # LONG1 3e9, TUPLE1
    if how == "ndarray":
        body = b"\x80\x02cnumpy\nndarray\n" + shape + b"X\x01\x00\x00\x00O\x86R."
    else:
        empty = (
            b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            b"K\x00\x85U\x01b\x87R"  # _reconstruct(ndarray, (0,), "b")
        )
        dtype = b"cnumpy\ndtype\nU\x02O8\x89\x88\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb"
        body = empty + b"(K\x01" + shape + dtype + b"\x89]tb."  # (1, shape, dtype, False, [])
    member = _npy_header("|O", (3,)) + body
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    _zip(path, [("train.npy", c.compress(member) + c.flush(), zlib.crc32(member), len(member))])
    return path


def bin_points_bomb(path: Path, strokes: int = 300) -> Path:
    """A gzipped Quick, Draw! ``.bin`` whose one drawing declares 65,535 strokes of 65,535
    points (4.3 billion points, 34 GB as float32); the first ``strokes`` are present."""
    head = struct.pack("<Q2sBIH", 1, b"GB", 1, 0, 65535)
    stroke = struct.pack("<H", 65535) + bytes(2 * 65535)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(head)
        for _ in range(strokes):
            f.write(stroke)
    return path


def huge_photos(root: Path, jpegs: int = 25, pngs: int = 4, side: int = 7000) -> Path:
    """A folder per class of legitimate photos far larger than any recipe needs:
    ``jpeg/`` holds ``jpegs`` RGB JPEGs and ``png/`` ``pngs`` gray PNGs, side x side."""
    from PIL import Image

    (root / "jpeg").mkdir(parents=True, exist_ok=True)
    (root / "png").mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    gray = np.add.outer(ramp // 2, ramp // 2)
    first_jpeg, first_png = root / "jpeg" / "0.jpg", root / "png" / "0.png"
    Image.fromarray(np.stack([gray, gray[::-1], gray.T], axis=2)).save(first_jpeg, quality=80)
    Image.fromarray(gray).save(first_png)
    for i in range(1, jpegs):
        shutil.copy(first_jpeg, root / "jpeg" / f"{i}.jpg")
    for i in range(1, pngs):
        shutil.copy(first_png, root / "png" / f"{i}.png")
    return root
