"""Downloads against a real HTTP server on 127.0.0.1 that cuts, fails and misbehaves."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from imgclass.cli import main
from imgclass.cli.data_fetch import MNIST_FILES
from imgclass.data.download import Expected, RetryPolicy, download
from imgclass.errors import DownloadError

FAST = RetryPolicy(attempts=4, base_delay=0.01, timeout=5)


class Server:
    """Serves ``files`` (path -> bytes) with switchable faults; records request headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None  # close the first response after this many bytes
        self.fail_times = 0  # answer 500 this many times first
        self.ignore_range = False
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, **dict(self.headers)})
                if server.fail_times > 0:
                    server.fail_times -= 1
                    self.send_error(500)
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


PAYLOAD = bytes(range(256)) * 400  # 100 kB


def test_full_download_is_verified_and_atomic(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    out = download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=sha), FAST)
    assert out.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
    n = len(server.requests)
    download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=sha), FAST)
    assert len(server.requests) == n  # already there and verified: no request


def test_a_download_cut_half_way_resumes_with_range(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut_after = len(PAYLOAD) // 2
    out = download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert out.read_bytes() == PAYLOAD
    assert "Range" not in server.requests[0]
    assert server.requests[1]["Range"] == f"bytes={len(PAYLOAD) // 2}-"


def test_a_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests[0]["Range"] == "bytes=1000-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 10)
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_server_errors_are_retried(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.fail_times = 2
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD and len(server.requests) == 3


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256="0" * 64), FAST)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.url}/nope", tmp_path / "x", retry=FAST)


def test_fetch_quickdraw_end_to_end(server, tmp_path, shared_data, capsys):
    q = np.load(shared_data / "quickdraw_345x80.npz")
    classes = [str(c) for c in q["classes"]]
    for name in ("cat", "smiley face"):
        path = tmp_path / "src.npy"
        np.save(path, q["x"][q["y"] == classes.index(name)][:5].reshape(-1, 784))
        server.files[f"/numpy_bitmap/{name.replace(' ', '%20')}.npy"] = path.read_bytes()
    out = tmp_path / "qd"
    rc = main(
        [
            "data",
            "fetch",
            "quickdraw",
            "--categories",
            "cat,smiley face",
            "--kind",
            "bitmap",
            "--out",
            str(out),
            "--base-url",
            server.url,
            "--json",
        ]
    )
    assert rc == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [Path(f["path"]).name for f in files] == ["cat.npy", "smiley face.npy"]
    assert np.load(out / "cat.npy").shape == (5, 784)
    assert main(["-q", "data", "prepare", str(out), "--out", str(tmp_path / "ds")]) == 0


def _idx(array: np.ndarray, magic: int) -> bytes:
    return gzip.compress(
        struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    )


def test_fetch_mnist_verifies_md5(server, tmp_path, shared_data, monkeypatch, capsys):
    m = np.load(shared_data / "mnist.npz")
    files = {
        "train-images-idx3-ubyte.gz": _idx(m["x_train"][:20], 0x803),
        "train-labels-idx1-ubyte.gz": _idx(m["y_train"][:20].astype(np.uint8), 0x801),
        "t10k-images-idx3-ubyte.gz": _idx(m["x_test"][:10], 0x803),
        "t10k-labels-idx1-ubyte.gz": _idx(m["y_test"][:10].astype(np.uint8), 0x801),
    }
    for name, data in files.items():
        server.files[f"/{name}"] = data
    monkeypatch.setitem(MNIST_FILES, "t10k-labels-idx1-ubyte.gz", "0" * 32)
    for name in list(files)[:3]:
        monkeypatch.setitem(MNIST_FILES, name, hashlib.md5(files[name]).hexdigest())
    monkeypatch.setenv("IMGCLASS_MNIST_URL", server.url)
    assert main(["data", "fetch", "mnist", "--out", str(tmp_path / "m"), "--retries", "1"]) == 2
    assert "md5 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").exists()
    monkeypatch.setitem(
        MNIST_FILES,
        "t10k-labels-idx1-ubyte.gz",
        hashlib.md5(files["t10k-labels-idx1-ubyte.gz"]).hexdigest(),
    )
    assert main(["data", "fetch", "mnist", "--out", str(tmp_path / "m")]) == 0
    assert main(["-q", "data", "prepare", str(tmp_path / "m"), "--out", str(tmp_path / "ds")]) == 0


def test_fetch_rejects_unknown_categories(capsys, tmp_path):
    assert main(["data", "fetch", "quickdraw", "--categories", "cta", "--out", str(tmp_path)]) == 2
    assert "did you mean cat" in capsys.readouterr().err
