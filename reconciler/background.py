"""An HTTP server in a daemon thread: what the lab and the metrics endpoint both need.

Start, stop (safe twice), the real URL after binding port 0, and use as a context manager.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class BackgroundHTTPServer:
    """Subclasses say what to serve by implementing `make_server`."""

    thread_name = "http-server"
    description = "the server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def make_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        """`http://host:port` with the real port (useful after binding port 0)."""
        if self._httpd is None:
            raise RuntimeError(f"{self.description} is not started")
        host, port = self._httpd.server_address[:2]
        shown = f"[{host!s}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}"

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._httpd = self.make_server((self.host, self.port))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
