"""A local HTTP server for URL inputs: tests never reach the internet."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def serve(folder: Path, content_types: dict[str, str] | None = None) -> Iterator[str]:
    """Serve the files of ``folder`` on localhost; yields the base URL (``http://127.0.0.1:PORT``). A file named in
    ``content_types`` is sent with that type (for paths without an extension); a missing file is a 404."""
    types = content_types or {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def guess_type(self, path) -> str:
            return types.get(Path(str(path)).name) or super().guess_type(path)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL on a local port nothing listens on (connection refused)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/street.jpg"
