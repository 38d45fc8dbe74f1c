"""The HTTP server every provider stand-in runs on: 127.0.0.1, a free port, a thread.

A stand-in class mixes in :class:`ServedStandIn` and names its request handler; the handler
reaches the stand-in as ``self.server.standin``.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class StandInServer(ThreadingHTTPServer):
    """Threads per connection; on stop, open keep-alive connections are shut so their
    handler threads see EOF instead of waiting for the client."""

    daemon_threads = True
    request_queue_size = 128  # a benchmark opens a dozen keep-alive connections at once

    def __init__(self, address: tuple[str, int], handler: type, standin: Any) -> None:
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class ServedStandIn:
    """Start, stop and ``with`` for a stand-in served by ``handler``."""

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str] = "standin"
    _server: StandInServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("stand-in not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        # Port 0: the OS picks a free port, so parallel test sessions never collide.
        self._server = StandInServer(("127.0.0.1", 0), self.handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def _stopping_now(self) -> None:
        """Wake anything a handler is waiting on before the server stops (optional)."""

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping_now()
        self._server.shutdown()  # serve_forever returns
        self._server.close_connections()  # keep-alive handlers see EOF instead of waiting
        self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
