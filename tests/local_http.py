"""A stand-in HTTP server on 127.0.0.1 for the server-fault tests (no vllm needed)."""

from __future__ import annotations

import http.server
import threading


class LocalServer:
    """Serves ``handler`` (a ``BaseHTTPRequestHandler`` class) on 127.0.0.1 at a free port in a
    daemon thread while the ``with`` block runs; ``url`` is its address."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
