"""Services that fail on purpose, so the tool can see how the proxy answers a broken upstream.

The operator points three services of the proxy at addresses the tool controls (a port
where nothing listens, and two listeners the tool runs during the check) and declares
their names. The contract's answers: 503 when the service is down, 504 when it does not
answer in time, 502 when it answers something that is not HTTP.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

EXPECTED = {"down": 503, "timeout": 504, "broken": 502}


class _Listener:
    """A TLS listener on 127.0.0.1:port: ``timeout`` reads the request and never answers;
    ``broken`` answers a line that is not HTTP and closes."""

    def __init__(self, kind: str, port: int, ctx: ssl.SSLContext) -> None:
        self.kind, self.ctx = kind, ctx
        self.sock = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            with contextlib.suppress(OSError):
                tls.recv(65536)
            if self.kind == "broken":
                tls.sendall(b"CECI N'EST PAS HTTP\r\n\r\n")
                tls.close()
            else:
                self.held.append(tls)  # never answered; closed when the check ends
        except (ssl.SSLError, OSError):
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()
        for s in self.held:
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def listeners(ports: dict[str, int], cert: Path, key: Path) -> Iterator[None]:
    """Run the ``timeout`` and ``broken`` listeners for the duration of a check."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    started = [_Listener(kind, port, ctx) for kind, port in ports.items() if kind in ("timeout", "broken")]
    try:
        yield
    finally:
        for listener in started:
            listener.close()
