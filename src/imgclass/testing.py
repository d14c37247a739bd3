"""Helpers shared by the tests and the bench scripts, so that each is written once: a real
uvicorn server on 127.0.0.1 in a thread of this process, and drawing on the page's canvas
with real mouse moves in a Playwright page.

Nothing in imgclass imports this module (tests/test_architecture.py keeps it above every
layer). It needs uvicorn, which the serving install has, and Playwright only through the
``page`` object a caller passes in.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers started in a child
    process; LocalServer binds its own socket and has no such race)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``app`` (an ASGI app, e.g. ``create_app(settings)``) served by uvicorn on 127.0.0.1
    in a daemon thread; ready when the constructor returns (its /healthz answered).

    The listening socket is bound here, before the thread starts, so no other process can
    take the port between choosing it and serving on it. ``stop()`` (or leaving a ``with``
    block) shuts the server down and waits for its thread.
    """

    def __init__(
        self,
        app: Any,
        *,
        timeout: float = 60.0,
        health: str = "/healthz",
        log_level: str = "warning",
        **config: Any,
    ) -> None:
        """``config``: more ``uvicorn.Config`` arguments (e.g. ``http=`` a protocol class)."""
        import uvicorn

        self.app = app
        self.socket = socket.socket()
        self.socket.bind((HOST, 0))
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://{HOST}:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=HOST, port=self.port, log_level=log_level, **config)
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self.thread.start()
        try:
            self._wait_until_started(timeout)
            urllib.request.urlopen(self.url + health, timeout=timeout).close()
        except BaseException:
            self.stop()
            raise

    def _wait_until_started(self, timeout: float) -> None:
        """Wait for uvicorn's own ``started`` flag (set once the app's startup is done and
        the socket listens); a server that died or hangs is an error, not a silent go-on."""
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server for {self.url} stopped before it started")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server for {self.url} did not start in {timeout:g} s")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout)
        self.socket.close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


Point = Sequence[float]


def draw_strokes(
    page: Any,
    strokes: Iterable[Sequence[Point]],
    *,
    canvas: str = "#canvas",
    size: float | None = 280,
    steps: int = 4,
) -> None:
    """Draw ``strokes`` (each a list of (x, y) points) on the canvas ``canvas`` of a
    Playwright ``page`` with real mouse moves: press at the first point, move through the
    others in ``steps`` pointer events each, release.

    Points are in the canvas's own pixels, 0..``size`` (280 for the Draw tab's canvas),
    scaled to its size on screen; ``size=None`` takes them as CSS pixels of the canvas box.
    """
    box = page.locator(canvas).bounding_box()
    scale = 1.0 if size is None else box["width"] / size
    for stroke in strokes:
        (x0, y0), *rest = stroke
        page.mouse.move(box["x"] + x0 * scale, box["y"] + y0 * scale)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=steps)
        page.mouse.up()
