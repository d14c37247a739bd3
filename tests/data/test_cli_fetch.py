"""``imgclass data fetch`` end to end, against the local server of ``test_download.py``."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from test_download import LocalServer

from imgclass.cli import main
from imgclass.data import download as dl
from imgclass.data.download import Expected
from imgclass.data.quickdraw_names import CATEGORIES, category_url
from imgclass.data.sources import open_source


@pytest.fixture
def server():
    s = LocalServer()
    yield s
    s.close()


@pytest.fixture
def qd_files(fixtures_dir) -> dict[str, bytes]:
    folder = fixtures_dir / "download"
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".npy", ".ndjson")}


def fetch(*args: str) -> int:
    return main(["-q", "data", "fetch", *args])


def test_fetch_quickdraw_bitmaps_end_to_end(server, tmp_path, qd_files, capsys):
    server.files["/numpy_bitmap/cat.npy"] = qd_files["cat.npy"]
    server.files["/numpy_bitmap/smiley%20face.npy"] = qd_files["smiley face.npy"]
    out = tmp_path / "qd"
    argv = ["quickdraw", "--categories", "cat, smiley face", "--out", str(out)]
    assert fetch(*argv, "--base-url", server.url + "/", "--json") == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [(Path(f["path"]).name, f["size"], f["sha256"], f["status"]) for f in files] == [
        (name, len(data), hashlib.sha256(data).hexdigest(), "downloaded")
        for name, data in ((n, qd_files[n]) for n in ("cat.npy", "smiley face.npy"))
    ]
    assert sorted(p.name for p in out.iterdir()) == ["cat.npy", "smiley face.npy"]
    chunk = next(open_source(out / "smiley face.npy").iter_chunks())
    want = np.load(io.BytesIO(qd_files["smiley face.npy"]))
    assert chunk.labels == ["smiley face"] * 3
    np.testing.assert_array_equal(chunk.images, want.reshape(3, 28, 28))


def test_fetching_again_downloads_nothing(server, tmp_path, qd_files, capsys, monkeypatch):
    server.files["/numpy_bitmap/cat.npy"] = qd_files["cat.npy"]
    monkeypatch.setenv("IMGCLASS_QUICKDRAW_URL", server.url)
    argv = ["quickdraw", "--categories", "cat", "--out", str(tmp_path)]
    assert fetch(*argv) == 0 and fetch(*argv) == 0
    assert [method for method, _, _ in server.requests] == ["GET", "HEAD"]
    assert (
        "1 file: 0 downloaded, 1 already there; 1 checked by size only" in capsys.readouterr().out
    )


def test_fetch_quickdraw_raw_strokes_keep_their_timing(server, tmp_path, qd_files):
    server.files["/raw/cat.ndjson"] = qd_files["cat.ndjson"]
    argv = ["quickdraw", "--categories", "cat", "--kind", "raw", "--out", str(tmp_path)]
    assert fetch(*argv, "--base-url", server.url) == 0
    assert (tmp_path / "cat.ndjson").read_bytes() == qd_files["cat.ndjson"]
    chunk = next(open_source(tmp_path / "cat.ndjson").iter_chunks())
    first = json.loads(qd_files["cat.ndjson"].splitlines()[0])["drawing"]
    assert chunk.labels == ["cat"] * 3 and chunk.stroke_kind == "raw" and chunk.strokes
    np.testing.assert_allclose(chunk.strokes[0][0], np.array(first[0], np.float32).T)


@pytest.mark.parametrize(
    ("kind", "path"),
    [("simplified", "/simplified/cat.ndjson"), ("binary", "/binary/cat.bin")],
)
def test_fetch_quickdraw_kinds_use_google_layout(server, tmp_path, kind, path, capsys):
    argv = ["quickdraw", "--categories", "cat", "--kind", kind, "--out", str(tmp_path)]
    assert fetch(*argv, "--base-url", server.url) == 2
    assert f"error: {server.url}{path}: HTTP 404" in capsys.readouterr().err
    assert [p for _, p, _ in server.requests] == [path] and list(tmp_path.iterdir()) == []


def test_google_urls_quote_category_names(monkeypatch):
    monkeypatch.delenv("IMGCLASS_QUICKDRAW_URL", raising=False)
    root = "https://storage.googleapis.com/quickdraw_dataset/full"
    assert category_url("smiley face", "bitmap") == f"{root}/numpy_bitmap/smiley%20face.npy"
    assert category_url("The Eiffel Tower", "simplified") == (
        f"{root}/simplified/The%20Eiffel%20Tower.ndjson"
    )
    assert category_url("cat", "raw") == f"{root}/raw/cat.ndjson"
    assert category_url("cat", "binary") == f"{root}/binary/cat.bin"


def test_all_categories_are_fetched(server, tmp_path):
    for name in CATEGORIES:
        server.files["/binary/" + name.replace(" ", "%20") + ".bin"] = name.encode()
    argv = ["quickdraw", "--categories", "all", "--kind", "binary", "--out", str(tmp_path)]
    assert fetch(*argv, "--base-url", server.url) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.bin" for n in CATEGORIES)
    assert (tmp_path / "The Great Wall of China.bin").read_bytes() == b"The Great Wall of China"


def test_list_gives_the_345_official_categories(shared_data, capsys):
    official = [str(c) for c in np.load(shared_data / "quickdraw_345x80.npz")["classes"]]
    assert fetch("quickdraw", "--list") == 0
    assert capsys.readouterr().out.splitlines() == official
    assert fetch("quickdraw", "--list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"categories": official}


def test_unknown_categories_get_a_suggestion(tmp_path, capsys):
    assert fetch("quickdraw", "--categories", "cat,smiley fase", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "unknown Quick, Draw! category 'smiley fase'; did you mean smiley face" in err
    assert fetch("quickdraw", "--out", str(tmp_path)) == 2
    assert "give --categories" in capsys.readouterr().err


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_served(server, shared_data, monkeypatch) -> dict[str, np.ndarray]:
    """Tiny real IDX .gz files on the server under /good/, their sha256 as the known ones."""
    m = np.load(shared_data / "mnist.npz")
    arrays = {
        "train-images-idx3-ubyte.gz": (m["x_train"][:20], 0x803),
        "train-labels-idx1-ubyte.gz": (m["y_train"][:20], 0x801),
        "t10k-images-idx3-ubyte.gz": (m["x_test"][:10], 0x803),
        "t10k-labels-idx1-ubyte.gz": (m["y_test"][:10], 0x801),
    }
    for name, (array, magic) in arrays.items():
        data = _idx(array, magic)
        server.files[f"/good/{name}"] = data
        monkeypatch.setitem(dl.MNIST_FILES, name, Expected(sha256=hashlib.sha256(data).hexdigest()))
    return {name: array for name, (array, _) in arrays.items()}


def test_fetch_mnist_falls_back_to_the_next_mirror(server, tmp_path, mnist_served, capsys):
    out = tmp_path / "mnist"
    mirrors = ["--base-url", f"{server.url}/broken", "--base-url", f"{server.url}/good"]
    assert fetch("mnist", "--out", str(out), *mirrors, "--json") == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [f["url"] for f in files] == [f"{server.url}/good/{name}" for name in mnist_served]
    assert all(f["sha256"] == dl.MNIST_FILES[Path(f["path"]).name].sha256 for f in files)
    chunks = {c.split: c for c in open_source(out).iter_chunks()}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = mnist_served[f"{prefix}-images-idx3-ubyte.gz"]
        labels = mnist_served[f"{prefix}-labels-idx1-ubyte.gz"]
        np.testing.assert_array_equal(chunks[split].images, images)
        assert chunks[split].labels == [str(v) for v in labels]


def test_fetch_mnist_checksum_mismatch_leaves_no_file(
    server, tmp_path, mnist_served, monkeypatch, capsys
):
    monkeypatch.setitem(dl.MNIST_FILES, "t10k-labels-idx1-ubyte.gz", Expected(sha256="0" * 64))
    monkeypatch.setenv("IMGCLASS_MNIST_URL", f"{server.url}/good")
    out = tmp_path / "mnist"
    assert fetch("mnist", "--out", str(out)) == 2
    assert "t10k-labels-idx1-ubyte.gz: sha256 mismatch" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(list(mnist_served)[:3])


def test_mnist_default_mirrors(monkeypatch, tmp_path):
    calls = []

    def recording_download(urls, dest, expected, retry, desc):
        calls.append((urls, Path(dest).name, expected))

    monkeypatch.delenv("IMGCLASS_MNIST_URL", raising=False)
    monkeypatch.setattr(dl, "download", recording_download)
    dl.fetch_mnist(tmp_path)
    assert calls[0] == (
        [
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
            "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz",
        ],
        "train-images-idx3-ubyte.gz",
        Expected(9912422, md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    )
    assert [c[1] for c in calls] == list(dl.MNIST_FILES)


def test_fetch_says_what_was_checked_and_never_verified_for_size_only(
    server, tmp_path, qd_files, capsys, monkeypatch
):
    data = qd_files["cat.npy"]
    server.files["/numpy_bitmap/cat.npy"] = data
    monkeypatch.setenv("IMGCLASS_QUICKDRAW_URL", server.url)
    argv = ["quickdraw", "--categories", "cat", "--out", str(tmp_path)]
    assert fetch(*argv) == 0  # this server publishes no checksum: the size is all we know
    out = capsys.readouterr().out
    assert "(downloaded; size only checked: no checksum published)" in out
    assert out.endswith(
        "1 file: 1 downloaded, 0 already there; 1 checked by size only (no checksum published)\n"
    )
    assert "verified" not in out

    changed = bytes([data[0] ^ 1]) + data[1:]  # same size, other bytes
    (tmp_path / "cat.npy").write_bytes(changed)
    assert fetch(*argv, "--json") == 0
    [entry] = json.loads(capsys.readouterr().out)["files"]
    assert (entry["status"], entry["checked"]) == ("present", ["size"])  # said, not hidden

    server.goog_md5 = True  # Cloud Storage's x-goog-hash: the md5 catches the change
    assert fetch(*argv) == 0
    out = capsys.readouterr().out
    assert "(downloaded; md5 checked)" in out and "1 verified by md5" in out
    assert (tmp_path / "cat.npy").read_bytes() == data
