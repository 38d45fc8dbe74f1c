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


def refusing_url() -> str:
    """An address where nothing listens (a port the OS just handed out and took back), for
    tests of connection errors: a stopped stand-in's port is the session server's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


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
    """Start, stop and ``with`` for a stand-in served by ``handler``.

    One server per handler class serves the whole test session: a stand-in attaches to it
    on start and detaches on stop (its keep-alive connections shut, so the next test's
    clients reconnect to a fresh stand-in with its own behaviour and records). A second
    stand-in of the same class started while one is attached gets a server of its own.
    """

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str] = "standin"
    _shared: ClassVar[dict[type, StandInServer]] = {}
    _server: StandInServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("stand-in not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        shared = ServedStandIn._shared.get(self.handler)
        if shared is not None and shared.standin is None:
            shared.standin = self
            self._server = shared
            return self
        self._server, self._thread = self._serve()
        if shared is None:  # the first: kept for the session, stopped with the process
            ServedStandIn._shared[self.handler] = self._server
        return self

    def _serve(self) -> tuple[StandInServer, threading.Thread]:
        # Port 0: the OS picks a free port, so parallel test sessions never collide.
        server = StandInServer(("127.0.0.1", 0), self.handler, self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        thread.start()
        return server, thread

    def _stopping_now(self) -> None:
        """Wake anything a handler is waiting on before the server stops (optional)."""

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping_now()
        self._server = None
        if ServedStandIn._shared.get(self.handler) is server:
            server.close_connections()  # clients of this test see EOF, not the next stand-in
            server.standin = None
            return
        server.shutdown()  # serve_forever returns
        server.close_connections()  # keep-alive handlers see EOF instead of waiting
        server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
