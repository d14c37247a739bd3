"""uvicorn's HTTP protocols with TCP_NODELAY on every connection and a deadline for the
request headers; httptools' (C, llhttp) where it is installed, h11's otherwise.

Parser: with h11 (pure Python) the HTTP parsing alone cost about 0.4 ms of CPU per
request, a sixth of a canvas prediction (measured with bench/bench_serve.py); httptools
parses the same request in C. ``with_header_timeout`` picks it when it can be imported
(it is a dependency); both protocols below behave the same.

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

try:  # a dependency; h11 stays the fallback for an install without it
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    HAS_HTTPTOOLS = True
except ImportError:  # pragma: no cover
    HAS_HTTPTOOLS = False

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0  # seconds, the default of ServeSettings.header_timeout_seconds
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 36\r\n\r\nrequest headers not complete in time"
)


def _no_delay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HeaderDeadline:
    """The header deadline, for a uvicorn protocol that says whether it awaits a
    request's headers (``_awaiting_headers``) and whether part of one has arrived
    (``_partial_request``)."""

    header_timeout: float
    _header_timer: asyncio.TimerHandle | None
    loop: asyncio.AbstractEventLoop
    transport: Any
    client: Any

    def _awaiting_headers(self) -> bool:
        raise NotImplementedError

    def _partial_request(self) -> bool:
        raise NotImplementedError

    def _watch_headers(self) -> None:
        """Start the deadline while a request's headers are awaited and none runs; stop
        it once they have all arrived."""
        if not self._awaiting_headers():
            self._stop_header_timer()
        elif self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers():
            return
        log.debug(
            "closing the connection from %s: no complete request headers in %.1f s",
            self.client,
            self.header_timeout,
        )
        if self._partial_request():
            self.transport.write(TIMED_OUT)
        self.transport.close()


class NoDelayH11Protocol(_HeaderDeadline, H11Protocol):
    """h11's protocol (pure Python), with TCP_NODELAY and the header deadline."""

    def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer = None

    def connection_made(self, transport: Any) -> None:
        _no_delay(transport)
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _partial_request(self) -> bool:
        return bool(self.conn.trailing_data[0])


if HAS_HTTPTOOLS:

    class NoDelayHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
        """httptools' protocol (C), with TCP_NODELAY and the header deadline. Its parser
        reports a request's first byte (``on_message_begin``) and the end of its headers
        (``on_headers_complete``); between the two, and on a new connection, the
        headers are awaited."""

        def __init__(
            self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any
        ) -> None:
            super().__init__(*args, **kwargs)
            self.header_timeout = header_timeout
            self._header_timer = None
            self._awaiting = True  # a new connection awaits its first request's headers
            self._begun = False  # part of a request has arrived

        def connection_made(self, transport: Any) -> None:
            _no_delay(transport)
            super().connection_made(transport)
            self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting = self._begun = True
            self._watch_headers()

        def on_headers_complete(self) -> None:
            self._awaiting = self._begun = False
            self._stop_header_timer()
            super().on_headers_complete()

        def _awaiting_headers(self) -> bool:
            return self._awaiting

        def _partial_request(self) -> bool:
            return self._begun


def with_header_timeout(seconds: float, parser: str = "auto") -> Any:
    """The protocol class for ``uvicorn.run(http=...)`` with this header deadline:
    httptools' unless ``parser`` is "h11" or httptools is not installed."""
    if parser != "h11" and HAS_HTTPTOOLS:
        return functools.partial(NoDelayHttpToolsProtocol, header_timeout=seconds)
    return functools.partial(NoDelayH11Protocol, header_timeout=seconds)
