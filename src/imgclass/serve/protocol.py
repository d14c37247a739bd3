"""uvicorn's HTTP protocol with TCP_NODELAY on every connection.

With ``--workers`` > 1 uvicorn binds the listening socket itself with ``proto=0``, and
asyncio only turns Nagle's algorithm off for sockets whose ``proto`` is TCP. Responses
are written as headers then body, so Nagle waits for the client's delayed ACK: about
40 ms added to every request (measured with bench/bench_serve.py). Setting TCP_NODELAY
when the connection is made removes that stall in every mode.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
