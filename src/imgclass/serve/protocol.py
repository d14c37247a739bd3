"""uvicorn's HTTP protocol with TCP_NODELAY on every connection and a deadline for the
request headers.

TCP_NODELAY: with ``--workers`` > 1 uvicorn binds the listening socket itself with
``proto=0``, and asyncio only turns Nagle's algorithm off for sockets whose ``proto`` is
TCP. Responses are written as headers then body, so Nagle waits for the client's delayed
ACK: about 40 ms added to every request (measured with bench/bench_serve.py). Setting
TCP_NODELAY when the connection is made removes that stall in every mode.

Header deadline: uvicorn closes idle keep-alive connections, but a connection that sends
its request headers slowly (or never) was held open for ever: 1,500 such connections
were all still open after 70 s. Now a request's headers must be complete within
``header_timeout`` seconds of the connection being made, or of the first byte of the next
request on a kept-alive connection; otherwise the connection is closed (with a 408 if
part of a request had arrived). The body is not bounded here (a slow upload on a slow
link is legitimate); a reverse proxy in front bounds it (see deploy/nginx.conf).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0  # seconds, the default of ServeSettings.header_timeout_seconds
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 36\r\n\r\nrequest headers not complete in time"
)


class NoDelayH11Protocol(H11Protocol):
    def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        """Start the deadline while a request's headers are awaited (h11: the client is
        IDLE) and none runs; stop it once they have all arrived."""
        if self.conn.their_state is not h11.IDLE:
            self._stop_header_timer()
        elif self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial = bool(self.conn.trailing_data[0])
        log.debug(
            "closing the connection from %s: no complete request headers in %.1f s",
            self.client,
            self.header_timeout,
        )
        if partial:
            self.transport.write(TIMED_OUT)
        self.transport.close()


def with_header_timeout(seconds: float) -> Any:
    """The protocol class for ``uvicorn.run(http=...)`` with this header deadline."""
    return functools.partial(NoDelayH11Protocol, header_timeout=seconds)
